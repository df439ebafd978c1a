"""Latent walking: interpolation maths, shapes, endpoint picking, static figures and the live widget explorer."""
import math

import pytest
import torch

from dcgan_utils import build_models
from dcgan_utils.latent import (find_latents, knn_labeller, latent_explorer, latent_walk, lerp, plot_nudges,
                                plot_walks, sample_candidates, slerp, walk_images)


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    generator, _ = build_models("dcgan", 32, 1, width=32)
    return generator.eval()


@pytest.fixture
def ends():
    rng = torch.Generator().manual_seed(1)
    return torch.randn(100, generator=rng), torch.randn(100, generator=rng)


@pytest.mark.parametrize("interpolate", [lerp, slerp])
def test_interpolation_starts_and_ends_at_the_endpoints(interpolate, ends):
    z0, z1 = ends
    torch.testing.assert_close(interpolate(z0, z1, 0.0), z0)
    torch.testing.assert_close(interpolate(z0, z1, 1.0), z1, rtol=1e-5, atol=1e-5)
    assert interpolate(z0, z1, [0.0, 0.5, 1.0]).shape == (3, 100)
    # latents shaped for the generator are accepted too
    assert interpolate(z0.view(1, 100, 1, 1), z1.view(100, 1, 1), 0.3).shape == (100,)


def test_slerp_keeps_the_norm_where_lerp_cuts_the_corner(ends):
    z0, z1 = ends
    z1 = z1 / z1.norm() * z0.norm()  # equal norms: the great circle stays on the sphere
    t = torch.linspace(0, 1, 11)
    torch.testing.assert_close(slerp(z0, z1, t).norm(dim=1), z0.norm().expand(11), rtol=1e-4, atol=1e-4)
    # The straight line's midpoint is shorter by cos(angle / 2): about 1/sqrt(2) for near-orthogonal points.
    angle = torch.arccos(torch.dot(z0, z1) / z0.norm() ** 2)
    assert lerp(z0, z1, 0.5).norm() == pytest.approx(float(z0.norm() * torch.cos(angle / 2)), rel=1e-4)
    assert lerp(z0, z1, 0.5).norm() < 0.85 * z0.norm()


def test_slerp_turns_at_a_constant_rate(ends):
    z0, z1 = ends
    path = slerp(z0, z1 / z1.norm() * z0.norm(), torch.linspace(0, 1, 9))
    unit = path / path.norm(dim=1, keepdim=True)
    angles = torch.arccos((unit[1:] * unit[:-1]).sum(1).clamp(-1, 1))
    torch.testing.assert_close(angles, angles.mean().expand(8), rtol=1e-3, atol=1e-4)


def test_slerp_of_parallel_points_falls_back_to_the_line():
    z = torch.ones(100)
    out = slerp(z, 2 * z, [0.0, 0.5, 1.0])
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, lerp(z, 2 * z, [0.0, 0.5, 1.0]))


@pytest.mark.parametrize("method", ["lerp", "slerp"])
def test_walk_moves_steadily_away_from_the_start_towards_the_end(method, ends):
    z0, z1 = ends
    path = latent_walk(z0, z1, steps=12, method=method)
    assert path.shape == (12, 100, 1, 1)
    flat = path.flatten(1)
    from_start = (flat - z0).norm(dim=1)
    to_end = (flat - z1).norm(dim=1)
    assert (from_start.diff() > 0).all() and (to_end.diff() < 0).all()
    torch.testing.assert_close(flat[0], z0)
    torch.testing.assert_close(flat[-1], z1, rtol=1e-5, atol=1e-5)


def test_walk_rejects_bad_arguments(ends):
    with pytest.raises(ValueError, match="lerp"):
        latent_walk(*ends, method="cubic")
    with pytest.raises(ValueError, match="at least 2"):
        latent_walk(*ends, steps=1)
    with pytest.raises(ValueError, match="differ in size"):
        lerp(torch.zeros(100), torch.zeros(50), 0.5)
    with pytest.raises(ValueError, match="batch"):
        lerp(torch.zeros(4, 100), torch.zeros(4, 100), 0.5)


