"""Recipe files and --set for `onen train`: a YAML of TrainConfig's keys (nested for `weights` and `grdnet`),
checked against the dataclasses of train.config, so a typo is an error naming the file, the key path and the
nearest key rather than a silently ignored setting."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from onen.edge.errors import OnenError
from onen.train import config as config_module
from onen.train.config import TrainConfig

TRUE = ("true", "yes", "on", "1")
FALSE = ("false", "no", "off", "0")


class RecipeError(OnenError):
    """A recipe file or --set item that does not fit TrainConfig."""


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, vars(config_module))


def nested_type(cls: type, f: dataclasses.Field) -> type | None:
    """The dataclass field f of cls holds (TrainConfig.weights, .grdnet and GRDNetRecipe's parts), else None."""
    hint = f.metadata.get("nested") or _hints(cls)[f.name]
    return hint if dataclasses.is_dataclass(hint) and isinstance(hint, type) else None


def walk(cls: type = TrainConfig, prefix: str = ""):
    """(dotted path, owning class, field) for every leaf field of cls, nested dataclasses followed."""
    for f in dataclasses.fields(cls):
        inner = nested_type(cls, f)
        if inner is not None:
            yield from walk(inner, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", cls, f


def field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def coerce(value: Any, cls: type, f: dataclasses.Field, where: str) -> Any:
    """value (from YAML, or a --set string) as field f of cls expects it, else a RecipeError naming `where`."""
    hint = _hints(cls)[f.name]
    args = typing.get_args(hint) or (hint,)
    choices = f.metadata.get("choices")
    text = isinstance(value, str)
    nullable = type(None) in args
    if value is None or (nullable and text and value.lower() in ("null", "none") and not choices):
        if nullable:
            return None
        raise RecipeError(f"{where}: needs a value ({_name(hint)}), got nothing")
    result: Any = dataclasses.MISSING
    for kind in [a for a in args if a is not type(None)]:
        if kind is bool and isinstance(value, bool):
            result = value
        elif kind is bool and text and value.lower() in TRUE + FALSE and not choices:
            result = value.lower() in TRUE
        elif kind is int and isinstance(value, int) and not isinstance(value, bool):
            result = value
        elif kind is int and text:
            try:
                result = int(value)
            except ValueError:
                continue
        elif kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            result = float(value)
        elif kind is float and text:
            try:
                result = float(value)
            except ValueError:
                continue
        elif kind is str and (text or (isinstance(value, int) and not isinstance(value, bool))):
            result = str(value)
        if result is not dataclasses.MISSING:
            break
    if result is dataclasses.MISSING:
        raise RecipeError(f"{where}: expected {_name(hint)}, got {value!r}")
    if choices and result not in choices:
        raise RecipeError(f"{where}: expected one of {', '.join(choices)}, got {result!r}")
    return result


def _name(hint: Any) -> str:
    args = typing.get_args(hint) or (hint,)
    return " or ".join("null" if a is type(None) else getattr(a, "__name__", str(a)) for a in args)


def _field(cls: type, key: str, path: str, source: str) -> dataclasses.Field:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if key not in fields:
        known = sorted(n for n, f in fields.items() if "internal" not in f.metadata)
        guess = difflib.get_close_matches(key, known, n=1)
        did_you_mean = f" (did you mean '{_join(path, guess[0])}'?)" if guess else ""
        raise RecipeError(
            f"{source}: unknown key '{_join(path, key)}'{did_you_mean}; expected one of {', '.join(known)}"
        )
    f = fields[key]
    if "internal" in f.metadata:
        raise RecipeError(
            f"{source}: '{_join(path, key)}' is not a setting: the trainer sets it ({f.metadata['internal']})"
        )
    return f


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def check_tree(data: Any, source: str, cls: type = TrainConfig, path: str = "") -> dict:
    """data (a recipe file's mapping) checked and coerced against cls, nested mappings against their dataclasses."""
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: '{path or '(top level)'}' must be a mapping of keys to values, got {data!r}")
    checked: dict = {}
    for key, value in data.items():
        f = _field(cls, str(key), path, source)
        inner = nested_type(cls, f)
        where = f"{source}: '{_join(path, str(key))}'"
        checked[f.name] = (
            check_tree(value, source, inner, _join(path, f.name)) if inner else coerce(value, cls, f, where)
        )
    return checked


def load_recipe(path: Path) -> dict:
    """A recipe file's settings, checked (RecipeError names the file and the key path)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise RecipeError(f"{path}: cannot read the recipe file ({error.strerror})") from error
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML ({error})") from error
    return check_tree(data if data is not None else {}, str(path))


def parse_set(item: str) -> dict:
    """`a.b=value` as a nested mapping {a: {b: value}}, value parsed with the field's type."""
    if "=" not in item:
        raise RecipeError(f"--set {item}: expected KEY=VALUE, e.g. weights.kd=0.25")
    key, value = item.split("=", 1)
    tree: dict = {}
    node = tree
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value.strip()
    return check_tree(tree, f"--set {item}")


def merge(base: dict, over: dict) -> dict:
    """base with over's keys on top, nested mappings merged key by key."""
    merged = dict(base)
    for key, value in over.items():
        merged[key] = (
            merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def build_config(settings: dict) -> TrainConfig:
    """TrainConfig from resolved settings (nested `weights` as a mapping; `grdnet` stays the mapping it is)."""
    settings = dict(settings)
    weights = config_module.ObjectiveWeights(**settings.pop("weights", {}))
    return TrainConfig(**settings, weights=weights)


RECIPE_DIR = Path(__file__).parent / "recipe_files"  # the recipes the project ships (station, grdnet)


def shipped_recipes() -> dict[str, Path]:
    """name -> path of every recipe in train/recipe_files."""
    return {path.stem: path for path in sorted(RECIPE_DIR.glob("*.yaml"))}
