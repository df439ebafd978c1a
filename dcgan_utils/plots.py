"""Pictures of a run: loss curves (G red, D blue, as in seed 000), D's outputs, image grids and the training GIF.

Every function draws a matplotlib figure; ``save_to`` writes a PNG. In a notebook, ``show=True`` (the default)
displays it inline and returns None, so that a cell ending in a plot call draws it once; with ``show=False``
(or outside a notebook) the figure is returned for further use.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from .runfolder import atomic_write
from .progress import _in_notebook

G_COLOR, D_COLOR = "red", "blue"


def _plt():
    import matplotlib.pyplot as plt  # inline in Jupyter, Agg when there is no display

    return plt


def _finish(fig, save_to: str | Path | None, show: bool):
    plt = _plt()
    fig.tight_layout()
    if save_to is not None:  # atomically: a full disk or a planted symlink never leaves a half/redirected file
        save_to = Path(save_to)
        save_to.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(save_to, lambda f: fig.savefig(f, dpi=100, format=save_to.suffix[1:] or "png"))
    if show and _in_notebook():
        plt.show()
        return None
    plt.close(fig)
    return fig


def _smooth(values: list[float], window: int) -> np.ndarray:
    if window <= 1 or len(values) < window:
        return np.asarray(values, dtype=float)
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


def plot_losses(history: dict, title: str = "", save_to: str | Path | None = None, show: bool = True,
                smooth: int = 1):
    """Seed 000's loss graphs: per batch (left) and per epoch (right); generator red, discriminator blue."""
    plt = _plt()
    fig, (ax_b, ax_e) = plt.subplots(1, 2, figsize=(11, 3.6))
    steps = np.asarray(history["step"])
    for key, color, label in (("loss_g", G_COLOR, "Generator"), ("loss_d", D_COLOR, "Discriminator")):
        values = _smooth(history[key], smooth)
        ax_b.plot(steps[len(steps) - len(values):], values, color=color, lw=0.8, label=label)
        ax_e.plot(history["epoch"]["epoch"], history["epoch"][key], "o-", color=color, label=label)
    ax_b.set(xlabel="batch (step)", ylabel="loss", title=f"{title} loss per batch".strip())
    ax_e.set(xlabel="epoch", ylabel="loss", title=f"{title} loss per epoch".strip())
    for event in history.get("events", []):
        if event["kind"] == "diverged":
            ax_b.axvline(event["step"], color="black", ls="--", lw=1, label=f"diverged (step {event['step']})")
    for ax in (ax_b, ax_e):
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(alpha=0.3)
    if not history["epoch"]["epoch"]:
        ax_e.text(0.5, 0.5, "no full epoch yet", ha="center", va="center", transform=ax_e.transAxes)
    return _finish(fig, save_to, show)


def plot_d_outputs(history: dict, title: str = "", save_to: str | Path | None = None, show: bool = True,
                   smooth: int = 10):
    """D(x) on real images and D(G(z)) on fakes per step, and both networks' gradient norms."""
    plt = _plt()
    fig, (ax_d, ax_n) = plt.subplots(1, 2, figsize=(11, 3.4))
    steps = np.asarray(history["step"])
    for key, color, label in (("d_real", "green", "D(x), real"), ("d_fake", "purple", "D(G(z)), fake")):
        values = _smooth(history[key], smooth)
        ax_d.plot(steps[len(steps) - len(values):], values, color=color, lw=1, label=label)
    ax_d.axhline(0.5, color="gray", lw=0.8, ls=":")
    ax_d.set(xlabel="step", ylabel="mean probability", ylim=(-0.02, 1.02), title=f"{title} D's outputs".strip())
    for key, color, label in (("grad_norm_g", G_COLOR, "Generator"), ("grad_norm_d", D_COLOR, "Discriminator")):
        values = _smooth(history[key], smooth)
        ax_n.plot(steps[len(steps) - len(values):], values, color=color, lw=1, label=label)
    ax_n.set(xlabel="step", ylabel="gradient norm", yscale="log", title=f"{title} gradient norms".strip())
    for ax in (ax_d, ax_n):
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
    return _finish(fig, save_to, show)


