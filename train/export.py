"""Export a trained model as a bundle: model.onnx (uint8 NHWC in, 3 outputs) + reference/ + manifest.json.

The export checks itself: ONNX Runtime must reproduce the torch outputs of the reference images
(score and map within 1e-4) before the manifest is written, so a bundle that exists is a bundle that works.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from onen.edge.bundle import (
    INPUT_NAME,
    MODEL,
    OUTPUT_NAMES,
    Manifest,
    ReferenceSample,
    ScoreNormalisation,
    Thresholds,
    write_manifest,
)
from onen.edge.errors import BundleError
from onen.edge.images import RESIZE
from onen.train.models.tiled import TiledModel

log = logging.getLogger(__name__)
OPSET = 18  # the dynamo exporter's lowest; TensorRT 10's ONNX parser reads it
PARITY_TOLERANCE = 1e-4


@dataclass
class ExportInfo:
    """What the manifest needs to know besides the network."""

    name: str
    class_names: list[str]
    input_height: int
    input_width: int
    family: str = "onen-student"
    version: str = "1"
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    thresholds: Thresholds = field(default_factory=Thresholds)
    score_normalisation: ScoreNormalisation = field(default_factory=ScoreNormalisation)
    normalisation: dict[str, Any] | None = None
    resize: str = RESIZE  # edge.images.RESIZE_MODES, as the run's geometry says


class _ThreeOutputs(nn.Module):
    """The bundle's output triple from a model that returns StudentOutput (or already a tuple)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor):
        out = self.model(image)
        if isinstance(out, (tuple, list)):
            return tuple(out[:3])
        return out.score, out.anomaly_map, out.class_logits


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return float(np.log(p / (1 - p)))


def _sigmoid(x: float) -> float:
    return float(1 / (1 + np.exp(-x)))


def default_thresholds(
    good_scores: np.ndarray,
    good_maps: np.ndarray | None = None,
    defect_scores: np.ndarray | None = None,
    defect_pixels: np.ndarray | None = None,
    quantile: float = 0.99,
    pixel_quantile: float = 0.999,
    min_region_area: int = 16,
) -> tuple[Thresholds, ScoreNormalisation]:
    """Default thresholds from validation outputs (source "validation"); a camera's calibration replaces them on the
    station. Without good scores the stated fallbacks of Thresholds come back with source "default".

    Image threshold: the `quantile` of good scores; when defect scores are given and lie above it, the
    midpoint (in logit space) between that quantile and the defects' 5% quantile, so neither side sits on
    the edge. Pixel threshold likewise from good map pixels and the defect pixels (inside their masks).
    """
    good_scores = np.asarray(good_scores, dtype=np.float64)
    if good_scores.size == 0:
        return Thresholds(min_region_area=min_region_area, source="default"), ScoreNormalisation()
    image = float(np.quantile(good_scores, quantile))
    if defect_scores is not None and np.asarray(defect_scores).size:
        low_defect = float(np.quantile(np.asarray(defect_scores, dtype=np.float64), 0.05))
        if low_defect > image:
            image = _sigmoid((_logit(image) + _logit(low_defect)) / 2)
    image = float(np.clip(image, 1e-4, 1 - 1e-4))
    pixel = 0.5
    if good_maps is not None and np.asarray(good_maps).size:
        pixel = float(np.quantile(np.asarray(good_maps, dtype=np.float64), pixel_quantile))
        if defect_pixels is not None and np.asarray(defect_pixels).size:
            defect_level = float(np.median(np.asarray(defect_pixels, dtype=np.float64)))
            if defect_level > pixel:
                pixel = _sigmoid((_logit(pixel) + _logit(defect_level)) / 2)
        pixel = float(np.clip(pixel, 1e-3, 1 - 1e-3))
    low = max(0.0, min(float(good_scores.min()), image * 0.5, image - 1e-4))
    normalisation = ScoreNormalisation(raw_threshold=image, raw_low=low, raw_high=1.0)
    return Thresholds(image=image, pixel=pixel, min_region_area=min_region_area, source="validation"), normalisation


