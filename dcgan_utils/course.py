"""The steps the notebooks share, taught once where they first appear and then called from here.

* :func:`budget`: how long to train on this machine (CI's fast mode, a CPU, a GPU), with a sentence saying so.
* :data:`COURSE_RUNS` and :func:`find_or_train`: a later notebook uses the run notebook 02 or 03 trained, and
  trains exactly that run (same settings, same folder) when it is missing, then checks it is usable.
* :func:`show_frames`, :func:`epoch_table`, :func:`legends_outside`, :func:`eval_table`, :func:`cli_command`,
  :func:`checkerboard_score`, :func:`most_influential_dims`: figures and measurements used by more than one
  notebook.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .config import BUDGET_FIELDS, TrainConfig, pick_device
from .diagnostics import d_won, describe_d_won
from .evaluate import EVAL_DATASETS, evaluate_generator
from .sampling import generate_from, seeded_latents
from .train import Trainer

# CI's fast mode: a tiny network for a few dozen steps on 512 shipped images (checks that cells run, not quality)
FAST_SETTINGS = {"width": 16, "batch_size": 32, "max_steps": 30, "source": "subset", "limit": 512}


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


def _describe(settings: dict) -> str:
    names = {"width": "width", "batch_size": "batch", "epochs": "epochs", "max_steps": "steps",
             "max_minutes": "minutes at most", "limit": "images"}
    return ", ".join(f"{names[k]} {v:,}" if isinstance(v, int) else f"{names[k]} {v:g}"
                     for k, v in settings.items() if k in names and v is not None)


def budget(device: torch.device | str, fast: bool, cpu: dict, gpu: dict, fast_settings: dict | None = None
           ) -> tuple[dict, str]:
    """The training settings for this machine and a sentence that says which were chosen and why.

    ``fast`` (CI) takes ``FAST_SETTINGS`` updated with ``fast_settings``; otherwise ``cpu`` on a CPU and ``gpu``
    on a CUDA or Apple GPU. Settings left at None fall to the trainer's defaults (the CPU profile on a CPU).
    """
    device = pick_device(device) if isinstance(device, str) else device
    if fast:
        settings = {**FAST_SETTINGS, **(fast_settings or {})}
        return settings, f"FAST mode (CI): {_describe(settings)}"
    if device.type == "cpu":
        return dict(cpu), f"no GPU: {_describe(cpu) or 'the CPU profile'}"
    return dict(gpu), f"{device.type.upper()}: {_describe(gpu) or 'the seed settings'}"


@dataclass(frozen=True)
class CourseRun:
    """A run a notebook trains and later notebooks reuse: its data and its budget on each kind of machine."""

    notebook: str  # e.g. "02_train_mnist_32": also the run folder's name under RUNS_DIR
    dataset: str
    image_size: int
    cpu: dict = field(default_factory=dict)
    gpu: dict = field(default_factory=dict)
    fast: dict = field(default_factory=dict)
    # minutes of training measured on a quiet 2-core AMD EPYC in fp32, the slowest CPU the course was measured on
    # (an Intel Xeon with AMX, in bf16, took 2.7 to 4.6 times less: docs/performance.md): what find_or_train announces
    cpu_minutes: float = 0.0
    trained_in: str = ""  # the notebook that trains it, when that is not ``notebook`` (03 also trains 32x32)
    size_parameter: str = "IMAGE_SIZE"  # that notebook's parameters: the image size ...
    cpu_parameter: str = "CPU_BUDGET"  # ... and the CPU budget (the GPU budget is GPU_BUDGET)

    @property
    def notebook_file(self) -> str:
        """The notebook (without .ipynb) whose parameters cell sets this run."""
        return self.trained_in or self.notebook

    def settings(self, device: torch.device, fast: bool) -> tuple[dict, str]:
        """This run's Trainer settings on ``device`` (see :func:`budget`)."""
        chosen, reason = budget(device, fast, self.cpu, self.gpu, self.fast)
        return {"dataset": self.dataset, "image_size": self.image_size, **chosen}, reason


