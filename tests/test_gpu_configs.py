"""What a GPU runs, in miniature on this CPU: the configurations the notebooks and the CLI pick on a CUDA GPU.

On CUDA, ``resolve_config`` leaves the width unset (the seed's: 1024 for ``dcgan``, 512 for ``transposed`` and
``upsample_conv``, 128 for ``upsample``) and gives batch 128, 5 epochs, precision auto -> bf16 (fp16 where the
GPU has no bf16) and channels_last. Here those exact configurations train for two real steps on the CPU, on a
small stand-in dataset (256 shipped digits), at 32x32 and 64x64:

* in fp32 at the seed's full width, channels_last (every layer shape a GPU run has; batch 16 instead of 128);
* with bf16 autocast, the GPU default's precision, at width 32 and batch 128, in grey and in colour (without
  AVX512-BF16/AMX this CPU emulates bf16, 15x or more slower than fp32: two bf16 steps of the seed's network
  would take over ten minutes, and even 1/8 of its width took a minute);
* fp16: refused on a CPU with a clear message (the Trainer's fp16 means a CUDA GradScaler), while the very same
  ``train_step`` code with fp16 autocast and an enabled GradScaler runs here through PyTorch's CPU GradScaler:
  gradients are unscaled before their norms are taken, and an overflow skips the step without a divergence.

What cannot run without CUDA, and is left to ``test_gpu_defaults_train_on_cuda`` (skipped here), to
``test_fast_paths.test_cuda_fast_paths`` and to ``tools/gpu_check.py``: cuDNN's kernels and autotuning
(``cudnn.benchmark``), CUDA's fp16/bf16 kernels and its GradScaler (``torch.amp.GradScaler("cuda")``), the
``torch.cuda.is_bf16_supported()`` answer of a real GPU, and NCCL.

Read for CPU assumptions (none found): the fixed latents and the epoch order come from CPU generators and are
moved to the device (the same numbers on any device); ``train_step`` creates its latents, targets and grad-norm
fallback on ``self.device``; statistics stay on the device until one host sync every 25 steps; checkpoints save
the CUDA RNG of the run's own device and load onto the CPU first (``map_location="cpu"``); sampling moves
latents to the generator's device and images back to the CPU.
"""
import dataclasses

import pytest
import torch

from dcgan_utils import ImageData, TrainConfig, Trainer, build_models, load_dataset
from dcgan_utils.config import resolve_config, resolve_precision
from dcgan_utils.models import ARCHS, SEED_WIDTHS

CUDA = torch.device("cuda")
SIZES = (32, 64)
GPU_CONFIGS = [(arch, size) for arch in ARCHS for size in SIZES]
# What the notebooks ask for on a GPU beyond the defaults (their parameter cells' GPU branches): all resolve to
# the seed's width, batch 128 (09: 64) and bf16 + channels_last.
NOTEBOOK_GPU_CHOICES = {
    "02 mnist 32": dict(dataset="mnist", image_size=32, epochs=5),
    "03 fashion 64 (and its 32x32 comparison)": dict(dataset="fashion-mnist", image_size=64, epochs=5),
    "04 eps 1e-5": dict(arch="transposed", image_size=64, width=512, batch_size=128, bn_eps=1e-5, max_steps=2000),
    "04 eps 0.8": dict(arch="transposed", image_size=64, width=512, batch_size=128, bn_eps=0.8, max_steps=2000),
    "05 upsample, no D dropout": dict(arch="upsample", image_size=64, batch_size=128, dropout=0.0, max_steps=2000),
    "05 upsample, no first BatchNorm": dict(arch="upsample", image_size=64, batch_size=128, first_batchnorm=False),
    "05 upsample, PyTorch init": dict(arch="upsample", image_size=64, batch_size=128, init="pytorch"),
    "05 new upsample network": dict(arch="upsample_conv", image_size=64, batch_size=128),
    "07 eval_every": dict(dataset="mnist", image_size=32, epochs=10, eval_every=1),
    "09 seed settings": dict(image_size=64, batch_size=64, recipe="seed", max_steps=1000),
    "09 the fix": dict(image_size=64, batch_size=64, lr=8e-4, lr_d=2e-4, max_steps=3000),
}


