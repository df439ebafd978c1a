"""The analysis tools of notebook 08 do what they claim: arithmetic on latents, D's filters and feature maps,
the most-activating images, and a memorisation check that does catch a generator that copies its data."""
import pytest
import torch
from torch import nn

from dcgan_utils import build_models, load_classifier, load_dataset, load_models
from dcgan_utils.analysis import (LatentPool, feature_maps, first_layer_filters, ink, latent_pool,
                                  memorisation_check, nearest_neighbours, top_activating, vector_arithmetic)


class LinearGenerator(nn.Module):
    """G(z) = tanh(W z): simple enough that latent arithmetic can be checked by hand."""

    def __init__(self):
        super().__init__()
        self.latent_dim = 100
        self.linear = nn.Linear(100, 32 * 32, bias=False)

    def forward(self, z):
        return torch.tanh(self.linear(z.flatten(1))).view(-1, 1, 32, 32)


def test_ink_is_the_share_of_bright_pixels():
    images = torch.full((2, 1, 4, 4), -1.0)
    images[1, :, :2] = 1.0
    assert ink(images).tolist() == [0.0, 0.5]


def test_vector_arithmetic_averages_then_adds():
    torch.manual_seed(0)
    G = LinearGenerator()
    z_a, z_b, z_c = (torch.randn(3, 100, 1, 1) for _ in range(3))
    out = vector_arithmetic(G, z_a, z_b, z_c, variations=4, jitter=0.25)
    expected_z = z_a.mean(0) - z_b.mean(0) + z_c.mean(0)
    assert torch.allclose(out["z"], expected_z)
    assert torch.allclose(out["results"][0], G(expected_z[None]).detach()[0], atol=1e-6)
    assert out["means"].shape == (3, 1, 32, 32) and out["results"].shape == (4, 1, 32, 32)
    assert not torch.allclose(out["results"][1], out["results"][0])  # the jittered neighbours differ


def test_latent_pool_choose_picks_class_and_attribute():
    labels = torch.tensor([1, 1, 1, 1, 2, 2])
    pool = LatentPool(z=torch.zeros(6, 100, 1, 1), images=torch.zeros(6, 1, 32, 32), label=labels,
                      confidence=torch.tensor([0.99, 0.95, 0.5, 0.97, 0.99, 0.99]),
                      ink=torch.tensor([0.1, 0.3, 0.9, 0.2, 0.5, 0.6]))
    assert pool.choose(1, "thick", k=2).tolist() == [1, 3]  # index 2 is thicker but not confidently a 1
    assert pool.choose(1, "thin", k=2).tolist() == [0, 3]
    with pytest.raises(ValueError, match="larger pool"):
        pool.choose(2, k=3)


def test_latent_pool_measures_each_sample():
    classifier, _ = load_classifier("mnist")
    pool = latent_pool(LinearGenerator(), classifier, num=50, seed=0)
    assert pool.z.shape == (50, 100, 1, 1) and pool.images.shape == (50, 1, 32, 32)
    assert torch.allclose(pool.ink, ink(pool.images))
    assert ((pool.confidence > 0) & (pool.confidence <= 1)).all() and pool.label.max() < 10


def test_d_filters_and_feature_maps_have_the_seed_shapes():
    _, D = build_models("dcgan", 32, channels=1, width=64)
    filters = first_layer_filters(D)
    assert filters.shape == (16, 1, 4, 4)
    assert torch.allclose(filters.abs().flatten(1).max(1).values, torch.ones(16))
    maps = feature_maps(D, torch.randn(5, 1, 32, 32))
    assert [tuple(m.shape) for _, m in maps] == [(5, 16, 16, 16), (5, 32, 8, 8), (5, 64, 4, 4)]
    assert D.training  # put back as it was


def test_top_activating_returns_the_strongest_images_first():
    torch.manual_seed(0)
    _, D = build_models("dcgan", 32, channels=1, width=32)
    images = torch.rand(40, 1, 32, 32) * 2 - 1
    top = top_activating(D, images, layer=0, channels=[3], k=5)
    response = feature_maps(D, images)[0][1][:, 3].mean(dim=(1, 2))
    assert top[3].tolist() == response.argsort(descending=True)[:5].tolist()
    assert len(top_activating(D, images, layer=-1, k=2)) == 4  # channels=None: the 4 most varied channels


def test_nearest_neighbours_finds_the_copy(mnist_small):
    reference = mnist_small.batch(slice(0, 100))
    queries = reference[[5, 42]] + 0.01 * torch.randn(2, 1, 32, 32)
    dist, index = nearest_neighbours(queries, reference)
    assert index.tolist() == [5, 42] and (dist < 1).all()


def test_memorisation_check_catches_a_copying_generator(mnist_small):
    classifier, _ = load_classifier("mnist")
    train = mnist_small.batch(slice(0, 200))
    test = load_dataset("mnist", 32, split="test", source="subset", limit=100).batch(slice(None))
    copies = train[:100]  # a "generator" that returns its training images
    report = memorisation_check(copies, train, test, classifier)
    assert report["pixel"]["ratio"] < 0.01 and report["feature"]["ratio"] < 0.01
    honest = memorisation_check(test[:50], train, test[50:], classifier)  # unseen real images: ratio near 1
    assert 0.7 < honest["pixel"]["ratio"] < 1.4


def test_load_models_restores_both_networks(tmp_path, tiny):
    from dcgan_utils import Trainer

    trainer = Trainer(out_dir=tmp_path / "run", max_steps=3, **tiny).fit()
    G, D, config = load_models(tmp_path / "run" / "checkpoint.pt")
    x = torch.randn(4, 1, 32, 32)
    trainer.discriminator.eval()
    assert torch.allclose(D.logits(x), trainer.discriminator.logits(x), atol=1e-5)
    assert config["width"] == 32 and not G.training