COURSE_RUNS: dict[str, CourseRun] = {
    run.notebook: run for run in (
        CourseRun("02_train_mnist_32", "mnist", 32,
                  cpu={"epochs": 40, "max_minutes": 5, "sample_every": 60}, gpu={"epochs": 5},
                  fast={"sample_every": 10}, cpu_minutes=5),
        CourseRun("03_train_fashion_mnist_64", "fashion-mnist", 64,
                  cpu={"epochs": 38, "max_minutes": 7, "limit": 3200}, gpu={"epochs": 5},
                  fast={"max_steps": 20, "sample_every": 5}, cpu_minutes=3.6),
        # notebook 03's comparison run: the seed's 32x32 FashionMNIST, the same images and steps as the 64x64 run
        CourseRun("03_train_fashion_mnist_32", "fashion-mnist", 32,
                  cpu={"epochs": 38, "max_minutes": 5, "limit": 3200}, gpu={"epochs": 5},
                  fast={"max_steps": 20, "sample_every": 5}, cpu_minutes=4.3,
                  trained_in="03_train_fashion_mnist_64", size_parameter="COMPARE_SIZE",
                  cpu_parameter="COMPARE_CPU_BUDGET"),
        # colour faces, offline (data/emoji_faces.npz): the default command's 6,000 steps (the 64x64 CPU profile's
        # budget for faces, ~10 min on 2 quiet cores), stopped at 15 minutes on a slower or busy CPU
        CourseRun("10_faces_in_colour", "emoji-faces", 64,
                  cpu={"max_steps": 6000, "max_minutes": 15, "sample_every": 100}, gpu={"epochs": 25},
                  fast={"sample_every": 10}, cpu_minutes=10),
    )
}


def find_or_train(notebook: str, runs_dir: str | Path = "runs", device: str = "auto", fast: bool = False,
                  seed: int = 0, check: bool = True) -> Trainer:
    """The run notebook ``notebook`` trains (a key of :data:`COURSE_RUNS`), trained now if it is missing.

    A run that is there is used as it is (one line says which, and how many steps it trained; run its notebook
    again to continue it). A missing one is trained with exactly the settings and folder that notebook uses,
    after saying so and how long it should take. With ``check`` the run
    is then checked: a generator that D had beaten, or whose samples the course's classifier does not
    recognise, is reported with what to do instead of being used silently.
    """
    if notebook not in COURSE_RUNS:
        raise ValueError(f"notebook={notebook!r}: use one of {', '.join(COURSE_RUNS)}")
    run = COURSE_RUNS[notebook]
    dev = pick_device(device)
    settings, reason = run.settings(dev, fast)
    out_dir = Path(runs_dir) / notebook
    checkpoint = out_dir / "checkpoint.pt"
    if not checkpoint.is_file():
        estimate = ("under a minute" if fast else f"about {run.cpu_minutes:g} min on a quiet 2-core CPU"
                    if dev.type == "cpu" else "a few minutes on a GPU")
        print(f"Notebook {notebook[:2]}'s run is not in {out_dir}: training it now, exactly as notebook "
              f"{notebook[:2]} does ({reason}; {estimate}).")
        trainer = Trainer(out_dir=out_dir, seed=seed, device=device, **settings)
        trainer.fit()
    else:
        with contextlib.redirect_stdout(io.StringIO()):  # not "Resuming ...": nothing is trained here
            trainer = Trainer(out_dir=out_dir, seed=seed, device=device, **settings)
        print(f"Using notebook {notebook[:2]}'s run in {out_dir}: {trainer.step:,} steps, "
              f"{trainer.elapsed / 60:.1f} min of training.")
    if check:
        for problem in run_problems(trainer, fast=fast):
            print("WARNING " + problem)
    return trainer


