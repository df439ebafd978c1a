"""How long a run trains, and how often it writes: epochs, steps or minutes, counted over the whole run.

A budget counts everything a run has trained, across resumes: ``max_steps=1000`` on a checkpoint at step 600
trains 400 more, and a resumed run may shrink or grow its budget. Frames and checkpoints are spaced so that tiny
epochs (a few dozen images, one step each) do not write a checkpoint and a picture every step.
"""
from __future__ import annotations

import time

from .config import TrainConfig

# Tiny epochs must not write a checkpoint and a frame every step:
CHECKPOINT_MIN_STEPS, CHECKPOINT_MIN_SECONDS = 100, 60.0  # epoch-end checkpoints at least this far apart
FRAMES_PER_RUN = 100  # epoch-end frames: about this many per run at most (every total_steps // 100 steps)


class Budget:
    """The limits of one run (``config.epochs``, ``max_steps``, ``max_minutes``) and the spacing of its writes."""

    def __init__(self, config: TrainConfig, steps_per_epoch: int):
        self.config, self.steps_per_epoch = config, steps_per_epoch
        self.saved_step, self.saved_at = 0, time.perf_counter()  # the last checkpoint
        self.last_frame_seconds = 0.0
        self.elapsed = 0.0  # seconds trained before the current fit(), over the whole run
        self._started: float | None = None

    # the clock: training time only, summed over resumes (time between fit() calls does not count)
    def start(self) -> None:
        self._started = time.perf_counter()

    def stop(self) -> None:
        self.elapsed, self._started = self.seconds, None

    @property
    def seconds(self) -> float:
        """Seconds of training in this run, including the part before any resume."""
        return self.elapsed + (time.perf_counter() - self._started if self._started is not None else 0.0)

    def total_steps(self, epochs_done: int, epoch_start_step: int) -> int | None:
        """Steps the run will take if the budget is epochs or steps (None if only minutes are set)."""
        c = self.config
        by_epochs = epoch_start_step + (c.epochs - epochs_done) * self.steps_per_epoch if c.epochs else None
        limits = [n for n in (c.max_steps, by_epochs) if n is not None]
        return min(limits) if limits else None

    def steps_spent(self, step: int, total: int | None) -> bool:
        return total is not None and step >= total

    def time_spent(self, seconds: float) -> bool:
        return self.config.max_minutes is not None and seconds >= self.config.max_minutes * 60

    def seconds_left(self, seconds: float) -> float | None:
        """Seconds of the time budget left after ``seconds`` of training (None without one)."""
        return None if self.config.max_minutes is None else max(self.config.max_minutes * 60 - seconds, 0.0)

    def instance_noise(self, step: int, seconds: float, total: int | None) -> float:
        """The instance noise's standard deviation now: ``config.instance_noise``, annealed linearly to 0 over
        the planned steps (or, with a time budget only, over the planned minutes)."""
        sigma = self.config.instance_noise
        if not sigma:
            return 0.0
        if total:
            return sigma * max(0.0, 1 - step / total)
        if self.config.max_minutes:
            return sigma * max(0.0, 1 - seconds / (self.config.max_minutes * 60))
        return sigma

    def frame_due(self, step: int, last_frame_step: int, seconds: float, total: int | None) -> bool:
        """An epoch-end frame, unless epochs are so short that frames would pile up: about FRAMES_PER_RUN a run."""
        if total:
            return step - last_frame_step >= max(1, total // FRAMES_PER_RUN)
        return seconds - self.last_frame_seconds >= (self.config.max_minutes or 0) * 60 / FRAMES_PER_RUN

    def checkpoint_due(self, step: int, epoch: int) -> bool:
        """Every ``checkpoint_every`` epochs, at least CHECKPOINT_MIN_STEPS steps or CHECKPOINT_MIN_SECONDS apart."""
        if epoch % self.config.checkpoint_every:
            return False
        return (step - self.saved_step >= CHECKPOINT_MIN_STEPS
                or time.perf_counter() - self.saved_at >= CHECKPOINT_MIN_SECONDS)

    def saved(self, step: int) -> None:
        self.saved_step, self.saved_at = step, time.perf_counter()