def export_onnx(model: nn.Module, path: Path, height: int, width: int) -> Path:
    """torch -> ONNX through torch.export (the dynamo exporter), one self-contained file, dynamic batch, input
    'image' uint8 NHWC. Its graph is a third the size of the TorchScript exporter's and prints no TracerWarnings."""
    import onnx

    wrapper = _ThreeOutputs(model).eval().cpu()
    example = torch.zeros(2, height, width, 3, dtype=torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), _quiet_exporter():
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            opset_version=OPSET,
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
            external_data=False,
            verbose=False,
        )
    proto = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(proto)
    for tensor in proto.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise BundleError(
                f"{path}: initializer {tensor.name} is stored outside the file; a bundle's model must be self-contained"
            )
    _strip_trace_metadata(proto)
    onnx.save(proto, str(path))
    return path


def _strip_trace_metadata(proto: Any) -> None:
    """Drop what the exporter records per node (source stack traces with this machine's paths, FX names): the
    same model exported from another checkout must be the same file, and a bundle carries no source paths."""
    graphs = [proto.graph, *(function for function in proto.functions)]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
            for attribute in node.attribute:  # subgraphs of If / Loop / Scan
                graphs.extend([attribute.g] if attribute.HasField("g") else [])
                graphs.extend(attribute.graphs)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Keep the exporter's internal notices (its optimiser's INFO lines, torchvision ops it skips, pytree
    deprecations) off the user's terminal; warnings of substance still show and errors still raise."""
    levels = {
        "torch.onnx": logging.WARNING,
        "torch.onnx._internal.exporter._registration": logging.ERROR,  # "torchvision is not installed"
        "onnxscript": logging.WARNING,
        "onnx_ir": logging.WARNING,
    }
    saved = {name: logging.getLogger(name).level for name in levels}
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*treespec.*LeafSpec.*", category=FutureWarning)
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def torch_outputs(model: nn.Module, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The torch model's (score, anomaly_map, class_logits) on uint8 NHWC images, as numpy."""
    wrapper = _ThreeOutputs(model).eval().cpu()
    with torch.no_grad():
        score, anomaly_map, logits = wrapper(torch.from_numpy(np.ascontiguousarray(images)))
    return score.numpy(), anomaly_map.numpy(), logits.numpy()


def onnx_outputs(model_path: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    return tuple(session.run(list(OUTPUT_NAMES), {INPUT_NAME: np.ascontiguousarray(images)}))


def _write_references(bundle_dir: Path, images: np.ndarray, outputs) -> list[ReferenceSample]:
    score, anomaly_map, logits = outputs
    folder = bundle_dir / "reference"
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for index, image in enumerate(images):
        image_file = f"reference/{index:03d}.png"
        map_file = f"reference/{index:03d}_map.npy"
        cv2.imwrite(str(bundle_dir / image_file), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        np.save(bundle_dir / map_file, anomaly_map[index, 0].astype(np.float32))
        samples.append(
            ReferenceSample(
                file=image_file,
                score=float(score[index]),
                class_logits=[float(v) for v in logits[index]],
                anomaly_map_mean=float(anomaly_map[index, 0].mean()),
                anomaly_map_file=map_file,
            )
        )
    return samples


def check_out_dir(out_dir: str | Path, force: bool = False) -> Path:
    """Refuse a non-empty `out_dir` that is not a bundle, and a bundle there without `force`; change nothing."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        if not (out_dir / "manifest.json").is_file():
            raise BundleError(f"{out_dir}: exists, is not empty and is not a bundle; choose another --out")
        if not force:
            raise BundleError(
                f"{out_dir}: a bundle already exists there; pass --force to replace it (all of it: its "
                "signature and engines too), or choose another --out"
            )
    return out_dir


def prepare_out_dir(out_dir: str | Path, force: bool = False) -> Path:
    """An empty folder for a new bundle. An existing bundle is replaced only with `force`, and then whole:
    a file of the old one left behind (its `signature` above all) would contradict the new manifest."""
    out_dir = check_out_dir(out_dir, force)
    if out_dir.exists() and any(out_dir.iterdir()):
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def export_model(
    model: nn.Module, info: ExportInfo, out_dir: str | Path, reference_images: np.ndarray, force: bool = False
) -> Path:
    """Write the bundle directory for any model whose forward gives the 3 outputs (student or teacher)."""
    out_dir = prepare_out_dir(out_dir, force)
    reference_images = np.ascontiguousarray(reference_images, dtype=np.uint8)
    expected = (info.input_height, info.input_width, 3)
    if reference_images.ndim != 4 or tuple(reference_images.shape[1:]) != expected:
        raise BundleError(
            f"reference images must be uint8 [N, {expected[0]}, {expected[1]}, 3], got {reference_images.shape}"
        )
    model = model.eval().cpu()
    model_path = export_onnx(model, out_dir / MODEL, info.input_height, info.input_width)
    reference = torch_outputs(model, reference_images)
    runtime = onnx_outputs(model_path, reference_images)
    score_diff = float(np.abs(reference[0] - runtime[0]).max())
    map_diff = float(np.abs(reference[1] - runtime[1]).max())
    if score_diff > PARITY_TOLERANCE or map_diff > PARITY_TOLERANCE:
        raise BundleError(
            f"{model_path}: ONNX Runtime differs from torch (score {score_diff:.2e}, map {map_diff:.2e} > "
            f"{PARITY_TOLERANCE})"
        )
    normalisation = info.normalisation
    if normalisation is None:
        input_layer = getattr(model, "input", None)
        normalisation = (
            input_layer.normalisation.as_manifest()
            if input_layer is not None and hasattr(input_layer, "normalisation")
            else None
        )
    manifest = Manifest(
        name=info.name,
        version=info.version,
        family=info.family,
        input_height=info.input_height,
        input_width=info.input_width,
        class_names=list(info.class_names),
        resize=info.resize,
        training=dict(info.training),
        classes_supervised=info.training.get("supervision") != "none",  # `--supervision none`: no class labels
        metrics={**info.metrics, "export_parity": {"score_max_abs_diff": score_diff, "map_max_abs_diff": map_diff}},
        thresholds=info.thresholds,
        score_normalisation=info.score_normalisation,
        reference=_write_references(out_dir, reference_images, reference),
        tiles=model.grid.as_manifest() if isinstance(model, TiledModel) else None,
    )
    if normalisation is not None:
        manifest.normalisation = normalisation
    write_manifest(out_dir, manifest)
    log.info("bundle written to %s (parity score %.1e, map %.1e)", out_dir, score_diff, map_diff)
    return out_dir


def export_bundle(
    model: nn.Module, run_info, out_dir: str | Path, reference_images: np.ndarray, force: bool = False, **overrides
) -> Path:
    """The interface of INTERFACES.md: a bundle from a trained model + its RunInfo (train.runs)."""
    info = run_info.export_info(**overrides) if hasattr(run_info, "export_info") else run_info
    return export_model(model, info, out_dir, reference_images, force=force)


def reference_images_from_run(info, count: int = 4) -> np.ndarray:
    """A few images of the run's validation (or test) split at input size: good ones and defective ones."""
    from onen.edge.images import read_image_rgb, resize_to_input

    pool = list(info.splits.val) or list(info.splits.test) or list(info.splits.train)
    good = [s for s in pool if s.label == 0][: (count + 1) // 2]
    bad = [s for s in pool if s.label == 1][: count - len(good)]
    chosen = (good + bad)[:count] or pool[:count]
    return np.stack([resize_to_input(read_image_rgb(s.image), info.input_height, info.input_width) for s in chosen])


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    teacher: bool = False,
    name: str | None = None,
    version: str = "1",
    reference_count: int = 4,
    force: bool = False,
) -> Path:
    """`onen export`: the run's student (or teacher) as a bundle."""
    from onen.train import runs

    check_out_dir(out_dir, force)  # refuse before loading anything; the old bundle goes only at export

    info = runs.load_run(run_dir)
    if teacher:
        from onen.train.models.efficientnet_lite import TeacherExport

        teacher_model = TeacherExport(runs.load_teacher(run_dir))
        export = info.export_info(name=(name or info.run_dir.name) + "-teacher", version=version, family="teacher-cnn")
        export.normalisation = teacher_model.teacher.input.normalisation.as_manifest()
        model: nn.Module = teacher_model
    else:
        model = runs.load_model(run_dir)  # the run's family's: OneN student or GRD-Net
        export = info.export_info(name=name, version=version)
    model = info.whole_frame(model)  # a run trained on tiles: the graph takes the whole input and tiles it
    return export_model(model, export, out_dir, reference_images_from_run(info, reference_count), force=force)