def run_problems(trainer: Trainer, fast: bool = False) -> list[str]:
    """What makes a run unfit to stand for a trained GAN: D had won at the end, or its samples are not
    recognised by the course's classifier (fewer than 8 classes or under 20% confident). Empty if fine."""
    problems = []
    name = trainer.out_dir
    won = d_won(trainer.history) if trainer.history["d_fake"] else {"at_end": False}
    if won["at_end"] and won["share"] >= 0.5:  # D won early and G never got going: the seed's 64x64 MNIST
        problems.append(f"{name}: D had won at the end of the run (D(G(z)) near 0), so its samples are probably "
                        "noise. Delete the folder and run its notebook again, or train longer with a faster G "
                        "(notebook 09).")
    elif won["at_end"]:  # a late win, after G had learnt: its samples need not be bad
        problems.append(f"{name}: D had won over the last part of the run ({describe_d_won(trainer.history)}), "
                        "so G's samples may have stopped improving there, though they need not be noise: judge "
                        f"them below, against the fixed-latent frames from before step {won['first_step']}.")
    if fast or trainer.config.dataset not in ("mnist", "fashion-mnist"):
        return problems
    result = evaluate_generator(trainer.sampling_generator(), trainer.config.dataset, num=500,
                                seed=trainer.config.seed, source=trainer.config.source)
    if result["classes_present"] < 8 or result["confident"] < 0.2:
        problems.append(f"{name}: the course's classifier recognises only {result['classes_present']} classes "
                        f"and {result['confident']:.0%} of samples confidently: the pictures below will not show "
                        "clear digits or garments. Train the run longer (its notebook's budget) and run this again.")
    return problems


def show_frames(history: dict, run_dir: str | Path, count: int = 6, title: str = "", width: float = 13):
    """``count`` of the fixed-latent grids in ``run_dir/frames``: the start, whole epochs, or evenly spaced.

    Draws one row ``width`` inches wide, so it fits a notebook whatever ``count`` is.
    """
    import imageio.v3 as iio

    from .plots import _finish, _plt

    frames = list({f["step"]: f for f in history["samples"]}.values())  # one frame per step
    chosen = [f for f in frames if f["step"] == 0 or float(f["epoch"]).is_integer()]
    if len(chosen) < 4 or len(chosen) > count:
        chosen = [frames[i] for i in sorted({round(i * (len(frames) - 1) / (count - 1)) for i in range(count)})]
    plt = _plt()
    fig, axes = plt.subplots(1, len(chosen), figsize=(width, width / len(chosen) + 0.5), squeeze=False)
    for ax, frame in zip(axes[0], chosen):
        ax.imshow(iio.imread(Path(run_dir) / frame["file"]))
        ax.set_title(f"step {frame['step']}", fontsize=9)
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _finish(fig, None, True)


def epoch_table(history: dict, every: int = 1) -> None:
    """Print the per-epoch means (losses, D(x), D(G(z)), G's gradient norm) of every ``every``-th epoch and the
    last, then the largest one-batch G loss: the numbers a notebook's prose about its curves points at."""
    e = history["epoch"]
    print(f"{'epoch':>6} {'step':>6} {'G loss':>7} {'D loss':>7} {'D(x)':>6} {'D(G(z))':>8} {'|grad G|':>9}")
    for i in range(len(e["epoch"])):
        if i % every == 0 or i == len(e["epoch"]) - 1:
            print(f"{e['epoch'][i]:>6g} {e['step'][i]:>6} {e['loss_g'][i]:>7.2f} {e['loss_d'][i]:>7.2f} "
                  f"{e['d_real'][i]:>6.2f} {e['d_fake'][i]:>8.2f} {e['grad_norm_g'][i]:>9.2f}")
    if history["loss_g"]:
        worst = max(range(len(history["loss_g"])), key=history["loss_g"].__getitem__)
        print(f"largest one-batch G loss: {history['loss_g'][worst]:.2f} at step {history['step'][worst]}")


def legends_outside(fig):
    """Move every legend of ``fig`` (e.g. from ``plot_losses(..., show=False)``) to the right of its axes, where
    it cannot hide a curve; shows the figure in a notebook (returns None there), else returns it."""
    from .plots import _in_notebook

    for ax in fig.axes:
        if ax.get_legend() is not None:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize=8)
    fig.tight_layout()
    if _in_notebook():
        from IPython.display import display

        display(fig)
        return None
    return fig


def eval_table(generators: dict[str, nn.Module], dataset: str, num: int = 1000, seed: int = 0,
               source: str = "auto", extra: dict[str, dict[str, str]] | None = None) -> dict[str, dict]:
    """Print FD, classes and confident share of each generator's ``num`` samples (notebook 07's measures).

    ``extra`` adds columns per row (already formatted strings). Without a classifier for ``dataset`` (an image
    folder) it prints the extra columns only and says so. Returns the measurements by name.
    """
    measured = dataset in EVAL_DATASETS
    extra = extra or {}
    columns = list(next(iter(extra.values()), {}))
    header = f"{'run':30s}" + "".join(f" {c:>13s}" for c in columns)
    if measured:
        header += f" {'FD':>8s} {'classes':>8s} {'confident':>10s}"
    print(header)
    results = {}
    for name, generator in generators.items():
        line = f"{name:30s}" + "".join(f" {extra.get(name, {}).get(c, ''):>13s}" for c in columns)
        if measured:
            r = results[name] = evaluate_generator(generator, dataset, num=num, seed=seed, source=source)
            line += f" {r['fd']:8.2f} {r['classes_present']:8d} {r['confident']:10.1%}"
        print(line)
    if not measured:
        print(f"(no evaluation classifier for {dataset!r}: compare the grids by eye)")
    return results


