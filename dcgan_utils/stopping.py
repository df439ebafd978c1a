"""Stopping a run on request: Ctrl-C, SIGTERM, or Jupyter's stop button (which sends the kernel a SIGINT).

While a run trains, :class:`StopSignals` only records these signals: none, however many and whenever they come
(inside a step, a save, the final plots), raises inside the training code, so a checkpoint never holds half a
step. The trainer finishes the step, saves, and then stops the way its caller expects:

* on the command line it returns, and ``python -m dcgan_utils train`` exits with 130 (Ctrl-C) or 143 (SIGTERM);
* in a Jupyter notebook it raises :class:`TrainingInterrupted`, so the cells after it do not run (as for any
  interrupted cell) and the notebook says, in one message, how to resume: run the cell again.
"""
from __future__ import annotations

import signal
import threading
from pathlib import Path

STOP_SIGNALS = {"SIGINT": "Ctrl-C", "SIGTERM": "SIGTERM"}  # both: finish the step, save, stop


def in_jupyter() -> bool:
    """True inside a Jupyter kernel (IPython's IPKernelApp)."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
        return shell is not None and "IPKernelApp" in shell.config
    except Exception:
        return False


class TrainingInterrupted(KeyboardInterrupt):
    """A notebook's training cell was stopped; the checkpoint is saved. Jupyter shows only the message."""

    def _render_traceback_(self) -> list[str]:  # IPython shows these lines instead of a traceback
        return [f"TrainingInterrupted: {self}"]


def stop_message(step: int, checkpoint: Path, signum: int | None, notebook: bool) -> str:
    """What a stopped run says, the same way every time."""
    name = STOP_SIGNALS.get(signal.Signals(signum).name, "a signal") if signum else "a stop request"
    again = "run this cell again" if notebook else "run the same command again"
    return f"Stopped at step {step} ({name}): checkpoint saved in {checkpoint}; {again} to resume from step {step}."


def diverged_message(step: int, checkpoint: Path) -> str:
    kept = (f"the last good checkpoint ({checkpoint}) is kept" if checkpoint.is_file()
            else "no checkpoint had been written yet")
    return (f"\nTraining diverged at step {step}: a loss became NaN/inf, so the run stopped; {kept}. Try a lower "
            "learning rate, BatchNorm eps 0.8 (bn_eps=0.8), label smoothing, or precision='fp32'.")


class StopSignals:
    """Within ``with StopSignals() as stop:``, SIGINT and SIGTERM set ``stop.requested`` instead of raising.

    Handlers are installed in the main thread only (Python runs signal handlers there); the previous handlers
    are restored on exit. The handlers print nothing (a print interrupted by a handler that prints fails):
    :meth:`announce` speaks at the next safe point.
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self._previous: dict[int, object] = {}
        self._announced = False

    @property
    def requested(self) -> bool:
        return bool(self.received)

    @property
    def first(self) -> int | None:
        """The signal that stopped the run (None if none came)."""
        return self.received[0] if self.received else None

    def _record(self, signum, frame) -> None:
        self.received.append(signum)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for name in STOP_SIGNALS:
                if hasattr(signal, name):
                    signum = getattr(signal, name)
                    self._previous[signum] = signal.signal(signum, self._record)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def announce(self) -> None:
        """Say once which signal came and what happens now (called outside the handlers)."""
        if not self.received or self._announced:
            return
        self._announced = True
        name = STOP_SIGNALS.get(signal.Signals(self.received[0]).name, "a signal")
        again = (f" (asked {len(self.received)} times: the step still finishes and the checkpoint is saved whole)"
                 if len(self.received) > 1 else "")
        print(f"\n{name}: finishing this step and saving a checkpoint{again}", flush=True)
