"""The stabilising knobs notebook 09 ablates: each one does what its name says, and the 64x64 recipe applies.

Knobs: one-sided label smoothing, instance noise (annealed to 0), spectral norm on D, a separate D learning rate
(TTUR), the DCGAN init, BatchNorm eps, D width, and the ``recipe`` switch between the course's 64x64 fix and the
seed's exact settings.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dcgan_utils import Trainer, build_models, d_won
from dcgan_utils.cli import build_parser
from dcgan_utils.config import TrainConfig, resolve_config


def _constant_d(trainer: Trainer, value: float, seen: list | None = None):
    """Replace D's score by a constant (still connected to D's graph), optionally recording D's inputs."""
    logits = trainer.discriminator.logits

    def fake_logits(x, labels=None):
        if seen is not None:
            seen.append(x.detach().clone())
        return logits(x) * 0 + value

    trainer.gan.run_d = fake_logits


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_label_smoothing_changes_only_the_real_target(tmp_path, tiny, smoothing):
    trainer = Trainer(out_dir=tmp_path, label_smoothing=smoothing, **tiny)
    c = 2.0  # D's score for every image
    _constant_d(trainer, c)
    real = trainer.data.batch(torch.arange(32))
    loss_g, loss_d = trainer.train_step(real)[:2].tolist()
    # BCE(logit c, target t) = softplus(c) - t*c: real target 1 - s, fake target 0, G's target 1 (never smoothed)
    expected_d = (F.softplus(torch.tensor(c)) - (1 - smoothing) * c) + F.softplus(torch.tensor(c))
    assert loss_d == pytest.approx(float(expected_d), rel=1e-5)
    assert loss_g == pytest.approx(float(F.softplus(torch.tensor(c)) - c), rel=1e-5)


def test_instance_noise_is_added_to_d_inputs_and_anneals_to_zero(tmp_path, tiny):
    sigma, steps = 0.5, 40
    trainer = Trainer(out_dir=tmp_path, instance_noise=sigma, max_steps=steps, **tiny)
    real = trainer.data.batch(torch.arange(32))
    seen: list[torch.Tensor] = []
    _constant_d(trainer, 0.0, seen)
    spread = []
    for step in (0, steps // 2, steps):
        trainer.step, seen[:] = step, []
        trainer.train_step(real)
        spread.append(float((seen[0] - real).std()))  # the first D call of a step sees the real batch
    assert spread[0] == pytest.approx(sigma, rel=0.05)
    assert spread[1] == pytest.approx(sigma / 2, rel=0.05)
    assert spread[2] == 0.0


def test_no_instance_noise_means_d_sees_the_real_images(tmp_path, tiny):
    trainer = Trainer(out_dir=tmp_path, max_steps=10, **tiny)
    real = trainer.data.batch(torch.arange(32))
    seen: list[torch.Tensor] = []
    _constant_d(trainer, 0.0, seen)
    trainer.train_step(real)
    assert torch.equal(seen[0], real)


def _top_singular_values(discriminator: nn.Module) -> list[float]:
    convs = [m for m in discriminator.modules() if isinstance(m, nn.Conv2d)]
    return [float(torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)) for m in convs]


def test_spectral_norm_keeps_each_d_layer_near_one(tmp_path, tiny):
    # a large learning rate moves the raw weights far; the normalised ones must stay at norm 1
    trainer = Trainer(out_dir=tmp_path, spectral_norm=True, lr=2e-3, max_steps=12, **tiny).fit()
    values = _top_singular_values(trainer.discriminator)
    assert len(values) == 4  # 3 strided convs + the output conv at 32x32
    assert all(v == pytest.approx(1.0, abs=0.05) for v in values), values
    _, plain = build_models("dcgan", 32, width=32)
    assert max(abs(v - 1) for v in _top_singular_values(plain)) > 0.3


def test_spectral_norm_run_resumes(tmp_path, tiny):
    first = Trainer(out_dir=tmp_path, spectral_norm=True, max_steps=4, **tiny).fit()
    again = Trainer(out_dir=tmp_path, spectral_norm=True, max_steps=4, **tiny)
    assert again.step == 4
    for a, b in zip(first.discriminator.state_dict().values(), again.discriminator.state_dict().values()):
        assert torch.equal(a.cpu(), b.cpu())


def test_lr_d_sets_only_the_discriminator_learning_rate(tmp_path, tiny):
    ttur = Trainer(out_dir=tmp_path / "ttur", lr=1e-4, lr_d=4e-4, **tiny)
    assert ttur.opt_g.param_groups[0]["lr"] == 1e-4
    assert ttur.opt_d.param_groups[0]["lr"] == 4e-4
    same = Trainer(out_dir=tmp_path / "same", lr=3e-4, **tiny)
    assert same.opt_d.param_groups[0]["lr"] == same.opt_g.param_groups[0]["lr"] == 3e-4


@pytest.mark.parametrize("name, value", [("label_smoothing", 0.5), ("label_smoothing", -0.1),
                                         ("instance_noise", -1.0), ("lr_d", 0.0)])
