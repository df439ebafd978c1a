"""dcgan_utils: the small package behind the DCGAN course notebooks.

One module per job, data flowing one way. The textbook part: ``models`` (the seed architectures) and ``step``
(one GAN training step, on one screen; ``augment``: DiffAugment for it). At the bottom with them: ``progress``
(bar, log lines or nothing), ``data`` (datasets as resident tensors), ``runfolder`` (atomic writes, the lock),
``stopping`` (Ctrl-C, SIGTERM, Jupyter's stop button), ``history`` (step statistics), ``distributed``
(torchrun). On them: ``config`` (what defines a run, device and precision), ``budget`` (how long, when to
write), ``checkpoint`` (saved and loaded safely), ``sampling`` (latents to images), ``diagnostics`` ("D has
won"), ``plots`` and ``evaluate`` (FD/KID/class coverage), ``outputs`` (a run's frames and plots); ``run`` (a
run's state) and ``train`` (its loop: ``Trainer``); then ``latent`` (walks and sliders), ``analysis`` (inside a
trained GAN), ``course`` (the notebooks' shared steps) and ``cli`` (``python -m dcgan_utils``).
"""
from .checkpoint import load_checkpoint, load_generator, load_models, save_checkpoint
from .config import LATENT_DIM, TrainConfig, pick_device
from .data import DatasetError, ImageData, load_dataset
from .diagnostics import d_won, describe_d_won, format_events, tail_mean
from .evaluate import evaluate_checkpoint, evaluate_generator, evaluate_images, load_classifier
from .latent import latent_explorer, latent_walk, lerp, plot_nudges, plot_walks, slerp, walk_images
from .models import ARCHS, build_models, count_parameters, dcgan_init, layer_table
from .plots import (make_gif, plot_d_outputs, plot_eval, plot_eval_bars, plot_losses, plot_runs, save_grid, show_gif,
                    show_images)
from .sampling import generate, generate_from, seeded_latents
from .step import GAN, train_step
from .train import Trainer, train

__all__ = [
    "ARCHS", "build_models", "count_parameters", "d_won", "DatasetError", "dcgan_init", "describe_d_won",
    "evaluate_checkpoint", "evaluate_generator", "evaluate_images", "format_events", "generate", "generate_from",
    "ImageData", "LATENT_DIM", "latent_explorer", "latent_walk", "layer_table", "lerp", "load_checkpoint",
    "load_classifier", "load_dataset", "load_generator", "load_models", "make_gif", "pick_device",
    "plot_d_outputs", "plot_eval", "plot_eval_bars", "plot_losses", "plot_nudges", "plot_runs", "plot_walks",
    "save_checkpoint", "save_grid", "seeded_latents", "show_gif", "show_images", "slerp", "tail_mean", "train",
    "TrainConfig", "Trainer", "walk_images", "GAN", "train_step",
]
__version__ = "0.2.0"
