"""Frames/s of every CPU backend on the same model and frames, side by side: ONNX Runtime, OpenVINO bf16, OpenVINO f32.

Each backend is opened as the daemon opens it (its parity check included) and called on pre-made model
inputs, so only the engine call is timed: one caller with one call on all cores, and two callers with two
single-threaded calls at once (the daemon's CPU layout). Rounds alternate the backends; medians are quoted
and every ratio is against ONNX Runtime's best layout. Printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path

import numpy as np

from onen.edge.backends.base import Backend


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, help="bundle to measure (default: the untrained student of --size)")
    parser.add_argument("--size", type=int, default=224, help="input size of the default benchmark student")
    parser.add_argument("--frames", type=int, default=300, help="engine calls per measurement (default 300)")
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds (default 5)")


def _backends(bundle_path: Path) -> dict[str, dict[str, Backend]]:
    """name -> {layout name -> opened backend}; OpenVINO only where it is installed."""
    from onen.edge.backends.onnxruntime_backend import CpuLayout, OnnxRuntimeBackend
    from onen.edge.bundle import load_bundle

    bundle = load_bundle(bundle_path)
    layouts = {"1 caller": CpuLayout(1, 0), "2 callers": CpuLayout(2, 1)}
    opened: dict[str, dict[str, Backend]] = {
        "onnxruntime fp32": {name: OnnxRuntimeBackend(bundle, layout=layout) for name, layout in layouts.items()}
    }
    try:
        from onen.edge.backends.openvino_backend import OpenVinoBackend, native_bf16
    except ImportError as error:
        print(f"OpenVINO not measured: {error} (pip install 'onen-inspect[openvino]')")
        return opened
    for precision in ("bf16", "f32") if native_bf16() else ("f32",):
        row = {name: OpenVinoBackend(bundle, layout=layout, precision=precision) for name, layout in layouts.items()}
        got = {backend.precision for backend in row.values()}
        if got != {precision}:
            print(f"openvino {precision} failed the parity check and fell back to f32: not measured as {precision}")
            continue
        opened[f"openvino {precision}"] = dict(row)
    return opened


def _fps(backend: Backend, inputs: list[np.ndarray], callers: int) -> float:
    for batch in inputs[:10]:
        backend.infer(batch)

    def work(part: list[np.ndarray]) -> None:
        for batch in part:
            backend.infer(batch)

    threads = [threading.Thread(target=work, args=(inputs[i::callers],)) for i in range(callers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(inputs) / (time.perf_counter() - started)


def main(args: argparse.Namespace) -> int:
    from onen.benchmarks.daemon import bench_bundle
    from onen.edge.bundle import load_bundle

    bundle_path = args.bundle or bench_bundle(args.size)
    manifest = load_bundle(bundle_path).manifest
    rng = np.random.default_rng(0)
    shape = (1, manifest.input_height, manifest.input_width, 3)
    inputs = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(args.frames)]
    opened = _backends(bundle_path)
    runs: dict[tuple[str, str], list[float]] = {(b, layout): [] for b, row in opened.items() for layout in row}
    print(f"model {bundle_path} | {manifest.input_height}x{manifest.input_width} | {args.frames} calls per figure")
    for repeat in range(args.repeats):
        for (name, layout), values in runs.items():
            values.append(_fps(opened[name][layout], inputs, 2 if layout == "2 callers" else 1))
        print(f"  round {repeat + 1}: " + ", ".join(f"{n} {lay} {v[-1]:.0f}" for (n, lay), v in runs.items()))
    medians = {key: statistics.median(values) for key, values in runs.items()}
    baseline_key = max((k for k in medians if k[0] == "onnxruntime fp32"), key=lambda k: medians[k])
    baseline = medians[baseline_key]
    print(
        f"frames/s, medians of {args.repeats}; ratio against ONNX Runtime's best ({baseline_key[1]}: {baseline:.1f}):"
    )
    for (name, layout), value in sorted(medians.items(), key=lambda item: -item[1]):
        print(f"  {name:18s} {layout:10s} {value:8.1f} fps  x{value / baseline:.2f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({f"{n} / {lay}": round(v, 2) for (n, lay), v in medians.items()}, indent=2) + "\n"
        )
    return 0
