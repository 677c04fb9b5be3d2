"""Training on several processes with torch.distributed (DistributedDataParallel), for every model family.

`onen train --nproc N` starts N local ranks through torch's own launcher (torch.distributed.launcher, the engine
torchrun runs); `torchrun ... -m onen.edge.cli train ...` starts them itself, on one node or several
(docs/distributed.md). Every rank then runs the same trainer, and the trainer calls the helpers here: `session`
joins the process group (nccl on GPUs, gloo on the CPU), `loader` gives each rank its shard (DistributedSampler,
`set_epoch`), `replicate` wraps a trained network in DDP (SyncBatchNorm on GPUs), `sharded` spreads an evaluation
over the ranks and hands every rank the whole result in data set order, `is_main` marks what rank 0 alone writes.
In one process the helpers change nothing, except that the loader's order also comes from a DistributedSampler (of
one rank), so a step of 2 ranks x B/2 holds the images of a step of 1 process x B.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from onen.edge.errors import OnenError

log = logging.getLogger(__name__)
# a rank that stops answering (a dead GPU, a hung file system) fails the collective waiting for it after this, and the
# launcher then ends the job; a rank that exits is noticed at once (the launcher watches its processes)
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


class DistributedError(OnenError):
    """A rank of a distributed training failed (the launcher ended the others)."""


# ------------------------------------------------------------------------------------------ who am I
def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes checkpoints, history, plots, summaries."""
    return rank() == 0


def launched_world() -> int:
    """Ranks a launcher (torchrun, `onen train --nproc`) started this process among; 1 outside one."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def should_launch(nproc: int) -> bool:
    """Whether `onen train --nproc N` has to start its ranks: N > 1 and no launcher (torchrun) started this process."""
    if launched_world() <= 1:
        return nproc > 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", nproc))
    if nproc > 1 and nproc != local:
        log.warning("--nproc %d ignored: a launcher (torchrun) already started %d ranks here", nproc, local)
    return False


def barrier() -> None:
    """Every rank waits here (e.g. until rank 0 has written what the others read next)."""
    if active():
        dist.barrier()


# ------------------------------------------------------------------------------------------ launching
def launch(nproc: int, entrypoint: Callable[..., Any], *args: Any) -> Any:
    """Run entrypoint(*args) on `nproc` local ranks, as `torchrun --standalone --nproc-per-node N` does, and return
    rank 0's result. A failing rank ends the job: the launcher stops the others and this raises DistributedError
    naming each failed rank's error, the first one first. Ranks other than 0 write their output to log files only
    (kept, and named, when the job fails). The ranks are spawned processes: a script that calls this keeps its top
    level under `if __name__ == "__main__":`."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1:
        raise OnenError(f"--nproc must be >= 1, got {nproc}")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default for several local ranks
    logs = Path(tempfile.mkdtemp(prefix="onen-ranks-"))
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # a free loopback port
        max_restarts=0,
        start_method="spawn",
        # rank 0 on this console, the others in files (LOGS/<run>/attempt_0/<rank>/stderr.log)
        logs_specs=DefaultLogsSpecs(log_dir=str(logs), redirects={r: Std.ALL for r in range(1, nproc)}),
    )
    try:
        results = elastic_launch(config, _rank_main)(str(logs), entrypoint, *args)
    except ChildFailedError:
        failures = "\n".join(_failures(logs)) or "a rank ended without a report (killed?)"
        raise DistributedError(
            f"distributed training on {nproc} ranks failed:\n{failures}\n(every rank's output: {logs})"
        ) from None
    shutil.rmtree(logs, ignore_errors=True)
    return results[0]


FAILURE_REPORT = "failed-rank-{rank}.txt"  # in launch's log dir: when, and what a rank raised


def _rank_main(logs: str, entrypoint: Callable[..., Any], *args: Any) -> Any:
    """One rank of `launch`: what it raises is reported (time, type, message) before the launcher sees it die, so
    the job's error names the rank that failed first, not a neighbour that lost its connection to it."""
    try:
        return entrypoint(*args)
    except BaseException as error:
        report = Path(logs) / FAILURE_REPORT.format(rank=os.environ.get("RANK", "0"))
        report.write_text(f"{time.time()!r}\n{type(error).__name__}: {error}")
        raise


