"""How `onen bench accuracy` judges its figures (no training here: the bench itself runs only as a benchmark)."""

from __future__ import annotations

import argparse

import pytest

from onen.benchmarks import accuracy


def test_a_target_is_met_only_when_every_seed_meets_it():
    assert accuracy._met([0.93, 0.95], ">=", 0.92) == "met"
    assert accuracy._met([0.90, 0.96], ">=", 0.92) == "mean only"
    assert accuracy._met([0.90, 0.91], ">=", 0.92) == "NOT met"
    assert accuracy._met([0.01, 0.03], "<=", 0.02) == "mean only"
    assert accuracy._met([0.97, None], ">=", 0.95) == "no figure"


def test_figures_at_the_threshold_count_only_at_a_validation_threshold():
    assert accuracy._verdict("recall", [0.97, 0.98], (">=", 0.95), validated=False) == "no validation threshold"
    assert accuracy._verdict("recall", [0.97, 0.98], (">=", 0.95), validated=True) == "met"
    assert accuracy._verdict("image_auroc", [0.99], (">=", 0.98), validated=False) == "met"  # no threshold in AUROC
    assert accuracy._verdict("pixel_auroc", [0.5], None, validated=True) is None


def test_smoke_runs_are_named_apart_from_the_measurement():
    def parsed(*argv: str) -> argparse.Namespace:
        parser = argparse.ArgumentParser()
        accuracy.add_arguments(parser)
        return parser.parse_args(["--work", "w", *argv])

    assert accuracy._smoke_tag(parsed()) == ""
    assert accuracy._smoke_tag(parsed("--epochs", "1", "--limit", "200")) == "smoke-e1-l200"


def test_a_recipe_names_the_onen_runs_and_reaches_onen_train(tmp_path, monkeypatch):
    from onen.train.config_file import shipped_recipes

    parser = argparse.ArgumentParser()
    accuracy.add_arguments(parser)
    args = parser.parse_args(["--work", str(tmp_path / "w"), "--recipe", "repeatable"])
    assert accuracy.run_dir(args, "elpv", "weak", 1, "onen", "").name == "elpv_weak_seed1_repeatable"
    assert accuracy.run_dir(args, "mt", "none", 0, "grdnet", "").name == "mt_none_seed0_grdnet"  # its own recipe
    commands: list[list[str]] = []
    monkeypatch.setattr(accuracy, "_onen", lambda command: commands.append([str(c) for c in command]))
    accuracy.train_run(tmp_path / "run", tmp_path / "m.csv", "weak", 1, args)
    assert commands[0][-2:] == ["--config", str(shipped_recipes()["repeatable"])]
    for bad in (["--recipe", "repeatble"], ["--recipe", "repeatable", "--family", "grdnet"]):
        with pytest.raises(SystemExit, match="expected one of .*repeatable.*, for the OneN family's runs"):
            accuracy.main(parser.parse_args(["--work", str(tmp_path / "w2"), "--supervision", "none", *bad]))
    assert not (tmp_path / "w2").exists()


def test_an_unknown_supervision_is_refused_before_any_work(tmp_path):
    parser = argparse.ArgumentParser()
    accuracy.add_arguments(parser)
    args = parser.parse_args(["--work", str(tmp_path / "w"), "--supervision", "fulll"])
    with pytest.raises(SystemExit, match="--supervision fulll: choose from full, none, weak"):
        accuracy.main(args)
    assert not (tmp_path / "w").exists()


def test_families_are_checked_and_onen_comes_first():
    assert accuracy._families("grdnet,onen") == ["onen", "grdnet"]
    with pytest.raises(SystemExit, match="--family gan: choose from onen, grdnet"):
        accuracy._families("gan")


def _split_manifest(csv_path):
    """The tiny set's CSV with a fixed split column, as benchmarks.real_sets writes one."""
    import csv

    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    seen = {"0": 0, "1": 0}
    for row in rows:  # each label spread over the splits alike
        row["split"] = ("test", "val", "train", "train")[seen[row["label"]] % 4]
        seen[row["label"]] += 1
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return csv_path


@pytest.mark.slow
def test_a_grdnet_run_is_scored_through_its_bundle_in_onnx_runtime(tmp_path):
    """A GRD-Net run in the bench's run folder ({set}_none_seed{N}_grdnet) is reused, exported, evaluated by
    `onen eval --bundle` and timed; it has no teacher."""
    import json

    from onen.edge.cli import main as onen
    from onen.train.tiny_data import write_tiny_dataset

    manifest = _split_manifest(write_tiny_dataset(tmp_path / "tiny", seed=3, count=48, size=64))
    parser = argparse.ArgumentParser()
    accuracy.add_arguments(parser)
    args = parser.parse_args(["--work", str(tmp_path / "w"), "--family", "grdnet", "--repeats", "3"])
    run = accuracy.run_dir(args, "mt", "none", 0, "grdnet", "")
    assert run.name == "mt_none_seed0_grdnet"
    command = ["train", "--config", str(accuracy.grdnet_recipe()), "--data", str(manifest), "--out", str(run)]
    assert onen([*command, "--size", "64", "--batch-size", "8", "--epochs", "1", "--seed", "0"]) == 0

    entry = accuracy.measure("mt", "none", manifest, [0], "", args, "grdnet")

    row = entry["seeds"][0]
    report = json.loads((run / "eval-bundle-grdnet" / "report.json").read_text())
    assert report["evaluated"]["backend"] == "onnxruntime"
    assert row["student"]["image_auroc"] == report["image_auroc"]
    flips = report["repeatability"]["sigma_1"]["flip_rate"]
    assert row["student"]["flip_rate_noise_sigma_1"] == flips  # the repeatability under noise is tabulated too
    assert any(f["figure"] == "flip_rate_noise_sigma_1" and f["student"]["mean"] == flips for f in entry["figures"])
    assert row["teacher"] is None and row["threshold_source"] == "validation"
    recalls = {kind: facts["recall"] for kind, facts in row["per_defect_type"].items()}
    assert recalls == pytest.approx(report["per_class_recall"]) and set(recalls) <= {"spot", "scratch"}
    assert all(facts["images"] > 0 for facts in row["per_defect_type"].values())
    assert set(entry["latency"]["models"]) == {"grdnet"}
    assert entry["latency"]["models"]["grdnet"]["input"] == {"height": 64, "width": 64}
    assert any(f["figure"] == "onnx_ms_batch1_1thread_64x64" and f["teacher"] is None for f in entry["figures"])
    assert row["timing"]["model_s_per_epoch"] is not None
    lines = accuracy.table({"measurements": [entry]}) + accuracy._run_lines({"measurements": [entry]})
    assert any(line.startswith("| magnetic tile | GRD-Net | none | image_auroc | >= 0.9 |") for line in lines)
    assert any(line.startswith("- magnetic tile GRD-Net none, seed 0: input 64x64") for line in lines)
