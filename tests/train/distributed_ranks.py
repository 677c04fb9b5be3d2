"""What the distributed tests (test_distributed*.py) run on every rank. train.distributed.launch spawns the ranks, so
these live in an importable module (not in tests/support: the station's tests import that without torch)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from onen.train import distributed

TINY_ITEMS = 16  # images of the tiny regression set
TINY_BATCH = 8  # per step, over all ranks


class TinyImages(Dataset):
    """Fixed 3x8x8 images with a target each, drawn from their index (the same on every rank)."""

    def __init__(self, count: int = TINY_ITEMS):
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        generator = torch.Generator().manual_seed(1000 + index)
        x = torch.randn(3, 8, 8, generator=generator)
        return {"x": x, "y": x.mean() * 3 + 0.5, "index": index}


def tiny_model() -> nn.Module:
    """A conv net without batch norm: 2 ranks x B/2 and 1 process x B must agree on it."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 1))


def train_tiny(epochs: int = 3) -> dict[str, torch.Tensor]:
    """SGD with momentum through train.distributed's loader and replica: the weights after epochs x 2 steps."""
    model = tiny_model()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    step = distributed.replicate(model, torch.device("cpu"))
    for epoch in range(epochs):
        for batch in distributed.loader(TinyImages(), TINY_BATCH, shuffle=True, seed=11, epoch=epoch):
            loss = F.mse_loss(step(batch["x"])[:, 0], batch["y"])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _rows(_model, dataset) -> dict:
    """Per-item rows of an evaluation (the item's index, as numpy and as a tensor, and the rank that computed it)."""
    import numpy as np

    indices = [dataset[i]["index"] for i in range(len(dataset))]
    return {
        "index": np.array(indices),
        "square": torch.tensor(indices) ** 2,
        "rank": np.full(len(indices), dist.get_rank()),
    }


def helpers() -> dict:
    """Every helper of train.distributed on this rank: shards per epoch, a gathered evaluation, a tiny training."""
    with distributed.session(torch.device("cpu")):
        shards = {
            count: [
                [
                    int(i)
                    for batch in distributed.loader(TinyImages(count), 4, True, seed=3, epoch=e)
                    for i in batch["index"]
                ]
                for e in (0, 1)
            ]
            for count in (8, 7)
        }
        gathered = distributed.sharded(_rows, None, TinyImages(7))
        sums = distributed.all_sum(float(distributed.rank() + 1), 1.0)
        weights = train_tiny()
        everyone = [None] * distributed.world()
        dist.all_gather_object(everyone, {"rank": distributed.rank(), "shards": shards, "weights": weights})
        return {"ranks": everyone, "gathered": gathered, "sums": sums}


def onen_train_recording_writes(commands: list[list[str]], watched: str, answers: str) -> None:
    """`onen train` (the CLI, as torchrun starts it on every rank) for each argument list, recording every file this
    rank writes, renames or removes under `watched` (Python's audit events, and torch.save, whose writer opens files
    in C++). Each rank leaves {"rank", "codes", "writes"} in answers/rank-<RANK>.json (outside `watched`). The group is
    joined here, once, so the trainings share it (train.distributed.session then leaves it alone)."""
    import json

    from onen.edge.cli import main

    root = Path(watched).resolve()
    writes: list[str] = []

    def note(path) -> None:
        try:
            resolved = Path(os.fsdecode(path)).resolve()
        except (TypeError, ValueError):
            return
        if resolved.is_relative_to(root):
            writes.append(str(resolved.relative_to(root)))

    def audit(event: str, args: tuple) -> None:
        if event == "open" and isinstance(args[0], str | bytes | os.PathLike):
            mode, flags = args[1], args[2]
            writing = (
                any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & (os.O_WRONLY | os.O_RDWR))
            )
            if writing:
                note(args[0])
        elif event == "os.rename":  # os.replace too
            note(args[0])
            note(args[1])
        elif event in ("os.remove", "shutil.rmtree", "os.truncate"):
            note(args[0])

    sys.addaudithook(audit)
    real_save = torch.save

    def recorded_save(obj, f, *args, **kwargs):
        if isinstance(f, str | os.PathLike):
            note(f)
        return real_save(obj, f, *args, **kwargs)

    torch.save = recorded_save
    dist.init_process_group("gloo")
    codes = [main(["train", *command]) for command in commands]
    dist.destroy_process_group()
    rank = int(os.environ["RANK"])
    answer = {"rank": rank, "codes": codes, "writes": writes}
    (Path(answers) / f"rank-{rank}.json").write_text(json.dumps(answer))