def test_walk_images_are_the_generators_images_of_the_walk(G, ends):
    images = walk_images(G, *ends, steps=6, method="slerp")
    assert images.shape == (6, 1, 32, 32)
    assert images.min() >= -1 and images.max() <= 1
    with torch.no_grad():
        direct = G(ends[1].view(1, 100, 1, 1))
    torch.testing.assert_close(images[-1:], direct, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(images[0], images[-1])  # the walk goes somewhere


def test_candidates_are_reproducible(G):
    z_a, images_a = sample_candidates(G, 8, seed=3)
    z_b, images_b = sample_candidates(G, 8, seed=3)
    assert z_a.shape == (8, 100, 1, 1) and images_a.shape == (8, 1, 32, 32)
    torch.testing.assert_close(z_a, z_b)
    torch.testing.assert_close(images_a, images_b)


def test_find_latents_returns_latents_of_the_wanted_class(G):
    _, images = sample_candidates(G, 64, seed=0)
    median = images.mean((1, 2, 3)).median()

    def brightness_class(images):  # a labeller that needs no training: 1 if brighter than the median sample
        return (images.mean((1, 2, 3)) > median).long()

    z = find_latents(G, brightness_class, wanted=1, count=3, candidates=64)
    assert z.shape == (3, 100, 1, 1)
    with torch.no_grad():
        assert (brightness_class(G(z)) == 1).all()
    with pytest.raises(ValueError, match="train longer"):
        find_latents(G, lambda images: torch.zeros(len(images), dtype=torch.long), wanted=7, candidates=16)


def test_knn_labeller_recognises_held_out_digits(mnist_small):
    images = mnist_small.batch(slice(None))
    labeller = knn_labeller(images[:200], mnist_small.labels[:200], k=3)
    accuracy = (labeller(images[200:]) == mnist_small.labels[200:]).float().mean()
    assert accuracy > 0.7  # 10 classes: chance is 0.1
    with pytest.raises(ValueError, match="image size"):
        labeller(torch.zeros(2, 1, 64, 64))


def test_static_figures_draw_one_strip_per_method_and_one_row_per_dimension(G, ends, tmp_path):
    fig = plot_walks(G, *ends, steps=5, save_to=tmp_path / "walks.png", show=False)
    assert len(fig.axes) == 2 and (tmp_path / "walks.png").stat().st_size > 0
    fig = plot_nudges(G, ends[0], dims=(0, 5, 7), values=(-2, 0, 2), save_to=tmp_path / "nudges.png", show=False)
    assert [label.get_text() for label in fig.axes[0].get_yticklabels()] == ["z[0]", "z[5]", "z[7]"]
    with pytest.raises(ValueError, match="outside"):
        plot_nudges(G, ends[0], dims=(100,), show=False)


def test_explorer_builds_sliders_and_redraws_when_one_moves(G, ends):
    import ipywidgets

    explorer = latent_explorer(G, *ends, dims=(0, 42), nudge=2.0, size=64)
    assert isinstance(explorer.widget, ipywidgets.HBox)
    assert set(explorer.dim_sliders) == {0, 42} and explorer.dim_sliders[42].max == 2.0
    start = bytes(explorer.image.value)
    assert start[:8] == b"\x89PNG\r\n\x1a\n" and explorer.renders == 1

    explorer.t.value = 1.0  # walk to the end: the image is G(z1)
    after_walk = bytes(explorer.image.value)
    assert after_walk != start and explorer.renders == 2
    torch.testing.assert_close(explorer.latent(), ends[1], rtol=1e-5, atol=1e-5)

    explorer.dim_sliders[42].value = 1.5  # nudge one coordinate: only that one changes, the image with it
    assert bytes(explorer.image.value) != after_walk
    delta = explorer.latent() - slerp(*ends, 1.0)
    assert delta[42] == pytest.approx(1.5) and delta.abs().sum() == pytest.approx(1.5, rel=1e-4)

    explorer.t.value = 0.5
    explorer.method.value = "lerp"  # switching the path at mid-walk moves the latent to the straight line
    torch.testing.assert_close(explorer.latent()[:42], lerp(*ends, 0.5)[:42])

    bundle = explorer._repr_mimebundle_()  # displays as the widget, with a readable text fallback
    assert "application/vnd.jupyter.widget-view+json" in bundle and "LatentExplorer" in bundle["text/plain"]

    explorer.reset()
    assert bytes(explorer.image.value) == start
    torch.testing.assert_close(explorer.latent(), ends[0])


def test_explorer_rejects_dimensions_outside_the_latent(G, ends):
    with pytest.raises(ValueError, match="outside"):
        latent_explorer(G, *ends, dims=(100,))
    assert math.isclose(latent_explorer(G, *ends, dims=()).t.value, 0.0)


def test_a_class_menu_picks_what_a_conditional_generator_draws_and_the_sliders_keep_working(ends):
    ipywidgets = pytest.importorskip("ipywidgets")
    torch.manual_seed(0)
    G, _ = build_models("dcgan", 32, 1, width=32, num_classes=10)
    G.eval()
    names = [f"digit {i}" for i in range(10)]
    explorer = latent_explorer(G, *ends, dims=(3,), size=64, label=7, class_names=names)
    assert isinstance(explorer.label, ipywidgets.Dropdown) and explorer.label.value == 7
    assert explorer.label.options[7] == ("digit 7", 7)
    sevens = bytes(explorer.image.value)
    torch.testing.assert_close(explorer.current_image(), walk_images(G, *ends, steps=2, labels=7)[0])
    explorer.label.value = 2  # another class, the same latent: a new image
    twos = bytes(explorer.image.value)
    assert twos != sevens and explorer.renders == 2
    explorer.dim_sliders[3].value = 2.0  # the sliders still move the latent of the chosen class
    assert bytes(explorer.image.value) != twos and explorer.renders == 3
    torch.testing.assert_close(explorer.current_image(), walk_images(G, explorer.latent(), ends[1], 2, labels=2)[0])
    assert "class menu" in explorer._repr_mimebundle_()["text/plain"]
    with pytest.raises(ValueError, match="draws 10 classes"):
        latent_explorer(G, *ends, class_names=["a", "b"])
    with pytest.raises(ValueError, match="pass labels"):
        walk_images(G, *ends)  # a conditional G is always told which class to draw
    assert latent_explorer(build_models("dcgan", 32, 1, width=32)[0].eval(), *ends).label is None


def test_a_walk_between_two_classes_mixes_them_along_the_way(ends):
    torch.manual_seed(0)
    G, _ = build_models("dcgan", 32, 1, width=32, num_classes=10)
    G.eval()
    walk = walk_images(G, *ends, steps=5, labels=(3, 5))
    torch.testing.assert_close(walk[0], walk_images(G, *ends, steps=5, labels=3)[0])  # starts as a 3 ...
    torch.testing.assert_close(walk[-1], walk_images(G, *ends, steps=5, labels=5)[-1])  # ... ends as a 5
    assert not torch.allclose(walk[2], walk_images(G, *ends, steps=5, labels=3)[2])  # and mixes them between
    with pytest.raises(ValueError, match="class-conditional"):
        walk_images(build_models("dcgan", 32, 1, width=32)[0], *ends, labels=(3, 5))
