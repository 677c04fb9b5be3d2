"""Calibration: threshold statistics, pixel/normalisation fits, the calibration file, and `onen calibrate`
end to end on the real tiny bundle (ONNX Runtime), checked on fresh good images."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil

import cv2
import numpy as np
import pytest
import yaml
from scipy import stats as scipy_stats
from support.calibration import write_calibration
from support.prebuilt import tiny_set

from onen.calibration.int8_selection import select_int8_images, write_list
from onen.calibration.normalisation import fit_normalisation
from onen.calibration.pixel import count_images_with_regions, fit_pixel_calibration
from onen.calibration.runner import FrameSource, open_backend, run_source
from onen.calibration.stats import clopper_pearson, min_samples_for_zero_failures, upper_bound
from onen.calibration.thresholds import TooFewGoodImages, f1_optimal_threshold, frr_threshold, operating_point
from onen.edge.binomial import binom_cdf
from onen.edge.bundle import Manifest, load_bundle, write_manifest
from onen.edge.calibration_file import from_bundle_defaults, load_calibration, save_calibration
from onen.edge.calibration_view import CalibrationError
from onen.edge.cli import main
from onen.edge.engines.int8_calibration import list_calibration_images
from onen.edge.errors import DataError, OnenError

# --- exact statistics ------------------------------------------------------------------------------------


def test_binomial_helpers_match_scipy():
    for k, n, p in [(0, 598, 0.005), (3, 100, 0.02), (40, 5000, 0.01), (250, 1000, 0.3)]:
        assert binom_cdf(k, n, p) == pytest.approx(scipy_stats.binom.cdf(k, n, p), rel=1e-9, abs=1e-300)
    low, high = clopper_pearson(3, 100, 0.95)
    assert low == pytest.approx(scipy_stats.beta.ppf(0.025, 3, 98), rel=1e-6)
    assert high == pytest.approx(scipy_stats.beta.ppf(0.975, 4, 97), rel=1e-6)
    assert upper_bound(0, 300, 0.95) == pytest.approx(1 - 0.05 ** (1 / 300), rel=1e-6)


def test_needed_good_images_is_exact():
    need = min_samples_for_zero_failures(0.005, 0.95)
    assert need == 598 == math.ceil(math.log(0.05) / math.log(0.995))
    assert 0.995**need <= 0.05 < 0.995 ** (need - 1)
    with pytest.raises(TooFewGoodImages, match=r"597 good image.*at least 598 good images.*add 1 more"):
        frr_threshold(np.random.default_rng(0).normal(size=597), 0.005, 0.95)
    frr_threshold(np.random.default_rng(0).normal(size=598), 0.005, 0.95)


@pytest.mark.parametrize("n, target, confidence", [(400, 0.01, 0.9), (1500, 0.005, 0.95)])
def test_true_frr_exceeds_target_no_more_often_than_promised(n, target, confidence):
    """Over many calibrations on normal scores, P(true FRR > target) <= 1 - confidence (and is not far below:
    it equals the exact binomial probability of the chosen rank)."""
    rng = np.random.default_rng(1)
    trials = 1500
    exceeded = 0
    rank = None
    for _ in range(trials):
        chosen = frr_threshold(rng.normal(size=n), target, confidence)
        rank = chosen.rank
        true_frr = 0.5 * math.erfc(chosen.threshold / math.sqrt(2))  # 1 - Phi(t)
        exceeded += true_frr > target
        assert chosen.frr_upper_bound <= target + 1e-12
    promised = scipy_stats.binom.cdf(rank - 1, n, target)
    assert promised <= 1 - confidence
    slack = 3.5 * math.sqrt(promised * (1 - promised) / trials)
    assert abs(exceeded / trials - promised) <= slack, (exceeded / trials, promised)


def test_fresh_samples_stay_within_the_bound_across_seeds():
    """Calibrate on 700 skewed (gamma) good scores, measure the FRR on 200 000 fresh ones; per seed the fresh
    FRR stays under the stated bound except in about 1 - confidence of the seeds."""
    above = []
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        chosen = frr_threshold(rng.gamma(2.0, 1.0, size=700), 0.005, 0.95)
        fresh = rng.gamma(2.0, 1.0, size=200_000)
        above.append(float(np.mean(fresh > chosen.threshold)) > chosen.frr_upper_bound)
    assert sum(above) <= 3  # expected ~1 of 20 at 95 %; 3 or fewer has probability > 0.98


def test_ties_and_bad_scores():
    tied = np.concatenate([np.zeros(990), np.ones(10)])
    chosen = frr_threshold(tied, 0.02, 0.9)
    assert chosen.rejects_in_sample <= chosen.rank - 1
    with pytest.raises(DataError, match="NaN"):
        frr_threshold(np.array([0.1, np.nan] * 400), 0.01, 0.9)
    with pytest.raises(DataError, match="target-frr"):
        frr_threshold(np.zeros(10), 0.0, 0.9)


def test_escape_rate_and_f1_alternative():
    rng = np.random.default_rng(3)
    good, defect = rng.normal(0, 1, 800), rng.normal(3, 1, 200)
    chosen = frr_threshold(good, 0.01, 0.9)
    at = operating_point(chosen.threshold, good, defect, 0.9)
    assert at.escape.count == int(np.sum(defect <= chosen.threshold))
    assert at.escape.low <= at.escape.rate <= at.escape.high
    best = f1_optimal_threshold(good, defect)
    alt = operating_point(best, good, defect, 0.9)
    grid = np.linspace(-2, 6, 400)
    f1_grid = [2 * np.sum(defect > t) / (np.sum(defect > t) + len(defect) + np.sum(good > t)) for t in grid]
    assert alt.f1 >= max(f1_grid) - 1e-12
    separable = f1_optimal_threshold(np.array([0.1, 0.2]), np.array([0.8, 0.9]))
    assert 0.2 <= separable < 0.8


def test_normalisation_puts_threshold_at_half_and_stays_in_range():
    rng = np.random.default_rng(4)
    good, defect = rng.uniform(0.0, 0.3, 500), rng.uniform(0.25, 0.9, 50)
    threshold = 0.28
    for norm in (fit_normalisation(threshold, good, defect), fit_normalisation(threshold, good)):
        from onen.edge.calibration_view import normalise_score

        assert normalise_score(norm, threshold) == pytest.approx(0.5)
        values = normalise_score(norm, np.linspace(-5, 5, 1001))
        assert values.min() >= 0.0 and values.max() <= 1.0 and np.all(np.diff(values) >= 0)
        assert normalise_score(norm, threshold + 1e-4) > 0.5 > normalise_score(norm, threshold - 1e-4)
    assert normalise_score(fit_normalisation(threshold, good, defect), defect.max()) == pytest.approx(1.0)
    degenerate = fit_normalisation(0.5, np.full(100, 0.5))
    assert degenerate.raw_low < 0.5 < degenerate.raw_high


def test_pixel_calibration_leaves_good_images_without_regions():
    rng = np.random.default_rng(5)
    good = rng.uniform(0, 0.3, (60, 48, 48)).astype(np.float32)
    good[np.arange(60), rng.integers(0, 48, 60), rng.integers(0, 48, 60)] = 0.6  # single hot pixels
    defect = rng.uniform(0, 0.3, (20, 48, 48)).astype(np.float32)
    defect[:, 20:26, 20:26] = 0.9
    aoi = np.ones((48, 48), bool)
    aoi[:, :4] = False
    good[:, :, :4] = 1.0  # outside the AOI: must not matter
    result = fit_pixel_calibration(good, aoi, defect)
    assert result.good_images_with_regions == 0
    assert count_images_with_regions(good, aoi, result.pixel_threshold, result.min_region_area) == 0
    assert result.defect_images_with_regions == 20
    assert result.pixel_threshold < 0.9
    streamed = fit_pixel_calibration(iter(good), aoi, defect)  # one map at a time, as calibrate feeds it
    assert streamed == result
    assert result.localisation == "regions" and result.pixel_threshold < result.map_max


def test_pixel_threshold_is_never_above_the_map_maximum():
    """One good image saturating its map (the 1.045 of issue 13) falls back to the FRR rank; when even that
    finds no defect region, localisation is off, stated, and the threshold still lies within the map's range."""
    rng = np.random.default_rng(6)
    good = rng.uniform(0, 0.3, (200, 32, 32)).astype(np.float32)
    good[0, 5:15, 5:15] = 1.0  # one good part with a saturated blob
    defect = rng.uniform(0, 0.3, (10, 32, 32)).astype(np.float32)
    defect[:, 20:26, 20:26] = 0.95
    strict = fit_pixel_calibration(good, None, defect, good_rank=1)
    assert strict.localisation == "off" and strict.pixel_threshold <= strict.map_max == pytest.approx(1.0)
    assert "does not localise" in strict.reason and strict.defect_images_with_regions == 0
    fallback = fit_pixel_calibration(good, None, defect, good_rank=3)  # the image threshold allows 2 good above it
    assert fallback.localisation == "regions" and fallback.pixel_threshold < 0.95
    assert fallback.defect_images_with_regions == 10
    assert count_images_with_regions(good, None, fallback.pixel_threshold, fallback.min_region_area) <= 2
    # With ground-truth masks, a region must lie inside the mask: a mask elsewhere finds none -> off.
    elsewhere = np.zeros((32, 32), bool)
    elsewhere[0:4, 0:4] = True
    inside = np.zeros((32, 32), bool)
    inside[18:28, 18:28] = True
    assert (
        fit_pixel_calibration(good, None, defect, good_rank=3, defect_masks=[inside] * 10).defect_images_with_regions
        == 10
    )
    assert fit_pixel_calibration(good, None, defect, good_rank=3, defect_masks=[elsewhere] * 10).localisation == "off"
    # No defect images: the rank fallback must still stay below the map's maximum.
    assert fit_pixel_calibration(good, None, None, good_rank=3).pixel_threshold < 1.0


