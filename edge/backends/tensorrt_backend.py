"""TensorRT backend: the bundle's engine for the running GPU, run with the TensorRT 10 tensor API.

Same contract as the ONNX Runtime backend (uint8 `[N, H, W, 3]` in, `ModelOutputs` out). On start it
selects the engine whose sidecar matches this GPU, TensorRT version and `model.onnx`, or builds one
under a file lock (announced via `on_event`) and runs the parity check before serving it. I/O uses
named tensors (`num_io_tensors`, `get_tensor_name`, `get_tensor_mode`, `set_input_shape`,
`set_tensor_address`, `execute_async_v3`) with pycuda page-locked host buffers, device buffers and a
stream. tensorrt and pycuda are imported only here and in the engine builder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from onen.edge.backends.base import Backend, ModelOutputs
from onen.edge.backends.factory import INSTALL_HINT, BackendUnavailable, EventCallback, TensorRtProbe, probe_tensorrt
from onen.edge.bundle import OUTPUT_NAMES, Bundle, sha256_file
from onen.edge.engines.builder import BuildOptions, tensorrt_logger
from onen.edge.engines.cuda_context import cuda_context
from onen.edge.engines.keys import EngineSidecar, RuntimeTarget, read_sidecar, sidecar_path, write_sidecar
from onen.edge.engines.manager import EngineParityError, ensure_engine
from onen.edge.engines.selection import mismatches
from onen.edge.errors import OnenError

log = logging.getLogger(__name__)


class EngineMismatch(OnenError):
    """An engine that was not built for this GPU / TensorRT / model; it is never loaded."""


class TensorRtBackend(Backend):
    name = "tensorrt"

    def __init__(
        self,
        bundle: Bundle,
        probe: TensorRtProbe | None = None,
        on_event: EventCallback | None = None,
        precision: str = "fp16",
        max_batch: int = 4,
        engine_path: Path | None = None,
        check_parity: bool = True,
        build_options: BuildOptions | None = None,
        device_index: int = 0,
    ):
        super().__init__(bundle)
        probe = probe or probe_tensorrt(device_index)
        if not probe.available:
            raise BackendUnavailable(f"TensorRT cannot run here: {probe.reason}; {INSTALL_HINT}")
        self.device_index = device_index
        self.target = RuntimeTarget(probe.compute_capability, probe.tensorrt_version, probe.gpu_name)
        self.on_event = on_event
        self._device_buffers: dict[str, Any] = {}  # pycuda DeviceAllocations (pycuda has no types)
        self._host_buffers: dict[str, np.ndarray] = {}
        if engine_path is not None:
            engine_path = Path(engine_path)
            sidecar = self._check_explicit_engine(engine_path)
            built = False
        else:
            options = build_options or BuildOptions(precision=precision, max_batch=max_batch)
            outcome = ensure_engine(bundle, self.target, options, on_event, any_precision=True)
            engine_path, sidecar, built = Path(outcome.engine_path), outcome.sidecar, outcome.built
        self.engine_path, self.sidecar = engine_path, sidecar
        self._load()
        if built and check_parity:
            self._check_parity_before_serving()

    # --- engine choice ------------------------------------------------------------------------------

    def _check_explicit_engine(self, engine_path: Path) -> EngineSidecar:
        sidecar = read_sidecar(sidecar_path(engine_path))
        reasons = mismatches(sidecar, self.target, self.bundle.onnx_sha256, precision=None, ignore_parity=True)
        if sidecar.engine_sha256 and engine_path.is_file() and sha256_file(engine_path) != sidecar.engine_sha256:
            reasons.append("engine file does not match the sha256 in its sidecar")
        if not engine_path.is_file():
            reasons.append("engine file does not exist")
        if reasons:
            raise EngineMismatch(f"{engine_path}: not loaded: " + "; ".join(reasons))
        return sidecar

    def _check_parity_before_serving(self) -> None:
        from onen.edge.parity import check_reference

        report = check_reference(self, self.bundle)
        self.sidecar.parity = report.to_dict()
        write_sidecar(self.engine_path, self.sidecar)
        detail = {
            "bundle": str(self.bundle.path),
            "engine": self.engine_path.name,
            "passed": report.passed,
            "max_score_diff": report.max_score_diff,
            "max_map_mean_abs_diff": report.max_map_mean_abs_diff,
        }
        if self.on_event is not None:
            self.on_event("engine_parity", detail)
        if not report.passed:
            self.close()
            raise EngineParityError(
                f"{self.engine_path}: new engine differs from the bundle's reference outputs beyond tolerance "
                f"(max score diff {report.max_score_diff:.4f} > {report.score_tol} or max map mean diff "
                f"{report.max_map_mean_abs_diff:.4f} > {report.map_mean_tol}); not served. "
                "Use backend: onnxruntime for this model, or build an FP32 engine: onen build-engine --fp32 BUNDLE"
            )

    # --- TensorRT runtime ---------------------------------------------------------------------------

    def _load(self) -> None:
        import pycuda.driver as cuda
        import tensorrt as trt

        with cuda_context(self.device_index):
            self._logger = tensorrt_logger(trt, verbose=False)
            self._runtime = trt.Runtime(self._logger)
            self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
            if self._engine is None:
                raise EngineMismatch(
                    f"{self.engine_path}: TensorRT {trt.__version__} could not deserialise this engine (see the "
                    "TensorRT log above)"
                )
            self._context = self._engine.create_execution_context()
            self._stream = cuda.Stream()
            names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
            self._inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            self._outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
            expected_input = self.bundle.manifest.input_name
            if self._inputs != [expected_input] or not set(OUTPUT_NAMES) <= set(self._outputs):
                raise EngineMismatch(
                    f"{self.engine_path}: engine I/O {self._inputs} -> {self._outputs} does not follow the bundle "
                    "contract "
                    f"([{expected_input}] -> {list(OUTPUT_NAMES)})"
                )
            _, _, max_shape = self._engine.get_tensor_profile_shape(expected_input, 0)
            self.max_batch = int(max_shape[0])
            self._context.set_input_shape(expected_input, tuple(max_shape))
            for name in names:
                shape = tuple(self._context.get_tensor_shape(name))
                dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
                host = cuda.pagelocked_empty(shape, dtype)
                device = cuda.mem_alloc(host.nbytes)
                self._host_buffers[name], self._device_buffers[name] = host, device
                self._context.set_tensor_address(name, int(device))
        log.info(
            "TensorRT engine %s loaded (%s, max batch %d)",
            self.engine_path.name,
            self.sidecar.precision,
            self.max_batch,
        )

    def infer(self, batch: np.ndarray) -> ModelOutputs:
        self.check_input(batch)
        parts = [self._run(batch[start : start + self.max_batch]) for start in range(0, len(batch), self.max_batch)]
        return ModelOutputs(*(np.concatenate([p[name] for p in parts]) for name in OUTPUT_NAMES))

    def _run(self, chunk: np.ndarray) -> dict[str, np.ndarray]:
        import pycuda.driver as cuda

        count = len(chunk)
        input_name = self._inputs[0]
        with cuda_context(self.device_index):
            if not self._context.set_input_shape(input_name, chunk.shape):
                raise OnenError(
                    f"{self.engine_path}: TensorRT refused input shape {chunk.shape} (engine profile: batch "
                    f"1..{self.max_batch})"
                )
            host_input = self._host_buffers[input_name][:count]
            np.copyto(host_input, chunk)
            cuda.memcpy_htod_async(self._device_buffers[input_name], host_input, self._stream)
            if not self._context.execute_async_v3(stream_handle=self._stream.handle):
                raise OnenError(f"{self.engine_path}: TensorRT execute_async_v3 failed (see the TensorRT log)")
            views = {}
            for name in OUTPUT_NAMES:
                shape = tuple(self._context.get_tensor_shape(name))
                view = self._host_buffers[name][:count]
                if view.shape != shape:
                    raise OnenError(f"{self.engine_path}: output {name} has shape {shape}, expected {view.shape}")
                cuda.memcpy_dtoh_async(view, self._device_buffers[name], self._stream)
                views[name] = view
            self._stream.synchronize()
            return {name: view.astype(np.float32, copy=True) for name, view in views.items()}

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "engine": self.engine_path.name,
            "precision": self.sidecar.precision,
            "gpu": self.target.gpu_name,
            "compute_capability": self.target.compute_capability,
            "tensorrt": self.target.tensorrt_version,
            "max_batch": getattr(self, "max_batch", None),
        }

    def close(self) -> None:
        if not self._device_buffers:
            return
        with cuda_context(self.device_index):
            for device in self._device_buffers.values():
                device.free()
            self._device_buffers.clear()
            self._host_buffers.clear()
            self._context = self._engine = self._stream = None
