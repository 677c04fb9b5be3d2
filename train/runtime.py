"""Where training runs and how it is seeded: one definition for the teacher, the student and GRD-Net."""

from __future__ import annotations

import random

import numpy as np
import torch


def pick_device(name: str | torch.device | None = "auto") -> torch.device:
    """ "auto" (or None): CUDA when present, else the CPU; anything else as torch names it ("cpu", "cuda:1")."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Python's, numpy's and torch's generators, so a run is reproducible from its seed."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