def test_calibration_and_its_edge_files_never_import_torch():
    import subprocess
    import sys

    modules = [
        "onen.edge.calibration_file",
        "onen.edge.rectify",
        "onen.calibration.camera",
        "onen.calibration.aoi",
        "onen.calibration.int8_selection",
        "onen.calibration.push",
        "onen.calibration.verify",
        "onen.calibration.commands.calibrate",
        "onen.calibration.commands.aoi",
    ]
    code = f"import sys; import {', '.join(modules)}; print('torch' in sys.modules or 'train' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


# --- the calibration file ------------------------------------------------------------------------------


def _fake_bundle(path, name, payload):
    """A bundle with a stand-in model file: enough for sha256 checks, which never run the model."""
    path.mkdir()
    (path / "model.onnx").write_bytes(payload)
    write_manifest(
        path,
        Manifest(name=name, version="3", family="test", input_height=32, input_width=32, class_names=["good", "dent"]),
    )
    return load_bundle(path)


def test_calibration_file_round_trip_and_refusals(tmp_path):
    bundle_a = _fake_bundle(tmp_path / "a", "widget-model", b"model a")
    bundle_b = _fake_bundle(tmp_path / "b", "other-model", b"model b")
    aoi = np.zeros((40, 60), np.uint8)
    aoi[5:35, 5:55] = 255
    cv2.imwrite(str(tmp_path / "aoi.png"), aoi)
    path = write_calibration(
        tmp_path / "cam1.yaml", bundle_a, aoi="aoi.png", rectification={"corners": [[5, 5], [54, 5], [54, 34], [5, 34]]}
    )
    calibration = load_calibration(path, bundle_a)
    assert (
        calibration.normalise(0.3) == pytest.approx(0.5)
        and calibration.is_defect(0.31)
        and not calibration.is_defect(0.3)
    )
    assert calibration.prepare(np.zeros((40, 60, 3), np.uint8)).shape == (30, 50, 3)
    assert calibration.aoi_for_input(32, 32).all()  # the rectified part lies inside the AOI
    saved = save_calibration(calibration, tmp_path / "again" / "cam1.yaml")
    assert load_calibration(saved, bundle_a).aoi.resolve() == (tmp_path / "aoi.png").resolve()

    with pytest.raises(
        CalibrationError, match=r"cam1.yaml: made for bundle 'widget-model' version '3'.*runs bundle 'other-model'"
    ):
        load_calibration(path, bundle_b)
    with pytest.raises(CalibrationError, match="AOI is 60x40 but camera 'cam1' delivers 80x40"):
        calibration.prepare(np.zeros((40, 80, 3), np.uint8))
    calibration.aoi = None
    calibration.load_aoi()
    with pytest.raises(
        CalibrationError, match="cam1.yaml: rectification corners .* outside the 40x30 frames of camera 'cam1'"
    ):
        calibration.prepare(np.zeros((30, 40, 3), np.uint8))
    bad_cases = {
        "min_region_area": ({"min_region_area": 0}, "key 'min_region_area'"),
        "threshold": ({"image_threshold": "high"}, "key 'image_threshold': expected a number"),
        "order": (
            {"normalisation": {"raw_low": 0.5, "raw_threshold": 0.3, "raw_high": 0.9}},
            "raw_low < raw_threshold < raw_high",
        ),
        "aoi": ({"aoi": "missing.png"}, "key 'aoi': mask file .*missing.png does not exist"),
        "typo": ({"pixel_treshold": 0.5}, "unknown key.*pixel_treshold"),
        "localisation": ({"localisation": "maybe"}, "key 'localisation': expected one of regions, off"),
    }
    for name, (override, message) in bad_cases.items():
        with pytest.raises(CalibrationError, match=message):
            load_calibration(write_calibration(tmp_path / f"{name}.yaml", bundle_a, **override), bundle_a)
    (tmp_path / "broken.yaml").write_text("camera: [unclosed\n")
    with pytest.raises(CalibrationError, match="broken.yaml: invalid YAML at line"):
        load_calibration(tmp_path / "broken.yaml", bundle_a)
    defaults = from_bundle_defaults(bundle_a, "cam9")
    assert (
        defaults.normalise(defaults.image_threshold) == pytest.approx(0.5)
        and defaults.bundle_sha256 == bundle_a.onnx_sha256
    )


