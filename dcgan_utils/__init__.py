"""dcgan_utils: the small package behind the DCGAN course notebooks.

One module per idea: ``models`` (the seed architectures), ``data`` (datasets as resident tensors),
``train`` (the training loop and checkpoints), ``plots`` (figures and GIFs), ``latent`` (walks and
sliders), ``evaluate`` (FD/KID/class
coverage of samples), ``analysis`` (inside a trained GAN), ``cli`` (``python -m dcgan_utils``).
"""
from .data import DatasetError, ImageData, load_dataset
from .latent import latent_explorer, latent_walk, lerp, plot_nudges, plot_walks, slerp, walk_images
from .evaluate import evaluate_checkpoint, evaluate_generator, evaluate_images, load_classifier
from .models import ARCHS, LATENT_DIM, build_models, count_parameters, dcgan_init, layer_table
from .plots import (make_gif, plot_d_outputs, plot_eval, plot_eval_bars, plot_losses, plot_runs, save_grid, show_gif,
                    show_images)
from .train import (Trainer, TrainConfig, d_won, generate, generate_from, load_checkpoint, load_generator,
                    pick_device, save_checkpoint, train)

__all__ = [
    "ARCHS", "build_models", "count_parameters", "d_won", "DatasetError", "dcgan_init", "evaluate_checkpoint",
    "evaluate_generator", "evaluate_images", "generate", "generate_from", "ImageData", "LATENT_DIM",
    "latent_explorer", "latent_walk", "layer_table", "lerp", "load_checkpoint", "load_classifier",
    "load_dataset", "load_generator", "make_gif", "pick_device", "plot_d_outputs", "plot_eval",
    "plot_eval_bars", "plot_losses", "plot_nudges", "plot_runs", "plot_walks", "save_checkpoint", "save_grid",
    "show_gif", "show_images", "slerp", "train", "TrainConfig", "Trainer", "walk_images",
]
__version__ = "0.1.0"
