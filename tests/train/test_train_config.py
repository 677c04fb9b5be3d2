"""`onen train`'s settings: one default per setting (train.config), flags generated from it, recipe files."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys

import pytest

from onen.edge.errors import OnenError
from onen.train.commands import train as train_command
from onen.train.config import GRDNetRecipe, ObjectiveWeights, TrainConfig
from onen.train.config_file import RecipeError, field_default, load_recipe, parse_set, shipped_recipes, walk


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onen")
    train_command.register(parser.add_subparsers())
    return parser


def _settings_actions() -> dict[str, argparse.Action]:
    sub = _parser()._subparsers._group_actions[0].choices["train"]  # type: ignore[union-attr]
    return {a.dest: a for a in sub._actions if isinstance(a, train_command._Setting)}


def test_every_flag_default_is_its_field_default_and_every_field_is_reachable():
    actions = _settings_actions()
    assert actions, "no generated flags"
    for path, _, spec in walk(TrainConfig):
        meta = spec.metadata
        assert "help" in meta or "recipe" in meta or "internal" in meta, f"{path}: neither a flag, recipe nor internal"
        if "help" in meta:
            assert path in actions, f"{path} has help but no flag"
            assert actions[path].default == field_default(spec), path
            assert actions[path].choices == meta.get("choices") or isinstance(field_default(spec), bool), path
        else:
            assert path not in actions
    assert set(actions) <= {path for path, _, _ in walk(TrainConfig)}


def test_flags_resolve_to_the_dataclass_defaults():
    args = _parser().parse_args(["train", "--data", "d", "--out", "o", "--supervision", "full"])
    cfg = train_command.resolve(args)
    assert cfg == TrainConfig(data="d", out="o", supervision="full", epochs_given=False)
    assert cfg.weights == ObjectiveWeights()


def test_flags_win_over_set_and_set_over_the_file(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("supervision: none\nepochs: 7\nweights:\n  kd: 0.1\n  maps: 3\n", encoding="utf-8")
    args = _parser().parse_args(
        ["train", "--config", str(recipe), "--data", "d", "--out", "o", "--set", "weights.maps=2", "--kd-weight", "0.3"]
        + ["--set", "weights.kd=0.2", "--no-aoi-guidance"]
    )
    cfg = train_command.resolve(args)
    assert (cfg.supervision, cfg.epochs, cfg.epochs_given) == ("none", 7, True)
    assert (cfg.weights.kd, cfg.weights.maps, cfg.aoi_guidance) == (0.3, 2.0, False)


def test_grdnet_lr_and_epochs_go_to_its_recipe():
    args = _parser().parse_args(
        ["train", "--data", "d", "--out", "o", "--supervision", "none", "--family", "grdnet", "--lr", "3e-4"]
        + ["--set", "grdnet.weights.adversarial=0"]
    )
    cfg = train_command.resolve(args)
    assert cfg.grdnet == {"optimiser": {"lr": 3e-4}, "weights": {"adversarial": 0.0}}
    assert (cfg.epochs, cfg.epochs_given) == (GRDNetRecipe.epochs, False)
    assert GRDNetRecipe.from_dict(cfg.grdnet).optimiser.lr == 3e-4


def test_missing_required_setting_is_named():
    args = _parser().parse_args(["train", "--data", "d", "--out", "o"])
    with pytest.raises(OnenError, match=r"--supervision is required .*'supervision' in --config"):
        train_command.resolve(args)


def test_unknown_key_names_the_file_the_path_and_the_nearest_key(tmp_path):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text("weights:\n  temprature: 3\n", encoding="utf-8")
    with pytest.raises(
        RecipeError, match=r"typo\.yaml: unknown key 'weights\.temprature' \(did you mean 'weights\.temperature'"
    ):
        load_recipe(recipe)
    recipe.write_text("grdnet:\n  model:\n    base_widht: 8\n", encoding="utf-8")
    with pytest.raises(RecipeError, match=r"'grdnet\.model\.base_widht' \(did you mean 'grdnet\.model\.base_width'"):
        load_recipe(recipe)


def test_bad_values_and_internal_keys_are_refused(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("epochs: many\n", encoding="utf-8")
    with pytest.raises(RecipeError, match=r"bad\.yaml: 'epochs': expected int, got 'many'"):
        load_recipe(recipe)
    recipe.write_text("supervision: some\n", encoding="utf-8")
    with pytest.raises(RecipeError, match="expected one of none, weak, full"):
        load_recipe(recipe)
    recipe.write_text("geometry: {height: 64}\n", encoding="utf-8")
    with pytest.raises(RecipeError, match="'geometry' is not a setting: the trainer sets it"):
        load_recipe(recipe)
    with pytest.raises(RecipeError, match="expected KEY=VALUE"):
        parse_set("weights.kd")


def test_set_parses_with_the_field_type():
    assert parse_set("weights.kd=0.25") == {"weights": {"kd": 0.25}}
    assert parse_set("aoi_guidance=false") == {"aoi_guidance": False}
    assert parse_set("aoi=null") == {"aoi": None}
    assert parse_set("size=256") == {"size": "256"}
    assert parse_set("grdnet.model.unet.depth=3") == {"grdnet": {"model": {"unet": {"depth": 3}}}}


@pytest.mark.parametrize("name", sorted(shipped_recipes()))
def test_each_shipped_recipe_loads_and_checks(name):
    """A recipe that leaves the supervision to the command line (repeatable.yaml) gets it from there."""
    settings = load_recipe(shipped_recipes()[name])
    given = [] if "supervision" in settings else ["--supervision", "weak"]
    command = ["train", "--config", str(shipped_recipes()[name]), "--data", "d", "--out", "o", *given]
    cfg = train_command.resolve(_parser().parse_args(command))
    cfg.check()
    assert dataclasses.asdict(cfg)["supervision"] == settings.get("supervision", "weak")
    resolved = dataclasses.asdict(cfg)
    assert all(resolved[key] == value for key, value in settings.items() if key not in ("size", "grdnet"))
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_shipped_recipes_include_the_station_model():
    assert {"station", "grdnet", "small", "repeatable"} <= set(shipped_recipes())
    assert load_recipe(shipped_recipes()["station"])["size"] == "256"


def test_train_help_does_not_import_torch():
    code = (
        "import sys, argparse; from onen.train.commands import train; "
        "p = argparse.ArgumentParser(); train.register(p.add_subparsers()); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# keys of options removed in issue 12 (no default or shipped recipe used them), as a run of that time saved them
REMOVED_KEYS = {"teacher_loss": "ceod", "fine_map": True, "class_pool": "cls+map+fine", "map_gate": 0.25}


def test_a_run_of_an_older_format_is_refused_by_its_format_before_any_key_is_read(tmp_path):
    """An older run is not rebuilt through guesses: refused by file and format, by TrainConfig.from_dict (--resume)
    and by load_run (eval, export), whatever keys it holds."""
    from onen.train import runs

    saved = {**TrainConfig(data="d", out="o").to_dict(), **REMOVED_KEYS, "format": "onen-run/2"}
    expected = "runs/a/config.json: run format 'onen-run/2', this onen reads 'onen-run/3'"
    with pytest.raises(runs.RunError, match=re.escape(expected) + ".*train the run again"):
        TrainConfig.from_dict(saved, "runs/a/config.json")
    run = tmp_path / "run"
    run.mkdir()
    (run / runs.CONFIG).write_text(json.dumps(saved))
    with pytest.raises(runs.RunError, match=re.escape(f"{run / runs.CONFIG}: run format 'onen-run/2'")):
        runs.load_run(run, with_data=False)


@pytest.mark.parametrize("key", [*REMOVED_KEYS, "weights.balanced_maps"])
def test_a_removed_option_in_a_run_of_this_format_is_an_unknown_key(key):
    from onen.train import runs

    saved = TrainConfig(data="d", out="o").to_dict()
    assert TrainConfig.from_dict(json.loads(json.dumps(saved))) == TrainConfig(data="d", out="o")
    if key.startswith("weights."):
        saved["weights"] = {**saved["weights"], key.split(".", 1)[1]: "batch"}
    else:
        saved[key] = REMOVED_KEYS[key]
    with pytest.raises(runs.RunError, match=rf"runs/a/config.json: unknown key\(s\) {re.escape(key)}; expected "):
        TrainConfig.from_dict(saved, "runs/a/config.json")


def test_a_run_config_with_an_unknown_key_is_refused():
    from onen.train.runs import RunError

    saved = TrainConfig(data="d", out="o").to_dict()
    with pytest.raises(RunError, match=r"runs/a/config.json: unknown key\(s\) weights.focal_alpha"):
        TrainConfig.from_dict({**saved, "weights": {"focal_alpha": 0.25}}, "runs/a/config.json")
    with pytest.raises(RunError, match=r"runs/a/config.json: unknown key\(s\) mixup"):
        TrainConfig.from_dict({**saved, "mixup": 0.2}, "runs/a/config.json")
