"""Export: ONNX Runtime reproduces torch (score and map within 1e-4), one self-contained opset>=17 file, uint8 NHWC
input, dynamic batch, manifest hashes; and the small recipe's bundle passes the same checks from its own references."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from onen.edge.bundle import load_bundle
from onen.edge.errors import BundleError
from onen.edge.images import read_image_rgb
from onen.train.export import ExportInfo, default_thresholds, export_model, torch_outputs
from onen.train.models.onen_vit import OneNConfig, OneNStudent


def _session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.mark.slow  # a dynamo export takes 4-12 s here
@pytest.mark.parametrize("num_classes", [1, 3])
def test_onnx_runtime_matches_torch(tmp_path, num_classes):
    torch.manual_seed(num_classes)
    model = OneNStudent(
        OneNConfig(num_classes=num_classes, input_height=48, input_width=64, patch=16, dim=32, depth=2, heads=2)
    ).eval()
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    info = ExportInfo(
        name="t",
        class_names=["good"] + [f"d{i}" for i in range(num_classes - 1)],
        input_height=48,
        input_width=64,
        training={"data": "random"},
    )
    bundle_dir = export_model(model, info, tmp_path / "bundle", reference)

    proto = onnx.load(str(bundle_dir / "model.onnx"))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [
        p.name for p in bundle_dir.iterdir() if p.suffix not in (".onnx", ".json") and p.is_file()
    ] == []  # no external data
    graph_input = proto.graph.input[0]
    assert graph_input.name == "image" and graph_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [48, 64, 3]
    assert [o.name for o in proto.graph.output] == ["score", "anomaly_map", "class_logits"]

    images = rng.integers(0, 256, (5, 48, 64, 3), dtype=np.uint8)  # other images and another batch size
    expected = torch_outputs(model, images)
    got = _session(bundle_dir / "model.onnx").run(None, {"image": images})
    assert got[0].shape == (5,) and got[1].shape == (5, 1, 48, 64) and got[2].shape == (5, num_classes)
    assert np.abs(got[0] - expected[0]).max() <= 1e-4
    assert np.abs(got[1] - expected[1]).max() <= 1e-4
    assert np.abs(got[2] - expected[2]).max() <= 1e-4

    bundle = load_bundle(bundle_dir)  # verifies every sha256
    assert set(bundle.manifest.files) >= {"model.onnx", "reference/000.png", "reference/000_map.npy"}
    assert bundle.manifest.family == "onen-student" and bundle.manifest.normalisation["in_graph"] is True
    assert bundle.manifest.metrics["export_parity"]["map_max_abs_diff"] <= 1e-4


@pytest.mark.slow  # a dynamo export takes 4-12 s here
@pytest.mark.parametrize("stem", ["lite0", "conv"])
def test_onnx_runtime_matches_torch_with_fine_map_and_pooled_class_head(tmp_path, stem):
    """The fine map head (here with non-zero weights, as after training) and the map-pooled class head export
    exactly."""
    torch.manual_seed(5)
    cfg = OneNConfig(
        num_classes=4,
        input_height=64,
        input_width=64,
        patch=16,
        dim=32,
        depth=2,
        heads=2,
        stem=stem,
    )
    model = OneNStudent(cfg).eval()
    torch.nn.init.normal_(model.fine_head.net[-1].weight, std=0.3)
    rng = np.random.default_rng(1)
    info = ExportInfo(name="t", class_names=["good", "a", "b", "c"], input_height=64, input_width=64)
    bundle_dir = export_model(model, info, tmp_path / "bundle", rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8))
    images = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    expected = torch_outputs(model, images)
    got = _session(bundle_dir / "model.onnx").run(None, {"image": images})
    for ours, theirs in zip(got, expected, strict=True):
        assert ours.shape == theirs.shape
        assert np.abs(ours - theirs).max() <= 1e-4
    assert float(np.abs(expected[1] - expected[1].mean()).max()) > 1e-3  # a map that is not flat


def test_export_refuses_wrong_reference_size_and_foreign_folder(tmp_path):
    model = OneNStudent(OneNConfig(num_classes=2, input_height=32, input_width=32, patch=16, dim=16, depth=1, heads=2))
    info = ExportInfo(name="t", class_names=["good", "x"], input_height=32, input_width=32)
    with pytest.raises(BundleError, match="reference images"):
        export_model(model, info, tmp_path / "b", np.zeros((1, 16, 16, 3), np.uint8))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(BundleError, match="not a bundle"):
        export_model(model, info, tmp_path / "other", np.zeros((1, 32, 32, 3), np.uint8))


def test_default_thresholds_sit_between_good_and_defective():
    good = np.linspace(0.01, 0.1, 50)
    thresholds, normalisation = default_thresholds(
        good, np.full((5, 1, 8, 8), 0.02), defect_scores=np.array([0.8, 0.9]), defect_pixels=np.array([0.7, 0.9])
    )
    assert 0.1 < thresholds.image < 0.8
    assert 0.02 < thresholds.pixel < 0.7
    assert normalisation.raw_low < normalisation.raw_threshold == thresholds.image < normalisation.raw_high


def test_small_bundle_reference_outputs_reproduce_in_onnx_runtime(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    manifest = bundle.manifest
    assert manifest.class_names[0] == "good" and len(manifest.reference) >= 2
    session = _session(bundle.model_path)
    for reference in manifest.reference:
        image = read_image_rgb(bundle.path / reference.file)
        assert image.shape == (manifest.input_height, manifest.input_width, 3)
        score, anomaly_map, logits = session.run(None, {"image": image[None]})
        expected_map = np.load(bundle.path / reference.anomaly_map_file)
        assert abs(float(score[0]) - reference.score) <= 1e-4
        assert np.abs(anomaly_map[0, 0] - expected_map).max() <= 1e-4
        assert np.allclose(logits[0], reference.class_logits, atol=1e-4)
    training = json.loads((bundle.path / "manifest.json").read_text())["training"]
    # the small recipe is `onen train` with train/recipe_files/small.yaml, exported as `onen export` does
    assert training["config"]["stem"] == "conv" and sum(training["split_counts"]["train"].values()) > 0
    # the small recipe really learnt: defective references score above the image threshold, good ones below
    scores = [r.score for r in manifest.reference]
    assert min(scores[2:]) > manifest.thresholds.image > max(scores[:2])


@pytest.mark.slow  # a dynamo export takes 4-12 s here
def test_export_over_a_bundle_needs_force_and_leaves_no_stale_signature(tmp_path):
    """Issue 13 item 4: no silent overwrite; --force replaces every file; a mismatch names the key and the file."""
    from onen.edge.updates import (
        SignatureError,
        generate_keys,
        key_fingerprint,
        load_private_key,
        load_public_key,
        sign_bundle,
        verify_bundle_signature,
    )

    model = OneNStudent(OneNConfig(num_classes=2, input_height=32, input_width=32, patch=16, dim=16, depth=1, heads=2))
    info = ExportInfo(name="t", class_names=["good", "x"], input_height=32, input_width=32)
    images = np.zeros((1, 32, 32, 3), np.uint8)
    bundle = export_model(model, info, tmp_path / "bundle", images)
    private, public = generate_keys(tmp_path / "keys")
    sign_bundle(bundle, load_private_key(private))
    (bundle / "engines").mkdir()
    with pytest.raises(BundleError, match="already exists.*--force"):
        export_model(model, info, bundle, images)
    assert (bundle / "signature").is_file()  # refused: nothing touched
    info.version = "2"
    export_model(model, info, bundle, images, force=True)
    assert not (bundle / "signature").exists() and not (bundle / "engines").exists()
    assert load_bundle(bundle).manifest.version == "2"
    # A signature left from another manifest: the message names the signature file, the manifest and the key.
    sign_bundle(bundle, load_private_key(private))
    signature = (bundle / "signature").read_text()
    info.version = "3"
    export_model(model, info, bundle, images, force=True)
    (bundle / "signature").write_text(signature)
    key = load_public_key(public)
    with pytest.raises(SignatureError) as caught:
        verify_bundle_signature(bundle, [key])
    message = str(caught.value)
    assert (
        str(bundle / "signature") in message
        and str(bundle / "manifest.json") in message
        and key_fingerprint(key) in message
    )


@pytest.mark.slow  # a dynamo export takes 4-12 s here
def test_a_bundle_trained_without_class_labels_publishes_only_defect(tmp_path):
    """Issue 13 item 5: `--supervision none` -> manifest classes_supervised false -> class 'defect', no probability."""
    from onen.edge.calibration_file import from_bundle_defaults
    from onen.edge.postprocess import PostProcessor

    model = OneNStudent(OneNConfig(num_classes=3, input_height=32, input_width=32, patch=16, dim=16, depth=1, heads=2))
    logits = np.array([0.1, 3.0, 0.2], np.float32)
    for supervision, expected in (("none", ("defect", None)), ("full", "scratch")):
        info = ExportInfo(
            name="t",
            class_names=["good", "scratch", "spot"],
            input_height=32,
            input_width=32,
            training={"supervision": supervision},
        )
        bundle = load_bundle(export_model(model, info, tmp_path / supervision, np.zeros((1, 32, 32, 3), np.uint8)))
        assert bundle.manifest.classes_supervised is (supervision != "none")
        assert json.loads((bundle.path / "manifest.json").read_text())["classes_supervised"] is (supervision != "none")
        name, probability = PostProcessor(bundle.manifest, from_bundle_defaults(bundle)).classify(
            logits, is_defect=True
        )
        if supervision == "none":
            assert (name, probability) == expected
        else:
            assert name == expected and 0 < probability <= 1


def test_the_exported_graph_carries_no_source_paths_or_trace_metadata(tiny_bundle):
    """The dynamo exporter records a stack trace per node: stripped, so a bundle does not depend on (or leak)
    the checkout's path and the same model exported elsewhere is the same file."""
    import onen.train

    path = load_bundle(tiny_bundle).model_path
    raw = path.read_bytes()
    source_root = str(Path(onen.train.__file__).resolve().parent.parent).encode()
    assert source_root not in raw and b"stack_trace" not in raw
    proto = onnx.load(str(path))
    assert all(not node.metadata_props and not node.doc_string for node in proto.graph.node)
