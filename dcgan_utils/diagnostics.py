"""Reading a run's history: its statistics, and the one definition of "D has won" the course uses.

The trainer records, per step, the values named in :data:`STAT_KEYS`; these pure functions read them back, so
the live collapse warning, :func:`d_won` and the notebooks agree on what they call a won game.
"""
from __future__ import annotations

from .config import FASTER_G_LRS, TrainConfig
from .history import LOSS_COLUMNS, STAT_KEYS, new_history  # noqa: F401  (the history's layout lives there)

# D has won when, averaged over a window of steps, D(G(z)) (D's probability "real" on fakes) is below this:
# D spots nearly every fake, and G's samples stop improving (notebook 09).
D_WON_BELOW = 0.05
D_WON_WINDOW = 50  # steps averaged by d_won(); the live warning uses TrainConfig.collapse_window


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


class CollapseWatch:
    """The live "D has won" check: an event in ``history["events"]`` once per ``window`` steps while
    :func:`d_has_won` holds over the last ``window`` steps.

    Only the first event of a :meth:`start` (one ``fit()``) is printed in full, with advice: the same advice
    every 100 steps buries the log. Later ones are kept in the history and summed up by :meth:`summary`.
    """

    def __init__(self, history: dict, window: int):
        self.history, self.window = history, window
        self.warned_at = -10 ** 9
        self.printed_at: int | None = None  # index in history["events"] of this fit's printed warning

    def start(self) -> None:
        self.printed_at = None

    def check(self, step: int, advice: str) -> str | None:
        """Record an event if D has won at ``step``; returns the message to print (the first of a fit) or None."""
        w, h = self.window, self.history
        if step - self.warned_at < w or not d_has_won(h["d_fake"], window=w):
            return None
        self.warned_at = step
        if self.printed_at is not None:
            h["events"].append({"step": step, "kind": "collapse-warning", "message": "D still winning"})
            return None
        self.printed_at = len(h["events"])
        message = (f"step {step}: D is winning (mean D(G(z)) over the last {w} steps "
                   f"{tail_mean(h['d_fake'], w):.3f}, D loss {tail_mean(h['loss_d'], w):.3f}, G loss "
                   f"{tail_mean(h['loss_g'], w):.1f}); G's samples have stopped improving and may collapse. "
                   + advice)
        h["events"].append({"step": step, "kind": "collapse-warning", "message": message})
        return message

    def summary(self) -> str | None:
        """One line if the warning fired more than once in this fit, else None. The window it names is the
        warnings' own: the steps at which D had won over the ``window`` steps before."""
        if self.printed_at is None:
            return None
        this_fit = self.history["events"][self.printed_at:]  # a resumed run's history has older ones
        warnings = [e["step"] for e in this_fit if e["kind"] == "collapse-warning"]
        if len(warnings) < 2:
            return None
        end = "still at the end" if d_has_won(self.history["d_fake"], window=self.window) else "not at the end"
        return (f"D was still winning at {len(warnings) - 1} later check(s) (steps {warnings[1]}-{warnings[-1]}), "
                f"{end} (each check averages D(G(z)) over the {self.window} steps before it).")


def collapse_advice(c: TrainConfig) -> str:
    """What to do when D has won, for a run with settings ``c``: the usual fix, or what is left if it has it."""
    if c.lr > (c.lr_d or c.lr):  # the usual fix is already in place: say what is left to do
        return (f"This run already gives G the faster learning rate ({c.lr:g} vs D's {c.lr_d:g}): its samples "
                "from before D won are in frames/ and checkpoints"
                + (", and the EMA of G's weights it samples from changes slowly" if c.ema else "")
                + "; a shorter run, or a D learning rate lower still, avoids the late part.")
    lr, lr_d = (f"{FASTER_G_LRS[k]:.0e}".replace("e-0", "e-") for k in ("lr", "lr_d"))  # "8e-4"
    return (f"What fixed this in notebook 09 (64x64 MNIST): a faster G than D (lr={lr}, lr_d={lr_d}; CLI --lr "
            f"{lr} --lr-d {lr_d}) with the DCGAN init (init='dcgan'); label smoothing, instance noise and "
            "spectral norm on D did not.")
