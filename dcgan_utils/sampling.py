"""G's images for given or seeded latents: the one way the course turns latents into pictures."""
from __future__ import annotations

import torch
from torch import nn

from .models import LATENT_DIM


def seeded_latents(num: int, seed: int | None = None, latent_dim: int = LATENT_DIM) -> torch.Tensor:
    """``num`` standard-normal latents (num, latent_dim, 1, 1) on the CPU; the same ``seed`` gives the same ones."""
    rng = torch.Generator().manual_seed(seed) if seed is not None else None
    return torch.randn(num, latent_dim, 1, 1, generator=rng)


@torch.no_grad()
def generate_from(generator: nn.Module, z: torch.Tensor, device: str | torch.device | None = None,
                  batch_size: int = 256) -> torch.Tensor:
    """G's images for latents ``z`` ((N, D) or (N, D, 1, 1)) as float32 (N, C, H, W) in [-1, 1] on the CPU.

    G runs in eval mode, so BatchNorm uses its running statistics and an image does not depend on the rest of
    the batch; latents go through G ``batch_size`` at a time, so any number of images fits in memory.
    """
    device = device or next(generator.parameters()).device
    z = z.reshape(z.shape[0], -1, 1, 1)
    was_training = generator.training
    generator.eval()
    try:
        return torch.cat([generator(z[i:i + batch_size].to(device)).float().cpu()
                          for i in range(0, z.shape[0], batch_size)])
    finally:
        generator.train(was_training)


def generate_batches(generator: nn.Module, num: int, seed: int | None = None,
                     device: str | torch.device | None = None, batch_size: int = 1024):
    """:func:`generate`'s images ``batch_size`` at a time (an iterator of float32 (n, C, H, W) CPU tensors), for
    more images than fit in memory: concatenated they equal ``generate(generator, num, seed)``.

    The latents are drawn batch by batch from one seeded stream; PyTorch's CPU ``randn`` gives the same numbers
    in pieces as in one call when each piece but the last holds a multiple of 16 numbers and the last at least
    16, which the batch boundaries below ensure.
    """
    batch_size = max(16, batch_size // 16 * 16)
    rng = torch.Generator().manual_seed(seed) if seed is not None else None
    latent_dim = generator.latent_dim
    start = 0
    while start < num:
        n = min(batch_size, num - start)
        if 0 < num - start - n and (num - start - n) * latent_dim < 16:
            n = num - start  # a last piece under 16 numbers would be drawn differently: take it now
        z = torch.randn(n, latent_dim, 1, 1, generator=rng)
        yield generate_from(generator, z, device=device)
        start += n


def generate(generator: nn.Module, num: int, seed: int | None = None, device: str | torch.device | None = None,
             batch_size: int = 256) -> torch.Tensor:
    """``num`` images in [-1, 1] as float32 (N, C, H, W) on the CPU, from fresh latents (seeded if ``seed``)."""
    return generate_from(generator, seeded_latents(num, seed, generator.latent_dim), device=device,
                         batch_size=batch_size)
