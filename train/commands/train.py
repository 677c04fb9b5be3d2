"""`onen train`: teacher then OneN student (or GRD-Net) on a data set, into a run directory (resumable).

The flags are generated from train.config's dataclasses (name, type, default, help, choices), so no default is
written here; `--config recipe.yaml` and `--set key=value` reach every setting, flags given win over both."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from onen.edge.errors import OnenError
from onen.train.config import TrainConfig, default_epochs
from onen.train.config_file import coerce, field_default, load_recipe, merge, parse_set, walk

GIVEN = "given_settings"  # the namespace attribute listing the settings given as flags


class _Setting(argparse.Action):
    """Stores a flag's value under its setting's dotted path and records that it was given."""

    def __init__(self, option_strings, dest, owner: type, spec: dataclasses.Field, **kwargs):
        self.owner, self.spec = owner, spec
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        value = self.const if self.nargs == 0 else coerce(values, self.owner, self.spec, option_string or self.dest)
        setattr(namespace, self.dest, value)
        setattr(namespace, GIVEN, (*getattr(namespace, GIVEN), self.dest))


def flag_of(path: str, spec: dataclasses.Field) -> str:
    return spec.metadata.get("flag") or "--" + path.replace("_", "-")


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig setting with a "help" (nested ones name their flag), default from the dataclass."""
    for path, owner, spec in walk(TrainConfig):
        if "help" not in spec.metadata:
            continue
        default = field_default(spec)
        help_text = spec.metadata["help"].replace("%", "%%")
        kwargs: dict[str, Any] = {"default": default, "owner": owner, "spec": spec}
        if isinstance(default, bool):
            kwargs.update(nargs=0, const=not default)
            help_text = ("do not " if default else "") + help_text
        else:
            kwargs["choices"] = spec.metadata.get("choices")
            if not spec.metadata.get("required") and default is not None:
                help_text += f" (default {default})"
        flag = flag_of(path, spec)
        metavar = None if isinstance(default, bool) or kwargs.get("choices") else flag[2:].upper().replace("-", "_")
        parser.add_argument(flag, dest=path, action=_Setting, help=help_text, metavar=metavar, **kwargs)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train the teacher and the OneN student (or GRD-Net) on a data set",
        description="Fine-tunes the EfficientNet-Lite0 teacher (CEOD where an AOI/mask exists), then distils the OneN "
        "student under --supervision none (good images + synthetic defects), weak (image labels; teacher "
        "Grad-CAM as map targets) or full (pixel masks). --family grdnet trains GRD-Net instead (supervision none). "
        "Checkpoints every epoch; --resume continues. Settings come from the defaults, then --config, then --set, "
        "then the flags given.",
    )
    parser.add_argument("--config", type=Path, help="recipe file (YAML of these settings; see train/recipe_files/)")
    parser.add_argument(
        "--set",
        dest="set_items",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one setting by its recipe key, e.g. weights.kd=0.25 or grdnet.weights.adversarial=0 (repeatable)",
    )
    add_setting_flags(parser)
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.set_defaults(handler=run, **{GIVEN: ()})


def _nest(path: str, value: Any) -> dict:
    head, _, rest = path.partition(".")
    return {head: _nest(rest, value) if rest else value}


def resolve(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from the defaults, the recipe file, --set items and the flags given, in that order."""
    settings: dict = load_recipe(args.config) if args.config else {}
    for item in args.set_items:
        settings = merge(settings, parse_set(item))
    for path in getattr(args, GIVEN):
        settings = merge(settings, _nest(path, getattr(args, path)))
    for path, _, spec in walk(TrainConfig):
        if spec.metadata.get("required") and _lookup(settings, path) is None:
            raise OnenError(f"{flag_of(path, spec)} is required (on the command line or as '{path}' in --config)")
    family = settings.get("family", TrainConfig.family)
    if family != "grdnet" and settings.get("grdnet"):
        raise OnenError("--roi-mode is GRD-Net's (as every grdnet.* setting): it needs --family grdnet")
    if family == "grdnet" and "lr" in settings:  # --lr sets GRD-Net's own optimiser
        settings = merge(settings, {"grdnet": {"optimiser": {"lr": settings.pop("lr")}}})
    settings["epochs_given"] = "epochs" in settings
    settings.setdefault("epochs", default_epochs(family))
    weights = settings.pop("weights", {})
    from onen.train.config import ObjectiveWeights

    return TrainConfig(**settings, weights=ObjectiveWeights(**weights))


def _lookup(settings: dict, path: str) -> Any:
    node: Any = settings
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def run(args: argparse.Namespace) -> int:
    from onen.train.trainer import train

    cfg = resolve(args)
    run_dir = train(cfg, resume=args.resume)
    print(f"run written to {run_dir}")
    return 0
