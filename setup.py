"""Installs the four layer folders under one namespace: `edge/` becomes `onen.edge`, and so on.

The folders stay at the top of the repository (the layout shows the architecture), but in site-packages
they live under `onen`, so a user's own `train.py` or another project's `benchmarks` cannot shadow them.
"""

from setuptools import find_packages, setup

LAYERS = ("edge", "train", "calibration", "benchmarks")

setup(
    packages=[f"onen.{name}" for name in find_packages(include=[f"{layer}*" for layer in LAYERS])],
    package_dir={f"onen.{layer}": layer for layer in LAYERS},
)
