import json
import math
import os
import signal

import pytest
import torch

from dcgan_utils import TrainConfig, Trainer, load_checkpoint, load_generator, train
from dcgan_utils.config import resolve_config


def _weights(trainer):
    return {**{f"G.{k}": v.clone() for k, v in trainer.generator.state_dict().items()},
            **{f"D.{k}": v.clone() for k, v in trainer.discriminator.state_dict().items()}}


def test_a_few_steps_change_every_weight_and_record_history(tmp_path, tiny):
    trainer = Trainer(out_dir=tmp_path, max_steps=6, **tiny)
    before = _weights(trainer)
    trainer.fit()
    after = _weights(trainer)
    trainable = [k for k in before if "running" not in k and "num_batches" not in k]
    assert all(not torch.equal(before[k], after[k]) for k in trainable)
    h = trainer.history
    assert h["step"] == [1, 2, 3, 4, 5, 6]
    for key in ("loss_g", "loss_d", "d_real", "d_fake", "grad_norm_g", "grad_norm_d"):
        assert len(h[key]) == 6 and all(torch.isfinite(torch.tensor(h[key])))
    assert all(0 <= p <= 1 for p in h["d_real"] + h["d_fake"])
    assert trainer.status == "finished"
    for name in ("checkpoint.pt", "history.json", "losses.png", "d_outputs.png", "samples.png", "training.gif"):
        assert (tmp_path / name).is_file(), name
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["step_0000000.png", "step_0000006.png"]
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporary files
    assert json.loads((tmp_path / "history.json").read_text())["loss_g"] == h["loss_g"]


def test_epochs_give_per_epoch_means_and_a_frame_per_epoch(tmp_path, tiny):
    trainer = train(out_dir=tmp_path, epochs=2, **tiny)  # 256 images / 32 = 8 steps per epoch
    h = trainer.history
    assert trainer.step == 16 and h["epoch"]["epoch"] == [1, 2]
    assert h["epoch"]["loss_g"][0] == pytest.approx(sum(h["loss_g"][:8]) / 8)
    assert [s["step"] for s in h["samples"]] == [0, 8, 16]
    assert trainer.fixed_noise.shape == (16, 100, 1, 1)


@pytest.mark.parametrize("k", [8, 5])  # at an epoch boundary, and in the middle of an epoch
def test_resume_reproduces_the_same_weights(tmp_path, tiny, k):
    straight = train(out_dir=tmp_path / "straight", max_steps=12, **tiny)
    first = train(out_dir=tmp_path / "resumed", max_steps=k, **tiny)
    assert first.step == k
    resumed = Trainer(out_dir=tmp_path / "resumed", max_steps=12, **tiny)
    assert resumed.step == k and resumed.status == "resumed"
    resumed.fit()
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert straight.history["loss_d"] == resumed.history["loss_d"]
    opt_a, opt_b = straight.opt_g.state_dict()["state"], resumed.opt_g.state_dict()["state"]
    assert all(torch.equal(opt_a[i]["exp_avg"], opt_b[i]["exp_avg"]) for i in opt_a)


def test_ctrl_c_finishes_the_step_saves_and_resumes(tmp_path, tiny):
    trainer = Trainer(out_dir=tmp_path, max_steps=20, **tiny)
    step = trainer.train_step

    def step_then_interrupt(real, *labels):
        stats = step(real, *labels)
        if trainer.step == 4:  # the 5th step is running
            os.kill(os.getpid(), signal.SIGINT)
        return stats

    trainer.train_step = step_then_interrupt
    trainer.fit()
    assert trainer.status == "interrupted" and trainer.step == 5
    assert load_checkpoint(tmp_path)["step"] == 5
    again = Trainer(out_dir=tmp_path, max_steps=20, **tiny).fit()
    assert again.step == 20 and again.status == "finished"


def test_checkpoint_is_safe_to_load_and_holds_the_whole_run(tmp_path, tiny):
    trainer = train(out_dir=tmp_path, max_steps=3, **tiny)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # no pickled code needed
    for key in ("generator", "discriminator", "opt_g", "opt_d", "step", "epoch", "history", "fixed_noise", "rng",
                "config"):
        assert key in state
    assert state["step"] == 3 and state["config"]["width"] == 32
    G, config = load_generator(tmp_path)
    assert not G.training and config["arch"] == "dcgan"
    torch.testing.assert_close(G(trainer.fixed_noise), trainer.fixed_samples())


