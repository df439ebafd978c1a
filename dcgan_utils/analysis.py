"""Looking inside a trained GAN, as in the DCGAN paper: latent vector arithmetic, D's filters and feature maps,
the images that most excite a D channel, and a memorisation check (nearest training images).

Each function returns tensors/dicts; the figures are drawn with :func:`dcgan_utils.plots.show_images` (or
:func:`plot_distance_histograms` here). Notebook 08 walks through all of them.

Concepts for the arithmetic are chosen by measurement, not by eye: the evaluation classifier
(:mod:`dcgan_utils.evaluate`) gives each sample a class and a confidence, and :func:`ink` gives a measurable
attribute (the share of bright pixels: stroke thickness for digits, how much of the frame a garment fills).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .evaluate import CONFIDENT, ClassifierFeatures, SmallClassifier, classify
from .sampling import class_labels_for, generate_from, num_classes, seeded_latents


def ink(images: torch.Tensor) -> torch.Tensor:
    """Mean brightness of each image in [0, 1] (images in [-1, 1]): stroke thickness for white-on-black digits."""
    return ((images.float().clamp(-1, 1) + 1) / 2).flatten(1).mean(1)


@dataclass
class LatentPool:
    """Many latents with what G makes of them: images, the classifier's class and confidence, and ink."""

    z: torch.Tensor
    images: torch.Tensor
    label: torch.Tensor
    confidence: torch.Tensor
    ink: torch.Tensor
    drawn: torch.Tensor | None = None  # a conditional G's class input for each latent (None otherwise)

    def choose(self, label: int, attribute: str = "any", k: int = 3,
               min_confidence: float = CONFIDENT) -> torch.Tensor:
        """Indexes of ``k`` confidently-``label`` samples: the thickest (``"thick"``), thinnest (``"thin"``) or most
        confident (``"any"``) of them."""
        candidates = ((self.label == label) & (self.confidence >= min_confidence)).nonzero().flatten()
        if len(candidates) < k:
            raise ValueError(f"Only {len(candidates)} samples are confidently class {label}: draw a larger pool "
                             "(num=...) or lower min_confidence")
        score = {"thick": self.ink, "thin": -self.ink, "any": self.confidence}[attribute][candidates]
        return candidates[score.argsort(descending=True)[:k]]


@torch.no_grad()
def latent_pool(generator: nn.Module, classifier: SmallClassifier, num: int = 2000, seed: int = 0) -> LatentPool:
    """Draw ``num`` latents (and, for a conditional G, classes as the data has them), generate them, and
    measure each sample (class, confidence, ink)."""
    z = seeded_latents(num, seed, generator.latent_dim)
    drawn = class_labels_for(generator, num, seed=seed)
    images = generate_from(generator, z, drawn)
    probs = classify(images, classifier)
    confidence, label = probs.max(1)
    return LatentPool(z, images, label, confidence, ink(images), drawn)


@torch.no_grad()
def vector_arithmetic(generator: nn.Module, z_a: torch.Tensor, z_b: torch.Tensor, z_c: torch.Tensor,
                      variations: int = 8, jitter: float = 0.25, seed: int = 0, classes=None) -> dict:
    """The DCGAN paper's "A - B + C" on latents averaged over a few exemplars each (paper section 6.3.2).

    Returns the mean latents' images (``means``, 3 images), the result ``z`` and ``variations`` images made
    from it plus uniform noise in [-jitter, jitter] (the paper's ±0.25 neighbours; the first is the exact result).
    For a conditional G, ``classes`` = the three groups' class inputs (e.g. ``pool.drawn[index]`` for each):
    their one-hot vectors go through the same arithmetic.
    """
    means = torch.stack([z_a.mean(0), z_b.mean(0), z_c.mean(0)])
    z = means[0] - means[1] + means[2]
    rng = torch.Generator().manual_seed(seed)
    noise = (torch.rand(variations, *z.shape, generator=rng) * 2 - 1) * jitter
    noise[0] = 0
    mean_classes = result_classes = None
    if num_classes(generator):
        if classes is None:
            raise ValueError("this generator is class-conditional: pass classes=(classes_a, classes_b, classes_c)")
        onehot = [torch.nn.functional.one_hot(torch.as_tensor(c).reshape(-1).long(), num_classes(generator)).float()
                  .mean(0) for c in classes]
        mean_classes = torch.stack(onehot)
        result_classes = (onehot[0] - onehot[1] + onehot[2]).expand(variations, -1)
    return {"means": generate_from(generator, means, mean_classes), "z": z,
            "results": generate_from(generator, z + noise, result_classes)}


# --------------------------------------------------------------------------------------------- inside D
def _conv_layers(discriminator: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in discriminator.named_modules() if isinstance(m, nn.Conv2d)]


def first_layer_filters(discriminator: nn.Module) -> torch.Tensor:
    """D's first convolution's weights as images in [-1, 1] (out_channels, in_channels, k, k), each filter
    scaled by its own largest absolute weight (so the pattern, not the size, is what you see)."""
    weight = _conv_layers(discriminator)[0][1].weight.detach().float().cpu()
    scale = weight.abs().flatten(1).max(1).values.clamp_min(1e-8)
    return weight / scale[:, None, None, None]


@torch.no_grad()
def feature_maps(discriminator: nn.Module, images: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Each of D's activation layers' outputs (after LeakyReLU) for ``images``: ``[(layer name, (N, C, h, w))]``.
    (A conditional D's class only enters its last score, after these layers: any class gives the same maps.)"""
    outputs: list[tuple[str, torch.Tensor]] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: outputs.append((name, out.detach().cpu())))
             for name, m in discriminator.named_modules() if isinstance(m, nn.LeakyReLU)]
    device = next(discriminator.parameters()).device
    was_training = discriminator.training
    discriminator.eval()
    try:
        conditional = getattr(discriminator, "projection", None) is not None
        discriminator.logits(images.to(device),
                             torch.zeros(len(images), dtype=torch.long, device=device) if conditional else None)
    finally:
        for h in hooks:
            h.remove()
        discriminator.train(was_training)
    return [(name, out.clone()) for name, out in outputs]


