"""Post-processing: real bundle through ONNX Runtime, AOI, thresholds, classes, regions, result schema."""

from __future__ import annotations

import copy

import cv2
import jsonschema
import numpy as np
import pytest
from support.daemon import SCALE, reference_frames

from onen.edge.backends.base import ModelOutputs
from onen.edge.backends.onnxruntime_backend import CpuLayout, OnnxRuntimeBackend
from onen.edge.bundle import load_bundle
from onen.edge.calibration_file import from_bundle_defaults
from onen.edge.postprocess import PostProcessor
from onen.edge.preprocess import PreProcessor
from onen.edge.result import ModelInfo, build_result, validate_result

LATENCY = {"capture": 1.0, "preprocess": 0.5, "infer": 2.0, "postprocess": 0.3, "total": 4.0}


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return load_bundle(tiny_bundle)


def _result(bundle, inspection, seq=0):
    return build_result(
        station="s1",
        camera="cam",
        seq=seq,
        run_id="r1",
        captured_at=1_700_000_000.25,
        model=ModelInfo.from_bundle(bundle, "onnxruntime"),
        inspection=inspection,
        latency_ms=LATENCY,
        source={"kind": "folder", "file": f"part-{seq}.png"},
    )


def test_real_bundle_verdicts_scores_and_regions(bundle, tiny_bundle):
    frames, expected_scores = reference_frames(tiny_bundle)
    post = PostProcessor(bundle.manifest, from_bundle_defaults(bundle, camera="cam"))
    pre = PreProcessor(bundle.manifest, post.calibration)
    backend = OnnxRuntimeBackend(bundle, layout=CpuLayout(1, 1))
    outputs = backend.infer(pre.to_batch([pre.prepare(f) for f in frames]))
    threshold = bundle.manifest.thresholds.image
    for index, frame in enumerate(frames):
        inspection = post(outputs, index, frame.shape[:2])
        # same raw score as the exporting framework computed (nearest x2 then area /2 gives the same pixels back)
        assert inspection.raw_score == pytest.approx(expected_scores[index], abs=1e-3)
        assert inspection.verdict == ("defect" if expected_scores[index] > threshold else "ok")
        assert (inspection.score > 0.5) == (inspection.verdict == "defect")
        for region in inspection.regions:
            x, y, w, h = region.bbox
            assert (
                0 <= x < frame.shape[1]
                and 0 <= y < frame.shape[0]
                and x + w <= frame.shape[1]
                and y + h <= frame.shape[0]
            )
        validate_result(_result(bundle, inspection, seq=index))
    verdicts = [post(outputs, i, f.shape[:2]).verdict for i, f in enumerate(frames)]
    assert "ok" in verdicts and "defect" in verdicts, "the reference set holds good and defective parts"


def test_defect_class_is_best_defect_class_and_regions_in_frame_pixels(bundle):
    names = bundle.manifest.class_names
    post = PostProcessor(bundle.manifest, from_bundle_defaults(bundle, camera="cam"))
    h, w = bundle.manifest.input_height, bundle.manifest.input_width
    heat = np.zeros((1, 1, h, w), np.float32)
    heat[0, 0, 10:20, 30:40] = 0.95  # 10x10 px blob at model resolution
    logits = np.zeros((1, len(names)), np.float32)
    logits[0, 0], logits[0, 2] = 5.0, 3.0  # "good" is the argmax, class 2 the best defect
    outputs = ModelOutputs(np.array([0.99], np.float32), heat, logits)
    inspection = post(outputs, 0, (h * 3, w * 3))
    assert inspection.verdict == "defect"
    assert inspection.class_name == names[2]
    probabilities = np.exp(logits[0]) / np.exp(logits[0]).sum()
    assert inspection.class_probability == pytest.approx(probabilities[2], rel=1e-5)
    [region] = inspection.regions
    assert region.bbox == [90, 30, 30, 30] and region.area == 900  # scaled x3 to frame pixels
    assert region.peak == pytest.approx(0.95)
    ok = post(ModelOutputs(np.array([0.0], np.float32), np.zeros_like(heat), logits), 0, (h, w))
    assert ok.verdict == "ok" and ok.class_name == "good" and ok.regions == [] and ok.score == 0.0


