"""One GAN training step, the textbook part: read :func:`train_step` top to bottom.

A step plays one round of the game on a batch of real images: D learns to tell them from G's images, then G
learns to make D call its images real, each with its own Adam optimiser. With the defaults this is exactly the
DCGAN paper's update (Radford et al. 2016) with G's non-saturating loss (Goodfellow et al. 2014):

    loss_D = -log D(x) - log(1 - D(G(z)))          loss_G = -log D(G(z))

computed on D's logits (the score before its Sigmoid) with ``binary_cross_entropy_with_logits``, the same
function without overflow. The other options of :class:`GAN` are notebook 11's ladder: the hinge loss, an R1
penalty on real images, differentiable augmentation and class labels.

This module knows nothing of budgets, files, signals or progress bars: ``train.py`` runs the step, and its
helpers (``budget.py``, ``stopping.py``, ``history.py``, ``runfolder.py``) do the rest of a run.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("bce", "hinge")


@dataclass
class GAN:
    """What a step updates, and how. ``train.py`` builds one per run; a notebook can build its own."""

    generator: nn.Module
    discriminator: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    ema: torch.optim.swa_utils.AveragedModel | None = None  # an average of G's weights, for samples
    loss: str = "bce"  # "bce": the DCGAN paper's; "hinge": SAGAN's and BigGAN's
    label_smoothing: float = 0.0  # one-sided: D's target for real images is 1 - label_smoothing (bce only)
    r1: float = 0.0  # gamma of the R1 penalty on D's gradient at real images (Mescheder et al. 2018); 0 = off
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None  # DiffAugment: what D sees of every image
    # How the networks run (train.py's business; the defaults are plain fp32 in one process): autocast for
    # bf16/fp16, a GradScaler for fp16, and compiled or torchrun (DistributedDataParallel) copies of G and D.
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    scaler: torch.amp.GradScaler = field(default_factory=lambda: torch.amp.GradScaler("cpu", enabled=False))
    run_g: Callable | None = None  # G(z, labels); default: the generator itself
    run_d: Callable | None = None  # D's logits(x, labels); default: discriminator.logits
    run_d_pair: Callable | None = None  # D's logits on (real, fake) in one call (torchrun); default: run_d twice

    def g(self, z, labels=None):  # labels only for a conditional G: any module taking z alone also works
        g = self.run_g or self.generator
        return g(z) if labels is None else g(z, labels)

    def d(self, x, labels=None):
        d = self.run_d or self.discriminator.logits
        return d(x) if labels is None else d(x, labels)

    def d_pair(self, real, fake, real_labels=None, fake_labels=None):
        if self.run_d_pair is not None:
            return self.run_d_pair(real, fake, real_labels, fake_labels)
        return self.d(real, real_labels), self.d(fake, fake_labels)


def train_step(gan: GAN, real: torch.Tensor, z: torch.Tensor, real_labels: torch.Tensor | None = None,
               fake_labels: torch.Tensor | None = None, noise: float = 0.0) -> torch.Tensor:
    """One D update and one G update; returns the step's statistics (``diagnostics.STAT_KEYS``, on device).

    ``z``: latents for G; ``real_labels``/``fake_labels``: classes, for a class-conditional GAN only;
    ``noise``: the standard deviation of the instance noise added to what D sees (0: none).
    """
    G, D = gan.generator, gan.discriminator

    # 1. D's turn: real images should score "real", G's images "fake". fake.detach(): this loss moves only D.
    with gan.autocast():
        fake = gan.g(z, fake_labels)
        real_seen = d_view(gan, real, noise)
        if gan.r1:  # the penalty needs D's gradient with respect to the real images it saw
            real_seen = real_seen.detach().requires_grad_()
        logit_real, logit_fake = gan.d_pair(real_seen, d_view(gan, fake.detach(), noise), real_labels, fake_labels)
        loss_d = discriminator_loss(logit_real.float(), logit_fake.float(), gan.loss, gan.label_smoothing)
        if gan.r1:
            loss_d = loss_d + r1_penalty(logit_real, real_seen, gan.r1)
    gan.opt_d.zero_grad(set_to_none=True)
    gan.scaler.scale(loss_d).backward()
    gan.scaler.unscale_(gan.opt_d)
    grad_norm_d = grad_norm(D)
    gan.scaler.step(gan.opt_d)

    # 2. G's turn: make D call G's images real. D is frozen: G needs D's gradients with respect to its input
    # only, so D's weight gradients are not computed at all.
    D.requires_grad_(False)
    with gan.autocast():
        loss_g = generator_loss(gan.d(d_view(gan, fake, noise), fake_labels).float(), gan.loss)
    gan.opt_g.zero_grad(set_to_none=True)
    gan.scaler.scale(loss_g).backward()
    D.requires_grad_(True)
    gan.scaler.unscale_(gan.opt_g)
    grad_norm_g = grad_norm(G)
    gan.scaler.step(gan.opt_g)
    gan.scaler.update()

    # 3. The running average of G's weights that samples are drawn from, when the run keeps one.
    if gan.ema is not None:
        gan.ema.update_parameters(G)
    with torch.no_grad():
        return torch.stack([loss_g.detach(), loss_d.detach(), torch.sigmoid(logit_real.float()).mean(),
                            torch.sigmoid(logit_fake.float()).mean(), grad_norm_g.to(loss_g.device),
                            grad_norm_d.to(loss_g.device)]).float()


def discriminator_loss(logit_real: torch.Tensor, logit_fake: torch.Tensor, loss: str = "bce",
                       label_smoothing: float = 0.0) -> torch.Tensor:
    """bce: -log D(x) - log(1 - D(G(z))), real target 1 - label_smoothing. hinge: relu(1 - real) + relu(1 + fake)."""
    if loss == "hinge":
        return F.relu(1 - logit_real).mean() + F.relu(1 + logit_fake).mean()
    real_target = torch.full_like(logit_real, 1.0 - label_smoothing)
    return (F.binary_cross_entropy_with_logits(logit_real, real_target)
            + F.binary_cross_entropy_with_logits(logit_fake, torch.zeros_like(logit_fake)))


def generator_loss(logit_fake: torch.Tensor, loss: str = "bce") -> torch.Tensor:
    """bce: the non-saturating -log D(G(z)). hinge: -D(G(z)) (the logit)."""
    if loss == "hinge":
        return -logit_fake.mean()
    return F.binary_cross_entropy_with_logits(logit_fake, torch.ones_like(logit_fake))


def r1_penalty(logit_real: torch.Tensor, real: torch.Tensor, gamma: float) -> torch.Tensor:
    """gamma / 2 * E ||d D(x) / d x||^2 on real images: D is pushed to be flat where the data is."""
    grad, = torch.autograd.grad(logit_real.sum(), real, create_graph=True)
    return gamma / 2 * grad.float().pow(2).flatten(1).sum(1).mean()


def d_view(gan: GAN, images: torch.Tensor, noise: float = 0.0) -> torch.Tensor:
    """What D sees of ``images``: with instance noise of std ``noise``, and augmented when the GAN augments."""
    if noise:
        images = images + noise * torch.randn_like(images)
    return gan.augment(images) if gan.augment is not None else images


def grad_norm(module: nn.Module) -> torch.Tensor:
    """The L2 norm of all of ``module``'s gradients (0 if there are none)."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