def test_unreadable_checkpoint_gets_a_clear_error(tmp_path, tiny):
    (tmp_path / "checkpoint.pt").write_bytes(b"half a file")
    with pytest.raises(ValueError, match="not a readable dcgan_utils checkpoint.*--no-resume"):
        Trainer(out_dir=tmp_path, max_steps=2, **tiny)
    with pytest.raises(FileNotFoundError, match="No checkpoint at"):
        load_generator(tmp_path / "missing")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a dcgan_utils checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_resuming_with_another_network_is_refused(tmp_path, tiny):
    train(out_dir=tmp_path, max_steps=2, **tiny)
    with pytest.raises(ValueError, match="was trained with width=32 \\(asked 64\\).*--no-resume"):
        Trainer(out_dir=tmp_path, max_steps=4, **{**tiny, "width": 64})
    fresh = Trainer(out_dir=tmp_path, max_steps=2, resume=False, **{**tiny, "width": 64})
    assert fresh.step == 0


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, tiny, capsys):
    trainer = train(out_dir=tmp_path, epochs=1, **tiny)  # checkpoint at step 8
    good = (tmp_path / "checkpoint.pt").read_bytes()
    trainer = Trainer(out_dir=tmp_path, epochs=3, **tiny)
    with torch.no_grad():
        for p in trainer.generator.parameters():
            p.fill_(float("nan"))
    trainer.fit()
    assert trainer.status == "diverged"
    assert trainer.history["events"][-1]["kind"] == "diverged"
    assert "Training diverged at step 9" in capsys.readouterr().out
    assert (tmp_path / "checkpoint.pt").read_bytes() == good


def test_collapse_warning_names_fixes(tmp_path, tiny, capsys):
    trainer = Trainer(out_dir=tmp_path, max_steps=1, collapse_window=100, **tiny)
    h = trainer.history
    h["loss_d"] = [0.01] * 100
    h["loss_g"] = [5.0] * 50 + [8.0] * 50
    h["d_fake"] = [0.001] * 100
    trainer.step = 100
    trainer._flush(None)  # a host sync: it runs the collapse check
    out = capsys.readouterr().out
    assert "D is winning" in out and "lr_d=2e-4" in out and "--lr 8e-4 --lr-d 2e-4" in out
    assert h["events"][-1]["kind"] == "collapse-warning"
    h["loss_d"], h["d_fake"] = [0.7] * 100, [0.3] * 100  # a healthy game: no warning
    trainer.step, trainer.collapse.warned_at = 400, -10 ** 9
    trainer._flush(None)  # a host sync: it runs the collapse check
    assert len(h["events"]) == 1


def test_collapse_warning_does_not_prescribe_the_fix_a_run_already_uses(tmp_path, tiny, capsys):
    settings = {**tiny, "lr": 8e-4, "lr_d": 2e-4, "ema": 0.999}
    trainer = Trainer(out_dir=tmp_path, max_steps=1, collapse_window=100, **settings)
    h = trainer.history
    h["loss_d"], h["loss_g"], h["d_fake"] = [0.01] * 100, [6.0] * 100, [0.001] * 100
    trainer.step = 100
    trainer._flush(None)  # a host sync: it runs the collapse check
    out = capsys.readouterr().out
    assert "D is winning" in out and "already gives G the faster learning rate (0.0008 vs D's 0.0002)" in out
    assert "--lr 8e-4" not in out and "EMA" in out


def test_minute_budget_counts_the_whole_run(tmp_path, tiny):
    trainer = train(out_dir=tmp_path, max_minutes=0.01, **tiny)
    assert trainer.status == "finished" and trainer.step >= 1
    assert 0.6 <= trainer.elapsed <= 30
    again = train(out_dir=tmp_path, max_minutes=0.01, **tiny)  # budget already spent: no more steps
    assert again.step == trainer.step