def _failures(logs: Path) -> list[str]:
    """'rank R: Type: message' of every rank that reported a failure, the first one first."""
    reports = []
    for path in logs.glob(FAILURE_REPORT.format(rank="*")):
        when, _, what = path.read_text().partition("\n")
        reports.append((float(when), path.stem.rsplit("-", 1)[1], what))
    return [f"rank {rank_id}: {what}" for _, rank_id, what in sorted(reports)]


@contextlib.contextmanager
def session(device: torch.device) -> Iterator[None]:
    """Join the process group a launcher prepared (its environment: RANK, WORLD_SIZE, MASTER_ADDR ...): nccl when
    training on GPUs, else gloo. Outside a launcher, or inside a group already joined, nothing."""
    if launched_world() <= 1 or dist.is_initialized():
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl":  # bound to this rank's GPU (torch 2.2's init_process_group has no device_id)
        rank_device(device)
    dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    if dist.get_rank() != 0:  # the same data, the same figures: rank 0 says them, the others report only errors
        logging.getLogger("onen").setLevel(logging.ERROR)
    log.info("distributed training: %d ranks (%s)", dist.get_world_size(), backend)
    yield  # on an error the group is left as it is: this process ends, its peers' collectives fail or the launcher
    # stops them, and its own failure report is the first (launch)
    dist.destroy_process_group()


def rank_device(device: torch.device) -> torch.device:
    """This rank's device: on GPUs cuda:LOCAL_RANK (one GPU per local rank), made the current one."""
    if device.type != "cuda" or launched_world() <= 1:
        return device
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.cuda.set_device(device)
    return device


# ------------------------------------------------------------------------------------------ data
def loader(
    dataset, batch_size: int, shuffle: bool, seed: int, epoch: int = 0, drop_last: bool = False, num_workers: int = 0
) -> DataLoader:
    """Batches of one rank. batch_size counts the images of one step over all ranks: each rank takes
    batch_size / ranks of them from its shard of a DistributedSampler (drop_last=False: shards are padded to one
    length, so every rank makes the same number of steps). The order is torch.randperm seeded by seed + epoch, dealt
    out rank by rank, so the images of a step over 2 ranks x B/2 are those of a step of 1 process x B."""
    ranks = world()
    if batch_size % ranks:
        raise OnenError(
            f"--batch-size {batch_size} counts the images of one step over all ranks: it must be a multiple of the "
            f"{ranks} ranks"
        )
    sampler: DistributedSampler = DistributedSampler(
        dataset, num_replicas=ranks, rank=rank(), shuffle=shuffle, seed=seed, drop_last=False
    )
    sampler.set_epoch(epoch)
    return DataLoader(
        dataset,
        batch_size=batch_size // ranks,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed + epoch),  # the workers' seeds: not from the global stream
    )


def seed_epoch(seed: int, epoch: int, *generators: torch.Generator) -> None:
    """With several ranks: this rank's python, numpy and torch streams (dropout, ...) and the given generators
    (flips) drawn afresh from (seed, rank, epoch), so ranks draw differently and a resumed epoch draws what it drew
    before. One process: nothing (its checkpoint restores its streams). Synthetic defects and the data set's flips
    need nothing here: they are seeded per image (seed, epoch, index), whichever rank reads it."""
    if not active():
        return
    states = np.random.SeedSequence([seed, rank(), epoch]).generate_state(3 + len(generators), dtype=np.uint64)
    torch.manual_seed(int(states[0]))
    np.random.seed(int(states[1] % 2**32))
    random.seed(int(states[2]))
    for generator, state in zip(generators, states[3:], strict=True):
        generator.manual_seed(int(state))


# ------------------------------------------------------------------------------------------ models
class _Method(nn.Module):
    """A model whose forward is one of its other methods (e.g. the teacher's forward_features), for DDP to wrap."""

    def __init__(self, model: nn.Module, method: str):
        super().__init__()
        self.model, self.method = model, method

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.model, self.method)(*args, **kwargs)


