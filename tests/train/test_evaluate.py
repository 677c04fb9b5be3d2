"""evaluate() and `onen eval`: report keys, known answers on a hand-built set, plots on disk."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from onen.edge.cli import main as onen
from onen.train.data.readers import load_index
from onen.train.evaluate import EvaluationError, evaluate

REQUIRED_KEYS = (
    "image_auroc",
    "pixel_auroc",
    "aupro",
    "f1",
    "accuracy",
    "class_accuracy",
    "confusion_matrix",
    "threshold",
)
PLOTS = ("roc.png", "score_hist.png", "worst_defects.png", "worst_good.png")


def _squares_dataset(root: Path, size: int = 48) -> Path:
    """Grey noise parts; defects are white squares, 'small' (4x4) or 'big' (10x10), with masks; one AOI."""
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    (root / "gt").mkdir()
    rows = ["image,label,class,mask,aoi,split"]
    for i in range(18):
        image = rng.integers(60, 140, (size, size, 3)).astype(np.uint8)
        kind = ("good", "small", "big")[i % 3]
        mask = np.zeros((size, size), np.uint8)
        if kind != "good":
            side = 4 if kind == "small" else 10
            y, x = rng.integers(8, size - 8 - side, 2)
            image[y : y + side, x : x + side] = 250
            mask[y : y + side, x : x + side] = 255
            cv2.imwrite(str(root / "gt" / f"{i}.png"), mask)
        cv2.imwrite(str(root / "img" / f"{i}.png"), image)
        label = int(kind != "good")
        rows.append(f"img/{i}.png,{label},{kind},{f'gt/{i}.png' if label else ''},,")
    aoi = np.zeros((size, size), np.uint8)
    aoi[4:-4, 4:-4] = 255
    cv2.imwrite(str(root / "aoi.png"), aoi)
    (root / "data.csv").write_text("\n".join(rows) + "\n")
    return root / "data.csv"


def _bright_square_model(batch: np.ndarray):
    """A real (if simple) detector: bright pixels are the defect; its area tells small from big."""
    heat = (batch.mean(axis=3) > 200).astype(np.float32)
    area = heat.sum(axis=(1, 2))
    score = np.minimum(area / 20.0, 1.0)
    logits = np.stack([-area, np.where(area < 50, 1.0, 0.0), np.where(area >= 50, 1.0, 0.0)], axis=1)
    return score, heat[:, None], logits


def test_evaluate_known_answers_and_files(tmp_path):
    index = load_index(_squares_dataset(tmp_path / "data"), aoi=tmp_path / "data" / "aoi.png")
    report = evaluate(
        _bright_square_model,
        index.samples,
        ["good", "small", "big"],
        48,
        48,
        tmp_path / "out",
        aoi=index.aoi,
        batch_size=5,
        progress=False,
    )
    for key in REQUIRED_KEYS:
        assert key in report
    assert report["image_auroc"] == 1.0 and report["pixel_auroc"] == 1.0 and report["aupro"] == 1.0
    assert report["f1"] == 1.0 and report["accuracy"] == 1.0 and report["class_accuracy"] == 1.0
    assert report["confusion_matrix"]["matrix"] == [[6, 0, 0], [0, 6, 0], [0, 0, 6]]
    assert report["counts"] == {"images": 18, "good": 6, "defective": 12, "defects_with_mask": 12, "pixel_images": 18}
    assert report["pixel_region"] == "aoi" and report["threshold_source"] == "test_best_f1"
    assert report["threshold_optimistic"] is True  # chosen on the evaluated images: said so
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["image_auroc"] == 1.0 and set(REQUIRED_KEYS) <= set(saved)
    for name in PLOTS:
        assert (tmp_path / "out" / name).stat().st_size > 5000
    with open(tmp_path / "out" / "scores.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 18


def test_evaluate_given_threshold_blind_model_and_no_masks(tmp_path):
    index = load_index(_squares_dataset(tmp_path / "data"))
    unmasked = [s.__class__(s.image, s.label, s.class_name) for s in index.samples]  # labels only

    def blind(batch):  # sees nothing: same score everywhere, single-class head
        n = len(batch)
        return np.full(n, 0.3, np.float32), np.zeros((n, 1, 48, 48), np.float32), np.zeros((n, 1), np.float32)

    report = evaluate(
        blind,
        unmasked,
        ["good", "small", "big"],
        48,
        48,
        tmp_path / "out",
        threshold=0.5,
        threshold_source="user",
        progress=False,
    )
    assert report["image_auroc"] == 0.5 and report["pixel_auroc"] is None and report["aupro"] is None
    assert report["threshold"] == 0.5 and report["threshold_source"] == "user" and not report["threshold_optimistic"]
    assert report["f1"] == 0.0 and report["accuracy"] == pytest.approx(6 / 18) and report["class_accuracy"] is None
    assert report["confusion_matrix"]["matrix"] == [[6, 0], [12, 0]]
    with pytest.raises(EvaluationError, match="needs its source"):
        evaluate(blind, unmasked, ["good", "small", "big"], 48, 48, tmp_path / "o", threshold=0.5, progress=False)
    with pytest.raises(EvaluationError, match="expected"):
        evaluate(
            lambda b: (np.zeros(2), np.zeros((2, 1, 48, 48)), np.zeros((2, 1))),
            unmasked[:3],
            ["good", "small", "big"],
            48,
            48,
            tmp_path / "bad",
            progress=False,
        )


def test_onen_eval_bundle_on_other_data(tiny_bundle, tmp_path):
    data = tiny_bundle.parent / "data"
    csvs = sorted(data.glob("*.csv"))
    assert csvs, f"small_bundle wrote no sample data set in {data}"
    out = tmp_path / "eval"
    assert onen(["eval", "--bundle", str(tiny_bundle), "--data", str(csvs[0]), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(REQUIRED_KEYS) <= set(report) and report["evaluated"]["backend"] == "onnxruntime"
    assert report["image_auroc"] is not None and 0.0 <= report["image_auroc"] <= 1.0
    for name in ("roc.png", "score_hist.png"):
        assert (out / name).is_file()

    # on the generated AOI benchmark the report also counts rejections per kind of image
    from onen.train.data.synth_benchmark import generate

    bench = generate(tmp_path / "bench", seed=1, count=10, size=64, progress=False)
    assert (
        onen(["eval", "--bundle", str(tiny_bundle), "--data", str(bench), "--out", str(tmp_path / "eval-bench")]) == 0
    )
    groups = json.loads((tmp_path / "eval-bench" / "report.json").read_text())["groups"]
    assert set(groups) == {"good_plain", "good_outside", "scratch", "spot", "crack"}
    assert sum(g["images"] for g in groups.values()) == 10


def test_onen_eval_errors_are_clear(tmp_path, capsys):
    assert onen(["eval", "--out", str(tmp_path)]) == 2
    assert "--run" in capsys.readouterr().err
    assert onen(["eval", "--run", str(tmp_path / "nope")]) == 2
    assert "not a training run" in capsys.readouterr().err


def test_onen_eval_a_bundle_on_the_openvino_backend(tiny_bundle, tmp_path):
    """The same bundle on the station's other CPU backend: same images, its own precision, the AUROC close."""
    pytest.importorskip("openvino", reason="the [openvino] extra is not installed")
    csvs = sorted((tiny_bundle.parent / "data").glob("*.csv"))
    reports = {}
    for backend in ("onnxruntime", "openvino"):
        out = tmp_path / backend
        assert (
            onen(
                ["eval", "--bundle", str(tiny_bundle), "--data", str(csvs[0]), "--out", str(out), "--backend", backend]
            )
            == 0
        )
        reports[backend] = json.loads((out / "report.json").read_text())
    other = reports["openvino"]
    assert other["evaluated"]["backend"] == "openvino" and other["evaluated"]["precision"] in ("bf16", "f32")
    assert abs(other["image_auroc"] - reports["onnxruntime"]["image_auroc"]) <= 0.02


def test_a_model_trained_without_class_labels_gets_no_class_accuracy(tmp_path):
    """Supervision none (and GRD-Net): the class logits never saw a class name, so no class accuracy and a
    good-vs-defect confusion matrix, while detection is judged as for any model."""
    index = load_index(_squares_dataset(tmp_path / "data"), aoi=tmp_path / "data" / "aoi.png")
    common = dict(aoi=index.aoi, batch_size=6, progress=False)
    names = ["good", "small", "big"]
    labelled = evaluate(_bright_square_model, index.samples, names, 48, 48, tmp_path / "a", **common)
    unlabelled = evaluate(
        _bright_square_model, index.samples, names, 48, 48, tmp_path / "b", classes_supervised=False, **common
    )
    assert labelled["class_accuracy"] == 1.0 and unlabelled["class_accuracy"] is None
    assert unlabelled["image_auroc"] == labelled["image_auroc"] == 1.0
    assert set(unlabelled["confusion_matrix"]["predicted"]) <= {"good", "defect"}
