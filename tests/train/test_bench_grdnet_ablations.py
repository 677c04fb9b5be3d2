"""`onen bench grdnet-ablations`: how it sums up arms, and one tiny arm end to end (the bench itself measures only
as a benchmark)."""

from __future__ import annotations

import argparse
import json

import pytest

from onen.benchmarks import grdnet_ablations


def _parsed(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    grdnet_ablations.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_the_ratio_is_each_arms_outside_false_rejects_over_the_no_roi_arms():
    def row(outside: float) -> dict:
        return {
            "false_reject_outside": outside,
            "false_reject_plain": 0.1,
            "image_auroc": 0.9,
            "pixel_auroc": 0.8,
            "train_s": 300.0,
        }

    summary = grdnet_ablations.summarise({"target": {0: row(0.1), 1: row(0.3)}, "none": {0: row(0.4), 1: row(0.4)}})
    assert summary["target"]["false_reject_outside"] == pytest.approx({"mean": 0.2, "min": 0.1, "max": 0.3, "seeds": 2})
    assert summary["target"]["ratio_to_none"] == pytest.approx(0.5)
    assert summary["none"]["ratio_to_none"] == pytest.approx(1.0)
    lines = grdnet_ablations.table(summary, 0.95)
    assert lines[2].startswith("| target (ROI masks the target (default)) | 2 | 0.200 (0.100-0.300) | 0.50 |")


def test_bad_arms_and_fresh_seeds_are_refused_before_any_work(tmp_path):
    with pytest.raises(SystemExit, match="--arms gan: choose from target, prediction, none, no_adversarial"):
        grdnet_ablations.main(_parsed("--work", str(tmp_path / "w"), "--arms", "gan"))
    with pytest.raises(SystemExit, match="--fresh-seeds 0,3: give seeds other than 0"):
        grdnet_ablations.main(_parsed("--work", str(tmp_path / "w"), "--fresh-seeds", "0,3"))
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_one_tiny_arm_trains_with_its_setting_and_is_scored_on_a_fresh_set(tmp_path):
    work = tmp_path / "w"
    argv = ["--work", str(work), "--arms", "prediction", "--seeds", "0", "--count", "40", "--size", "64"]
    args = _parsed(*argv, "--epochs", "1", "--fresh-seeds", "3", "--fresh-count", "30")
    assert grdnet_ablations.main(args) == 0

    results = json.loads((work / "grdnet_ablations.json").read_text())
    row = results["arms"]["prediction"]["seeds"]["0"]
    assert (row["roi_mode"], row["adversarial"]) == ("prediction", 1.0)
    run = work / "runs" / "c40-s64-e1-lr0.001" / "prediction_seed0"  # the budget names the runs' folder
    assert row["run"] == str(run)
    report = json.loads((run / "eval-fresh-seed3" / "report.json").read_text())
    assert report["evaluated"]["backend"] == "onnxruntime" and report["counts"]["images"] == 30
    outside = report["groups"]["good_outside"]["called_defective_at_recall"]["0.95"]
    assert row["false_reject_outside"] == outside == row["fresh"]["3"]["false_reject_outside"]
    assert (work / "grdnet_ablations.md").read_text().count("| prediction (") == 1
    assert (work / "grdnet_ablations.png").stat().st_size > 0
