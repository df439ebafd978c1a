"""Small helpers the notebooks share: what machine a run is on, and how long it took."""
from __future__ import annotations

import os
import platform
import time

import torch

from .config import pick_device


def hardware_summary(device: str = "auto") -> str:
    """One line naming the device a notebook trains on, e.g. 'CPU (2 cores, x86_64), torch 2.14.1'."""
    dev = pick_device(device)
    if dev.type == "cuda":
        what = f"GPU {torch.cuda.get_device_name(dev)}"
    elif dev.type == "mps":
        what = "Apple GPU (MPS)"
    else:
        what = f"CPU ({os.cpu_count()} cores, {platform.machine()})"
    return f"{what}, torch {torch.__version__}"


class Stopwatch:
    """Wall-clock time since creation, for the 'this notebook took N minutes' line."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def minutes(self) -> float:
        return (time.perf_counter() - self.start) / 60

    def __str__(self) -> str:
        return f"{self.minutes:.1f} min"
