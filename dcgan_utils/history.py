"""A run's history: each step's statistics, the per-epoch means, frames, events and evaluations.

Steps return their statistics as tensors on the training device; :class:`StepStats` keeps them there and moves
them to the host in one transfer every ``LOG_EVERY`` steps (one sync, not one per step, on a GPU).
"""
from __future__ import annotations

import torch

from . import distributed

# The order of a step's statistics row (step.train_step stacks them in this order).
STAT_KEYS = ("loss_g", "loss_d", "d_real", "d_fake", "grad_norm_g", "grad_norm_d")
LOSS_COLUMNS = slice(0, 2)  # loss_g, loss_d: what must stay finite (fp16 may skip a step with inf gradients)
LOG_EVERY = 25  # steps between host syncs of the statistics


def new_history() -> dict:
    """An empty history: per-step lists, per-epoch means, frames, events and evaluations."""
    return {"step": [], **{k: [] for k in STAT_KEYS},
            "epoch": {"epoch": [], "step": [], "minutes": [], **{k: [] for k in STAT_KEYS}},
            "samples": [], "events": [], "eval": []}


def check_history(history: object) -> str | None:
    """What is wrong with a (loaded) history, in words, or None: resuming must not crash on a damaged one."""
    if not isinstance(history, dict):
        return f"its history is a {type(history).__name__}, not a dict"
    expected = new_history()
    for key in ("samples", "events", "eval"):  # optional: an older or a hand-made history may lack them
        history.setdefault(key, [])
    for key, empty in expected.items():
        if not isinstance(history.get(key), type(empty)):
            return f"its history lacks {key!r}" if key not in history else f"its history's {key!r} is damaged"
    lengths = {len(history[k]) for k in ("step", *STAT_KEYS)}
    if len(lengths) > 1 or any(not isinstance(history["epoch"].get(k), list) for k in expected["epoch"]):
        return "its history's columns do not line up"
    columns = [history[k] for k in ("step", *STAT_KEYS)] + [history["epoch"][k] for k in expected["epoch"]]
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for column in columns for v in column):
        return "its history holds values that are not numbers"
    rows = [*history["samples"], *history["events"], *history["eval"]]
    if any(not isinstance(row, dict) or not isinstance(row.get("step", 0), int) for row in rows) or \
            any("kind" not in event for event in history["events"]):
        return "its history's frames, events or evaluations are damaged"
    return None


class StepStats:
    """Step statistics waiting on the device, written into ``history`` by :meth:`flush`."""

    def __init__(self, history: dict, world_size: int = 1):
        self.history, self.world_size = history, world_size
        self.pending: list[torch.Tensor] = []

    def add(self, stats: torch.Tensor) -> bool:
        """Keep one step's statistics; True when it is time to :meth:`flush`."""
        self.pending.append(stats)
        return len(self.pending) >= LOG_EVERY

    def flush(self, step: int) -> int | None:
        """Append the pending rows (the last of them is ``step``) to the history. Returns the first step whose
        losses are not finite (the run diverged: that row and the later ones are dropped), else None."""
        if not self.pending:
            return None
        stats = torch.stack(self.pending)
        if self.world_size > 1:  # the mean over processes, so that every process takes the same decisions
            stats = distributed.mean_over_ranks(stats)
        stats = stats.cpu()
        first_step = step - len(self.pending) + 1
        self.pending = []
        # losses only: a step fp16's GradScaler skips has inf gradient norms but is not a divergence
        bad_rows = (~torch.isfinite(stats[:, LOSS_COLUMNS])).any(1)
        diverged_at = None
        if bad_rows.any():
            bad = int(bad_rows.nonzero()[0])
            diverged_at = first_step + bad
            self.history["events"].append({"step": diverged_at, "kind": "diverged", "message": "non-finite loss"})
            stats = stats[:bad]
        h = self.history
        for row_i, row in enumerate(stats.tolist()):
            h["step"].append(first_step + row_i)
            for key, value in zip(STAT_KEYS, row):
                h[key].append(value)
        return diverged_at

    def latest(self) -> dict[str, str]:
        """The last recorded step's losses and D outputs, for a progress bar."""
        h = self.history
        if not h["loss_g"]:
            return {}
        return {"loss_g": f"{h['loss_g'][-1]:.3f}", "loss_d": f"{h['loss_d'][-1]:.3f}",
                "D_x": f"{h['d_real'][-1]:.2f}", "D_G_z": f"{h['d_fake'][-1]:.2f}"}


def add_epoch(history: dict, epoch: int, step: int, start_step: int, minutes: float) -> None:
    """Record epoch ``epoch`` (1-based), which ran from ``start_step`` to ``step``: the means of its steps."""
    e = history["epoch"]
    e["epoch"].append(epoch)
    e["step"].append(step)
    e["minutes"].append(round(minutes, 4))
    for key in STAT_KEYS:
        values = history[key][start_step:step]  # history[i] is step i + 1
        e[key].append(sum(values) / max(1, len(values)))