@pytest.fixture
def gpu(monkeypatch):
    """resolve_config as on a CUDA GPU with bf16 (monkeypatched: this machine has no GPU to ask)."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    return CUDA


@pytest.fixture(scope="module")
def stand_in():
    """256 real digits at each size (two steps of batch 128), and 256 colour images at 64x64 (faces' shape)."""
    rng = torch.Generator().manual_seed(0)
    colour = ImageData(torch.randint(0, 256, (256, 3, 64, 64), dtype=torch.uint8, generator=rng), None, "folder",
                       "random colour stand-in")
    return {**{(size, 1): load_dataset("mnist", size, source="subset", limit=256) for size in SIZES},
            (64, 3): colour}


def _gpu_config(arch: str, size: int) -> TrainConfig:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
        config, note = resolve_config(TrainConfig(arch=arch, image_size=size), CUDA)
    assert note is None  # no CPU profile on a GPU
    return config


def _on_cpu(config: TrainConfig, **changes) -> TrainConfig:
    return TrainConfig(**{**dataclasses.asdict(config), "device": "cpu", **changes})


def _weights(trainer):
    return {f"{net}.{k}": v.detach().clone() for net, m in (("G", trainer.generator), ("D", trainer.discriminator))
            for k, v in m.named_parameters()}


def _assert_updated(trainer, before: dict) -> None:
    """Every weight changed, and every other parameter too unless its gradient was exactly zero: in the upsample
    D, BatchNorm is the last layer before the Linear, so a batch's mean logit is the same for real and fake
    images and the two biases' gradients nearly cancel at init; bf16 rounding can make them exactly 0.0."""
    params = {f"{net}.{k}": p for net, m in (("G", trainer.generator), ("D", trainer.discriminator))
              for k, p in m.named_parameters()}
    unchanged = [k for k, p in params.items() if torch.equal(before[k], p.detach())]
    assert not [k for k in unchanged if k.endswith("weight")], unchanged
    assert all(params[k].grad is not None and not params[k].grad.any() for k in unchanged), unchanged


def _two_steps(trainer, steps: int = 2) -> torch.Tensor:
    """``steps`` steps of fit's own loop (Trainer.fit_step), epoch after epoch of the stand-in data; their
    statistics, one row per statistic (loss_g, loss_d, d_real, d_fake, grad_norm_g, grad_norm_d), one column
    per step."""
    for step in range(steps):
        epoch, index = divmod(step, trainer.steps_per_epoch)
        assert trainer.fit_step(trainer._epoch_order(epoch), index)
    assert trainer._flush(None)  # the host sync fit does at the end of an epoch; False would mean non-finite
    h = trainer.history
    return torch.tensor([h[k] for k in ("loss_g", "loss_d", "d_real", "d_fake", "grad_norm_g", "grad_norm_d")])


@pytest.mark.parametrize("arch,size", GPU_CONFIGS)
def test_resolve_config_on_a_gpu_gives_the_seed_defaults(gpu, arch, size):
    c, _ = resolve_config(TrainConfig(arch=arch, image_size=size), gpu)
    assert (c.width, c.batch_size, c.epochs, c.precision, c.channels_last) == (None, 128, 5, "bf16", True)
    assert c.init == "dcgan" and c.lr == 2e-4 and c.lr_d is None
    generator, discriminator = build_models(arch, size, 1, width=c.width)
    first = next(m for m in generator.modules() if isinstance(m, (torch.nn.ConvTranspose2d, torch.nn.Conv2d,
                                                                   torch.nn.Linear)))
    widest = first.out_channels if hasattr(first, "out_channels") else first.out_features // (size // 4) ** 2
    assert widest == SEED_WIDTHS[arch][0]


def test_compile_leaves_channels_last_off_unless_asked(gpu):
    """On an H100 (torch 2.11) the compiled backward failed a stride check with channels_last (tools/gpu_check.py's
    compile row): with compile, the unset channels_last stays off."""
    assert not resolve_config(TrainConfig(compile=True), gpu)[0].channels_last
    assert resolve_config(TrainConfig(compile=True, channels_last=True), gpu)[0].channels_last


def test_a_gpu_without_bf16_gets_fp16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    c, _ = resolve_config(TrainConfig(), CUDA)
    assert c.precision == "fp16" and c.channels_last


@pytest.mark.parametrize("name", NOTEBOOK_GPU_CHOICES)
def test_what_the_notebooks_pick_on_a_gpu_resolves_to_the_seed_networks(gpu, name):
    choice = NOTEBOOK_GPU_CHOICES[name]
    c, note = resolve_config(TrainConfig(**choice), gpu)
    c.validate()
    assert note is None and c.precision == "bf16" and c.channels_last
    assert c.batch_size == choice.get("batch_size", 128)
    build_models(c.arch, c.image_size, 1, width=c.width, bn_eps=c.bn_eps, first_batchnorm=c.first_batchnorm,
                 dropout=c.dropout, init=c.init)


@pytest.mark.slow
@pytest.mark.parametrize("arch,size", GPU_CONFIGS)
def test_gpu_config_at_the_seed_width_trains_two_steps_on_cpu(tmp_path, stand_in, arch, size):
    """fp32 stands in for bf16 here (see the module docstring); everything else is the GPU's configuration."""
    gpu_config = _gpu_config(arch, size)
    width = SEED_WIDTHS[arch][0]
    assert gpu_config.batch_size == 128
    # Every layer at the seed's width; 16 images a step instead of 128 (the batch is no layer's shape, and two
    # steps of 128 at width 1024 cost most of a minute on a 2-core CPU).
    trainer = Trainer(_on_cpu(gpu_config, width=width, precision="fp32", batch_size=16), out_dir=tmp_path,
                      resume=False, data=stand_in[(size, 1)], progress=False)
    c = trainer.config
    assert (c.width, c.channels_last, c.init) == (width, True, "dcgan")
    before = _weights(trainer)
    stats = _two_steps(trainer)
    assert torch.isfinite(stats).all(), stats
    _assert_updated(trainer, before)


@pytest.mark.slow
@pytest.mark.parametrize("arch,size,channels", [(a, s, 1) for a, s in GPU_CONFIGS] + [(a, 64, 3) for a in ARCHS])
def test_gpu_config_with_bf16_autocast_trains_two_steps_on_cpu(tmp_path, stand_in, arch, size, channels):
    gpu_config = _gpu_config(arch, size)
    assert gpu_config.precision == "bf16"
    trainer = Trainer(_on_cpu(gpu_config, width=32), out_dir=tmp_path, resume=False,
                      data=stand_in[(size, channels)], progress=False)
    assert (trainer.config.precision, trainer.config.batch_size, trainer.config.channels_last) == ("bf16", 128, True)
    before = _weights(trainer)
    stats = _two_steps(trainer)
    assert torch.isfinite(stats).all(), stats
    assert all(p.dtype == torch.float32 for p in trainer.generator.parameters())  # autocast keeps fp32 weights
    _assert_updated(trainer, before)


def test_fp16_on_a_cpu_is_refused_with_a_clear_message(tmp_path, stand_in):
    with pytest.raises(ValueError, match="fp16.*needs a CUDA GPU.*GradScaler.*use 'bf16' or 'fp32'"):
        resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        Trainer(out_dir=tmp_path, data=stand_in[(32, 1)], width=16, batch_size=32, device="cpu", precision="fp16",
                progress=False)


def _scaled(tmp_path, data, name, init_scale=None):
    """A tiny trainer; with ``init_scale``, switched to fp16 autocast and an enabled CPU GradScaler (what the
    Trainer builds on CUDA for precision='fp16', with CPU kernels)."""
    trainer = Trainer(out_dir=tmp_path / name, data=data, width=32, batch_size=32, device="cpu", resume=False,
                      progress=False, seed=1, precision="fp32")
    if init_scale is not None:  # what build_gan sets up for precision="fp16"
        trainer.gan.autocast = lambda: torch.autocast("cpu", dtype=torch.float16)
        trainer.gan.scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    return trainer


def test_the_gradscaler_step_runs_on_cpu_with_fp16_autocast(tmp_path, stand_in):
    data = stand_in[(32, 1)]
    plain, fp16 = _scaled(tmp_path, data, "plain"), _scaled(tmp_path, data, "fp16", init_scale=2.0 ** 12)
    real = data.batch(torch.arange(32))
    for step in range(2):
        torch.manual_seed(step)
        expected = plain.train_step(real)
        torch.manual_seed(step)
        got = fp16.train_step(real)
        assert torch.isfinite(got).all()
        # losses agree to fp16 precision, and the gradient norms are unscaled (not 4096x larger) before measuring
        torch.testing.assert_close(got[:4], expected[:4], atol=0.02, rtol=0.02)
        torch.testing.assert_close(got[4:], expected[4:], atol=0, rtol=0.1)
    assert fp16.scaler.is_enabled() and fp16.scaler.get_scale() == 2.0 ** 12  # no overflow, no backoff

    overflow = _scaled(tmp_path, data, "overflow", init_scale=2.0 ** 60)
    before = _weights(overflow)
    torch.manual_seed(0)
    stats = overflow.train_step(real)
    # fp16 gradients overflow: the GradScaler skips both updates and halves its scale; the losses stay finite
    assert torch.isfinite(stats[:4]).all() and not torch.isfinite(stats[4:]).all()
    assert overflow.scaler.get_scale() == 2.0 ** 59
    assert all(torch.equal(before[k], v) for k, v in _weights(overflow).items())
    overflow.stats.pending, overflow.step = [stats], 1
    assert overflow._flush(None) and not overflow.history["events"]  # a skipped step is not a divergence


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (see the module docstring)")
@pytest.mark.parametrize("arch,size", GPU_CONFIGS)
@pytest.mark.parametrize("precision", ["auto", "fp16"])
def test_gpu_defaults_train_on_cuda(tmp_path, stand_in, arch, size, precision):
    """On a CUDA machine: the real resolved configuration (seed width, batch 128, bf16/fp16, channels_last)."""
    trainer = Trainer(TrainConfig(arch=arch, image_size=size, device="cuda", precision=precision), out_dir=tmp_path,
                      resume=False, data=stand_in[(size, 1)], progress=False)
    c = trainer.config
    assert c.width is None and c.batch_size == 128 and c.channels_last and torch.backends.cudnn.benchmark
    assert c.precision == ("fp16" if precision == "fp16" else "bf16" if torch.cuda.is_bf16_supported() else "fp16")
    before = _weights(trainer)
    # fp16: the GradScaler starts at 65536 and skips the steps whose gradients overflow, halving its scale each
    # time (seen on an H100: D's first two steps at the seed's width), so give it a few more steps
    stats = _two_steps(trainer, 8 if c.precision == "fp16" else 2)
    assert torch.isfinite(stats[:4]).all(), stats  # losses, D(x), D(G(z)): finite at every step
    if c.precision == "fp16":
        if not torch.isfinite(stats[4:]).all():  # inf gradient norms = skipped steps, and a smaller scale
            assert trainer.scaler.get_scale() < 2.0 ** 16
    else:
        assert torch.isfinite(stats).all(), stats
    _assert_updated(trainer, before)
