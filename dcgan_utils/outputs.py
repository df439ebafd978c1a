"""What a run leaves to look at: the fixed-latent frames while it trains, and at the end the loss plots, D's
outputs, a sample grid and the training GIF. Under torchrun only rank 0 draws."""
from __future__ import annotations

from pathlib import Path

from .evaluate import evaluate_generator
from .plots import make_gif, plot_d_outputs, plot_losses, save_grid
from .runfolder import real_folder


def save_frame(trainer) -> Path:
    """The fixed-latent grid at this step as ``frames/step_XXXXXXX.png`` (the GIF's frames), once per step."""
    path = trainer.out_dir / "frames" / f"step_{trainer.step:07d}.png"
    samples = trainer.history["samples"]
    if (samples and samples[-1]["step"] == trainer.step) or not trainer.is_main:
        return path  # already drawn at this step (sample_every and the epoch end coincide), or not rank 0
    real_folder(path.parent)  # a frames/ symlink is replaced, never written through
    save_grid(trainer.fixed_samples(), path, nrow=4)
    trainer.budget.last_frame_seconds = trainer.elapsed_seconds
    samples.append({"step": trainer.step, "epoch": round(trainer.epochs_trained, 3),
                    "file": str(path.relative_to(trainer.out_dir))})
    return path


def write_outputs(trainer) -> None:
    """Loss plots (G red, D blue), D's outputs, 64 samples and the training GIF into the run folder."""
    if not trainer.is_main:
        return
    out = trainer.out_dir
    plot_losses(trainer.history, save_to=out / "losses.png", show=False)
    plot_d_outputs(trainer.history, save_to=out / "d_outputs.png", show=False)
    save_grid(trainer.sample(64, seed=trainer.config.seed), out / "samples.png", nrow=8)
    make_gif(out, out / "training.gif")


def evaluate_run(trainer, num: int | None = None) -> dict:
    """FD, KID and class coverage of the run's samples now (see dcgan_utils.evaluate), added to
    ``history["eval"]`` with the step, epoch and minutes."""
    c = trainer.config
    result = evaluate_generator(trainer.sampling_generator(), c.dataset, num=num or c.eval_num, seed=c.seed,
                                source=c.source, data_dir=c.data_dir, device=trainer.device)
    row = {"epoch": round(trainer.epochs_trained, 3), "step": trainer.step,
           "minutes": round(trainer.elapsed_seconds / 60, 3),
           **{k: result[k] for k in ("num", "fd", "kid", "classes_present", "class_kl", "confident",
                                     "class_histogram")}}
    trainer.history["eval"].append(row)
    return row