def grid_image(images: torch.Tensor, nrow: int = 8, padding: int = 2) -> np.ndarray:
    """(N, C, H, W) images in [-1, 1] as one uint8 (H, W, 3) grid."""
    from torchvision.utils import make_grid

    images = torch.nan_to_num(images.detach().float().cpu()).clamp(-1, 1)
    grid = make_grid(images, nrow=nrow, padding=padding, normalize=True, value_range=(-1, 1), pad_value=1.0)
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8) -> Path:
    """Write a grid of (N, C, H, W) images in [-1, 1] as a PNG (atomically, see checkpoint.atomic_write)."""
    import imageio.v3 as iio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded = iio.imwrite("<bytes>", grid_image(images, nrow=nrow), extension=path.suffix or ".png")
    return atomic_write(path, lambda f: f.write(encoded))


def grid_size(num: int, image_height: int, image_width: int, nrow: int, padding: int = 2) -> tuple[int, int]:
    """(height, width) in pixels of :func:`grid_image`'s grid of ``num`` images, ``nrow`` to a row."""
    padding = 0 if num == 1 else padding
    cols = min(nrow, num)
    return -(-num // cols) * (image_height + padding) + padding, cols * (image_width + padding) + padding


def save_grid_batches(batches: Iterable[torch.Tensor], num: int, path: str | Path, nrow: int = 8,
                      padding: int = 2) -> Path:
    """:func:`save_grid` for many images: ``batches`` of (n, C, H, W) images in [-1, 1] (``num`` in all) are
    drawn one by one into a single uint8 grid, the same pixels :func:`grid_image` gives, so memory stays about
    3 bytes per pixel of the grid (plus the PNG encoder's copy) instead of a float grid and its copies."""
    import imageio.v3 as iio

    grid = None
    index = 0
    padding = 0 if num == 1 else padding  # make_grid returns a single image as it is
    for batch in batches:
        batch = torch.nan_to_num(batch.detach().float().cpu()).clamp(-1, 1)
        pixels = ((batch + 1) / 2 * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        if pixels.shape[-1] == 1:
            pixels = pixels.repeat(3, axis=-1)
        size = pixels.shape[1:3]
        if grid is None:
            grid = np.full((*grid_size(num, *size, nrow, padding), 3), 255, np.uint8)
        for image in pixels:
            top, left = padding + (index // min(nrow, num)) * (size[0] + padding), \
                padding + (index % min(nrow, num)) * (size[1] + padding)
            grid[top:top + size[0], left:left + size[1]] = image
            index += 1
    if grid is None or index != num:
        raise ValueError(f"expected {num} images for the grid, got {index}")
    path = Path(path)
    return atomic_write(path, lambda f: iio.imwrite(f, grid, extension=path.suffix or ".png"))


def show_images(images: torch.Tensor, nrow: int = 8, title: str = "", labels: list[str] | None = None,
                save_to: str | Path | None = None, show: bool = True, scale: float = 1.0):
    """Show (N, C, H, W) images in [-1, 1] as a grid (with one label per image when ``labels`` is given)."""
    plt = _plt()
    n = images.shape[0]
    if labels is None:
        grid = grid_image(images, nrow=nrow)
        fig, ax = plt.subplots(figsize=(scale * grid.shape[1] / 60, scale * grid.shape[0] / 60 + 0.4))
        ax.imshow(grid)
        ax.set_axis_off()
        ax.set_title(title)
        return _finish(fig, save_to, show)
    cols = min(n, nrow)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(scale * 1.2 * cols, scale * 1.35 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < n:
            ax.imshow(grid_image(images[i:i + 1], nrow=1, padding=0), cmap="gray")
            ax.set_title(labels[i], fontsize=8)
    fig.suptitle(title)
    return _finish(fig, save_to, show)


def make_gif(run_dir: str | Path, path: str | Path | None = None, seconds_per_frame: float = 0.3,
             max_frames: int = 60) -> Path | None:
    """The fixed-latent grids of ``run_dir/frames`` as one GIF (at most ``max_frames``, evenly spaced); a file
    there that is not such a frame (unreadable, another size) is left out."""
    import imageio.v3 as iio

    run_dir = Path(run_dir)
    frames = sorted((run_dir / "frames").glob("step_*.png"))
    if not frames:
        return None
    if len(frames) > max_frames:
        keep = np.linspace(0, len(frames) - 1, max_frames).round().astype(int)
        frames = [frames[i] for i in sorted(set(keep))]
    images = []
    for frame in frames:
        try:
            images.append(iio.imread(frame))
        except Exception:  # noqa: BLE001 (imageio raises many kinds) a damaged or foreign frame is left out
            continue
    images = [image for image in images if image.shape == images[-1].shape] if images else []
    if not images:
        return None
    durations = [seconds_per_frame * 1000] * (len(images) - 1) + [1500]  # hold the last frame
    if len(images) == 1:  # Pillow takes one frame's duration as a number, not a list (a run stopped at step 0)
        durations = durations[0]
    path = Path(path) if path else run_dir / "training.gif"
    encoded = iio.imwrite("<bytes>", np.stack(images), extension=".gif", duration=durations, loop=0)
    return atomic_write(path, lambda f: f.write(encoded))


def show_gif(path: str | Path, width: int = 300):
    """Display a GIF inline in a notebook."""
    from IPython.display import Image, display

    display(Image(filename=str(path), width=width))


def plot_runs(histories: dict[str, dict], key: str = "loss_d", smooth: int = 20, title: str = "",
              save_to: str | Path | None = None, show: bool = True, ylim: tuple | None = None):
    """One curve per run for one history key, e.g. to compare BatchNorm eps 1e-5 vs 0.8."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for name, history in histories.items():
        steps = np.asarray(history["step"])
        values = _smooth(history[key], smooth)
        ax.plot(steps[len(steps) - len(values):], values, lw=1, label=name)
        for event in history.get("events", []):
            if event["kind"] == "diverged":
                ax.axvline(event["step"], ls="--", lw=1, color=ax.lines[-1].get_color())
    ax.set(xlabel="step", ylabel=key, title=title or key)
    if ylim:
        ax.set_ylim(*ylim)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _finish(fig, save_to, show)


EVAL_LABELS = {"fd": "FD (classifier features)", "kid": "KID (classifier features)",
               "classes_present": "classes present",
               "class_kl": "class KL to uniform", "confident": "confidently classified share"}


def plot_eval(histories: dict | dict[str, dict], keys: tuple[str, ...] = ("fd", "classes_present", "confident"),
              references: dict[str, dict] | None = None, title: str = "", save_to: str | Path | None = None,
              show: bool = True, x: str = "epoch"):
    """Quality over training: each ``history["eval"]`` metric (Trainer's ``eval_every``, or
    ``Trainer.evaluate``) against ``x``: ``"epoch"``, ``"step"`` or ``"minutes"`` of training (the clock).

    ``histories`` is one history or ``{run name: history}``; ``references`` (e.g. ``result["reference"]`` from
    :func:`dcgan_utils.evaluate_checkpoint`) draws each reference row's value as a dashed line.
    """
    plt = _plt()
    if "eval" in histories:
        histories = {"": histories}
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, history in histories.items():
            rows = history.get("eval", [])
            ax.plot([r[x] for r in rows], [r[key] for r in rows], "o-", label=name or None)
        for (ref_name, ref), color in zip((references or {}).items(), ("green", "gray", "black")):
            ax.axhline(ref[key], ls="--", lw=1, color=color, label=ref_name)
        ax.set(xlabel={"minutes": "minutes of training"}.get(x, x), title=EVAL_LABELS.get(key, key))
        if key == "fd":  # KID can dip below 0 (unbiased estimate): linear
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _finish(fig, save_to, show)


def plot_eval_bars(results: dict[str, dict], keys: tuple[str, ...] = ("fd", "classes_present", "confident"),
                   title: str = "", save_to: str | Path | None = None, show: bool = True):
    """One bar per named evaluation result (runs and reference rows side by side), one panel per metric."""
    plt = _plt()
    names = list(results)
    cols = min(2, len(keys))  # two panels a row, tall enough for long run names under the bars
    rows = (len(keys) + cols - 1) // cols
    label_room = 0.075 * max(len(n) for n in names)
    fig, axes = plt.subplots(rows, cols, figsize=(max(5.0, 0.45 * len(names) + 1.5) * cols, (2.6 + label_room) * rows),
                             squeeze=False)
    colors = ["gray" if "noise" in n else "green" if "real" in n else "tab:blue" for n in names]
    for ax, key in zip(axes.flat, keys):
        values = [results[n][key] for n in names]
        ax.bar(range(len(names)), values, color=colors)
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
        ax.set_title(EVAL_LABELS.get(key, key))
        if key == "fd":  # KID can dip below 0 (unbiased estimate): linear
            ax.set_yscale("log")
        ax.grid(alpha=0.3, axis="y")
    for ax in axes.flat[len(keys):]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    with warnings.catch_warnings():  # long run names can defeat tight_layout; the figure is still readable
        warnings.simplefilter("ignore", UserWarning)
        return _finish(fig, save_to, show)
