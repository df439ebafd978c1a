"""G's images for given or seeded latents: the one way the course turns latents into pictures.

A class-conditional G (notebook 11) also takes the class of each image: ``labels`` is one class for all, a tensor
of classes, or class weights (N, K) that mix them; :func:`generate` draws classes as the training data has them
when none are asked for.
"""
from __future__ import annotations

import torch
from torch import nn

from .models import LATENT_DIM


def seeded_latents(num: int, seed: int | None = None, latent_dim: int = LATENT_DIM) -> torch.Tensor:
    """``num`` standard-normal latents (num, latent_dim, 1, 1) on the CPU; the same ``seed`` gives the same ones."""
    rng = torch.Generator().manual_seed(seed) if seed is not None else None
    return torch.randn(num, latent_dim, 1, 1, generator=rng)


def num_classes(generator: nn.Module) -> int:
    """How many classes a class-conditional G draws (0 for an unconditional one)."""
    labels = getattr(generator, "labels", None)
    return labels.num_classes if isinstance(labels, nn.Module) else 0


def class_labels_for(generator: nn.Module, num: int, labels=None, seed: int | None = None) -> torch.Tensor | None:
    """The classes of ``num`` images: None for an unconditional G; ``labels`` as a tensor (one class for all
    when it is a number); else drawn as the training data has them (seeded by ``seed``)."""
    k = num_classes(generator)
    if not k:
        if labels is not None:
            raise ValueError("this generator is not class-conditional: it takes no labels")
        return None
    if labels is None:
        rng = torch.Generator().manual_seed(seed + 7919) if seed is not None else None  # not z's stream
        return torch.multinomial(generator.labels.frequencies.cpu().float(), num, replacement=True, generator=rng)
    labels = torch.as_tensor(labels)
    if labels.dim() == 0:
        labels = labels.expand(num)
    if len(labels) != num:
        raise ValueError(f"got {len(labels)} labels for {num} images")
    return labels


@torch.no_grad()
def generate_from(generator: nn.Module, z: torch.Tensor, labels=None, device: str | torch.device | None = None,
                  batch_size: int = 256) -> torch.Tensor:
    """G's images for latents ``z`` ((N, D) or (N, D, 1, 1)) as float32 (N, C, H, W) in [-1, 1] on the CPU.

    ``labels``: a conditional G's classes (see :func:`class_labels_for`; required for one). G runs in eval
    mode, so BatchNorm uses its running statistics and an image does not depend on the rest of the batch;
    latents go through G ``batch_size`` at a time, so any number of images fits in memory.
    """
    device = device or next(generator.parameters()).device
    z = z.reshape(z.shape[0], -1, 1, 1)
    if num_classes(generator) and labels is None:
        raise ValueError("this generator draws the class it is given: pass labels (a class, or one per latent)")
    labels = class_labels_for(generator, z.shape[0], labels)
    was_training = generator.training
    generator.eval()
    try:
        def run(i: int) -> torch.Tensor:
            if labels is None:
                return generator(z[i:i + batch_size].to(device))
            return generator(z[i:i + batch_size].to(device), labels[i:i + batch_size].to(device))

        return torch.cat([run(i).float().cpu() for i in range(0, z.shape[0], batch_size)])
    finally:
        generator.train(was_training)


def generate_batches(generator: nn.Module, num: int, seed: int | None = None,
                     device: str | torch.device | None = None, batch_size: int = 1024, labels=None):
    """:func:`generate`'s images ``batch_size`` at a time (an iterator of float32 (n, C, H, W) CPU tensors), for
    more images than fit in memory: concatenated they equal ``generate(generator, num, seed)``.

    The latents are drawn batch by batch from one seeded stream; PyTorch's CPU ``randn`` gives the same numbers
    in pieces as in one call when each piece but the last holds a multiple of 16 numbers and the last at least
    16, which the batch boundaries below ensure.
    """
    batch_size = max(16, batch_size // 16 * 16)
    rng = torch.Generator().manual_seed(seed) if seed is not None else None
    classes = class_labels_for(generator, num, labels, seed)
    latent_dim = generator.latent_dim
    start = 0
    while start < num:
        n = min(batch_size, num - start)
        if 0 < num - start - n and (num - start - n) * latent_dim < 16:
            n = num - start  # a last piece under 16 numbers would be drawn differently: take it now
        z = torch.randn(n, latent_dim, 1, 1, generator=rng)
        yield generate_from(generator, z, None if classes is None else classes[start:start + n], device=device)
        start += n


def generate(generator: nn.Module, num: int, seed: int | None = None, device: str | torch.device | None = None,
             batch_size: int = 256, labels=None) -> torch.Tensor:
    """``num`` images in [-1, 1] as float32 (N, C, H, W) on the CPU, from fresh latents (seeded if ``seed``);
    a conditional G's classes are ``labels``, or drawn as the training data has them."""
    return generate_from(generator, seeded_latents(num, seed, generator.latent_dim),
                         class_labels_for(generator, num, labels, seed), device=device, batch_size=batch_size)