class Replica:
    """A network as a training step calls it in a DDP job: calling it (or its `method`) runs DDP's forward, which
    makes the backward that follows average the gradients over the ranks; everything else (train(), parameters(),
    a frozen discriminator's features() ...) is the network's own."""

    def __init__(self, model: nn.Module, ddp: nn.Module, method: str):
        self._model, self._ddp, self._method = model, ddp, method

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._method != "forward":
            return self._model(*args, **kwargs)
        return self._ddp(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name == self._method:
            return self._ddp
        return getattr(self._model, name)


def replicate(model: nn.Module, device: torch.device, method: str = "forward") -> Any:
    """The network to train through (one process: the network itself). Several ranks: its BatchNorm layers made
    SyncBatchNorm on GPUs (in place: the optimiser's parameters stay the same tensors), wrapped in DDP, which starts
    every replica from rank 0's weights. Buffers (BatchNorm statistics) are not broadcast each step:
    `average_buffers` makes them one again before a network is validated or saved."""
    if not active():
        return model
    if device.type == "cuda":
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if converted is not model:
            raise OnenError("replicate: the network itself is a BatchNorm layer; wrap a model that holds it")
    inner = model if method == "forward" else _Method(model, method)
    # newer torch renames broadcast_buffers (forward_sync_buffers); torch 2.2 knows only broadcast_buffers
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
        ddp = nn.parallel.DistributedDataParallel(
            inner,
            device_ids=[device] if device.type == "cuda" else None,
            broadcast_buffers=False,
            # every trained parameter gets its gradient each step; True would also route the outputs through DDP's
            # sink, and the teacher's Grad-CAM differentiates its logits by its features
            find_unused_parameters=False,
        )
    return Replica(model, ddp, method)


@torch.no_grad()
def average_buffers(*models: nn.Module) -> None:
    """Each floating-point buffer (BatchNorm running statistics) averaged over the ranks, so every replica validates
    and saves one network; on GPUs SyncBatchNorm keeps them equal already."""
    if not active():
        return
    for model in models:
        for buffer in model.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
                buffer.div_(world())


# ------------------------------------------------------------------------------------------ evaluation
def shard(dataset):
    """This rank's part of an evaluation: items rank, rank + ranks, ... (the whole data set in one process)."""
    if not active():
        return dataset
    return Subset(dataset, range(rank(), len(dataset), world()))


def sharded(fn: Callable[..., Any], model: Any, dataset, *args: Any, **kwargs: Any) -> Any:
    """fn(model, dataset, ...) -> per-item rows (a dict or tuple of numpy arrays / tensors, or None) computed on the
    ranks' shards and gathered: every rank gets what one process computes, rows in data set order. Validation
    figures and the good-feature Gaussians are then the same as in one process."""
    if not active():
        return fn(model, dataset, *args, **kwargs)
    part = shard(dataset)
    rows = fn(model, part, *args, **kwargs) if len(part) else None
    parts: list[Any] = [None] * world()
    dist.all_gather_object(parts, rows)
    return _interleave(parts, len(dataset))


def _interleave(parts: list[Any], total: int) -> Any:
    present = [part for part in parts if part is not None]
    if not present:
        return None
    first = present[0]
    if isinstance(first, dict):
        return {key: _interleave([p[key] if p is not None else None for p in parts], total) for key in first}
    if isinstance(first, tuple | list):
        return type(first)(
            _interleave([p[i] if p is not None else None for p in parts], total) for i in range(len(first))
        )
    out: torch.Tensor | np.ndarray
    if isinstance(first, torch.Tensor):
        out = first.new_empty((total, *first.shape[1:]))
    else:
        out = np.empty((total, *np.shape(first)[1:]), dtype=np.asarray(first).dtype)
    for index, part in enumerate(parts):
        if part is not None:
            out[index :: len(parts)] = part
    return out


def all_sum(*values: float) -> tuple[float, ...]:
    """Sums over the ranks (float64), e.g. a loss total and its image count."""
    if not active():
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tuple(float(v) for v in tensor.cpu())
