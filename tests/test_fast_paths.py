"""Each fast path of the Trainer gives the plain fp32 path's result (or stays close to it, for bf16).

No timings here (speed is measured by benchmarks/throughput.py and recorded in docs/performance.md): these tests
check that going fast does not change what is computed.
"""
import os

import pytest
import torch
import torch.nn.functional as F

from dcgan_utils import Trainer, build_models

STEPS = 3


def _run(tmp_path, data, name: str, steps: int = STEPS, **options) -> tuple[Trainer, list[list[float]], dict]:
    """A width-32 trainer taking ``steps`` train_steps on the same batches with the same latents.

    Returns the trainer, each step's statistics, and the initial weights of G and D (flattened).
    """
    # the reference: plain fp32, contiguous, on any CPU (auto picks bf16 on AMX; a CPU gets channels_last)
    options = {"precision": "fp32", "channels_last": False, **options}
    trainer = Trainer(out_dir=tmp_path / name, data=data, resume=False, progress=False, dataset="mnist",
                      image_size=32, width=32, batch_size=32, device="cpu", **options)
    initial = {part: _weights(getattr(trainer, part)) for part in ("generator", "discriminator")}
    torch.manual_seed(123)  # train_step draws z from the global generator: same seed, same latents
    stats = []
    for i in range(steps):
        real = data.batch(torch.arange(i * 32, (i + 1) * 32))
        stats.append(trainer.train_step(real.contiguous(memory_format=trainer.memory_format)).tolist())
    return trainer, stats, initial


def _weights(module: torch.nn.Module) -> torch.Tensor:
    """All weights (not biases: see test_train_step_equals_the_textbook_step) as one float32 vector."""
    return torch.cat([p.detach().float().flatten() for name, p in module.named_parameters()
                      if name.endswith("weight")])


def _update_gap(run, reference, part: str) -> float:
    """|run's weight change - reference's| / |reference's weight change|, both from the same start.

    Element-wise comparisons are ill-posed under Adam: its first steps turn a 1e-9 gradient difference on a
    weight with a near-zero gradient into a +-lr step, so the whole update is compared instead.
    """
    ours, theirs = _weights(getattr(run[0], part)), _weights(getattr(reference[0], part))
    return float((ours - theirs).norm() / (theirs - reference[2][part]).norm())


def _assert_stats_close(stats, reference, loss_tol: float, norm_rtol: float) -> None:
    """Losses and D outputs to ``loss_tol``; gradient norms (sums of ~1e5 squares, another order) to ``norm_rtol``."""
    stats, reference = torch.tensor(stats), torch.tensor(reference)
    torch.testing.assert_close(stats[:, :4], reference[:, :4], atol=loss_tol, rtol=loss_tol)
    torch.testing.assert_close(stats[:, 4:], reference[:, 4:], atol=0, rtol=norm_rtol)


