"""Walking in the latent space (DCGAN paper, section 6.1): interpolate between two latent points, look at the images.

* :func:`lerp` and :func:`slerp`: linear and spherical interpolation between two latent vectors.
* :func:`latent_walk` / :func:`walk_images`: the latents and G's images along a walk.
* :func:`sample_candidates` and :func:`find_latents`: latents to start and end at, picked by index from a grid
  of samples or by the class a labeller (any ``images -> class ids`` function, e.g. :func:`knn_labeller`) gives.
* :func:`plot_walks` and :func:`plot_nudges`: static figures (image strips) that read well where widgets don't
  render (GitHub, CI).
* :func:`latent_explorer`: ipywidgets sliders that move along the walk and nudge single latent dimensions,
  regenerating the image live; for a class-conditional G (notebook 11) a menu picks the class it draws.

Every function takes ``labels`` for a class-conditional G: one class for every image, or one per latent.

Why spherical: G was trained on z ~ N(0, I) in 100 dimensions, whose samples all have norm close to
sqrt(100) = 10. Two such points are almost orthogonal, so the straight line between them passes through points
of norm ~ 10 / sqrt(2) ~ 7 in the middle, which G never saw in training; the great-circle path keeps the norm.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .plots import _finish, _plt, grid_image
from .sampling import generate_from, num_classes, seeded_latents

METHODS = ("lerp", "slerp")


def _flat(z: torch.Tensor) -> torch.Tensor:
    """A single latent as a float vector (accepts (D,), (D, 1, 1), (1, D) or (1, D, 1, 1))."""
    if z.dim() > 1 and z.shape[0] != 1 and z.dim() != 3:
        raise ValueError(f"expected one latent vector, got shape {tuple(z.shape)}: pass z[i], not a batch")
    return z.reshape(-1).float()


def _as_t(t: float | Sequence[float] | torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``t`` as a 1-D float tensor and whether it was a scalar."""
    t = torch.as_tensor(t, dtype=torch.float32)
    return t.reshape(-1), t.dim() == 0


