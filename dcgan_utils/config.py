"""What defines a training run: :class:`TrainConfig`, the CPU profiles and recipes that fill its unset fields,
and the choice of device and precision for the machine at hand.

Every default lives here once: the CLI's flags are generated from :class:`TrainConfig`'s fields and help.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .augment import parse_policy
from .data import DATASETS, LABELLED_DATASETS, SOURCES
from .models import ARCHS, CONDITIONAL_ARCHS, LATENT_DIM, SUPPORTED_SIZES

# Notebook 09's fix for a narrow 64x64 DCGAN on MNIST: G learns 4x faster than D (measured: the only single
# change that trained). Also named in the collapse warning.
FASTER_G_LRS = {"lr": 8e-4, "lr_d": 2e-4}

# Chosen by measurement on a 2-core CPU (docs/performance.md): what a student without a GPU gets when they
# leave `width` unset. Keys: (arch, image_size).
CPU_PROFILES: dict[tuple[str, int], dict] = {
    # 32x32 (MNIST, FashionMNIST): chosen by quality against the clock (benchmarks/quality_over_time.py, 5 min on
    # 2 quiet AMD EPYC cores): G faster than D and an EMA of G for samples lifted the final FD from 2.42 to 1.51
    # and the confidently classified share from 32% to 46% over the same width at equal learning rates.
    ("dcgan", 32): {"width": 128, "batch_size": 64, **FASTER_G_LRS, "ema": 0.999},
    # 64x64: notebook 09. A narrow G needs a faster learning rate than D's, or D wins and G stays stuck on MNIST;
    # 3,000 steps took 4.4 minutes on a quiet 2-core CPU (two threads): FD 2.4, all ten digits (measured).
    # The EMA of G (benchmarks/steps_sweep.py, colour faces): face-classifier FD 4.3 and 5.1 at 6,000 steps (two
    # seeds) against 7.9 and 10.0 without it, and far fewer speckled samples. The colour faces get 6,000 steps:
    # about 10 minutes on 2 quiet AMD EPYC cores (10.2 steps/s), where faces had appeared (docs/performance.md).
    ("dcgan", 64): {"width": 64, "batch_size": 64, **FASTER_G_LRS, "ema": 0.999,
                    "max_steps": {"emoji-faces": 6000, "default": 3000}},
    ("transposed", 32): {"width": 128, "batch_size": 64},
    ("transposed", 64): {"width": 128, "batch_size": 64},
    ("upsample", 32): {"width": 64, "batch_size": 64},
    ("upsample", 64): {"width": 64, "batch_size": 64},
    ("upsample_conv", 32): {"width": 128, "batch_size": 64},
    ("upsample_conv", 64): {"width": 128, "batch_size": 64},
}

# What ``TrainConfig.recipe`` fills in for the settings left at None. "course": the DCGAN paper's init (and, on a
# CPU, the profile's learning rates); "seed": seed 000's code exactly as it ran (PyTorch's default init, Adam 2e-4
# for both networks), kept one flag away (CLI: --seed-settings) to reproduce its 64x64 MNIST failure (notebook 09).
_DCGAN_D = {"spectral_norm": False, "d_batchnorm": True, "conditional": False, "loss": "bce", "r1": 0.0, "augment": ""}
RECIPES: dict[str, dict] = {
    "course": {"init": "dcgan", **_DCGAN_D},
    "seed": {"init": "pytorch", **_DCGAN_D},
    # Notebook 11's ladder, what paid on MNIST and the colour faces against the clock on a 2-core CPU: D without
    # BatchNorm and with spectral norm, class conditioning where the data has classes ("labelled": a one-hot
    # class beside z, a projection head on D), an EMA of G for samples. The hinge loss and DiffAugment did not pay.
    "modern": {"init": "dcgan", "spectral_norm": True, "d_batchnorm": False, "conditional": "labelled",
               "loss": "bce", "r1": 0.0, "augment": "", "ema": 0.999},
}
PROFILED_RECIPES = ("course", "modern")  # the recipes a CPU profile's learning rates and EMA apply to
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "mps")
DEFAULT_LR = 2e-4  # the DCGAN paper's Adam learning rate
DEFAULT_BATCH_SIZE = 128  # the DCGAN paper's
DEFAULT_EPOCHS = 5  # when no budget is given at all

# Fields that define the networks and the data: a checkpoint can only be resumed with the same values.
MODEL_FIELDS = ("dataset", "image_size", "arch", "width", "g_width", "d_width", "bn_eps", "first_batchnorm",
                "dropout", "spectral_norm", "init", "batch_size", "seed", "ema", "latent_dim", "d_batchnorm",
                "conditional")
# Fields added after checkpoints were first written, with the value every older checkpoint was trained with.
LATER_FIELDS = {"d_batchnorm": True, "conditional": False, "loss": "bce", "r1": 0.0, "augment": ""}
# Fields that only say how long to train: always taken from the new call on resume.
BUDGET_FIELDS = ("epochs", "max_steps", "max_minutes")


def _help(text: str, **metadata) -> dict:
    return {"help": text, **metadata}


@dataclass
class TrainConfig:
    """Everything that defines a run. ``None`` means "the seed's value" (or the CPU profile on a CPU).

    Each field's ``metadata["help"]`` is its documentation and the CLI's ``--help`` text.
    """

    # data
    dataset: str = field(default="mnist", metadata=_help("dataset", choices=DATASETS))
    data_dir: str | None = field(default=None, metadata=_help(
        "folder with the IDX files, or the image folder for --dataset folder"))
    source: str = field(default="auto", metadata=_help(
        "auto: full data on disk or downloaded, else the shipped subset; full: full data or an error; "
        "subset: the real subset shipped in data/", choices=SOURCES))
    image_size: int = field(default=32, metadata=_help("image side", choices=SUPPORTED_SIZES))
    limit: int | None = field(default=None, metadata=_help("use only the first N images"))
    # networks (see models.build_models)
    arch: str = field(default="dcgan", metadata=_help(
        "dcgan: seed 000; transposed, upsample, upsample_conv: seed 004", choices=ARCHS))
    width: int | None = field(default=None, metadata=_help(
        "widest layer of G and D (seed: 1024 for dcgan); unset on a CPU = the CPU profile"))
    g_width: int | None = field(default=None, metadata=_help("generator width only"))
    d_width: int | None = field(default=None, metadata=_help("discriminator width only"))
    bn_eps: float | None = field(default=None, metadata=_help("BatchNorm eps (seed 004: 0.8 vs 1e-5)"))
    first_batchnorm: bool = field(default=True, metadata=_help(
        "upsample G's first BatchNorm (seed 004's ablation turns it off)"))
    dropout: float = field(default=0.25, metadata=_help("upsample D's Dropout2d (0 = off)"))
    spectral_norm: bool | None = field(default=None, metadata=_help(
        "spectral normalisation on D's weights (unset: the recipe's)"))
    d_batchnorm: bool | None = field(default=None, metadata=_help(
        "BatchNorm in D (dcgan, transposed, upsample_conv); off: D scores each image on its own (notebook 11; "
        "unset: the recipe's)"))
    conditional: bool | None = field(default=None, metadata=_help(
        "class-conditional G and D (a one-hot class beside z, a projection head on D), for labelled datasets: "
        "mnist, fashion-mnist, emoji-faces (notebook 11; unset: the recipe's)"))
    init: str | None = field(default=None, metadata=_help(
        "dcgan: N(0, 0.02) as in the paper; pytorch: PyTorch's defaults (unset: the recipe's)",
        choices=("dcgan", "pytorch")))
    recipe: str = field(default="course", metadata=_help(
        "course: the DCGAN paper's init and the CPU profile; seed: seed 000's code exactly as it ran "
        "(PyTorch's default init), which fails on 64x64 MNIST (notebook 09); modern: notebook 11's ladder, "
        "spectral norm in a BatchNorm-free D and class conditioning where the data has classes",
        choices=tuple(RECIPES)))
    latent_dim: int = field(default=LATENT_DIM, metadata=_help("length of the latent vector z"))
    # optimisation
    batch_size: int | None = field(default=None, metadata=_help(
        f"batch size (unset: {DEFAULT_BATCH_SIZE}, or the CPU profile's)"))
    lr: float = field(default=DEFAULT_LR, metadata=_help("G's Adam learning rate (and D's unless lr_d is set)"))
    lr_d: float | None = field(default=None, metadata=_help("D's learning rate (unset: lr)"))
    beta1: float = field(default=0.5, metadata=_help("Adam beta1"))
    beta2: float = field(default=0.999, metadata=_help("Adam beta2"))
    loss: str | None = field(default=None, metadata=_help(
        "bce: the DCGAN paper's (G's non-saturating loss); hinge: SAGAN's and BigGAN's (unset: the recipe's)",
        choices=("bce", "hinge")))
    r1: float | None = field(default=None, metadata=_help(
        "gamma of the R1 penalty on D's gradient at real images (Mescheder et al. 2018; 0 = off; unset: the "
        "recipe's)"))
    augment: str | None = field(default=None, metadata=_help(
        "DiffAugment policy for everything D sees: comma-separated color, translation, cutout ('' = none; "
        "unset: the recipe's)"))
    label_smoothing: float = field(default=0.0, metadata=_help("one-sided: real target 1-s (e.g. 0.1)"))
    instance_noise: float = field(default=0.0, metadata=_help("std of noise on D's inputs, annealed to 0"))
    ema: float | None = field(default=None, metadata=_help(
        "EMA decay of G's weights for samples (e.g. 0.999; 0 = off; unset: off, or the CPU profile's)"))
    # budget: the whole run, including the part before a resume
    epochs: int | None = field(default=None, metadata=_help(f"epochs (no budget at all: {DEFAULT_EPOCHS})"))
    max_steps: int | None = field(default=None, metadata=_help("training steps"))
    max_minutes: float | None = field(default=None, metadata=_help("minutes of training, checkpoints included"))
    # how
    seed: int = field(default=0, metadata=_help("random seed"))
    device: str = field(default="auto", metadata=_help("auto: CUDA, then Apple MPS, then CPU", choices=DEVICES))
    precision: str = field(default="auto", metadata=_help(
        "auto: bf16 autocast on CUDA GPUs and CPUs with fast bf16 (AMX/AVX512-BF16), else fp32; fp16 uses a "
        "GradScaler (CUDA)", choices=PRECISIONS))
    channels_last: bool | None = field(default=None, metadata=_help(
        "channels_last memory format (unset: on, except for fp32 on a GPU and with --compile, whose compiled "
        "backward failed a stride check with channels_last on an H100; on a CPU it was 5 to 10 percent faster in fp32 too)"))
    compile: bool = field(default=False, metadata=_help("torch.compile G and D"))
    sample_every: int = field(default=0, metadata=_help(
        "also save the fixed-latent grid every N steps (the end of each epoch draws one too, at most about 100 "
        "per run: with tiny epochs, one every total_steps/100 steps, or every max_minutes*60/100 s)"))
    checkpoint_every: int = field(default=1, metadata=_help(
        "epochs between checkpoints; with short epochs, checkpoints are also at least 100 steps or 60 s apart "
        "(the end of the run, Ctrl-C and SIGTERM always save)"))
    collapse_window: int = field(default=300, metadata=_help("steps over which 'D has won' is judged live"))
    eval_every: int = field(default=0, metadata=_help(
        "measure FD/KID/class coverage every N epochs into history.json (mnist, fashion-mnist; 0 = off)"))
    eval_num: int = field(default=1000, metadata=_help("samples per measurement"))
    progress: bool = field(default=True, metadata=_help(
        "show progress: a live bar in a terminal or Jupyter, a plain line every 10 s and a summary when output "
        "goes to a file or pipe; the environment variable DCGAN_PROGRESS=bar|lines|off overrides the choice"))

    def validate(self) -> None:
        """Raise ValueError naming the bad field and what would be accepted."""
        for f in dataclasses.fields(self):
            value, choices = getattr(self, f.name), f.metadata.get("choices")
            if choices and value is not None and value not in choices:
                raise ValueError(f"{f.name}={value!r}: use one of {', '.join(map(repr, choices))}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name}={value} must be a finite number")
        if self.batch_size is not None and self.batch_size < 2:
            raise ValueError(f"batch_size={self.batch_size} must be at least 2 (BatchNorm needs a batch)")
        for name in ("epochs", "max_steps", "limit", "width", "g_width", "d_width", "latent_dim"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name}={value} must be at least 1")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes={self.max_minutes} must be positive")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing={self.label_smoothing} must be in [0, 0.5); 0.1 is usual")
        if self.instance_noise < 0:
            raise ValueError(f"instance_noise={self.instance_noise} must be >= 0; 0.1 is usual")
        if self.ema is not None and not 0 <= self.ema < 1:
            raise ValueError(f"ema={self.ema} must be in [0, 1); 0.999 is usual, 0 turns it off")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")
        for name in ("lr", "lr_d", "bn_eps"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name}={value} must be positive")
        if self.r1 is not None and not 0 <= self.r1 <= 1e4:
            raise ValueError(f"r1={self.r1} must be in [0, 10000]; 0.1 to 10 is usual, 0 turns it off")
        parse_policy(self.augment)
        if self.conditional and self.dataset not in LABELLED_DATASETS:
            raise ValueError(f"conditional=True needs class labels: dataset={self.dataset!r} has none; use one of "
                             f"{', '.join(LABELLED_DATASETS)}")
        if self.conditional and self.arch not in CONDITIONAL_ARCHS:
            raise ValueError(f"conditional=True needs arch {' or '.join(map(repr, CONDITIONAL_ARCHS))}, not "
                             f"{self.arch!r}")
        if self.d_batchnorm is False and self.arch == "upsample":
            raise ValueError("d_batchnorm=False is for the dcgan, transposed and upsample_conv discriminators")
        if self.eval_every < 0 or self.eval_num < 2:
            raise ValueError(f"eval_every={self.eval_every} must be >= 0 and eval_num={self.eval_num} >= 2")
        if self.eval_every and self.dataset not in ("mnist", "fashion-mnist"):
            raise ValueError(f"eval_every needs a labelled dataset (mnist, fashion-mnist) for its classifier; "
                             f"dataset={self.dataset!r} has none: use eval_every=0")
        if self.sample_every < 0 or self.checkpoint_every < 1:
            raise ValueError("sample_every must be >= 0 and checkpoint_every >= 1")
        if self.data_dir is not None and str(self.data_dir).startswith("~"):
            self.data_dir = str(Path(self.data_dir).expanduser())


def with_overrides(base: TrainConfig | None, overrides: dict) -> tuple[TrainConfig, set[str]]:
    """``base`` (or the defaults) updated with ``overrides``, validated, and the names of the settings the caller
    chose: the overrides that are not None (a notebook's ``WIDTH = None`` is "unset") and the fields of ``base``
    that differ from the defaults."""
    base = base or TrainConfig()
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"Unknown setting(s) {', '.join(unknown)}: see TrainConfig (or --help) for the settings")
    config = TrainConfig(**{**dataclasses.asdict(base), **overrides})
    config.validate()
    defaults = TrainConfig()
    chosen = ({k for k, v in overrides.items() if v is not None}
              | {name for name in names if getattr(base, name) != getattr(defaults, name)})
    return config, chosen


def merge_resumed(config: TrainConfig, saved: dict, chosen: set[str], path: Path) -> tuple[TrainConfig, dict]:
    """Resume with the saved networks; settings that do not define them (budgets, device, lr) may change.

    Returns the merged config and the changes made to the saved one, {name: (old, new)}.
    """
    saved = {**LATER_FIELDS, **saved}  # a checkpoint from before a field existed was trained with its old value
    clashes = [k for k in MODEL_FIELDS if k in chosen and saved.get(k) != getattr(config, k)]
    if clashes:
        diffs = ", ".join(f"{k}={saved.get(k)!r} (asked {getattr(config, k)!r})" for k in clashes)
        raise ValueError(f"{path} was trained with {diffs}. Use another output folder, or resume=False (CLI: "
                         "--no-resume) to start over")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    keep = {k: saved[k] for k in saved if k in names}
    changes = {}
    # Budgets always come from the new call (a larger budget finishes the same run); any other setting that does
    # not define the networks (device, precision, learning rates, logging) may be changed.
    for k in chosen.union(BUDGET_FIELDS).difference(MODEL_FIELDS):
        if k not in BUDGET_FIELDS and keep.get(k) != getattr(config, k):
            changes[k] = (keep.get(k), getattr(config, k))
        keep[k] = getattr(config, k)
    return TrainConfig(**keep), changes


def settle_config(asked: TrainConfig, previous: dict | None, chosen: set[str], device: torch.device,
                  path: Path, world_size: int = 1) -> tuple[TrainConfig, dict, str | None]:
    """The config a run trains with: ``asked``, merged with a checkpoint's (``previous``) when resuming, its unset
    fields filled (:func:`resolve_config`). Returns it, the changes to the checkpoint's settings and the CPU
    profile's note (or None)."""
    changes: dict = {}
    if previous is not None:
        n = previous.get("world_size", 1)
        if n != world_size:
            raise ValueError(f"{path} was trained by {n} process{'es' * (n > 1)} (each step took {n} batches) and "
                             f"this run has {world_size}: resume it with "
                             + (f"torchrun --nproc_per_node {n}" if n > 1 else "a single process (no torchrun)")
                             + ", or use another output folder")
        asked, changes = merge_resumed(asked, previous["config"], chosen, path)
    config, note = resolve_config(asked, device)
    return config, changes, note


def precision_note(config: TrainConfig, asked: str, device: torch.device) -> str | None:
    """The sentence announcing what ``precision="auto"`` chose, when it chose more than fp32."""
    if asked != "auto" or config.precision == "fp32":
        return None
    return (f"Precision auto: {config.precision} autocast{' + channels_last' if config.channels_last else ''} on "
            f"{device.type} (fast here; --precision fp32 to turn it off)")


def pick_device(device: str = "auto") -> torch.device:
    """CUDA if present, then Apple MPS, then CPU; or exactly what is asked for, with a clear error if absent."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device not in DEVICES and not device.startswith("cuda:"):
        raise ValueError(f"device={device!r}: use 'auto', 'cpu', 'cuda' or 'mps'")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device='cuda' but PyTorch sees no CUDA GPU: use device='auto' or 'cpu' "
                         "(on Colab: Runtime > Change runtime type > GPU)")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device='mps' but Apple MPS is not available: use device='auto' or 'cpu'")
    return torch.device(device)


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with bf16 matrix hardware (Intel AMX or AVX512-BF16), where bf16 autocast pays.

    Elsewhere (e.g. an AVX2 AMD EPYC) PyTorch emulates bf16 and a step runs ~15x slower than fp32
    (docs/performance.md).
    """
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:  # not Linux: assume no fast bf16
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` becomes bf16 where it is fast (CUDA with bf16 support, AMX/AVX512-BF16 CPUs), else fp32."""
    if precision != "auto":
        if precision == "fp16" and device.type != "cuda":
            raise ValueError("precision='fp16' needs a CUDA GPU (it uses a GradScaler); use 'bf16' or 'fp32'")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_fast_bf16():
        return "bf16"
    return "fp32"


def resolve_config(config: TrainConfig, device: torch.device) -> tuple[TrainConfig, str | None]:
    """Fill the ``None`` fields: the CPU profile on a CPU when no width was set, the seeds' values otherwise.

    Returns the filled config and a sentence announcing the CPU profile (or None).
    """
    config = dataclasses.replace(config)
    for name, value in RECIPES[config.recipe].items():  # the recipe only fills what was left unset
        if getattr(config, name) is None:
            setattr(config, name, value)
    if config.conditional == "labelled":  # where the data has classes and the networks can take them
        config.conditional = config.dataset in LABELLED_DATASETS and config.arch in CONDITIONAL_ARCHS
    if config.recipe == "modern" and config.arch == "upsample" and config.d_batchnorm is False:
        config.d_batchnorm = True  # the upsample D keeps its BatchNorm (its ablations are notebook 05's)
    note = None
    profile = CPU_PROFILES.get((config.arch, config.image_size))
    if device.type == "cpu" and profile and config.width is None and config.g_width is None and config.d_width is None:
        config.width = profile["width"]
        if config.batch_size is None:
            config.batch_size = profile["batch_size"]
        extra = ""
        # A profile may also set the learning rates its narrow networks need (the course recipe only, and only
        # if none was chosen) and how long a CPU run should be (if no budget was chosen).
        if "lr" in profile and config.recipe in PROFILED_RECIPES and config.lr == DEFAULT_LR and config.lr_d is None:
            config.lr, config.lr_d = profile["lr"], profile.get("lr_d")
            extra += f", G learning rate {config.lr:g}" + (f" and D's {config.lr_d:g}" if config.lr_d else "")
        if "ema" in profile and config.recipe in PROFILED_RECIPES and config.ema is None:
            config.ema = profile["ema"]
            extra += f", an EMA of G's weights ({config.ema:g}) for samples"
        if "max_steps" in profile and all(getattr(config, k) is None for k in BUDGET_FIELDS):
            config.max_steps = profile["max_steps"].get(config.dataset, profile["max_steps"]["default"])
            extra += f", {config.max_steps} steps"
        note = (f"CPU profile: no GPU and no width set, so this run uses width={config.width}, batch size "
                f"{config.batch_size}{extra} (the seed's {config.arch} network is too slow for a CPU). "
                "Set width to override.")
    if config.batch_size is None:
        config.batch_size = DEFAULT_BATCH_SIZE
    for name in ("loss", "r1", "augment"):  # recipes that leave them unset: the DCGAN paper's
        if getattr(config, name) is None:
            setattr(config, name, LATER_FIELDS[name])
    if config.ema is None:
        config.ema = 0.0
    if all(getattr(config, k) is None for k in BUDGET_FIELDS):
        config.epochs = DEFAULT_EPOCHS
    config.precision = resolve_precision(config.precision, device)
    if config.channels_last is None:  # oneDNN's and cuDNN's preferred layout; see the channels_last field
        config.channels_last = not config.compile and (config.precision != "fp32" or device.type == "cpu")
    return config, note


def model_kwargs(config: dict, channels: int, num_classes: int = 0) -> dict:
    """The :func:`~dcgan_utils.models.build_models` arguments of a (saved) config; ``num_classes`` for a
    conditional one. A config saved before a field existed gets the value it was trained with (LATER_FIELDS)."""
    keys = ("arch", "image_size", "width", "g_width", "d_width", "bn_eps", "first_batchnorm", "dropout",
            "spectral_norm", "init", "latent_dim")
    return {**{k: config[k] for k in keys}, "d_batchnorm": config.get("d_batchnorm", True), "channels": channels,
            "num_classes": num_classes if config.get("conditional") else 0}