# --- sources ---------------------------------------------------------------------------------------------


def test_sources_empty_folder_unreadable_image_and_video(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no images found"):
        FrameSource(tmp_path / "empty")
    (tmp_path / "mixed").mkdir()
    cv2.imwrite(str(tmp_path / "mixed" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "mixed" / "b.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(DataError, match="b.png: cannot decode"):
        list(FrameSource(tmp_path / "mixed"))
    video = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for index in range(10):
        writer.write(np.full((48, 64, 3), index * 20, np.uint8))
    writer.release()
    frames = list(FrameSource(video, every=3))
    assert [name.split("#")[1] for name, _ in frames] == ["frame=0", "frame=3", "frame=6", "frame=9"]
    assert frames[0][1].shape == (48, 64, 3)
    with pytest.raises(DataError, match="not a folder and not a video"):
        FrameSource(tmp_path / "mixed" / "a.png")


def test_folders_skip_masks_beside_images_and_follow_links(tmp_path):
    tiles = tmp_path / "MT_Crack" / "Imgs"
    tiles.mkdir(parents=True)
    for name in ("t1.jpg", "t1.png", "t2.jpg", "t2.png", "x_mask.png", "plain.png"):
        cv2.imwrite(str(tiles / name), np.zeros((8, 8), np.uint8))
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "crack").symlink_to(tiles, target_is_directory=True)
    names = sorted(name.split("/")[-1] for name, _ in FrameSource(tmp_path / "set"))
    assert names == ["plain.png", "t1.jpg", "t2.jpg"]


def test_int8_selection_is_stratified_and_reproducible(tmp_path):
    for folder, count in (("good/day1", 30), ("good/day2", 10), ("defect/spot", 8), ("defect/scratch", 4)):
        (tmp_path / folder).mkdir(parents=True)
        for index in range(count):
            cv2.imwrite(str(tmp_path / folder / f"{index:03d}.png"), np.full((8, 8), index, np.uint8))
    selection = select_int8_images(tmp_path / "good", tmp_path / "defect", count=20, defect_fraction=0.25, seed=7)
    assert len(selection.paths) == len(set(selection.paths)) == 20
    assert selection.per_stratum == {"good/day1": 11, "good/day2": 4, "defect/scratch": 2, "defect/spot": 3}
    listed = list_calibration_images(write_list(selection, tmp_path / "int8.txt"))
    assert [p.resolve() for p in listed] == [p.resolve() for p in selection.paths]
    again = select_int8_images(tmp_path / "good", tmp_path / "defect", count=20, defect_fraction=0.25, seed=7)
    assert again.paths == selection.paths
    # A rectifying camera: the list names rectified copies, as the engine will see them.
    (tmp_path / "cam.yaml").write_text(yaml.safe_dump({"rectification": {"corners": [[1, 1], [6, 1], [6, 5], [1, 5]]}}))
    assert (
        main(
            [
                "int8-images",
                "--good",
                str(tmp_path / "good"),
                "--defect",
                str(tmp_path / "defect"),
                "--count",
                "10",
                "--calibration",
                str(tmp_path / "cam.yaml"),
                "--out",
                str(tmp_path / "lists" / "int8.txt"),
            ]
        )
        == 0
    )
    copies = list_calibration_images(tmp_path / "lists" / "int8.txt")
    assert len(copies) == 10 and all(p.parent.name == "int8.images" for p in copies)
    assert cv2.imread(str(copies[0])).shape == (5, 6, 3)


# --- end to end on the real tiny bundle -------------------------------------------------------------------

# Camera view: the 64x64 tiny part seen at an angle inside a 120x100 frame with a cluttered background.
FRAME_WH = (120, 100)
CORNERS = [[20, 12], [100, 18], [104, 90], [14, 84]]


def _camera_view(image_or_mask: np.ndarray, background: np.ndarray, nearest: bool = False) -> np.ndarray:
    upright = np.float32([[0, 0], [63, 0], [63, 63], [0, 63]])
    to_camera = cv2.getPerspectiveTransform(upright, np.float32(CORNERS))
    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    warped = cv2.warpPerspective(image_or_mask, to_camera, FRAME_WH, flags=flags)
    inside = cv2.warpPerspective(np.ones((64, 64), np.uint8), to_camera, FRAME_WH, flags=cv2.INTER_NEAREST).astype(bool)
    out = background.copy()
    out[inside] = warped[inside]
    return out


def _write_camera_images(folder, seed, count, label):
    """Images generated like the tiny bundle's training data, as the tilted camera sees them."""
    data = tiny_set(seed, count)
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for index in np.flatnonzero(data.labels == label):
        clutter = rng.integers(0, 255, (FRAME_WH[1] // 10, FRAME_WH[0] // 10, 3)).astype(np.uint8)
        background = cv2.resize(clutter, FRAME_WH, interpolation=cv2.INTER_NEAREST)
        frame = _camera_view(data.images[index], background)
        cv2.imwrite(str(folder / f"{seed}_{index:04d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        if label == 1:  # the ground-truth mask beside the defect image, as the camera sees it
            mask = _camera_view(
                data.masks[index].astype(np.uint8) * 255, np.zeros((FRAME_WH[1], FRAME_WH[0]), np.uint8), nearest=True
            )
            cv2.imwrite(str(folder / f"{seed}_{index:04d}_mask.png"), mask)
    aoi = _camera_view(data.aoi.astype(np.uint8) * 255, np.zeros((FRAME_WH[1], FRAME_WH[0]), np.uint8), nearest=True)
    cv2.imwrite(str(folder.parent / "aoi.png"), aoi)
    return folder


def assert_report_files(report_dir, printed: str) -> None:
    """The report's pictures where matplotlib is installed; on a base install report.json alone, and one warning
    naming the extra that adds them."""
    report = json.loads((report_dir / "report.json").read_text())
    pictures = ("score_hist.png", "rates.png", "overlays.png")
    if importlib.util.find_spec("matplotlib") is not None:
        assert report["files"] == list(pictures)
        for name in pictures:
            assert (report_dir / name).stat().st_size > 0
    else:
        assert report["files"] == [] and not any((report_dir / name).exists() for name in pictures)
        assert printed.count("WARNING: report pictures") == 1
        assert "pip install 'onen-inspect[calibration]'" in printed


@pytest.mark.slow
def test_onen_calibrate_end_to_end_fresh_good_images_within_bound(tiny_bundle, tmp_path, capsys):
    good = _write_camera_images(tmp_path / "good", seed=11, count=300, label=0)  # 150 good
    defect = _write_camera_images(tmp_path / "defect", seed=12, count=80, label=1)  # 40 defective
    out = tmp_path / "calib" / "cam1.yaml"
    rectify = ",".join(str(v) for point in CORNERS for v in point)
    args = [
        "calibrate",
        "--bundle",
        str(tiny_bundle),
        "--camera",
        "cam1",
        "--good",
        str(good),
        "--defect",
        str(defect),
        "--aoi",
        str(tmp_path / "aoi.png"),
        "--rectify",
        rectify,
        "--rectify-size",
        "64x64",
        "--target-frr",
        "0.02",
        "--confidence",
        "0.9",
        "--backend",
        "onnxruntime",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "false-reject rate <=" in printed and "escape rate" in printed

    bundle = load_bundle(tiny_bundle)
    calibration = load_calibration(out, bundle)
    saved = yaml.safe_load(out.read_text())
    assert saved["bundle"]["model_sha256"] == bundle.onnx_sha256 and saved["counts"] == {"good": 150, "defect": 40}
    assert saved["rectification"]["corners"] == CORNERS and calibration.rectification.size == (64, 64)
    report_dir = tmp_path / "calib" / "cam1.report"
    assert_report_files(report_dir, printed)
    bound = calibration.statistics["frr_upper_bound"]
    assert bound <= 0.02

    # Fresh good parts, generated and seen the same way, through the calibration's own path...
    fresh = _write_camera_images(tmp_path / "fresh", seed=13, count=800, label=0)  # 400 good
    backend = open_backend(bundle, "onnxruntime")
    result = run_source(backend, calibration, FrameSource(fresh), "fresh", batch_size=32, keep_examples=0)
    rejects = int(np.sum(result.scores > calibration.image_threshold))
    fresh_frr = rejects / len(result)
    fresh_low, _ = clopper_pearson(rejects, len(result), 0.98)
    print(
        f"tiny bundle: threshold {calibration.image_threshold:.4g}, bound {bound:.3%}, fresh FRR {fresh_frr:.3%} "
        f"({rejects}/{len(result)})"
    )
    assert fresh_low <= bound, f"fresh FRR {fresh_frr:.3%} is significantly above the stated bound {bound:.3%}"
    aoi = calibration.aoi_for_input(64, 64)
    assert aoi[32, 32] and not aoi[0, 0]  # the rectified AOI: the part's centre, not its border
    assert count_images_with_regions(
        result.maps.astype(np.float32), aoi, calibration.pixel_threshold, calibration.min_region_area
    ) <= rejects + 0.05 * len(result)
    defects = run_source(backend, calibration, FrameSource(defect), "defect", batch_size=32, keep_examples=0)
    detected = np.mean(defects.scores > calibration.image_threshold)
    assert detected >= 0.5  # the tiny model is not blind to its defects...
    assert calibration.statistics["escape_rate"] == pytest.approx(1 - detected)  # ...and the file states its escapes

    # ...and through the daemon's post-processing: same verdicts, score 0.5 at the threshold.
    from onen.edge.images import read_image_rgb
    from onen.edge.postprocess import PostProcessor
    from onen.edge.preprocess import PreProcessor

    post, pre = PostProcessor(bundle.manifest, calibration), PreProcessor(bundle.manifest, calibration)
    names = result.names[:16] + defects.names[:16]
    frames = [pre.prepare(read_image_rgb(name)) for name in names]
    outputs = backend.infer(pre.to_batch(frames))
    expected = np.concatenate([result.scores[:16], defects.scores[:16]])
    for index, raw in enumerate(expected):
        inspection = post(outputs, index, frames[index].shape[:2])
        assert inspection.raw_score == pytest.approx(raw, abs=1e-5)
        assert inspection.verdict == ("defect" if raw > calibration.image_threshold else "ok")
        assert (inspection.score > 0.5) == (inspection.verdict == "defect")
    # The tiny model localises: the file says so and a defect verdict carries its region (issue 13, item 2).
    assert saved["localisation"] == "regions" and calibration.pixel_threshold < calibration.statistics["map_max"]
    defect_inspections = [post(outputs, i, frames[i].shape[:2]) for i in range(16, 32)]
    defect_verdicts = [inspection for inspection in defect_inspections if inspection.verdict == "defect"]
    assert defect_verdicts and all(inspection.localisation == "regions" for inspection in defect_verdicts)
    assert sum(1 for inspection in defect_verdicts if inspection.regions) >= 1
    assert "localisation: regions" in printed
    pixel_report = json.loads((report_dir / "report.json").read_text())["pixel"]
    assert pixel_report["defect_images"] == 40 and pixel_report["defect_images_with_regions"] >= 1  # inside their masks

    # The maintenance check agrees on the fresh parts, and catches a drifted camera (lens out of focus).
    check = [
        "check-calibration",
        "--bundle",
        str(tiny_bundle),
        "--calibration",
        str(out),
        "--backend",
        "onnxruntime",
        "--good",
    ]
    assert main(check + [str(fresh)]) == 0
    drifted = tmp_path / "drifted"
    drifted.mkdir()
    for path in sorted(fresh.iterdir())[:40]:
        cv2.imwrite(str(drifted / path.name), cv2.GaussianBlur(cv2.imread(str(path)), (0, 0), 3))
    assert main(check + [str(drifted)]) == 1
    assert "recalibrate this camera" in capsys.readouterr().out

    # Too few good images: a clear error with the number needed, before the model runs.
    few = tmp_path / "few"
    few.mkdir()
    for path in sorted(good.iterdir())[:20]:
        shutil.copy(path, few)
    assert (
        main(args[:6] + [str(few), "--target-frr", "0.02", "--confidence", "0.9", "--out", str(tmp_path / "x.yaml")])
        == 2
    )
    assert "few: 20 good image(s)" in (err := capsys.readouterr().err) and "needs at least 114 good images" in err
    other = _fake_bundle(tmp_path / "other", "other-model", b"another model")
    with pytest.raises(CalibrationError, match="made for bundle"):
        load_calibration(out, other)


def test_onen_calibrate_from_a_video_file(tiny_bundle, tmp_path, capsys):
    """Frames of a real MJPG video (OpenCV), one in two used; the report says frames are not independent."""
    import json

    data = tiny_set(31, 240)
    video = tmp_path / "good.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 64))
    for image in data.images[data.labels == 0]:
        writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    writer.release()
    out = tmp_path / "cam2.yaml"
    assert (
        main(
            [
                "calibrate",
                "--bundle",
                str(tiny_bundle),
                "--camera",
                "cam2",
                "--good",
                str(video),
                "--every",
                "2",
                "--target-frr",
                "0.05",
                "--confidence",
                "0.9",
                "--backend",
                "onnxruntime",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert yaml.safe_load(out.read_text())["counts"]["good"] == 60
    report = json.loads((tmp_path / "cam2.report" / "report.json").read_text())
    assert any("not independent" in note for note in report["notes"])
    assert report["image_threshold"]["frr_upper_bound"] <= 0.05


# --- pushing a calibration to a running station (real mosquitto) -------------------------------------------


@pytest.mark.slow
def test_push_calibration_over_mqtt_is_checked_and_installed_by_the_station(tiny_bundle, tmp_path, capsys):
    """The station side here is the part of the daemon that handles the topic: read_calibration_message, the
    calibration store, then an event. Refused pushes leave the running calibration untouched."""
    import json
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from onen.edge.calibration_file import read_calibration_message
    from onen.edge.calibration_store import CalibrationStore
    from onen.edge.local_broker import MosquittoBroker

    bundle = load_bundle(tiny_bundle)
    aoi = np.zeros((96, 96), np.uint8)
    aoi[8:88, 8:88] = 255
    cv2.imwrite(str(tmp_path / "cam1.aoi.png"), aoi)
    good_file = save_calibration(
        from_bundle_defaults(bundle, "cam1", tmp_path / "cam1.aoi.png"), tmp_path / "calib" / "cam1.yaml"
    )
    other = _fake_bundle(tmp_path / "other", "other-model", b"another model")
    wrong_file = save_calibration(from_bundle_defaults(other, "cam1"), tmp_path / "wrong" / "cam1.yaml")
    (tmp_path / "incoming").mkdir()
    store = CalibrationStore(tmp_path / "station" / "calibrations")

    with MosquittoBroker() as broker:
        config = tmp_path / "station.yaml"
        config.write_text(
            f"station: line1\nmqtt:\n  host: {broker.host}\n  port: {broker.port}\nmodels:\n  m:\n    bundle: "
            f"{tiny_bundle}\n"
            f"cameras:\n  cam1:\n    source:\n      kind: folder\n      path: {tmp_path / 'incoming'}\n    model: m\n"
            f"spool:\n  path: {tmp_path / 'spool'}\n"
        )
        station = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="onen-line1")
        ready = threading.Event()
        installed = []

        def on_message(client, userdata, message):
            try:
                data, aoi_bytes = read_calibration_message(message.payload, "cam1")
                version = store.add("cam1", data, aoi_bytes, bundle)
                store.make_current("cam1", version, "push")
                calibration = store.load(version, bundle)
                installed.append(calibration)
                client.publish(
                    "onen/line1/events",
                    json.dumps(
                        {
                            "kind": "calibration_updated",
                            "detail": {"camera": "cam1", "image_threshold": calibration.image_threshold},
                        }
                    ),
                    qos=1,
                )
            except OnenError as error:
                client.publish(
                    "onen/line1/events",
                    json.dumps({"kind": "calibration_rejected", "detail": {"camera": "cam1", "reason": str(error)}}),
                    qos=1,
                )

        station.on_connect = lambda client, *args: client.subscribe("onen/line1/cmd/+/calibration", qos=1)
        station.on_subscribe = lambda *args: ready.set()
        station.on_message = on_message
        station.connect(broker.host, broker.port)
        station.loop_start()
        try:
            assert ready.wait(10)
            assert main(["push-calibration", str(good_file), "--config", str(config), "--wait", "10"]) == 0
            assert "station answered calibration_updated" in capsys.readouterr().out
            assert len(installed) == 1 and installed[0].aoi_for_input(64, 64) is not None
            first = store.current("cam1")
            stored = store.load(first, bundle)
            assert stored.aoi.read_bytes() == (tmp_path / "cam1.aoi.png").read_bytes()

            assert main(["push-calibration", str(wrong_file), "--config", str(config), "--wait", "10"]) == 1
            answer = capsys.readouterr().out
            assert "calibration_rejected" in answer and "made for bundle 'other-model'" in answer
            assert store.current("cam1") == first and len(store.history("cam1")) == 1

            assert main(["push-calibration", str(good_file), "--config", str(config), "--wait", "10"]) == 0  # again
            assert store.current("cam1") == first and len(store.history("cam1")) == 1  # same content, same version
            # A new AOI is a new version; the first one stays as it was (previous).
            cv2.imwrite(str(tmp_path / "cam1.aoi.png"), 255 - aoi)
            assert main(["push-calibration", str(good_file), "--config", str(config), "--wait", "10"]) == 0
            assert store.previous("cam1") == first and store.current("cam1") != first
            assert (first / "aoi.png").read_bytes() == stored.aoi.read_bytes()
            assert (
                store.load(store.current("cam1"), bundle).aoi.read_bytes() == (tmp_path / "cam1.aoi.png").read_bytes()
            )
        finally:
            station.loop_stop()
            station.disconnect()
