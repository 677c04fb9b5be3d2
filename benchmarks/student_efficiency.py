"""How close the student's graph runs to this CPU's limit, and how much faster it is than the teacher.

The student and teacher are the ones `onen train` builds by default, at the input geometry of `--size` (N or HxW,
e.g. the 144x112 or 128x128 that `--size auto` picks), with the weights training starts from (speed depends on
shapes, not on training), exported as a bundle's model.onnx is. The FLOPs are counted from the ONNX graph itself
(Conv, MatMul and Gemm, 2 per multiply-add, at batch 1, shapes from ONNX shape inference); the time is ONNX
Runtime's median batch-1 call on one intra-op thread, student and teacher interleaved so background load hits both
alike. The limit is numpy's float32 matmul of two 1024x1024 matrices on one BLAS thread, in a child process so the
thread settings hold. ONNX Runtime's profiler then says where the time goes: per op type, how many ops run and how
many take under 10 us (the per-op overhead that caps a small model). Printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

SGEMM = """
import time, numpy as np
a = np.random.default_rng(0).random((1024, 1024), dtype=np.float32); b = a.copy()
for _ in range(3): a @ b
times = []
for _ in range(15):
    t = time.perf_counter(); a @ b; times.append(time.perf_counter() - t)
times.sort(); print(2 * 1024 ** 3 / times[len(times) // 2] / 1e9)
"""
TINY_US = 10.0


CLASSES = ["good", "a", "b", "c", "d", "e"]  # magnetic tile's good + 5 defect classes; speed barely depends on it


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bundle", type=Path, help="student bundle to measure (default: the untrained default student of --size)"
    )
    parser.add_argument("--size", default="256", help="input geometry, N or HxW (default 256; ignored with --bundle)")
    parser.add_argument("--calls", type=int, default=300, help="timed batch-1 calls of each model (default 300)")
    parser.add_argument("--top", type=int, default=8, help="op types to list (default 8)")


def default_models(height: int, width: int) -> tuple[Path, Path]:
    """model.onnx of the student and teacher `onen train` starts from at height x width (untrained heads, the
    ImageNet weights it loads), exported once to ~/.cache/onen/efficiency-<H>x<W>-<key>; the key names the model,
    export and bench code and torch's version."""
    import hashlib

    import torch

    from onen.benchmarks.daemon import CACHE
    from onen.train import export as export_module
    from onen.train import trainer
    from onen.train.models import efficientnet_lite, input_layer, onen_vit

    digest = hashlib.sha256(torch.__version__.encode())
    for module in (export_module, trainer, onen_vit, efficientnet_lite, input_layer):
        digest.update(Path(str(module.__file__)).read_bytes())
    digest.update(Path(__file__).read_bytes())
    out = CACHE / f"efficiency-{height}x{width}-{digest.hexdigest()[:12]}"
    student, teacher = out / "student.onnx", out / "teacher.onnx"
    if student.is_file() and teacher.is_file():
        return student, teacher
    torch.manual_seed(0)
    cfg = trainer.TrainConfig(data="", out="", class_names=CLASSES, geometry={"height": height, "width": width})
    export_module.export_onnx(trainer.build_run_student(cfg, teacher_dim=0).eval(), student, height, width)
    model = efficientnet_lite.TeacherExport(efficientnet_lite.build_teacher(len(CLASSES), pretrained=True)).eval()
    export_module.export_onnx(model, teacher, height, width)
    return student, teacher


def graph_gflop(model_path: Path) -> tuple[float, int]:
    """GFLOP of one image through the graph (Conv, MatMul, Gemm) and its node count."""
    import onnx

    model = onnx.load(str(model_path))
    for tensor in list(model.graph.input) + list(model.graph.output):
        dims = tensor.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[int]] = {}
    for info in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        shapes[info.name] = [d.dim_value for d in info.type.tensor_type.shape.dim]
    for tensor in inferred.graph.initializer:
        shapes[tensor.name] = list(tensor.dims)
    flops = 0.0
    for node in inferred.graph.node:
        if node.op_type == "Conv":
            out, weight = shapes.get(node.output[0]), shapes.get(node.input[1])
            if out and weight:
                flops += 2.0 * float(np.prod(out)) * float(np.prod(weight[1:]))
        elif node.op_type in ("MatMul", "Gemm"):
            a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
            if a and out:
                inner = a[-1] if not (node.op_type == "Gemm" and _attr(node, "transA")) else a[0]
                flops += 2.0 * float(np.prod(out)) * inner
    return flops / 1e9, len(inferred.graph.node)


def _attr(node, name: str) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), 0)


