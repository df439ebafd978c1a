"""How long-running work shows progress, decided in one place: a live bar, plain lines for logs, or nothing.

:func:`progress_mode` chooses; :class:`ProgressLines` is the plain-lines report (training uses it through
``Trainer.fit``; data loading and the classifier's training hide their bars unless the mode is ``"bar"``).
"""
from __future__ import annotations

import os
import sys
import time

PROGRESS_MODES = ("bar", "lines", "off")
PROGRESS_LINE_SECONDS = 10.0  # at least this long between two lines ...
PROGRESS_LINE_SHARE = 0.1  # ... and, when the total is known, at least this share of it (about ten lines a run)


def progress_mode(enabled: bool = True) -> str:
    """How progress is shown, decided here only: ``"bar"``, ``"lines"`` or ``"off"``.

    A live tqdm bar in a terminal and in a Jupyter notebook; plain lines (one every ``PROGRESS_LINE_SECONDS``
    and a summary at the end, no carriage returns) when stderr is a file or a pipe (logs, CI, nohup, SLURM);
    nothing when ``enabled`` is False (``progress=False``). The environment variable
    ``DCGAN_PROGRESS=bar|lines|off`` overrides the choice (``tools/run_notebooks.py`` sets ``lines``, so that a
    notebook executed headless keeps a finished summary instead of a widget frozen at 0%).
    """
    if not enabled:
        return "off"
    forced = os.environ.get("DCGAN_PROGRESS", "").strip().lower()
    if forced:
        if forced not in PROGRESS_MODES:
            raise ValueError(f"DCGAN_PROGRESS={forced!r}: use one of {', '.join(PROGRESS_MODES)}")
        return forced
    if _in_notebook():
        return "bar"
    try:
        return "bar" if sys.stderr.isatty() else "lines"
    except (AttributeError, ValueError):  # no stderr, or a closed one
        return "lines"


class ProgressLines:
    """Progress for logs: a plain line every ``every`` seconds (and every tenth of the run when its length is
    known, so a notebook keeps about ten lines) and a summary line when closed (steps done,
    minutes, steps/s). Implements the part of tqdm's interface that :meth:`Trainer.fit` uses."""

    def __init__(self, total: int | None, initial: int = 0, desc: str = "", every: float = PROGRESS_LINE_SECONDS,
                 seconds_left: float | None = None):
        """``seconds_left``: a time budget that may end the run before ``total`` (the estimate says so)."""
        self.total, self.n, self.initial, self.desc, self.every = total, initial, initial, desc, every
        self.seconds_left = seconds_left
        self.start = self.last = time.perf_counter()
        self.last_n = initial
        self.postfix: dict[str, str] = {}
        self.closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        step_due = not self.total or self.n - self.last_n >= PROGRESS_LINE_SHARE * self.total
        every = self.every if self.total else max(self.every, 3 * PROGRESS_LINE_SECONDS)  # a time budget: fewer
        if now - self.last >= every and step_due:
            self.last, self.last_n = now, self.n
            print(self._line(now), flush=True)

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self.postfix = {k: str(v) for k, v in values.items()}

    def _where(self) -> str:
        return f"step {self.n:,}" + (f"/{self.total:,} ({self.n / self.total:.0%})" if self.total else "")

    def _line(self, now: float) -> str:
        rate = (self.n - self.initial) / max(now - self.start, 1e-9)
        left = (self.total - self.n) / rate if self.total and rate > 0 else None
        if self.seconds_left is not None:  # the time budget ends the run first: say so, not the step estimate
            budget_left = max(self.seconds_left - (now - self.start), 0.0)
            left = budget_left if left is None or budget_left < left else left
        left = f", {left / 60:.1f} min left" if left is not None else ""
        stats = ", ".join(f"{k} {v}" for k, v in self.postfix.items())
        return f"{self.desc}: {self._where()}, {rate:.1f} steps/s{left}" + (f"; {stats}" if stats else "")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        seconds = max(time.perf_counter() - self.start, 1e-9)
        print(f"{self.desc}: {self.n - self.initial:,} steps in {seconds / 60:.2f} min "
              f"({(self.n - self.initial) / seconds:.1f} steps/s), now at {self._where()}", flush=True)


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython's IPKernelApp), where tqdm draws a widget."""
    try:
        from IPython import get_ipython

        return get_ipython() is not None and "IPKernelApp" in get_ipython().config
    except Exception:
        return False


def training_bar(desc: str, total: int | None, initial: int = 0, seconds_left: float | None = None,
                 enabled: bool = True):
    """A training run's progress, as :func:`progress_mode` decides: :class:`ProgressLines` for logs, else a tqdm
    bar (a widget in Jupyter). With a time budget (``seconds_left``), the bar's time left is the sooner of the
    steps' and the budget's ends: a 5-minute run planned for 40 epochs says "5 min left", not "2 h"."""
    mode = progress_mode(enabled)
    if mode == "lines":
        return ProgressLines(total=total, initial=initial, desc=desc, seconds_left=seconds_left)
    from tqdm.auto import tqdm

    if mode == "off" or seconds_left is None:
        return tqdm(total=total, initial=initial, desc=desc, unit="step", disable=mode == "off", dynamic_ncols=True)

    class BudgetBar(tqdm):
        @property
        def format_dict(self):
            d = super().format_dict
            left = max(seconds_left - (d.get("elapsed") or 0), 0.0)
            if self.total and d.get("rate"):
                left = min(left, (self.total - self.n) / d["rate"])
            d["budget_left"] = self.format_interval(left)
            return d

    bar_format = ("{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{budget_left}, "
                  "{rate_fmt}{postfix}]" if total else "{desc}: {n_fmt} steps [{elapsed}<{budget_left}, "
                  "{rate_fmt}{postfix}]")
    return BudgetBar(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True, bar_format=bar_format)
