"""The textbook step (dcgan_utils/step.py) on its own: no Trainer, no run folder, just networks and optimisers.

Each option of the step does what its name says: the hinge loss is its formula, R1 is gamma/2 times the squared
gradient at real images, DiffAugment is differentiable and keeps shapes, spectral norm bounds D's layers, and a
class-conditional pair takes its labels.
"""
import inspect

import pytest
import torch
import torch.nn.functional as F

from dcgan_utils import build_models
from dcgan_utils.augment import AUGMENTATIONS, diff_augment, parse_policy
from dcgan_utils.step import GAN, discriminator_loss, generator_loss, r1_penalty, train_step


def _gan(width=16, **options):
    torch.manual_seed(0)
    G, D = build_models("dcgan", 32, 1, width=width, num_classes=options.pop("num_classes", 0),
                        d_batchnorm=options.pop("d_batchnorm", True), spectral_norm=options.pop("spectral_norm", False))
    return GAN(G, D, torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999)),
               torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999)), **options)


def test_the_textbook_step_fits_on_one_screen_and_knows_nothing_of_runs():
    source = inspect.getsource(train_step)
    assert len(source.splitlines()) <= 80
    for word in ("budget", "signal", "checkpoint", "progress", "print(", "open("):
        assert word not in source


def test_a_step_on_a_hand_built_gan_moves_both_networks(mnist_small):
    gan = _gan()
    before = [p.detach().clone() for p in (*gan.generator.parameters(), *gan.discriminator.parameters())]
    stats = train_step(gan, mnist_small.batch(torch.arange(32)), torch.randn(32, 100, 1, 1))
    after = list((*gan.generator.parameters(), *gan.discriminator.parameters()))
    assert stats.shape == (6,) and torch.isfinite(stats).all()
    assert sum(not torch.equal(a, b) for a, b in zip(before, after)) >= len(before) - 2  # conv biases before BN: ~0
    assert all(p.requires_grad for p in gan.discriminator.parameters())  # D unfrozen after G's turn


def test_the_hinge_loss_is_its_formula():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-3.0, 0.2, 1.5])
    expected_d = torch.clamp(1 - real, min=0).mean() + torch.clamp(1 + fake, min=0).mean()
    assert discriminator_loss(real, fake, "hinge") == pytest.approx(float(expected_d))  # (0+.5+2)/3 + (0+1.2+2.5)/3
    assert generator_loss(fake, "hinge") == pytest.approx(float(-fake.mean()))
    # bce: -log sigmoid(real) - log(1 - sigmoid(fake)); G: -log sigmoid(fake)
    expected = -F.logsigmoid(real).mean() - torch.log1p(-torch.sigmoid(fake)).mean()
    assert discriminator_loss(real, fake, "bce") == pytest.approx(float(expected), rel=1e-5)
    assert generator_loss(fake, "bce") == pytest.approx(float(-F.logsigmoid(fake).mean()), rel=1e-5)


def test_r1_is_half_gamma_times_the_squared_gradient_at_real_images():
    w = torch.randn(1, 3, 4, 4)
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    logits = (x * w).flatten(1).sum(1)  # a linear D: its gradient with respect to any x is w
    assert r1_penalty(logits, x, gamma=10.0) == pytest.approx(5.0 * float(w.pow(2).sum()), rel=1e-5)


def test_a_step_with_r1_adds_the_penalty_to_d_loss(mnist_small):
    real, z = mnist_small.batch(torch.arange(32)), torch.randn(32, 100, 1, 1)
    plain, penalised = _gan(d_batchnorm=False), _gan(d_batchnorm=False, r1=10.0)
    torch.manual_seed(1)
    loss_plain = train_step(plain, real, z)[1]
    torch.manual_seed(1)
    loss_r1 = train_step(penalised, real, z)[1]
    assert loss_r1 > loss_plain  # same networks, same batch: the difference is the (positive) penalty
    assert not real.requires_grad  # the caller's batch is left alone


def test_spectral_norm_bounds_every_layer_of_d(mnist_small):
    gan = _gan(width=32, spectral_norm=True, d_batchnorm=False, loss="hinge")
    for i in range(5):
        train_step(gan, mnist_small.batch(torch.arange(32 * i, 32 * i + 32)), torch.randn(32, 100, 1, 1))
    convs = [m for m in gan.discriminator.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs
    with torch.no_grad():
        for conv in convs:
            top = torch.linalg.matrix_norm(conv.weight.flatten(1), ord=2)
            assert top < 1.1, top  # the largest singular value of the reshaped kernel, held near 1


def test_diffaugment_keeps_shapes_changes_images_and_passes_gradients():
    torch.manual_seed(0)
    x = torch.rand(8, 3, 32, 32, requires_grad=True) * 2 - 1
    for name in AUGMENTATIONS:
        out = diff_augment(x, (name,))
        assert out.shape == x.shape and not torch.equal(out, x)
        grad, = torch.autograd.grad(out.sum(), x)
        assert grad.abs().sum() > 0
    cut = diff_augment(torch.ones(4, 1, 32, 32), ("cutout",))
    assert ((cut == 0).flatten(1).sum(1) == 16 * 16).all()  # a 16x16 square of each image
    shifted = diff_augment(torch.ones(4, 1, 32, 32), ("translation",))
    assert ((shifted == 1) | (shifted == 0)).all()  # moved, with zeros shifted in
    assert parse_policy("color, cutout") == ("color", "cutout") and parse_policy("") == ()
    with pytest.raises(ValueError, match="unknown 'flip'.*color, translation, cutout"):
        parse_policy("color,flip")


def test_a_conditional_pair_takes_labels_and_refuses_to_guess_them(mnist_small):
    gan = _gan(num_classes=10)
    real, labels = mnist_small.batch(torch.arange(32)), mnist_small.labels[:32]
    stats = train_step(gan, real, torch.randn(32, 100, 1, 1), labels, torch.randint(0, 10, (32,)))
    assert torch.isfinite(stats).all()
    z = torch.randn(4, 100)
    gan.generator.eval()
    ones, sevens = gan.generator(z, torch.full((4,), 1)), gan.generator(z, torch.full((4,), 7))
    assert not torch.allclose(ones, sevens)  # the class changes the image
    mixed = gan.generator(z, F.one_hot(torch.full((4,), 7), 10).float())  # class weights: a one-hot is the class
    torch.testing.assert_close(mixed, sevens)
    with pytest.raises(ValueError, match="pass labels"):
        gan.generator(z)
    with pytest.raises(ValueError, match="labels must be in 0..9"):
        gan.generator(z, torch.full((4,), 10))
