"""Differentiable augmentation (DiffAugment, Zhao et al. 2020): D sees every image, real or fake, randomly
recoloured, shifted and with a square cut out, and G's gradient flows back through the same changes.

On a small dataset D soon remembers the training images and its verdict stops teaching G anything useful.
Augmenting only the real images would teach G to draw the augmentations; augmenting everything D sees, with
operations G's gradient can pass through, keeps D from memorising without changing what G should draw.
"""
from __future__ import annotations

import torch

AUGMENTATIONS = ("color", "translation", "cutout")


def parse_policy(policy: str | None) -> tuple[str, ...]:
    """``"color,translation"`` -> ``("color", "translation")``; a clear error for an unknown name."""
    names = tuple(p.strip() for p in (policy or "").split(",") if p.strip())
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"augment={policy!r}: unknown {', '.join(map(repr, unknown))}; use a comma-separated "
                         f"subset of {', '.join(AUGMENTATIONS)} ('' for none)")
    return names


def diff_augment(images: torch.Tensor, policy: tuple[str, ...] = AUGMENTATIONS) -> torch.Tensor:
    """``images`` (N, C, H, W) in [-1, 1] with each of ``policy``'s operations, drawn anew per image."""
    for name in policy:
        images = _OPERATIONS[name](images)
    return images


def _color(x: torch.Tensor) -> torch.Tensor:
    """Random brightness (+-0.5), saturation (x0-2) and contrast (x0.5-1.5) per image."""
    def rand(*shape):
        return torch.rand(x.shape[0], *shape, device=x.device, dtype=x.dtype)

    x = x + (rand(1, 1, 1) - 0.5)
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * (rand(1, 1, 1) * 2) + grey
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (rand(1, 1, 1) + 0.5) + mean


def _pixel_grid(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n, _, h, w = x.shape
    rows = torch.arange(h, device=x.device).view(1, h, 1).expand(n, h, w)
    cols = torch.arange(w, device=x.device).view(1, 1, w).expand(n, h, w)
    return rows, cols


def _translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its size in each direction; pixels shifted in are 0."""
    n, c, h, w = x.shape
    reach = max(1, int(h * ratio))
    shift = torch.randint(-reach, reach + 1, (n, 2, 1, 1), device=x.device)
    rows, cols = _pixel_grid(x)
    source_rows, source_cols = rows - shift[:, 0], cols - shift[:, 1]
    inside = (source_rows >= 0) & (source_rows < h) & (source_cols >= 0) & (source_cols < w)
    index = (source_rows.clamp(0, h - 1) * w + source_cols.clamp(0, w - 1)).view(n, 1, h * w).expand(n, c, h * w)
    return x.flatten(2).gather(2, index).view(n, c, h, w) * inside.unsqueeze(1).to(x.dtype)


def _cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Set a square of ``ratio`` of the image's side, at a random place in each image, to 0."""
    n, _, h, w = x.shape
    side = max(1, int(h * ratio))
    top = torch.randint(0, h - side + 1, (n, 1, 1), device=x.device)
    left = torch.randint(0, w - side + 1, (n, 1, 1), device=x.device)
    rows, cols = _pixel_grid(x)
    hole = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    return x * (~hole).unsqueeze(1).to(x.dtype)


_OPERATIONS = {"color": _color, "translation": _translation, "cutout": _cutout}