def test_aoi_removes_regions_outside_it(bundle, tmp_path):
    h, w = bundle.manifest.input_height, bundle.manifest.input_width
    frame_hw = (h * SCALE, w * SCALE)
    aoi = np.zeros(frame_hw, np.uint8)
    aoi[:, : frame_hw[1] // 2] = 255  # left half counts
    cv2.imwrite(str(tmp_path / "aoi.png"), aoi)
    post = PostProcessor(bundle.manifest, from_bundle_defaults(bundle, camera="cam", aoi=tmp_path / "aoi.png"))
    heat = np.zeros((1, 1, h, w), np.float32)
    heat[0, 0, 5:15, 5:15] = 0.9  # inside the AOI
    heat[0, 0, 40:50, 45:55] = 1.0  # outside: must not be reported
    outputs = ModelOutputs(
        np.array([0.9], np.float32), heat, np.zeros((1, len(bundle.manifest.class_names)), np.float32)
    )
    inspection = post(outputs, 0, frame_hw)
    assert [r.bbox for r in inspection.regions] == [[10, 10, 20, 20]]
    assert inspection.anomaly_map[45, 50] == 0.0


def test_model_without_classification_head(bundle):
    manifest = copy.deepcopy(bundle.manifest)
    manifest.class_names = ["good"]
    post = PostProcessor(manifest, from_bundle_defaults(bundle, camera="cam"))
    h, w = manifest.input_height, manifest.input_width
    outputs = ModelOutputs(
        np.array([0.99], np.float32), np.zeros((1, 1, h, w), np.float32), np.zeros((1, 1), np.float32)
    )
    inspection = post(outputs, 0, (h, w))
    assert (inspection.class_name, inspection.class_probability) == ("defect", None)
    validate_result(_result(bundle, inspection))


def test_schema_rejects_malformed_results(bundle):
    post = PostProcessor(bundle.manifest, from_bundle_defaults(bundle, camera="cam"))
    h, w = bundle.manifest.input_height, bundle.manifest.input_width
    outputs = ModelOutputs(
        np.array([0.5], np.float32), np.zeros((1, 1, h, w), np.float32), np.zeros((1, 3), np.float32)
    )
    good = _result(bundle, post(outputs, 0, (h, w)))
    validate_result(good)
    for mutate in (
        lambda r: r.update(verdict="maybe"),
        lambda r: r.pop("latency_ms"),
        lambda r: r.update(score=1.5),
        lambda r: r["model"].update(sha256="short"),
        lambda r: r.update(unexpected=1),
        lambda r: r.update(captured_at="yesterday"),
    ):
        bad = copy.deepcopy(good)
        mutate(bad)
        with pytest.raises(jsonschema.ValidationError):
            validate_result(bad)


def test_overlay_is_labelled_with_verdict_banner_and_region_boxes():
    from onen.edge.overlay import render_overlay
    from onen.edge.regions import Region

    frame = np.full((120, 160, 3), 90, np.uint8)
    heat = np.zeros((30, 40), np.float32)
    region = Region([60, 60, 40, 30], 1200, 0.9)
    plain = render_overlay(frame, heat, [region])
    labelled = render_overlay(frame, heat, [region], label="DEFECT 0.912/0.50 scratch 0.83 regions 1", defect=True)
    banner = labelled[:12]
    assert (banner[..., 2] > 150).mean() > 0.5 and (banner == 255).all(axis=2).any()  # red banner, white text
    assert not np.array_equal(plain[:12], banner)
    assert (labelled[60, 60:100] == 255).all() and (labelled[60:90, 60] == 255).all()  # box at the region
    assert (plain[70, 80] != 255).any()  # inside is not painted


def test_result_schema_is_found_from_any_working_directory(tmp_path):
    """The schema is package data of onen.edge: a station running outside the repository finds it too."""
    import os
    import subprocess
    import sys

    code = "from onen.edge.result import result_schema; print(result_schema()['title'])"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the repo root must not be on the path
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "onen inspection result"
