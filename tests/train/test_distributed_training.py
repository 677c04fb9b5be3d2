"""`onen train` on 2 ranks (gloo, loopback) on tiny generated parts: every family trains, rank 0 alone writes the run,
a run killed mid-way and resumed ends with the weights of one never interrupted, and a rank that fails on a bad
image ends the job with a non-zero exit naming it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import distributed_ranks as ranks
import pytest
import torch

from onen.train import distributed, runs
from onen.train.data.readers import load_index
from onen.train.data.splits import stratified_split
from onen.train.history import read_history
from onen.train.tiny_data import write_tiny_dataset

RANKS = 2
EPOCHS = 4
TINY = ["--size", "64", "--patch", "8", "--dim", "16", "--depth", "1", "--set", "heads=2"]
TINY += ["--stem", "conv", "--batch-size", "16", "--device", "cpu"]
ONEN = [*TINY, "--supervision", "full", "--teacher-epochs", "0", "--epochs", str(EPOCHS)]
TEACHER = [*TINY, "--supervision", "full", "--teacher-epochs", "1", "--epochs", "1"]
GOOD = [*TINY, "--supervision", "none", "--epochs", "1"]  # the good-feature model is fitted under `none`
GRDNET = ["--family", "grdnet", "--supervision", "none", "--size", "64", "--batch-size", "16", "--epochs", "1"]
GRDNET += ["--device", "cpu", "--set", "grdnet.model.base_width=4", "--set", "grdnet.model.latent_channels=8"]
GRDNET += ["--set", "grdnet.model.unet.base_width=4"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("ddp-data"), seed=4, count=48, size=32)


@pytest.fixture(scope="module")
def jobs(data, tmp_path_factory) -> tuple[Path, dict[int, dict]]:
    """One job of 2 ranks running `onen train` on each rank (what torchrun starts) four times: OneN without a
    teacher, OneN with its teacher, OneN from good parts with its good-feature model, GRD-Net; and what each rank
    wrote into the runs."""
    root = tmp_path_factory.mktemp("ddp-runs")
    (root / "runs").mkdir()
    commands = [
        [*command, "--data", str(data), "--out", str(root / "runs" / name)]
        for name, command in (("onen", ONEN), ("teacher", TEACHER), ("good", GOOD), ("grdnet", GRDNET))
    ]
    distributed.launch(RANKS, ranks.onen_train_recording_writes, commands, str(root / "runs"), str(root))
    return root / "runs", {r: json.loads((root / f"rank-{r}.json").read_text()) for r in range(RANKS)}


def test_every_family_trains_on_two_ranks_and_only_rank_0_writes(jobs, data):
    runs_dir, answers = jobs
    assert answers[0]["codes"] == answers[1]["codes"] == [0, 0, 0, 0]
    assert answers[1]["writes"] == []
    written = set(answers[0]["writes"])
    for run in ("onen", "teacher", "good", "grdnet"):
        assert {f"{run}/{name}" for name in (runs.CONFIG, runs.SPLITS, runs.HISTORY, runs.SUMMARY)} <= written
        assert json.loads((runs_dir / run / runs.SUMMARY).read_text())["timings_s"]["total"] > 0
    assert {f"teacher/{runs.TEACHER_DIR}/{runs.TEACHER_FINAL}", f"good/{runs.GOOD_FEATURES}"} <= written
    assert {f"grdnet/{runs.GRDNET_BEST}", f"grdnet/{runs.CHECKPOINTS}/{runs.GRDNET_LAST}"} <= written
    assert [row["epoch"] for row in read_history(runs_dir / "onen" / runs.HISTORY)] == list(range(1, EPOCHS + 1))
    fitted = json.loads((runs_dir / "good" / runs.GOOD_FEATURES).read_text())
    good_train = sum(1 for s in stratified_split(load_index(str(data)), 0.25, 0.1, 0).train if s.label == 0)
    assert fitted["train_images"] == good_train  # the Gaussians saw every good image, gathered from both shards


def _onen(*args: str) -> list[str]:
    return [sys.executable, "-m", "onen.edge.cli", "train", *args]


def _env(tmp_path: Path) -> dict[str, str]:
    """The launcher keeps its ranks' logs in a temporary directory: here, the test's own (a killed job leaves it)."""
    return {**os.environ, "TMPDIR": str(tmp_path)}


def test_a_killed_job_resumed_on_every_rank_ends_with_the_uninterrupted_weights(jobs, data, tmp_path):
    runs_dir, _ = jobs
    run = tmp_path / "killed"
    command = _onen(*ONEN, "--data", str(data), "--out", str(run), "--nproc", str(RANKS))
    job = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(tmp_path)
    )
    checkpoint = run / runs.CHECKPOINTS / runs.STUDENT_LAST
    try:
        while not checkpoint.is_file() and job.poll() is None:
            time.sleep(0.02)
    finally:
        os.killpg(job.pid, signal.SIGKILL)  # the launcher and both ranks, mid-run
        job.wait(timeout=60)
    assert not (run / runs.SUMMARY).is_file()
    killed_at = torch.load(checkpoint, weights_only=False)["epoch"] + 1
    assert 1 <= killed_at < EPOCHS
    resumed = subprocess.run(
        [*command, "--resume"], capture_output=True, text=True, timeout=300, check=False, env=_env(tmp_path)
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [row["epoch"] for row in read_history(run / runs.HISTORY)] == list(range(1, EPOCHS + 1))
    for name in (runs.STUDENT, runs.STUDENT_BEST):
        again = torch.load(run / name, weights_only=False)["model"]
        reference = torch.load(runs_dir / "onen" / name, weights_only=False)["model"]
        assert again.keys() == reference.keys()
        for key, value in reference.items():
            assert torch.equal(value, again[key]), (name, key)


def test_a_rank_failing_on_a_bad_image_ends_the_job_with_an_error_naming_it(tmp_path):
    data = write_tiny_dataset(tmp_path / "data", seed=4, count=48, size=32)
    # a training image only: the rank whose shard holds it is the only one to read it
    bad = stratified_split(load_index(str(data)), 0.25, 0.1, 0).train[0].image
    Path(bad).write_bytes(b"not an image")
    failed = subprocess.run(
        _onen(*ONEN, "--data", str(data), "--out", str(tmp_path / "run"), "--nproc", str(RANKS)),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=_env(tmp_path),
    )
    assert failed.returncode == 2
    error = failed.stderr[failed.stderr.index("onen train: error: distributed training on 2 ranks failed") :]
    assert f"{Path(bad).name}" in error.splitlines()[1]  # the first failure: the rank that read it
    assert f"(every rank's output: {tmp_path}" in error
