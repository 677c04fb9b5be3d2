"""TensorRT engines kept inside a bundle: file names, sidecars, choosing one, building one under a lock.

Everything here but `builder.py` and the calibrator class in `int8_calibration.py` is plain Python and
tested without a GPU; those two import TensorRT lazily, only when an engine is really built.
"""