@torch.no_grad()
def top_activating(discriminator: nn.Module, images: torch.Tensor, layer: int = -1, channels: list[int] | None = None,
                   k: int = 8, batch_size: int = 500) -> dict[int, torch.Tensor]:
    """For chosen channels of D's ``layer``-th activation layer, the indexes of the ``k`` images in ``images``
    that excite it most (mean activation over the map): what that channel has learned to look for.

    ``channels=None`` picks the 4 channels with the largest spread of responses across the images.
    """
    responses = torch.cat([feature_maps(discriminator, images[i:i + batch_size])[layer][1].mean(dim=(2, 3))
                           for i in range(0, len(images), batch_size)])  # (N, C)
    if channels is None:
        channels = responses.std(0).argsort(descending=True)[:4].tolist()
    return {c: responses[:, c].argsort(descending=True)[:k] for c in channels}


# --------------------------------------------------------------------------------------------- memorisation
@torch.no_grad()
def embed(images: torch.Tensor, space: str = "pixel", classifier: SmallClassifier | None = None,
          batch_size: int = 1000) -> torch.Tensor:
    """Images as vectors: raw pixels (``"pixel"``) or the classifier's 64 features (``"feature"``)."""
    if space == "pixel":
        return images.float().flatten(1)
    if space != "feature" or classifier is None:
        raise ValueError("space must be 'pixel', or 'feature' together with a classifier")
    extractor = ClassifierFeatures(classifier)
    return torch.cat([extractor(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


@torch.no_grad()
def nearest_neighbours(queries: torch.Tensor, reference: torch.Tensor, space: str = "pixel",
                       classifier: SmallClassifier | None = None,
                       chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query image, the Euclidean distance to and index of its nearest image in ``reference``."""
    q, r = embed(queries, space, classifier), embed(reference, space, classifier)
    dists, idxs = [], []
    for start in range(0, len(q), chunk):
        d = torch.cdist(q[start:start + chunk], r)
        best = d.min(1)
        dists.append(best.values)
        idxs.append(best.indices)
    return torch.cat(dists), torch.cat(idxs)


def memorisation_check(generated: torch.Tensor, train: torch.Tensor, test: torch.Tensor,
                       classifier: SmallClassifier | None = None) -> dict:
    """Nearest-training-image distances of generated samples vs of real test images, in pixel and feature space.

    A GAN that memorised its training set would put its samples much *closer* to training images than unseen
    real images are (ratio well below 1). Returns per space: the distances and indexes for both sets, their
    medians and ``ratio`` = median(generated) / median(test).
    """
    out = {}
    for space in ("pixel", "feature") if classifier is not None else ("pixel",):
        gen_d, gen_i = nearest_neighbours(generated, train, space, classifier)
        test_d, test_i = nearest_neighbours(test, train, space, classifier)
        out[space] = {"generated": gen_d, "generated_index": gen_i, "test": test_d, "test_index": test_i,
                      "median_generated": float(gen_d.median()), "median_test": float(test_d.median()),
                      "ratio": float(gen_d.median() / test_d.median().clamp_min(1e-8))}
    return out


def plot_feature_maps(maps: list[tuple[str, torch.Tensor]], rows: dict[str, int], channels: int = 8,
                      title: str = "", save_to=None, show: bool = True):
    """For each named image (``rows``: name -> index into the batch given to :func:`feature_maps`), the first
    ``channels`` feature maps of every D layer, one row per (image, layer); brighter = stronger response."""
    from .plots import _finish, _plt

    plt = _plt()
    fig, axes = plt.subplots(len(rows) * len(maps), channels, figsize=(1.1 * channels, 1.2 * len(rows) * len(maps)),
                             squeeze=False)
    r = 0
    for image_name, index in rows.items():
        for layer_name, out in maps:
            for c in range(channels):
                ax = axes[r, c]
                ax.set_xticks([])
                ax.set_yticks([])
                if c >= out.shape[1]:  # a narrow layer has fewer channels than asked for
                    ax.set_axis_off()
                    continue
                ax.imshow(out[index, c].numpy(), cmap="viridis")
                if c == 0:
                    ax.set_ylabel(f"{image_name}\n{layer_name}\n{tuple(out.shape[1:])}", fontsize=7, rotation=0,
                                  ha="right", va="center")
            r += 1
    if title:
        fig.suptitle(title)
    return _finish(fig, save_to, show)


def plot_distance_histograms(report: dict, title: str = "", save_to=None, show: bool = True):
    """Histograms of nearest-training-image distances: generated samples vs real test images, per space."""
    from .plots import _finish, _plt

    plt = _plt()
    fig, axes = plt.subplots(1, len(report), figsize=(5 * len(report), 3.2), squeeze=False)
    for ax, (space, r) in zip(axes[0], report.items()):
        bins = torch.linspace(0, float(torch.cat([r["generated"], r["test"]]).max()), 40).numpy()
        ax.hist(r["test"].numpy(), bins=bins, alpha=0.6, color="green", label="real test images")
        ax.hist(r["generated"].numpy(), bins=bins, alpha=0.6, color="tab:blue", label="generated samples")
        ax.set(xlabel=f"distance to nearest training image ({space} space)", ylabel="images",
               title=f"{space}: median ratio generated/test = {r['ratio']:.2f}")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _finish(fig, save_to, show)