def test_bad_knob_values_are_refused_with_the_name(name, value):
    with pytest.raises(ValueError, match=name):
        TrainConfig(**{name: value}).validate()


def test_init_bn_eps_and_d_width_reach_the_networks():
    g, d = build_models("dcgan", 64, width=64, d_width=32, bn_eps=0.8, init="dcgan")
    convs = [m for m in list(g.modules()) + list(d.modules()) if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert all(abs(float(m.weight.detach().std()) - 0.02) < 0.005 for m in convs if m.weight.numel() > 1000)
    assert {m.eps for m in list(g.modules()) + list(d.modules()) if isinstance(m, nn.BatchNorm2d)} == {0.8}
    assert d.main_module[-3].out_channels == 32 and g.main_module[0].out_channels == 64
    _, d_pytorch = build_models("dcgan", 64, width=64, init="pytorch")
    first = d_pytorch.main_module[0].weight
    assert float(first.detach().std()) > 0.1  # PyTorch's default for 16 inputs: U(-1/4, 1/4), std 0.14


def test_recipe_seed_keeps_the_seed_settings_and_stable_gives_the_fix():
    seed = TrainConfig(image_size=64, recipe="seed")
    fixed = TrainConfig(image_size=64)
    cpu = torch.device("cpu")
    seed_resolved, _ = resolve_config(seed, cpu)
    fixed_resolved, _ = resolve_config(fixed, cpu)
    assert seed_resolved.init == "pytorch" and seed_resolved.label_smoothing == 0
    assert seed_resolved.lr_d is None and not seed_resolved.spectral_norm
    assert fixed_resolved != seed_resolved
    # an explicit value always wins over the recipe
    mine, _ = resolve_config(TrainConfig(image_size=64, recipe="seed", init="dcgan"), cpu)
    assert mine.init == "dcgan"


def test_cli_exposes_the_knobs_and_the_seed_recipe():
    args = build_parser().parse_args(["train", "--out", "x", "--image-size", "64", "--lr-d", "1e-4",
                                      "--label-smoothing", "0.1", "--instance-noise", "0.1", "--spectral-norm",
                                      "--bn-eps", "0.8", "--d-width", "64", "--init", "pytorch",
                                      "--seed-settings"])
    assert (args.lr_d, args.label_smoothing, args.instance_noise, args.spectral_norm, args.bn_eps, args.d_width,
            args.init, args.recipe) == (1e-4, 0.1, 0.1, True, 0.8, 64, "pytorch", "seed")


def test_collapse_warning_fires_when_d_wins(tmp_path, tiny, capsys):
    trainer = Trainer(out_dir=tmp_path, collapse_window=40, **tiny)
    trainer.step = 40
    # D's loss ~0 and G's loss climbing: the signature of the seed's 64x64 MNIST run
    trainer.stats.pending = [torch.tensor([2.0 + 0.2 * i, 0.01, 0.99, 0.001, 1e-3, 1e-3]) for i in range(40)]
    assert trainer._flush(None)
    events = [e for e in trainer.history["events"] if e["kind"] == "collapse-warning"]
    assert len(events) == 1 and "D is winning" in capsys.readouterr().out
    assert math.isclose(trainer.history["loss_d"][-1], 0.01, rel_tol=1e-6)


def test_collapse_warning_is_printed_once_then_summed_up(tmp_path, tiny, capsys):
    from dcgan_utils.diagnostics import format_events

    trainer = Trainer(out_dir=tmp_path, collapse_window=40, **tiny)
    for window in range(3):  # D keeps winning for three windows
        trainer.step = 40 * (window + 1)
        trainer.stats.pending = [torch.tensor([5.0, 0.01, 0.99, 0.001, 1e-3, 1e-3]) for _ in range(40)]
        trainer._flush(None)
    print(trainer.collapse.summary())
    out = capsys.readouterr().out
    events = [e["step"] for e in trainer.history["events"] if e["kind"] == "collapse-warning"]
    assert events == [40, 80, 120]
    assert out.count("D is winning") == 1 and out.count("lr_d=2e-4") == 1
    assert "D was still winning at 2 later check(s) (steps 80-120)" in out and "still at the end" in out
    assert format_events(trainer.history) == "collapse-warning at step 40 (and 2 more, to step 120)"


def test_cpu_profile_64_gives_the_course_recipe_and_keeps_the_seed_one_flag_away():
    from dcgan_utils.config import CPU_PROFILES

    cpu = torch.device("cpu")
    profile = CPU_PROFILES[("dcgan", 64)]
    config, note = resolve_config(TrainConfig(image_size=64), cpu)
    assert (config.width, config.batch_size, config.init) == (profile["width"], profile["batch_size"], "dcgan")
    assert (config.lr, config.lr_d) == (profile["lr"], profile["lr_d"]) and config.lr > config.lr_d
    assert config.max_steps == profile["max_steps"]["default"] and config.epochs is None and "learning rate" in note
    faces, _ = resolve_config(TrainConfig(dataset="emoji-faces", image_size=64), cpu)  # its own, longer budget
    assert faces.max_steps == profile["max_steps"]["emoji-faces"] > config.max_steps and faces.width == config.width
    assert 0 < config.ema < 1 and "EMA" in note
    seed, _ = resolve_config(TrainConfig(image_size=64, recipe="seed"), cpu)
    assert (seed.init, seed.lr, seed.lr_d, seed.width) == ("pytorch", 2e-4, None, profile["width"])
    mine, _ = resolve_config(TrainConfig(image_size=64, lr=1e-4, epochs=2), cpu)  # explicit choices win
    assert (mine.lr, mine.lr_d, mine.epochs, mine.max_steps) == (1e-4, None, 2, None)
    gpu, _ = resolve_config(TrainConfig(image_size=64), torch.device("cuda"))  # no profile off the CPU
    assert (gpu.width, gpu.lr, gpu.lr_d) == (None, 2e-4, None)
    assert (config.ema, gpu.ema) == (profile.get("ema", 0.0), 0.0)


def test_cpu_profile_32_trains_narrow_with_a_faster_g_and_samples_from_an_ema():
    from dcgan_utils.config import CPU_PROFILES

    cpu = torch.device("cpu")
    profile = CPU_PROFILES[("dcgan", 32)]
    config, note = resolve_config(TrainConfig(image_size=32), cpu)
    assert (config.width, config.batch_size, config.lr, config.lr_d, config.ema) == (
        profile["width"], profile["batch_size"], profile["lr"], profile["lr_d"], profile["ema"])
    assert 0 < config.ema < 1 and config.lr > config.lr_d and "EMA" in note
    assert config.epochs == 5 and config.max_steps is None  # the 32x32 profile sets no budget of its own
    off, _ = resolve_config(TrainConfig(image_size=32, ema=0.0), cpu)  # a typed 0 turns the EMA off
    wide, _ = resolve_config(TrainConfig(image_size=32, width=128), cpu)  # a chosen width: no profile at all
    seed, _ = resolve_config(TrainConfig(image_size=32, recipe="seed"), cpu)  # the seed's recipe: no EMA
    assert (off.ema, off.width, wide.ema, wide.lr, wide.lr_d, seed.ema, seed.lr) == (
        0.0, profile["width"], 0.0, 2e-4, None, 0.0, 2e-4)
    with pytest.raises(ValueError, match="ema=1.5 must be in"):
        TrainConfig(ema=1.5).validate()


def test_d_won_finds_the_span_where_d_had_won_and_whether_g_escaped():
    # D(G(z)) at 0.4 for 100 steps, ~0 for 200 (D has won), then 0.3 again: G escaped at step 300
    d_fake = [0.4] * 100 + [0.001] * 200 + [0.3] * 100
    history = {"step": list(range(1, 401)), "d_fake": d_fake}
    won = d_won(history, window=50, threshold=0.05)
    assert not won["at_end"] and 0.3 < won["share"] < 0.5
    assert 100 < won["first_step"] < 150 and 300 <= won["last_step"] < 310
    stuck = d_won({"step": history["step"], "d_fake": [0.4] * 100 + [0.001] * 300}, window=50)
    assert stuck["at_end"] and stuck["last_step"] == 400
    healthy = d_won({"step": history["step"], "d_fake": [0.3] * 400})
    assert healthy == {"share": 0.0, "first_step": None, "last_step": None, "at_end": False}
    with pytest.raises(ValueError, match="threshold"):
        d_won(history, threshold=1.5)


def test_ema_warms_up_so_a_short_run_samples_from_recent_weights(tmp_path, tiny):
    trainer = Trainer(out_dir=tmp_path, max_steps=30, ema=0.999, **tiny)
    start = [p.detach().clone() for p in trainer.generator.parameters()]
    trainer.fit()
    ema = list(trainer.ema_generator.module.parameters())
    now = list(trainer.generator.parameters())
    gap_to_now = sum((a - b).norm() for a, b in zip(ema, now))
    gap_to_start = sum((a - b).norm() for a, b in zip(ema, start))
    # a fixed 0.999 would still be ~97% the untrained weights after 30 steps; the warm-up follows G
    assert gap_to_now < 0.5 * gap_to_start
    assert int(trainer.ema_generator.n_averaged) == 30


def test_the_collapse_sum_up_counts_only_this_fit_after_a_resume(tmp_path, tiny, capsys):
    trainer = Trainer(out_dir=tmp_path, collapse_window=40, **tiny)
    trainer.history["events"].append({"step": 10, "kind": "collapse-warning", "message": "from an earlier fit()"})
    for window in range(2):
        trainer.step = 40 * (window + 1)
        trainer.stats.pending = [torch.tensor([5.0, 0.01, 0.99, 0.001, 1e-3, 1e-3]) for _ in range(40)]
        trainer._flush(None)
    print(trainer.collapse.summary())
    out = capsys.readouterr().out
    assert out.count("D is winning") == 1 and "at 1 later check(s) (steps 80-80)" in out
