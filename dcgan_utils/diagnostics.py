"""Reading a run's history: its statistics, and the one definition of "D has won" the course uses.

The trainer records, per step, the values named in :data:`STAT_KEYS`; these pure functions read them back, so
the live collapse warning, :func:`d_won` and the notebooks agree on what they call a won game.
"""
from __future__ import annotations

# The order of a step's statistics row (Trainer.train_step stacks them in this order).
STAT_KEYS = ("loss_g", "loss_d", "d_real", "d_fake", "grad_norm_g", "grad_norm_d")
LOSS_COLUMNS = slice(0, 2)  # loss_g, loss_d: what must stay finite (fp16 may skip a step with inf gradients)

# D has won when, averaged over a window of steps, D(G(z)) (D's probability "real" on fakes) is below this:
# D spots nearly every fake, and G's samples stop improving (notebook 09).
D_WON_BELOW = 0.05
D_WON_WINDOW = 50  # steps averaged by d_won(); the live warning uses TrainConfig.collapse_window


def new_history() -> dict:
    """An empty history: per-step lists, per-epoch means, frames, events and evaluations."""
    return {"step": [], **{k: [] for k in STAT_KEYS},
            "epoch": {"epoch": [], "step": [], "minutes": [], **{k: [] for k in STAT_KEYS}},
            "samples": [], "events": [], "eval": []}


def tail_mean(values: list[float], n: int = 50) -> float:
    """Mean of the last ``n`` values (all of them if fewer; NaN if none)."""
    tail = values[-n:]
    return sum(tail) / len(tail) if tail else float("nan")


def d_has_won(d_fake: list[float], window: int = D_WON_WINDOW, threshold: float = D_WON_BELOW) -> bool:
    """Whether D had won over the last ``window`` steps (needs at least that many)."""
    return len(d_fake) >= window and tail_mean(d_fake, window) < threshold


def d_won(history: dict, window: int = D_WON_WINDOW, threshold: float = D_WON_BELOW) -> dict:
    """When D had won: the steps where D(G(z)), averaged over the last ``window`` steps, was below ``threshold``.

    Returns ``share`` (of the run's steps), ``first_step`` and ``last_step`` (None if D never won) and ``at_end``
    (D still winning at the run's last step): a run that escaped has ``last_step`` well before its end.
    """
    d_fake, steps = history["d_fake"], history["step"]
    if window < 1 or not 0 < threshold < 1:
        raise ValueError(f"window={window} must be >= 1 and threshold={threshold} in (0, 1)")
    won, total = [], 0.0
    for i, value in enumerate(d_fake):
        total += value - (d_fake[i - window] if i >= window else 0.0)
        if i + 1 >= window and total / window < threshold:
            won.append(steps[i])
    return {"share": len(won) / max(1, len(d_fake)), "first_step": won[0] if won else None,
            "last_step": won[-1] if won else None, "at_end": bool(won) and won[-1] == steps[-1]}


def describe_d_won(history: dict, window: int = D_WON_WINDOW) -> str:
    """:func:`d_won` in words, e.g. 'steps 113-1000 (89% of the run), still at the end'."""
    won = d_won(history, window=window)
    if won["first_step"] is None:
        return "never"
    end = "still at the end" if won["at_end"] else "then G escaped"
    return f"steps {won['first_step']}-{won['last_step']} ({won['share']:.0%} of the run), {end}"


def format_events(history: dict) -> str:
    """The run's events (collapse warnings, divergence) as 'kind at step N (and K more, to step M), ...', or 'none'."""
    grouped: dict[str, list[int]] = {}
    for event in history["events"]:
        grouped.setdefault(event["kind"], []).append(event["step"])
    return ", ".join(f"{kind} at step {steps[0]}" + (f" (and {len(steps) - 1} more, to step {steps[-1]})"
                                                     if len(steps) > 1 else "")
                     for kind, steps in grouped.items()) or "none"


def summary(history: dict, n: int = 50) -> str:
    """The last ``n`` steps' means of the losses and D's outputs, in one line."""
    return (f"last {n} steps: G loss {tail_mean(history['loss_g'], n):.2f}, D loss "
            f"{tail_mean(history['loss_d'], n):.2f}, D(x) {tail_mean(history['d_real'], n):.2f}, "
            f"D(G(z)) {tail_mean(history['d_fake'], n):.2f}")