def test_cpu_profile_applies_only_when_width_is_unset():
    config, note = resolve_config(TrainConfig(), torch.device("cpu"))
    assert config.width == 128 and config.batch_size == 64 and "CPU profile" in note
    config, note = resolve_config(TrainConfig(width=512), torch.device("cpu"))
    assert config.width == 512 and config.batch_size == 128 and note is None
    config, note = resolve_config(TrainConfig(), torch.device("cuda"))
    assert config.width is None and config.batch_size == 128 and config.epochs == 5


@pytest.mark.parametrize("kwargs, message", [
    (dict(precision="int8"), "precision='int8'"),
    (dict(batch_size=1), "batch_size=1 must be at least 2"),
    (dict(max_steps=0), "max_steps=0 must be at least 1"),
    (dict(label_smoothing=0.7), "label_smoothing=0.7"),
    (dict(device="tpu"), "device='tpu'"),
    (dict(device="cuda"), "no CUDA GPU"),
    (dict(precision="fp16"), "needs a CUDA GPU"),
    (dict(image_size=64), "image_size=64: load it with image_size=64"),
    (dict(batch_size=512), "Only 256 images for batch_size=512"),
])
def test_bad_config_gets_a_clear_error(tmp_path, tiny, kwargs, message):
    if kwargs.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError) as err:
        Trainer(out_dir=tmp_path, **{"max_steps": 1, **tiny, **kwargs})
    assert message in str(err.value)


def test_precision_auto_uses_bf16_only_where_it_is_fast(tmp_path, tiny, monkeypatch, capsys):
    from dcgan_utils import config as config_module
    from dcgan_utils.config import resolve_precision

    monkeypatch.setattr(config_module, "cpu_has_fast_bf16", lambda: False)  # e.g. an AVX2 AMD EPYC
    slow = Trainer(out_dir=tmp_path / "slow", max_steps=1, resume=False, **tiny)
    # fp32 there, in channels_last: oneDNN's preferred layout was 5-10% faster on the CPUs measured
    # (docs/performance.md, "Never slower than a plain loop")
    assert (slow.config.precision, slow.config.channels_last) == ("fp32", True)
    assert "Precision auto" not in capsys.readouterr().out
    monkeypatch.setattr(config_module, "cpu_has_fast_bf16", lambda: True)  # AMX / AVX512-BF16
    fast = Trainer(out_dir=tmp_path / "fast", max_steps=2, resume=False, **tiny).fit()
    assert (fast.config.precision, fast.config.channels_last) == ("bf16", True)
    assert "Precision auto: bf16 autocast + channels_last on cpu" in capsys.readouterr().out
    assert fast.step == 2 and all(map(math.isfinite, fast.history["loss_g"]))
    forced = Trainer(out_dir=tmp_path / "forced", max_steps=1, precision="fp32", resume=False, **tiny)
    assert forced.config.precision == "fp32"
    with pytest.raises(ValueError, match="precision='fp16' needs a CUDA GPU"):
        resolve_precision("fp16", torch.device("cpu"))


def test_a_checkpoint_written_before_the_step_module_still_loads_samples_and_resumes(tmp_path, capsys):
    """tests/data/checkpoint_before_step_module.pt was written by the course as it was before the textbook step
    moved to step.py (width 16, 3 steps, EMA): it loads, draws exactly the images it drew then, and resumes."""
    import shutil
    from pathlib import Path

    data = Path(__file__).parent / "data"
    expected = torch.load(data / "checkpoint_before_step_module.samples.pt", weights_only=True)
    state = load_checkpoint(data / "checkpoint_before_step_module.pt")
    assert "conditional" not in state["config"]  # written before the field existed
    for ema, key in ((True, "ema"), (False, "raw")):
        G, _ = load_generator(data / "checkpoint_before_step_module.pt", ema=ema)
        with torch.no_grad():
            torch.testing.assert_close(G(state["fixed_noise"]), expected[key])
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(data / "checkpoint_before_step_module.pt", run / "checkpoint.pt")
    trainer = Trainer(out_dir=run, dataset="mnist", source="subset", limit=64, image_size=32, max_steps=5,
                      progress=False, device="cpu", precision="fp32").fit()
    assert "Resuming" in capsys.readouterr().out and trainer.step == 5 and trainer.status == "finished"
    assert load_checkpoint(run)["config"]["conditional"] is False
