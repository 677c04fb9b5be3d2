"""The CUDA context TensorRT and pycuda share: the device's primary context, pushed per use.

TensorRT uses the CUDA runtime, which works in the device's *primary* context; pycuda's `autoinit`
would create a second, private context and bind it to the importing thread. Retaining the primary
context and pushing it around every use lets the daemon call `infer` from any worker thread.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

_lock = threading.Lock()
_contexts: dict[int, Any] = {}  # pycuda Contexts


def primary_context(device_index: int = 0) -> Any:  # a pycuda Context (pycuda has no types)
    """The retained primary context of `device_index` (retained once per process)."""
    import pycuda.driver as cuda

    with _lock:
        if device_index not in _contexts:
            cuda.init()
            _contexts[device_index] = cuda.Device(device_index).retain_primary_context()
        return _contexts[device_index]


@contextlib.contextmanager
def cuda_context(device_index: int = 0) -> Iterator[Any]:
    """Make the primary context current on this thread for the duration of the block."""
    import pycuda.driver as cuda

    context = primary_context(device_index)
    context.push()
    try:
        yield context
    finally:
        cuda.Context.pop()
