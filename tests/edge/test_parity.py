"""Parity check on the real tiny bundle with ONNX Runtime, and failure on a deliberately perturbed reference."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from onen.edge.backends.onnxruntime_backend import OnnxRuntimeBackend
from onen.edge.bundle import Manifest, load_bundle, write_manifest
from onen.edge.errors import BundleError
from onen.edge.parity import check_reference


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    """A private copy of the session's tiny bundle that a test may modify."""
    return shutil.copytree(tiny_bundle, tmp_path / "bundle")


def rewrite_manifest(bundle_dir, change):
    manifest = Manifest.from_dict(json.loads((bundle_dir / "manifest.json").read_text()))
    change(manifest)
    write_manifest(bundle_dir, manifest)


def test_onnxruntime_reproduces_the_bundle_references(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    report = check_reference(OnnxRuntimeBackend(bundle), bundle)
    assert report.passed, "\n".join(report.summary_lines())
    assert len(report.comparisons) == len(bundle.manifest.reference) >= 1
    assert report.max_score_diff < 1e-3 and report.max_map_mean_abs_diff < 1e-3
    assert all(c.same_class for c in report.comparisons)
    data = report.to_dict()
    assert (
        data["passed"] is True
        and data["backend"] == "onnxruntime"
        and len(data["comparisons"]) == len(report.comparisons)
    )
    assert report.summary_lines()[-1].startswith("parity PASSED on onnxruntime")


def test_perturbed_reference_score_fails(bundle_copy):
    def shift_score(manifest):
        manifest.reference[0].score += 0.05

    rewrite_manifest(bundle_copy, shift_score)
    bundle = load_bundle(bundle_copy)
    report = check_reference(OnnxRuntimeBackend(bundle), bundle)
    assert not report.passed
    first, *others = report.comparisons
    assert not first.passed and first.score_diff == pytest.approx(0.05, abs=1e-3)
    assert all(c.passed for c in others)
    assert "FAIL" in report.summary_lines()[0] and report.summary_lines()[-1].startswith("parity FAILED")


def test_perturbed_reference_map_fails_only_beyond_tolerance(bundle_copy):
    bundle = load_bundle(bundle_copy)
    map_file = bundle_copy / bundle.manifest.reference[1].anomaly_map_file
    original = np.load(map_file)
    np.save(map_file, np.clip(original + 0.02, 0.0, None).astype(np.float32))
    rewrite_manifest(bundle_copy, lambda manifest: None)
    bundle = load_bundle(bundle_copy)
    backend = OnnxRuntimeBackend(bundle)
    report = check_reference(backend, bundle)
    assert not report.passed and not report.comparisons[1].passed
    assert report.comparisons[1].map_mean_abs_diff == pytest.approx(0.02, abs=2e-3)
    # a looser map tolerance accepts the same outputs
    assert check_reference(backend, bundle, map_mean_tol=0.05).passed


def test_bundle_without_references_or_with_a_missing_map_is_a_clear_error(bundle_copy):
    bundle = load_bundle(bundle_copy)
    missing = bundle_copy / bundle.manifest.reference[0].anomaly_map_file
    missing.unlink()
    rewrite_manifest(bundle_copy, lambda manifest: None)
    bundle = load_bundle(bundle_copy)
    with pytest.raises(BundleError, match=r"000_map\.npy: reference anomaly map listed in the manifest is missing"):
        check_reference(OnnxRuntimeBackend(bundle), bundle)
    rewrite_manifest(bundle_copy, lambda manifest: manifest.reference.clear())
    bundle = load_bundle(bundle_copy)
    with pytest.raises(BundleError, match="manifest has no reference images"):
        check_reference(OnnxRuntimeBackend(bundle), bundle)