def _generator_output_gap(a: Trainer, b: Trainer) -> float:
    z = torch.randn(32, 100, 1, 1, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        return float((a.generator(z) - b.generator(z)).abs().max())


@pytest.fixture(scope="module")
def plain(tmp_path_factory, mnist_small):
    return _run(tmp_path_factory.mktemp("plain"), mnist_small, "fp32")


def test_resident_uint8_batches_equal_the_torchvision_transform(mnist_small):
    """The resident data is compact uint8, and a batch is exactly ToTensor + Normalize((0.5,), (0.5,))."""
    from PIL import Image
    from torchvision import transforms

    assert mnist_small.images.dtype == torch.uint8
    index = torch.arange(8)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    expected = torch.stack([transform(Image.fromarray(mnist_small.images[i, 0].numpy(), mode="L")) for i in index])
    batch = mnist_small.batch(index)
    assert batch.dtype == torch.float32
    torch.testing.assert_close(batch, expected, atol=1e-6, rtol=0)


def test_train_step_equals_the_textbook_step(tmp_path, mnist_small):
    """One G forward, no D weight gradients during G's step, set_to_none: same update as pytorch/examples' dcgan."""
    trainer = Trainer(out_dir=tmp_path, data=mnist_small, resume=False, progress=False, dataset="mnist",
                      image_size=32, width=32, batch_size=32, device="cpu", precision="fp32", channels_last=False)
    G, D = build_models("dcgan", 32, 1, width=32)
    G.load_state_dict(trainer.generator.state_dict())
    D.load_state_dict(trainer.discriminator.state_dict())
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    for i in range(2):
        real = mnist_small.batch(torch.arange(i * 32, (i + 1) * 32))
        torch.manual_seed(i)
        stats = trainer.train_step(real)
        # the textbook step: D's real and fake losses backpropagated separately, D's grads accumulated in G's step
        torch.manual_seed(i)
        z = torch.randn(32, 100, 1, 1)
        D.zero_grad()
        loss_real = F.binary_cross_entropy(D(real).view(-1), torch.ones(32))
        loss_real.backward()
        fake = G(z)
        loss_fake = F.binary_cross_entropy(D(fake.detach()).view(-1), torch.zeros(32))
        loss_fake.backward()
        opt_d.step()
        G.zero_grad()
        loss_g = F.binary_cross_entropy(D(fake).view(-1), torch.ones(32))
        loss_g.backward()
        opt_g.step()
        torch.testing.assert_close(stats[:2], torch.stack([loss_g, loss_real + loss_fake]).detach(),
                                   atol=1e-5, rtol=1e-5)
    assert all(p.requires_grad for p in trainer.discriminator.parameters())  # restored after G's step
    # Weights agree. Biases are compared through the outputs: a conv bias feeding a BatchNorm has a zero true
    # gradient, so its float-noise gradient is amplified to +-lr by Adam's first steps, differently in each loop;
    # it cannot change a train-mode output, because BatchNorm subtracts it again.
    for ours, textbook in ((trainer.generator, G), (trainer.discriminator, D)):
        for (name, p), q in zip(ours.named_parameters(), textbook.parameters()):
            if name.endswith("weight"):
                torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5, msg=name)
    with torch.no_grad():
        z, real = torch.randn(32, 100, 1, 1), mnist_small.batch(torch.arange(64, 96))
        torch.testing.assert_close(trainer.generator(z), G(z), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(trainer.discriminator(real), D(real), atol=1e-5, rtol=1e-5)


def test_channels_last_gives_the_same_training(tmp_path, mnist_small, plain):
    run = _run(tmp_path, mnist_small, "cl", channels_last=True)
    assert run[0].generator.main_module[0].weight.is_contiguous(memory_format=torch.channels_last)
    _assert_stats_close(run[1], plain[1], loss_tol=1e-4, norm_rtol=1e-2)
    assert _update_gap(run, plain, "generator") < 0.02  # measured 0.006
    assert _update_gap(run, plain, "discriminator") < 0.02  # measured 0.001
    assert _generator_output_gap(run[0], plain[0]) < 1e-3  # measured 2e-4


def test_bf16_autocast_trains_close_to_fp32(tmp_path, mnist_small, plain):
    run = _run(tmp_path, mnist_small, "bf16", precision="bf16")
    stats, reference = torch.tensor(run[1]), torch.tensor(plain[1])
    assert torch.isfinite(stats).all()
    assert all(p.dtype == torch.float32 for p in run[0].generator.parameters())  # autocast: fp32 master weights
    assert not torch.equal(stats, reference)  # it really ran in bf16
    # bf16 keeps 8 bits of mantissa: losses agree to about 1e-3 over the first steps (measured 7e-4), not 1e-7
    torch.testing.assert_close(stats[:, :4], reference[:, :4], atol=0.01, rtol=0.01)
    assert _update_gap(run, plain, "generator") < 0.6  # measured 0.28: same direction, bf16-sized noise
    assert _update_gap(run, plain, "discriminator") < 0.3  # measured 0.09
    assert _generator_output_gap(run[0], plain[0]) < 0.03  # measured 0.005 (images span [-1, 1])


@pytest.mark.skipif(os.environ.get("DCGAN_TEST_COMPILE") != "1",
                    reason="torch.compile on CPU takes minutes of C++ compilation on a 2-core machine; "
                           "set DCGAN_TEST_COMPILE=1 to run it")
def test_compile_gives_the_same_training(tmp_path, mnist_small, plain):
    run = _run(tmp_path, mnist_small, "compiled", compile=True)
    _assert_stats_close(run[1], plain[1], loss_tol=1e-4, norm_rtol=1e-2)
    assert _update_gap(run, plain, "generator") < 0.02
    assert _update_gap(run, plain, "discriminator") < 0.02
    assert _generator_output_gap(run[0], plain[0]) < 1e-3


def test_fp16_is_refused_without_cuda(tmp_path, mnist_small):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ValueError, match="fp16"):
        Trainer(out_dir=tmp_path, data=mnist_small, progress=False, width=32, batch_size=32, device="cpu",
                precision="fp16")


def test_a_skipped_mixed_precision_step_is_not_a_divergence(tmp_path, mnist_small):
    """fp16's GradScaler skips steps whose gradients overflow (inf norms); only non-finite losses stop a run."""
    trainer = Trainer(out_dir=tmp_path, data=mnist_small, progress=False, width=32, batch_size=32, device="cpu")
    trainer.stats.pending = [torch.tensor([0.7, 1.3, 0.5, 0.5, float("inf"), 2.0])]
    trainer.step = 1
    assert trainer._flush(None)
    assert trainer.history["grad_norm_g"] == [float("inf")] and not trainer.history["events"]
    trainer.stats.pending = [torch.tensor([float("nan"), 1.3, 0.5, 0.5, 1.0, 2.0])]
    trainer.step = 2
    assert not trainer._flush(None)
    assert trainer.history["events"][-1]["kind"] == "diverged"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fast_paths(tmp_path, mnist_small):
    """On CUDA: cuDNN autotuning is on (fixed shapes), and fp16 with a GradScaler trains to finite losses."""
    trainer = Trainer(out_dir=tmp_path, data=mnist_small, resume=False, progress=False, width=32, batch_size=32,
                      device="cuda", precision="fp16", channels_last=True, max_steps=10)
    assert torch.backends.cudnn.benchmark
    trainer.fit()
    assert trainer.status == "finished"
    assert all(torch.isfinite(torch.tensor(trainer.history[k])).all() for k in ("loss_g", "loss_d"))
