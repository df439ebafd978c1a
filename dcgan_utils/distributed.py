"""More than one GPU: the helpers behind ``torchrun --nproc_per_node N -m dcgan_utils train ...``.

torchrun starts N copies of the command and tells each which one it is through environment variables
(``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``). Each copy (a *rank*) then:

* joins one process group (NCCL between CUDA GPUs, gloo between CPU processes) and uses ``cuda:LOCAL_RANK``;
* keeps the whole dataset resident, draws the same epoch order as every other rank (it depends only on
  (seed, epoch)) and trains on its own slice of each step: ``batch_size`` images per rank, so a step consumes
  ``N x batch_size`` images and an epoch has N times fewer steps;
* wraps G and D in :class:`~torch.nn.parallel.DistributedDataParallel`, which averages the gradients of every
  backward pass over the ranks, so all ranks hold the same weights after every step. BatchNorm stays per rank
  (each rank normalises over its own ``batch_size`` images, as one GPU does at that batch size; no
  SyncBatchNorm), and its running statistics are broadcast from rank 0 before each forward;
* agrees with the others, every step, on whether to stop (time budget, Ctrl-C), and averages the step
  statistics (losses, D's outputs) over the ranks, so every rank takes the same decisions;
* writes nothing unless it is rank 0: rank 0 alone writes checkpoints, frames, history, plots and prints.

Nothing here runs in a single process: a plain ``python -m dcgan_utils train`` never touches this module's
collective operations, so its results stay exactly what they were.
"""
from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist
from torch import nn


def torchrun_world() -> int:
    """How many processes torchrun started (``WORLD_SIZE``); 1 outside torchrun."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", rank()))


def is_main() -> bool:
    return rank() == 0


def init_from_env(device: str = "auto") -> str | None:
    """Join torchrun's process group when started by torchrun with more than one process.

    ``device`` is the run's device setting: NCCL when it means CUDA (``auto`` with a GPU, ``cuda``), else gloo.
    Returns the backend, or None when there is nothing to join (a single process).
    """
    if torchrun_world() < 2 or is_distributed():
        return dist.get_backend() if is_distributed() else None
    if not dist.is_available():
        raise ValueError("torchrun started several processes but this PyTorch has no torch.distributed")
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' but PyTorch sees no CUDA GPU: use --device cpu (gloo) under torchrun")
        if local_rank() >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local_rank()} but only {torch.cuda.device_count()} CUDA GPUs: run "
                             f"torchrun with --nproc_per_node {torch.cuda.device_count()} or fewer")
        torch.cuda.set_device(local_rank())
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend)
    return backend


@contextlib.contextmanager
def torchrun_session(device: str = "auto"):
    """Around one command: join torchrun's process group when there is one (announced by rank 0), silence the
    other ranks' stdout (rank 0 speaks for the run), and leave the group at the end, whatever happens."""
    backend = init_from_env(device)
    try:
        if backend is None:
            yield
            return
        where = "one GPU each, cuda:LOCAL_RANK" if backend == "nccl" else "CPU"
        if is_main():
            print(f"torchrun: {world_size()} processes ({backend}, {where}); each trains on its own batch_size "
                  f"images per step (a step takes {world_size()} x batch_size); rank 0 writes the outputs",
                  flush=True)
            yield
        else:
            with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
                yield
        # A normal end: leave the group together (rank 0 writes the outputs after the others are done; a rank
        # that tore its group down while another still had it open once aborted at exit, under load).
        dist.barrier()
    finally:
        shutdown()


def shutdown() -> None:
    """Leave the process group (if this process joined one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def place(device: torch.device) -> tuple[int, int, torch.device]:
    """This process's rank, the number of processes, and its device (under torchrun, its own GPU)."""
    if world_size() > 1 and device.type == "cuda":
        device = torch.device("cuda", local_rank())
    return rank(), world_size(), device


def report_agreement(*modules: nn.Module) -> None:
    """Print (on every rank; only rank 0's stdout is shown) whether all ranks hold the same weights."""
    same = ranks_agree(*modules)
    print(f"{world_size()} processes: G and D weights " + (
        "identical on every process" if same else "DIFFER between processes (a bug: please report it)"))


def rank_seed(seed: int, rank_: int, step: int) -> int:
    """A different random stream per rank (latents, instance noise, dropout), reproducible from (seed, rank, step)."""
    return (seed * 1_000_003 + step) * 1009 + rank_ + 1


def any_rank(*flags: bool, device: torch.device) -> list[bool]:
    """For each flag: True if it is True on any rank (one all-reduce)."""
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def mean_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of ``t`` over the ranks (a non-finite value anywhere stays non-finite)."""
    t = t.clone()
    dist.all_reduce(t)
    return t / dist.get_world_size()


def ranks_agree(*modules: nn.Module) -> bool:
    """True if every rank holds exactly the same parameters as rank 0 (one broadcast and one all-reduce)."""
    params = [p.detach().reshape(-1) for m in modules for p in m.parameters()]
    mine = torch.cat(params).float()
    theirs = mine.clone()
    dist.broadcast(theirs, src=0)
    differ = torch.tensor([0.0 if torch.equal(mine, theirs) else 1.0], device=mine.device)
    dist.all_reduce(differ, op=dist.ReduceOp.MAX)
    return not bool(differ.item())


class RealAndFake(nn.Module):
    """D's logits for a real and a fake batch in one ``forward``: DistributedDataParallel wraps ``forward`` only
    (not D's ``logits`` method) and expects one forward per backward, and D's update backpropagates both."""

    def __init__(self, discriminator: nn.Module):
        super().__init__()
        self.discriminator = discriminator

    def forward(self, real: torch.Tensor, fake: torch.Tensor, real_labels: torch.Tensor | None = None,
                fake_labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.discriminator.logits(real, real_labels), self.discriminator.logits(fake, fake_labels)


def wrap(generator: nn.Module, discriminator: nn.Module, device: torch.device):
    """DistributedDataParallel copies of G and of D's real-and-fake pass (rank 0's weights are broadcast)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    return DDP(generator, device_ids=ids), DDP(RealAndFake(discriminator), device_ids=ids)