def _session(model_path: Path, profile_dir: str | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    if profile_dir is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(profile_dir) / "student")
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def profile(model_path: Path, image: np.ndarray, calls: int = 50) -> tuple[dict[str, float], int, int]:
    """Mean us per call by op type (ONNX Runtime's optimised graph), ops run per call, and how many are tiny."""
    with tempfile.TemporaryDirectory() as folder:
        session = _session(model_path, folder)
        for _ in range(calls):
            session.run(None, {"image": image})
        events = json.loads(Path(session.end_profiling()).read_text())
    per_type: dict[str, float] = defaultdict(float)
    per_node: Counter[str] = Counter()
    runs = 0
    for event in events:
        if event.get("cat") == "Session" and event.get("name") == "model_run":
            runs += 1
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            per_type[event["args"].get("op_name", "?")] += event["dur"]
            per_node[event["name"]] += event["dur"]
    runs = max(runs, 1)
    tiny = sum(1 for total in per_node.values() if total / runs < TINY_US)
    return {op: us / runs for op, us in per_type.items()}, len(per_node), tiny


def sgemm_gflops() -> float:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("OPENBLAS_CORETYPE", None)  # let OpenBLAS pick this CPU's own kernels
    done = subprocess.run([sys.executable, "-c", SGEMM], env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"sgemm measurement failed: {done.stderr[-500:]}")
    return float(done.stdout.strip())


def main(args: argparse.Namespace) -> int:
    from onen.benchmarks.train_targets import median_latency
    from onen.train.geometry import parse_size

    if args.bundle:
        from onen.edge.bundle import load_bundle

        manifest = load_bundle(args.bundle).manifest
        height, width = manifest.input_height, manifest.input_width
        student, teacher = args.bundle / "model.onnx", default_models(height, width)[1]
    else:
        size = parse_size(args.size, 16)
        if not isinstance(size, tuple):
            raise SystemExit("--size: give N or HxW (the geometry `onen train --size auto` printed), not auto")
        height, width = size
        student, teacher = default_models(height, width)
    image = np.random.default_rng(0).integers(0, 256, (1, height, width, 3), dtype=np.uint8)
    figures: dict = {"height": height, "width": width, "student": str(student), "teacher": str(teacher)}
    student_ms, teacher_ms = median_latency([student, teacher], (height, width), args.calls)
    limit = sgemm_gflops()
    figures.update(student_ms=student_ms, teacher_ms=teacher_ms, ratio=teacher_ms / student_ms, sgemm_gflops=limit)
    print(
        f"{height}x{width}: student {student_ms:.2f} ms, teacher {teacher_ms:.2f} ms (batch 1, 1 thread, interleaved, "
        f"median of {args.calls}) -> student {teacher_ms / student_ms:.2f}x faster (target >= 2)"
    )
    for name, path, ms in (("student", student, student_ms), ("teacher", teacher, teacher_ms)):
        gflop, nodes = graph_gflop(path)
        achieved = gflop / (ms / 1000)
        by_type, ops_run, tiny = profile(path, image)
        total_us = sum(by_type.values()) or 1.0
        print(
            f"{name}: {gflop:.3f} GFLOP, {achieved:.1f} GFLOP/s vs single-thread sgemm {limit:.1f} GFLOP/s -> "
            f"ratio {achieved / limit:.2f} (student target >= 0.5); {nodes} nodes in the ONNX graph, ONNX Runtime ran "
            f"{ops_run} ops per call, {tiny} of them under {TINY_US:.0f} us; time by op type:"
        )
        for op, us in sorted(by_type.items(), key=lambda item: -item[1])[: args.top]:
            print(f"  {op:24s} {us:8.1f} us/call  {us / total_us:6.1%}")
        figures[name] = {
            "path": str(path),
            "gflop": gflop,
            "achieved_gflops": achieved,
            "ratio_to_sgemm": achieved / limit,
            "onnx_nodes": nodes,
            "ops_per_call": ops_run,
            "tiny_ops": tiny,
            "us_per_op_type": by_type,
        }
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0
