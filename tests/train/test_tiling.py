"""Tiling (train.tiling, train.models.tiled, train.data.tiles): cut and stitch are exact without overlap and average
overlaps; the tiled model equals running each tile alone; its ONNX graph matches torch; the tile data set labels a
tile by its part of the mask and refuses weak labels."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from onen.edge.backends.onnxruntime_backend import OnnxRuntimeBackend
from onen.edge.bundle import load_bundle
from onen.edge.cli import main as onen
from onen.edge.errors import OnenError
from onen.edge.images import read_image_rgb
from onen.train.data.loading import load_resized
from onen.train.data.readers import load_index
from onen.train.data.tiles import TiledDataset
from onen.train.export import ExportInfo, export_model
from onen.train.geometry import MIN_SIDE, PIXEL_BUDGET
from onen.train.models.onen_vit import OneNConfig, OneNStudent
from onen.train.models.tiled import TiledModel
from onen.train.tiling import (
    MAX_AUTO_PIXELS,
    TileGrid,
    auto_grid,
    cut_batch,
    cut_frame,
    parse_tiles,
    resolve_tiles,
    stitch_maps,
)
from onen.train.tiny_data import write_tiny_dataset
from onen.train.trainer import TrainConfig


# ------------------------------------------------------------------------------------------ the grid
def test_parse_tiles_values_and_errors():
    assert parse_tiles("2x5") == (2, 5)
    assert parse_tiles(" 3X1 ") == (3, 1)
    assert parse_tiles("auto") == "auto"
    assert parse_tiles("off") is None and parse_tiles(None) is None
    for bad, message in (
        ("2by5", "ROWSxCOLS"),
        ("2x", "ROWSxCOLS"),
        ("-1x2", "ROWSxCOLS"),
        ("0x4", ">= 1"),
        ("1x1", "one tile"),
    ):
        with pytest.raises(OnenError, match=message):
            parse_tiles(bad)


def test_grid_for_frame_sizes_and_errors():
    grid = TileGrid.for_frame(512, 1280, 2, 5)
    assert (grid.tile_height, grid.tile_width, grid.count) == (256, 256, 10)
    assert (grid.frame_height, grid.frame_width) == (512, 1280)
    overlapping = TileGrid.for_frame(480, 1152, 2, 5, overlap=32)
    assert (overlapping.tile_height, overlapping.tile_width) == (256, 256)
    assert (overlapping.stride_y, overlapping.stride_x) == (224, 224)
    assert (overlapping.frame_height, overlapping.frame_width) == (480, 1152)
    assert TileGrid.from_dict(overlapping.as_manifest()) == overlapping
    assert overlapping.as_manifest()["stitch"] == "mean" and overlapping.as_manifest()["score"] == "max"
    assert TileGrid.for_frame(64, 112, 1, 3, overlap=16).overlap_y == 0  # one row: nothing overlaps vertically
    with pytest.raises(OnenError, match=r"frame width 1282 px is not 5 tiles"):
        TileGrid.for_frame(512, 1282, 2, 5)
    with pytest.raises(OnenError, match="smaller than the tile"):
        TileGrid(2, 2, 32, 32, overlap_y=32)
    with pytest.raises(OnenError, match="rows must be >= 1"):
        TileGrid(0, 2, 32, 32)


# ------------------------------------------------------------------------------------------ cut and stitch
def _maps_as_images(maps: torch.Tensor) -> torch.Tensor:
    return maps.permute(0, 2, 3, 1)  # [N,1,H,W] -> [N,H,W,1], the layout cut_batch takes


def test_cut_and_stitch_are_exact_without_overlap():
    grid = TileGrid.for_frame(64, 160, 2, 5)
    images = torch.randint(0, 256, (3, 64, 160, 3), dtype=torch.uint8)
    tiles = cut_batch(images, grid)
    assert tiles.shape == (30, 32, 32, 3)
    for frame in range(3):  # each frame's tiles consecutive, row by row, as the numpy cut of the data set
        assert np.array_equal(tiles[frame * 10 : (frame + 1) * 10].numpy(), cut_frame(images[frame].numpy(), grid))
    assert np.array_equal(tiles[3].numpy(), images[0, 0:32, 96:128].numpy())  # tile 3 = row 0, column 3
    maps = torch.rand(3, 1, 64, 160)
    tile_maps = cut_batch(_maps_as_images(maps), grid).permute(0, 3, 1, 2)
    assert torch.equal(stitch_maps(tile_maps, grid), maps)


def test_stitch_averages_overlapping_tiles():
    grid = TileGrid.for_frame(80, 112, 2, 3, overlap=16)  # 48x48 tiles every 32 px
    maps = torch.rand(2, 1, 80, 112)
    tile_maps = cut_batch(_maps_as_images(maps), grid).permute(0, 3, 1, 2)
    assert tile_maps.shape == (12, 1, 48, 48)
    assert torch.allclose(stitch_maps(tile_maps, grid), maps, atol=1e-6)  # the mean of equal values is the value
    # tiles that disagree: every frame pixel is the mean of the tiles covering it
    values = torch.arange(12, dtype=torch.float32) + 1
    constant = values.reshape(12, 1, 1, 1).expand(12, 1, 48, 48)
    stitched = stitch_maps(constant, grid).numpy()
    for frame in range(2):
        for y, x in ((0, 0), (40, 40), (40, 100), (79, 111), (10, 40), (60, 20)):
            covering = [
                frame * 6 + index
                for index, (top, left) in enumerate(grid.origins())
                if top <= y < top + 48 and left <= x < left + 48
            ]
            assert stitched[frame, 0, y, x] == pytest.approx(float(values[covering].mean()), abs=1e-6)
    assert sorted({float(c) for c in grid.coverage().ravel()}) == [1.0, 2.0, 4.0]


# ------------------------------------------------------------------------------------------ the tiled model
def _tiny_student(grid: TileGrid, num_classes: int = 3, seed: int = 0) -> OneNStudent:
    torch.manual_seed(seed)
    cfg = OneNConfig(
        num_classes=num_classes,
        input_height=grid.tile_height,
        input_width=grid.tile_width,
        patch=16,
        dim=32,
        depth=2,
        heads=2,
    )
    return OneNStudent(cfg).eval()


@pytest.mark.parametrize("overlap", [0, 16])
def test_tiled_model_equals_each_tile_alone(overlap):
    grid = TileGrid.for_frame(48 * 2 - overlap, 48 * 3 - 2 * overlap, 2, 3, overlap=overlap)
    student = _tiny_student(grid)
    tiled = TiledModel(student, grid).eval()
    frames = torch.from_numpy(
        np.random.default_rng(overlap).integers(0, 256, (2, grid.frame_height, grid.frame_width, 3), dtype=np.uint8)
    )
    with torch.no_grad():
        score, anomaly_map, logits = tiled(frames)
        assert score.shape == (2,) and anomaly_map.shape == (2, 1, grid.frame_height, grid.frame_width)
        assert logits.shape == (2, 3)
        for frame in range(2):
            alone = [student(torch.from_numpy(tile[None].copy())) for tile in cut_frame(frames[frame].numpy(), grid)]
            scores = torch.stack([out.score[0] for out in alone])
            worst = int(scores.argmax())
            assert float(score[frame]) == pytest.approx(float(scores.max()), abs=1e-5)
            assert torch.allclose(logits[frame], alone[worst].class_logits[0], atol=1e-5)
            total = np.zeros((grid.frame_height, grid.frame_width))
            for out, (top, left) in zip(alone, grid.origins(), strict=True):
                total[top : top + grid.tile_height, left : left + grid.tile_width] += out.anomaly_map[0, 0].numpy()
            assert np.abs(anomaly_map[frame, 0].numpy() - total / grid.coverage()).max() < 1e-5


def _session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.mark.slow  # a dynamo export takes 5-10 s here
@pytest.mark.parametrize("overlap", [0, 16])
def test_tiled_export_matches_torch_in_onnx_runtime(tmp_path, overlap):
    grid = TileGrid.for_frame(48 * 2 - overlap, 48 * 3 - 2 * overlap, 2, 3, overlap=overlap)
    tiled = TiledModel(_tiny_student(grid, seed=overlap + 1), grid).eval()
    height, width = grid.frame_height, grid.frame_width
    rng = np.random.default_rng(1)
    info = ExportInfo(name="tiled", class_names=["good", "spot", "scratch"], input_height=height, input_width=width)
    bundle = load_bundle(
        export_model(tiled, info, tmp_path / "bundle", rng.integers(0, 256, (2, height, width, 3), dtype=np.uint8))
    )
    manifest = bundle.manifest
    assert (manifest.input_height, manifest.input_width) == (height, width)
    assert TileGrid.from_dict(manifest.tiles) == grid
    assert manifest.metrics["export_parity"]["map_max_abs_diff"] < 1e-4
    proto = onnx.load(str(bundle.model_path))
    ops = {node.op_type for node in proto.graph.node}
    assert not ops & {"Loop", "Scan", "If", "SequenceConstruct", "SplitToSequence", "Col2Im"}  # a plain static graph
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [height, width, 3]  # batch alone is dynamic
    images = rng.integers(0, 256, (3, height, width, 3), dtype=np.uint8)  # another batch size
    got = _session(bundle.model_path).run(None, {"image": images})
    with torch.no_grad():
        expected = tiled(torch.from_numpy(images))
    for runtime, reference in zip(got, expected, strict=True):
        assert runtime.shape == tuple(reference.shape)
        assert np.abs(runtime - reference.numpy()).max() < 1e-5


# ------------------------------------------------------------------------------------------ the tile data set
@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory):
    return load_index(write_tiny_dataset(tmp_path_factory.mktemp("tiny"), seed=5, count=24, size=64))


def test_tile_dataset_cuts_images_masks_and_aoi_and_labels_tiles_by_mask(tiny_index):
    grid = TileGrid.for_frame(64, 96, 2, 3)  # the 64x64 images stretched to the 64x96 frame, 32x32 tiles
    dataset = TiledDataset(tiny_index.samples, tiny_index.class_names, grid, aoi=tiny_index.aoi)
    assert len(dataset) == 6 * len(tiny_index.samples)
    assert dataset.counts()["images_left_out"] == 0
    seen_good_tile_of_defect = False
    for sample_index, sample in enumerate(tiny_index.samples):
        image, mask, aoi = load_resized(sample, 64, 96, dataset.shared_aoi)
        for tile in range(6):
            item = dataset[sample_index * 6 + tile]
            part = cut_frame(mask, grid)[tile] if mask is not None else np.zeros((32, 32), bool)
            assert np.array_equal(item["image"].numpy(), cut_frame(image, grid)[tile])
            assert np.array_equal(item["aoi"].numpy() > 0.5, cut_frame(aoi, grid)[tile])
            assert np.array_equal(item["mask"].numpy() > 0.5, part)
            assert int(item["label"]) == int(part.any()) and bool(item["has_mask"])
            expected_class = tiny_index.class_names.index(sample.class_name) if part.any() else 0
            assert int(item["class_index"]) == expected_class
            assert item["path"] == f"{sample.image}#tile{tile}"
            seen_good_tile_of_defect |= sample.label == 1 and not part.any()
    assert seen_good_tile_of_defect  # a defective image's clean tiles are good tiles


def test_tile_dataset_refuses_weak_labels_and_leaves_out_maskless_defects(tiny_index, caplog):
    grid = TileGrid.for_frame(64, 64, 2, 2)
    weak = [dataclasses.replace(s, mask=None) for s in tiny_index.samples]
    with pytest.raises(OnenError, match="tiling needs pixel masks"):
        TiledDataset(weak, tiny_index.class_names, grid)
    first_defect = next(i for i, s in enumerate(tiny_index.samples) if s.label == 1)
    some = list(tiny_index.samples)
    some[first_defect] = weak[first_defect]
    dataset = TiledDataset(some, tiny_index.class_names, grid)
    assert dataset.left_out == [some[first_defect].image] and dataset.counts()["images_left_out"] == 1
    assert len(dataset) == 4 * (len(some) - 1)
    assert "left out of the tiles" in caplog.text


def test_synthetic_defects_stay_inside_the_tiles_aoi(tiny_index):
    from onen.train.data.synthetic import SyntheticDefects

    grid = TileGrid.for_frame(64, 64, 4, 4)  # 16x16 tiles: the corner tiles lie outside the AOI's margin
    good = [s for s in tiny_index.samples if s.label == 0]
    dataset = TiledDataset(
        good,
        tiny_index.class_names,
        grid,
        aoi=tiny_index.aoi,
        synthetic=SyntheticDefects(seed=0),
        synthetic_probability=1.0,
    )
    marked = 0
    for index in range(len(dataset)):
        item = dataset[index]
        if not item["aoi"].any():
            assert int(item["label"]) == 0 and not item["synthetic"]
            continue
        assert int(item["label"]) == 1 and bool(item["synthetic"])
        assert not (item["mask"] > 0.5)[item["aoi"] < 0.5].any()
        marked += 1
    assert marked > 0


def test_auto_grid_takes_the_fewest_tiles_within_the_budget():
    assert auto_grid(256, 256, 256 * 256) is None  # fits: no tiling
    grid = auto_grid(512, 1280, 256 * 256)
    assert grid is not None and (grid.rows, grid.cols, grid.tile_height, grid.tile_width) == (2, 5, 256, 256)
    odd = auto_grid(500, 1250, 256 * 256)  # sizes that do not divide: tiles rounded up to 16 px, frame a bit larger
    assert odd is not None and odd.count == 10 and odd.tile_height * odd.tile_width <= 256 * 256
    assert odd.frame_height >= 500 and odd.frame_width >= 1250
    assert odd.tile_height % 16 == 0 and odd.tile_width % 16 == 0
    overlapping = auto_grid(512, 1280, 256 * 256, overlap=16)
    assert overlapping is not None and overlapping.overlap_x == 16
    assert overlapping.tile_height * overlapping.tile_width <= 256 * 256
    assert overlapping.frame_height >= 512 and overlapping.frame_width >= 1280


# ------------------------------------------------------------------------------------------ --tiles in a run
def test_resolve_tiles_given_auto_and_refusals():
    given = {"height": 512, "width": 1280, "resize": "stretch-halving", "chosen_by": "given", "reason": {}}
    grid, geometry = resolve_tiles("2x5", given, "full", 16)
    assert grid == TileGrid(2, 5, 256, 256) and geometry == given
    grid, geometry = resolve_tiles("auto", given, "none", 16)  # a given size above the budget: tiled as given
    assert grid is not None and (grid.frame_height, grid.frame_width) == (512, 1280) and geometry["width"] == 1280
    assert grid.tile_height * grid.tile_width <= PIXEL_BUDGET
    assert resolve_tiles("auto", {**given, "height": 128, "width": 128}, "full", 16)[0] is None  # fits: no tiles
    assert resolve_tiles("auto", given, "weak", 16)[0] is None  # weak labels never tile
    assert resolve_tiles("off", given, "full", 16) == (None, given)
    with pytest.raises(OnenError, match="needs pixel masks"):
        resolve_tiles("2x5", given, "weak", 16)
    with pytest.raises(OnenError, match="multiples of the patch size 16"):
        resolve_tiles("2x5", {**given, "height": 496}, "full", 16)  # 248 px high tiles

    # --size auto capped by the budget: the frame grows to what the defects want, in tiles within the budget
    capped = {
        "height": 160,
        "width": 400,
        "resize": "stretch-halving",
        "chosen_by": "auto",
        "reason": {
            "summary": "aspect 2.50; height set by the compute budget",
            "decided_by": "budget",
            "aspect_ratio": 2.5,
            "median_native_hw": [500.0, 1250.0],
            "height_for_defects": 480.0,
        },
    }
    grid, geometry = resolve_tiles("auto", capped, "full", 16)
    assert grid is not None and grid.tile_height * grid.tile_width <= PIXEL_BUDGET
    assert (geometry["height"], geometry["width"]) == (grid.frame_height, grid.frame_width)
    assert grid.frame_height >= 480 and grid.frame_width >= 1200
    assert "tiles" in geometry["reason"] and "then tiled" in geometry["reason"]["summary"]
    huge = {**capped, "reason": {**capped["reason"], "median_native_hw": [5000.0, 12500.0], "height_for_defects": 5000}}
    grid, _ = resolve_tiles("auto", huge, "full", 16)
    assert grid is not None and grid.frame_height * grid.frame_width <= 1.3 * MAX_AUTO_PIXELS
    decided_by_native = {**capped, "reason": {**capped["reason"], "decided_by": "native"}}
    assert resolve_tiles("auto", decided_by_native, "full", 16) == (None, decided_by_native)


def test_train_config_refuses_tiles_it_cannot_train_before_reading_data():
    for tiles, overlap, supervision, said in (
        ("2x5", 0, "weak", "needs pixel masks"),
        ("2by5", 0, "full", "ROWSxCOLS"),
        ("2x5", -4, "full", "--tile-overlap must be >= 0"),
    ):
        cfg = TrainConfig(data="nowhere", out="o", supervision=supervision, tiles=tiles, tile_overlap=overlap)
        with pytest.raises(OnenError, match=said):
            cfg.check()


TINY_RUN = ["--patch", "8", "--dim", "32", "--depth", "2", "--batch-size", "16", "--epochs", "2"]


@pytest.mark.slow  # trains a teacher and a student, evaluates and exports: ~30-60 s here
@pytest.mark.parametrize(
    ("supervision", "size", "overlap"),
    [("full", "64x128", 0), ("none", "64x112", 16)],  # both cut into two 64x64 tiles; none's overlap by 16 px
)
def test_tiled_run_trains_evaluates_and_exports_a_whole_frame_bundle(tmp_path, supervision, size, overlap):
    data = write_tiny_dataset(tmp_path / "data", seed=3, count=48, size=64)
    run, bundle_dir = tmp_path / "run", tmp_path / "bundle"
    height, width = (int(v) for v in size.split("x"))
    grid = TileGrid(1, 2, 64, 64, 0, overlap)
    train = ["train", "--data", str(data), "--supervision", supervision, "--out", str(run), "--size", size]
    tiles = ["--tiles", "1x2", "--tile-overlap", str(overlap), "--teacher-epochs", "1"]
    assert onen([*train, *tiles, *TINY_RUN]) == 0
    config = json.loads((run / "config.json").read_text())
    assert TileGrid.from_dict(config["tile_grid"]) == grid
    assert (config["geometry"]["height"], config["geometry"]["width"]) == (height, width)
    summary = json.loads((run / "summary.json").read_text())
    train_images = (
        sum(summary["splits"]["train"].values()) if supervision == "full" else summary["splits"]["train"]["good"]
    )
    assert summary["tiles"]["tiles"] == 2 * train_images
    assert summary["student"]["threshold_source"] == "validation"  # thresholds from whole validation images
    student_state = torch.load(run / "student_best.pt", weights_only=False)
    assert (student_state["model_config"]["input_height"], student_state["model_config"]["input_width"]) == (64, 64)
    if supervision == "full":
        assert 0 < summary["tiles"]["defect_tiles"] < summary["tiles"]["tiles"]
        assert onen([*train[:-2], "--epochs", "3", "--resume"]) == 0  # the saved grid comes back with the run
        assert torch.load(run / "checkpoints" / "student_last.pt", weights_only=False)["epoch"] == 2
    else:
        assert summary["tiles"]["defect_tiles"] == 0  # good images only: the defects are synthetic, per tile
        assert (run / "good_features.json").is_file()

    assert onen(["eval", "--run", str(run), "--out", str(run / "eval")]) == 0
    report = json.loads((run / "eval" / "report.json").read_text())
    assert report["image_auroc"] is not None and report["pixel_auroc"] is not None

    assert onen(["export", "--run", str(run), "--out", str(bundle_dir)]) == 0
    bundle = load_bundle(bundle_dir)
    manifest = bundle.manifest
    assert (manifest.input_height, manifest.input_width) == (height, width)  # the whole frame, not a tile
    assert TileGrid.from_dict(manifest.tiles) == grid
    parity = manifest.metrics["export_parity"]
    assert parity["score_max_abs_diff"] < 1e-4 and parity["map_max_abs_diff"] < 1e-4
    backend = OnnxRuntimeBackend(bundle)  # the station's backend, which knows nothing of tiles
    images = np.stack([read_image_rgb(bundle_dir / ref.file) for ref in manifest.reference])
    out = backend.infer(images)
    assert out.anomaly_map.shape == (len(images), 1, height, width)
    for got, ref in zip(out.score, manifest.reference, strict=True):
        assert abs(float(got) - ref.score) < 1e-4
    if supervision == "full":  # the teacher, trained on tiles too, exports the same way
        assert onen(["export", "--run", str(run), "--teacher", "--out", str(tmp_path / "teacher")]) == 0
        teacher = load_bundle(tmp_path / "teacher").manifest
        assert (teacher.input_height, teacher.input_width) == (height, width) and teacher.tiles is not None


def test_manifest_carries_tiles_only_when_tiled():
    from onen.edge.bundle import Manifest

    plain = Manifest(
        name="m", version="1", family="onen-student", input_height=64, input_width=128, class_names=["good"]
    )
    assert "tiles" not in plain.to_dict()  # an untiled manifest is as it was before the key existed
    assert Manifest.from_dict(plain.to_dict()).tiles is None
    grid = TileGrid(1, 2, 64, 64)
    tiled = Manifest.from_dict({**plain.to_dict(), "tiles": grid.as_manifest()})
    assert TileGrid.from_dict(tiled.to_dict()["tiles"]) == grid


def test_auto_tiles_an_elongated_part_whose_thin_cracks_the_budget_would_lose(tmp_path):
    """With real measured geometry (train.geometry on parts with masks): 2 px cracks on 1250x500 parts want more than
    one input's budget, so `--tiles auto` trains at the native resolution in tiles within the budget."""
    import cv2

    from onen.train.data.sample import Sample
    from onen.train.geometry import resolve_geometry

    rng = np.random.default_rng(0)
    samples = []
    for i in range(6):
        path, mask_path = tmp_path / f"part{i}.png", tmp_path / f"part{i}_mask.png"
        cv2.imwrite(str(path), rng.integers(90, 140, (1250, 500, 3), dtype=np.uint8))
        if i % 2 == 0:
            samples.append(Sample(path, 0, "good"))
            continue
        mask = np.zeros((1250, 500), np.uint8)
        mask[600:602, 100:300] = 255
        cv2.imwrite(str(mask_path), mask)
        samples.append(Sample(path, 1, "crack", mask=mask_path))
    geometry = resolve_geometry("auto", samples, 16).to_dict()
    assert geometry["reason"]["decided_by"] == "budget"  # one input would squash the cracks below 3 px
    grid, tiled = resolve_tiles("auto", geometry, "full", 16)
    assert grid is not None and grid.tile_height * grid.tile_width <= PIXEL_BUDGET
    assert grid.tile_height % 16 == 0 and grid.tile_width % 16 == 0
    assert (tiled["height"], tiled["width"]) == (grid.frame_height, grid.frame_width)
    assert abs(grid.frame_height - 1250) <= 32 and abs(grid.frame_width - 500) <= 32  # the native resolution
    assert min(grid.tile_height, grid.tile_width) >= MIN_SIDE and "tiles" in tiled["reason"]
    assert resolve_tiles("auto", geometry, "weak", 16) == (None, geometry)