def cli_command(config: TrainConfig, out_dir: str | Path) -> str:
    """The ``python -m dcgan_utils train`` command that trains the same run as ``config``: every setting that
    differs from the command line's default, with ``--recipe`` standing for the settings its recipe fills."""
    from .config import RECIPES, resolve_config

    defaults = TrainConfig()
    filled, _ = resolve_config(TrainConfig(recipe=config.recipe, dataset=config.dataset, arch=config.arch,
                                           image_size=config.image_size), torch.device("cpu"))
    flags = []
    for f in dataclasses.fields(TrainConfig):
        value, name = getattr(config, f.name), f.name.replace("_", "-")
        if f.name in ("progress", "device", "precision", "channels_last") or value is None:
            continue
        if value == getattr(defaults, f.name) or (f.name in RECIPES[config.recipe] and value == getattr(filled, f.name)):
            continue
        flags.append(f"--{name}" if value is True else f"--no-{name}" if value is False else f"--{name} {value}")
    return f"python -m dcgan_utils train {' '.join(flags)} --out {out_dir}"


def checkerboard_score(images: torch.Tensor) -> float:
    """Share of each image's power at the period-2 frequencies (vertical, horizontal, diagonal), averaged:
    the signature of transposed convolutions' uneven overlap (Odena et al. 2016). Real images: ~0.0002."""
    x = images.float() - images.float().mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(x).abs() ** 2
    h, w = x.shape[-2:]
    period2 = power[..., h // 2, 0] + power[..., 0, w // 2] + power[..., h // 2, w // 2]
    return float((period2 / power.sum(dim=(-2, -1)).clamp_min(1e-12)).mean())


def edge_strength(images: torch.Tensor) -> float:
    """How sharp images are: the mean of each image's strongest 10% of pixel-to-pixel changes, measured after a 2x2
    average (which removes transposed convolutions' period-2 checkerboard, scored by :func:`checkerboard_score`).
    Blurry images score lower than real ones; compare with real images of the same set (seed 004's "blurry")."""
    x = torch.nn.functional.avg_pool2d(images.float(), 2)
    gradient = torch.sqrt((x[..., 1:, :-1] - x[..., :-1, :-1]) ** 2 + (x[..., :-1, 1:] - x[..., :-1, :-1]) ** 2)
    flat = gradient.mean(dim=1).flatten(1)  # over colour channels
    top = flat.topk(max(1, flat.shape[1] // 10), dim=1).values
    return float(top.mean())


def most_influential_dims(generator: nn.Module, count: int = 4, nudge: float = 3.0, num: int = 16, seed: int = 0
                          ) -> tuple[list[int], torch.Tensor]:
    """The ``count`` latent dimensions whose change by ``nudge`` moves G's images most (mean absolute pixel
    change over ``num`` seeded latents), and every dimension's effect."""
    base = seeded_latents(num, seed, generator.latent_dim).flatten(1)
    reference = generate_from(generator, base)
    effect = torch.zeros(base.shape[1])
    for d in range(base.shape[1]):
        moved = base.clone()
        moved[:, d] += nudge
        effect[d] = (generate_from(generator, moved) - reference).abs().mean()
    return effect.topk(count).indices.tolist(), effect


def arm_samples(generators: dict[str, nn.Module], num: int = 8, seed: int = 0, title: str = "",
                width: float = 12.0, labels=None):
    """One row per experiment arm: each generator's images for the same ``num`` seeded latents, so that the
    rows differ only by the networks (notebooks 04, 05, 11). ``labels``: the classes of a conditional G."""
    from .plots import _finish, _plt, grid_image

    plt = _plt()
    z = seeded_latents(num, seed, next(iter(generators.values())).latent_dim)
    fig, axes = plt.subplots(len(generators), 1, figsize=(width, width / num * len(generators) * 1.08 + 0.4),
                             squeeze=False)
    for ax, (name, G) in zip(axes[:, 0], generators.items()):
        ax.imshow(grid_image(generate_from(G, z, labels if getattr(G, "labels", None) is not None else None),
                             nrow=num))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
        for side in ax.spines.values():
            side.set_visible(False)
    if title:
        fig.suptitle(title)
    return _finish(fig, None, True)


def verdict(control: list[float], variant: list[float], lower_is_better: bool = True) -> str:
    """What two sets of seeds say about a change: "better"/"worse" only when every seed of the variant beats or
    trails every seed of the control (the difference is larger than the seed-to-seed spread), else "no difference
    measured". With one seed per arm there is no spread to compare with: "one seed: no verdict"."""
    if len(control) < 2 or len(variant) < 2:
        return "one seed: no verdict"
    sign = 1 if lower_is_better else -1  # compare as "lower is better" throughout
    variant, control = [sign * v for v in variant], [sign * v for v in control]
    if max(variant) < min(control):
        return "better"
    if min(variant) > max(control):
        return "worse"
    return "no difference measured"


def seed_table(results: dict[str, list[dict]], control: str, keys: tuple[str, ...] = ("fd", "confident"),
               lower_is_better: tuple[str, ...] = ("fd", "checkerboard"), no_verdict: tuple[str, ...] = ("nearest",)
               ) -> dict:
    """Print, per measure in ``keys``, one row per arm: the value for every seed, their mean and the verdict against
    ``control`` (:func:`verdict`; the keys in ``lower_is_better`` count lower as better, the others higher; those in
    ``no_verdict`` are shown without one). Returns {arm: {key: verdict}}."""
    formats = {"fd": "{:.2f}", "confident": "{:.1%}", "classes_present": "{:.0f}", "checkerboard": "{:.4f}",
               "nearest": "{:.1f}", "edges": "{:.3f}"}
    titles = {"edges": "edge strength (sharpness: blurry images score lower than real ones)", "fd": "FD (lower is better)", "confident": "confident share (higher is better)",
              "classes_present": "classes present (higher is better)", "checkerboard": "checkerboard (lower is better)",
              "nearest": "median distance to the nearest training image"}
    width = max(len(arm) for arm in results) + len(" (control)")
    verdicts: dict = {arm: {} for arm in results}
    for k in keys:
        fmt = formats.get(k, "{:.3f}")
        print(titles.get(k, k))
        for arm, rows in results.items():
            values = [r[k] for r in rows]
            shown = " / ".join(fmt.format(v) for v in values)
            if arm == control or k in no_verdict:
                v = ""
            else:
                v = verdict([r[k] for r in results[control]], values, k in lower_is_better)
            verdicts[arm][k] = v
            name = arm + (" (control)" if arm == control else "")
            print(f"  {name:{width}s}  {shown:>22s}  mean {fmt.format(sum(values) / len(values)):>7s}  {v}")
    return verdicts


def train_scored(out_dir: str | Path, points: Sequence[dict], num: int = 1000, **settings) -> Trainer:
    """Train a run through ``points`` (budgets such as ``{"max_minutes": 1}`` or ``{"max_steps": 2000}``, in
    order), scoring its samples after each (FD, classes, confident share: notebook 07's measures, on ``num``
    samples): the points of a quality-against-the-clock curve, kept in ``trainer.history["eval"]`` with the step
    and the minutes of training of each (the clock stops while a point is scored). A run already in ``out_dir``
    continues where it stopped and keeps the points it has (notebook 11)."""
    trainer = Trainer(out_dir=out_dir, **{**settings, **points[-1]})
    for point in points:
        (key, value), = point.items()
        reached = trainer.elapsed / 60 if key == "max_minutes" else trainer.step
        if reached >= value - (0.01 if key == "max_minutes" else 0):
            continue  # trained past this point in an earlier run of the notebook
        for budget_field in BUDGET_FIELDS:  # this point's budget only: a minutes point after a steps point trains on
            setattr(trainer.config, budget_field, None)
        setattr(trainer.config, key, value)
        trainer.fit()
        trainer.evaluate(num)
        trainer.save()
    return trainer
