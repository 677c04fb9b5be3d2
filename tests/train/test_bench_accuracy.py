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


def test_an_unknown_supervision_is_refused_before_any_work(tmp_path):
    parser = argparse.ArgumentParser()
    accuracy.add_arguments(parser)
    args = parser.parse_args(["--work", str(tmp_path / "w"), "--supervision", "fulll"])
    with pytest.raises(SystemExit, match="--supervision fulll: choose from full, none, weak"):
        accuracy.main(args)
    assert not (tmp_path / "w").exists()