def lerp(z0: torch.Tensor, z1: torch.Tensor, t: float | Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Linear interpolation ``(1 - t) z0 + t z1``.

    A scalar ``t`` gives one vector of shape (D,); a sequence of T values gives (T, D).
    """
    a, b = _flat(z0), _flat(z1)
    if a.shape != b.shape:
        raise ValueError(f"z0 and z1 differ in size: {a.numel()} vs {b.numel()}")
    ts, scalar = _as_t(t)
    out = (1 - ts)[:, None] * a + ts[:, None] * b
    return out[0] if scalar else out


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: float | Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Spherical interpolation along the great circle from ``z0`` to ``z1`` (Shoemake 1985; White 2016 for GANs).

    ``sin((1-t) w) / sin w * z0 + sin(t w) / sin w * z1`` with ``w`` the angle between them: the path turns at
    a constant rate and keeps their norm when the endpoints have equal norms (as two N(0, I) samples nearly do).
    Nearly parallel endpoints
    (where ``sin w`` is ~0) fall back to :func:`lerp`. Shapes as in :func:`lerp`.
    """
    a, b = _flat(z0), _flat(z1)
    if a.shape != b.shape:
        raise ValueError(f"z0 and z1 differ in size: {a.numel()} vs {b.numel()}")
    ts, scalar = _as_t(t)
    cos = torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if torch.sin(omega).abs() < 1e-6:  # (anti)parallel: the circle is not defined, the line is as good
        return lerp(a, b, ts[0] if scalar else ts)
    w0 = torch.sin((1 - ts) * omega) / torch.sin(omega)
    w1 = torch.sin(ts * omega) / torch.sin(omega)
    out = w0[:, None] * a + w1[:, None] * b
    return out[0] if scalar else out


def latent_walk(z0: torch.Tensor, z1: torch.Tensor, steps: int = 10, method: str = "slerp") -> torch.Tensor:
    """``steps`` latents from ``z0`` to ``z1`` (both included), shaped (steps, D, 1, 1) for the generator."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}: use 'lerp' (straight line) or 'slerp' (great circle)")
    if steps < 2:
        raise ValueError(f"steps={steps} must be at least 2 (the two endpoints)")
    interpolate = lerp if method == "lerp" else slerp
    path = interpolate(z0, z1, torch.linspace(0, 1, steps))
    return path[:, :, None, None]


def walk_labels(G: nn.Module, labels, steps: int):
    """A conditional G's classes along a walk: ``labels`` as given, or for a pair ``(a, b)`` class weights that
    turn linearly from class a into class b (a digit 3 becoming a 5, with z walking at the same time)."""
    if not isinstance(labels, tuple):
        return labels
    k = num_classes(G)
    if not k or len(labels) != 2:
        raise ValueError("labels=(a, b) walks between two classes of a class-conditional generator")
    start, end = (torch.nn.functional.one_hot(torch.tensor(c), k).float() for c in labels)
    return lerp(start, end, torch.linspace(0, 1, steps))


def walk_images(G: nn.Module, z0: torch.Tensor, z1: torch.Tensor, steps: int = 10,
                method: str = "slerp", labels=None) -> torch.Tensor:
    """G's images along :func:`latent_walk` from ``z0`` to ``z1``: (steps, C, H, W) in [-1, 1] on the CPU.
    ``labels``: a conditional G's class, or a pair ``(a, b)`` to walk from class a to class b too."""
    return generate_from(G, latent_walk(z0, z1, steps, method), walk_labels(G, labels, steps))


def sample_candidates(G: nn.Module, num: int = 64, seed: int = 0, labels=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``num`` seeded latents (num, D, 1, 1) and their images, to show as a grid and pick endpoints from."""
    z = seeded_latents(num, seed, G.latent_dim)
    return z, generate_from(G, z, labels)


def knn_labeller(images: torch.Tensor, labels: torch.Tensor, k: int = 5) -> Callable[[torch.Tensor], torch.Tensor]:
    """A k-nearest-neighbour classifier in pixel space over labelled real images (N, C, H, W) in [-1, 1].

    Crude but needs no training: good enough to find "a sample that looks like a shoe" among generated ones.
    Returns ``labeller(images) -> class ids``. A trained classifier's predict function can be used instead.
    """
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    bank = images.reshape(images.shape[0], -1).float().cpu()
    bank_labels = labels.cpu().long()
    classes = int(bank_labels.max()) + 1

    def labeller(query: torch.Tensor) -> torch.Tensor:
        q = query.reshape(query.shape[0], -1).float().cpu()
        if q.shape[1] != bank.shape[1]:
            raise ValueError(f"query images have {q.shape[1]} values, the labelled ones {bank.shape[1]}: "
                             "load the real data at the generator's image size")
        nearest = torch.cdist(q, bank).topk(k, largest=False).indices
        votes = torch.nn.functional.one_hot(bank_labels[nearest], classes).sum(1)
        return votes.argmax(1)

    return labeller


def find_latents(G: nn.Module, labeller: Callable[[torch.Tensor], torch.Tensor], wanted: int, count: int = 1,
                 candidates: int = 256, seed: int = 0, labels=None) -> torch.Tensor:
    """``count`` latents (count, D, 1, 1) whose images ``labeller`` puts in class ``wanted``.

    Draws ``candidates`` seeded latents and keeps the first matches, so the same seed gives the same picks.
    Raises ValueError when fewer match (the generator may not draw that class yet: train longer or add
    candidates).
    """
    z, images = sample_candidates(G, candidates, seed, labels)
    hits = (labeller(images) == wanted).nonzero().flatten()
    if hits.numel() < count:
        raise ValueError(f"only {hits.numel()} of {candidates} samples were labelled class {wanted}: the generator "
                         "may not draw it yet (train longer) or raise candidates")
    return z[hits[:count]]


# ------------------------------------------------------------------------------------------------ static figures
def plot_walks(G: nn.Module, z0: torch.Tensor, z1: torch.Tensor, steps: int = 10,
               methods: Sequence[str] = METHODS, title: str = "", save_to: str | Path | None = None,
               show: bool = True, norms: bool = True, labels=None):
    """One image strip per interpolation method from ``z0`` to ``z1``, with each latent's norm underneath.

    The static version of :func:`latent_explorer`'s walk slider.
    """
    plt = _plt()
    fig, axes = plt.subplots(len(methods), 1, figsize=(1.0 * steps + 1.2, 1.45 * len(methods) + 0.5), squeeze=False)
    names = {"lerp": "linear", "slerp": "spherical"}
    for ax, method in zip(axes[:, 0], methods):
        path = latent_walk(z0, z1, steps, method)
        strip = grid_image(generate_from(G, path, walk_labels(G, labels, steps)), nrow=steps)
        ax.imshow(strip)
        ax.set_yticks([])
        ax.set_ylabel(names.get(method, method), rotation=0, ha="right", va="center")
        cell = strip.shape[1] / steps
        ax.set_xticks([(i + 0.5) * cell for i in range(steps)])
        ticks = [f"t={t:.2f}" for t in np.linspace(0, 1, steps)]
        if norms:
            ticks = [f"{tick}\n|z|={n:.1f}" for tick, n in zip(ticks, path.flatten(1).norm(dim=1).tolist())]
        ax.set_xticklabels(ticks, fontsize=7)
        ax.tick_params(length=0)
        for side in ax.spines.values():
            side.set_visible(False)
    if title:
        fig.suptitle(title)
    return _finish(fig, save_to, show)


def plot_nudges(G: nn.Module, z: torch.Tensor, dims: Sequence[int] = (0, 1, 2), values: Sequence[float] = (
        -3, -2, -1, 0, 1, 2, 3), title: str = "", save_to: str | Path | None = None, show: bool = True,
                labels=None):
    """One row per latent dimension in ``dims``: G(z) with that single coordinate set to each of ``values``.

    The static version of :func:`latent_explorer`'s dimension sliders.
    """
    plt = _plt()
    base = _flat(z)
    rows = []
    for d in dims:
        if not 0 <= d < base.numel():
            raise ValueError(f"dimension {d} is outside the latent (0..{base.numel() - 1})")
        batch = base.repeat(len(values), 1)
        batch[:, d] = torch.as_tensor(values, dtype=batch.dtype)
        rows.append(generate_from(G, batch, labels))
    grid = grid_image(torch.cat(rows), nrow=len(values))
    fig, ax = plt.subplots(figsize=(0.95 * len(values) + 1.2, 0.95 * len(dims) + 0.7))
    ax.imshow(grid)
    cell_w, cell_h = grid.shape[1] / len(values), grid.shape[0] / len(dims)
    ax.set_xticks([(i + 0.5) * cell_w for i in range(len(values))])
    ax.set_xticklabels([f"{v:+g}" for v in values], fontsize=8)
    ax.set_yticks([(i + 0.5) * cell_h for i in range(len(dims))])
    ax.set_yticklabels([f"z[{d}]" for d in dims], fontsize=8)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title or "one latent dimension at a time (the others fixed)", fontsize=10)
    return _finish(fig, save_to, show)


# ------------------------------------------------------------------------------------------------ live explorer
def _png(image: torch.Tensor, size: int) -> bytes:
    """One (C, H, W) image in [-1, 1] as PNG bytes, scaled up with nearest neighbours to about ``size`` px."""
    import imageio.v3 as iio

    array = grid_image(image[None], nrow=1, padding=0)
    scale = max(1, size // array.shape[0])
    array = array.repeat(scale, axis=0).repeat(scale, axis=1)
    return iio.imwrite("<bytes>", array, extension=".png")


@dataclass
class LatentExplorer:
    """The widgets of :func:`latent_explorer`; display it (or ``.widget``) in a notebook.

    ``t`` moves along the walk from ``z0`` (0) to ``z1`` (1); each slider in ``dim_sliders`` adds an offset to one
    latent coordinate; ``image`` shows G of the resulting latent and is redrawn whenever a slider moves. For a
    class-conditional G, ``label`` is the menu of the class it draws (None otherwise).
    """

    G: nn.Module
    z0: torch.Tensor
    z1: torch.Tensor
    widget: object
    t: object
    method: object
    dim_sliders: dict
    image: object
    size: int
    label: object = None  # the class menu of a conditional G
    renders: int = 0  # how many times the image was regenerated

    def latent(self) -> torch.Tensor:
        """The latent the sliders point at now, shape (D,)."""
        interpolate = lerp if self.method.value == "lerp" else slerp
        z = interpolate(self.z0, self.z1, float(self.t.value)).clone()
        for d, slider in self.dim_sliders.items():
            z[d] += float(slider.value)
        return z

    def current_image(self) -> torch.Tensor:
        """G's image for :meth:`latent`, (C, H, W) in [-1, 1]."""
        labels = None if self.label is None else int(self.label.value)
        return generate_from(self.G, self.latent()[None], labels)[0]

    def redraw(self, _change=None) -> None:
        """Regenerate the image from the sliders (called by every slider)."""
        self.image.value = _png(self.current_image(), self.size)
        self.renders += 1

    def reset(self, _button=None) -> None:
        """Back to z0, offsets 0."""
        self.t.value = 0.0  # each change redraws
        for slider in self.dim_sliders.values():
            slider.value = 0.0

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.widget._repr_mimebundle_(**kwargs)
        # What GitHub and static exports show instead of the sliders (the default would be the widget's repr).
        menu = ", a class menu" if self.label is not None else ""
        bundle["text/plain"] = ("LatentExplorer: live sliders (walk t, path, latent dimensions "
                                f"{list(self.dim_sliders)}{menu}); they need a running Jupyter kernel with ipywidgets")
        return bundle


def latent_explorer(G: nn.Module, z0: torch.Tensor, z1: torch.Tensor, dims: Sequence[int] = (0, 1, 2, 3),
                    nudge: float = 3.0, method: str = "slerp", size: int = 192, label: int = 0,
                    class_names: Sequence[str] | None = None) -> LatentExplorer:
    """Live sliders over G's latent space: a walk slider from ``z0`` to ``z1`` and one slider per dimension in
    ``dims`` adding up to +-``nudge`` to that coordinate. Every change regenerates the image. For a
    class-conditional G, a menu picks the class it draws (``label`` first; ``class_names`` name the entries,
    e.g. ``data.CLASS_NAMES["mnist"]``), and the sliders keep working for every class.

    Needs ipywidgets (``pip install ipywidgets``; in Colab the setup cell enables the widget manager). Where
    widgets don't render (GitHub, a static HTML export) use :func:`plot_walks` and :func:`plot_nudges`.
    """
    try:
        import ipywidgets as w
    except ImportError as err:  # an optional dependency: say how to get it and what to use meanwhile
        raise ImportError("latent_explorer needs ipywidgets: pip install ipywidgets (or the course extra: "
                          "pip install -e '.[course]'); plot_walks/plot_nudges draw the same without it") from err
    if method not in METHODS:
        raise ValueError(f"method={method!r}: use 'lerp' or 'slerp'")
    latent_dim = _flat(z0).numel()
    bad = [d for d in dims if not 0 <= d < latent_dim]
    if bad:
        raise ValueError(f"dims {bad} are outside the latent (0..{latent_dim - 1})")

    style = {"description_width": "70px"}
    t = w.FloatSlider(value=0.0, min=0.0, max=1.0, step=0.02, description="walk t", style=style,
                      continuous_update=True, readout_format=".2f")
    method_toggle = w.ToggleButtons(options=[("spherical", "slerp"), ("linear", "lerp")], value=method,
                                    description="path", style=style)
    dim_sliders = {d: w.FloatSlider(value=0.0, min=-nudge, max=nudge, step=0.1, description=f"z[{d}] +",
                                    style=style, continuous_update=True, readout_format="+.1f") for d in dims}
    classes = num_classes(G)
    menu = None
    if classes:
        names = list(class_names) if class_names is not None else [str(i) for i in range(classes)]
        if len(names) != classes or not 0 <= label < classes:
            raise ValueError(f"this generator draws {classes} classes: give {classes} class_names and a label in "
                             f"0..{classes - 1}")
        menu = w.Dropdown(options=[(name, i) for i, name in enumerate(names)], value=label, description="draw",
                          style=style)
    reset = w.Button(description="reset", icon="undo")
    image = w.Image(format="png", layout=w.Layout(width=f"{size}px", height=f"{size}px"))
    controls = w.VBox([*([menu] if menu else []), t, method_toggle, *dim_sliders.values(), reset])
    box = w.HBox([image, controls])
    explorer = LatentExplorer(G=G, z0=_flat(z0).clone(), z1=_flat(z1).clone(), widget=box, t=t,
                              method=method_toggle, dim_sliders=dim_sliders, image=image, size=size, label=menu)
    for control in (t, method_toggle, *dim_sliders.values(), *([menu] if menu else [])):
        control.observe(explorer.redraw, names="value")
    reset.on_click(explorer.reset)
    explorer.redraw()
    return explorer
