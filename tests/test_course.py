"""The notebooks' shared steps (dcgan_utils.course): budgets, find-or-train, tables, scores."""
import pytest
import torch
from torch import nn

from dcgan_utils import course
from dcgan_utils.cli import build_parser
from dcgan_utils.config import TrainConfig
from dcgan_utils.course import (COURSE_RUNS, CourseRun, budget, checkerboard_score, cli_command, eval_table,
                                find_or_train, most_influential_dims, run_problems, show_frames)
from dcgan_utils.diagnostics import new_history


def test_budget_picks_fast_cpu_or_gpu_and_says_which():
    fast, reason = budget("cpu", True, cpu={"epochs": 9}, gpu={"epochs": 5}, fast_settings={"max_steps": 12})
    assert fast["width"] == 16 and fast["max_steps"] == 12 and fast["source"] == "subset"
    assert reason.startswith("FAST mode (CI)") and "steps 12" in reason
    cpu, reason = budget(torch.device("cpu"), False, cpu={"epochs": 9, "max_minutes": 7}, gpu={"epochs": 5})
    assert cpu == {"epochs": 9, "max_minutes": 7} and reason == "no GPU: epochs 9, minutes at most 7"
    gpu, reason = budget(torch.device("cuda"), False, cpu={"epochs": 9}, gpu={"epochs": 5})
    assert gpu == {"epochs": 5} and reason.startswith("CUDA")


@pytest.fixture
def tiny_course_run(monkeypatch):
    run = CourseRun("02_train_mnist_32", "mnist", 32, cpu={"max_steps": 6}, gpu={"max_steps": 6},
                    fast={"max_steps": 6, "progress": False, "limit": 256})
    monkeypatch.setitem(COURSE_RUNS, run.notebook, run)
    return run


def test_find_or_train_trains_the_notebooks_run_once_then_reuses_it(tmp_path, tiny_course_run, capsys):
    first = find_or_train("02_train_mnist_32", runs_dir=tmp_path, fast=True)
    out = capsys.readouterr().out
    assert "training it now, exactly as notebook 02 does" in out and first.step == 6
    assert first.out_dir == tmp_path / "02_train_mnist_32" and (first.out_dir / "checkpoint.pt").is_file()
    again = find_or_train("02_train_mnist_32", runs_dir=tmp_path, fast=True)
    out = capsys.readouterr().out
    assert "training it now" not in out and "Resuming" not in out and again.step == 6
    assert "Using notebook 02's run in" in out and ": 6 steps" in out
    for a, b in zip(first.generator.parameters(), again.generator.parameters()):
        assert torch.equal(a.cpu(), b.cpu())
    with pytest.raises(ValueError, match="notebook='99_x'"):
        find_or_train("99_x", runs_dir=tmp_path)


def test_course_runs_match_their_notebooks_parameters():
    """A later notebook's find_or_train trains exactly the run the notebook's parameters cell sets."""
    import ast
    import json
    from pathlib import Path

    for name, run in COURSE_RUNS.items():
        nb = json.loads((Path(__file__).parent.parent / "notebooks" / f"{run.notebook_file}.ipynb").read_text())
        params = next("".join(c["source"]) for c in nb["cells"]
                      if "parameters" in c.get("metadata", {}).get("tags", []))
        values = {node.targets[0].id: node.value for node in ast.parse(params).body
                  if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}
        assert ast.literal_eval(values["DATASET"]) == run.dataset, name
        assert ast.literal_eval(values[run.size_parameter]) == run.image_size, name
        for parameter, budget_there in ((run.cpu_parameter, run.cpu), ("GPU_BUDGET", run.gpu)):
            if parameter in values:  # a notebook whose budgets are parameters must set the same ones
                assert ast.literal_eval(values[parameter]) == budget_there, (name, parameter)


def test_run_problems_flags_a_run_where_d_had_won(tmp_path, tiny_course_run):
    trainer = find_or_train("02_train_mnist_32", runs_dir=tmp_path, fast=True, check=False)
    h = new_history()
    h["step"], h["d_fake"] = list(range(1, 201)), [0.3] * 100 + [0.001] * 100
    trainer.history = h
    problems = run_problems(trainer, fast=True)  # a late win (a quarter of the run): judge the samples
    assert len(problems) == 1 and "D had won over the last part" in problems[0] and "need not be noise" in problems[0]
    h["d_fake"] = [0.3] * 20 + [0.001] * 180  # D won early and for good: noise
    problems = run_problems(trainer, fast=True)
    assert len(problems) == 1 and "probably noise" in problems[0]
    h["d_fake"] = [0.3] * 200
    assert run_problems(trainer, fast=True) == []


def test_checkerboard_score_separates_period_two_patterns_from_smooth_images():
    y, x = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    smooth = torch.sin(x / 5.0)[None, None].repeat(4, 1, 1, 1)
    checker = ((x + y) % 2 * 2 - 1).float()[None, None].repeat(4, 1, 1, 1)
    assert checkerboard_score(smooth) < 0.01 and checkerboard_score(checker) > 0.99


class OneDimGenerator(nn.Module):
    """Images that depend on latent dimension 7 only (and a little on 3)."""
    latent_dim = 100

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, z):
        z = z.flatten(1)
        return (torch.tanh(z[:, 7] + 0.1 * z[:, 3])[:, None, None, None] + self.anchor).expand(-1, 1, 8, 8)


def test_most_influential_dims_finds_the_dimensions_that_matter():
    dims, effect = most_influential_dims(OneDimGenerator(), count=2)
    assert dims == [7, 3] and effect.shape == (100,) and effect[0] == 0


def test_cli_command_trains_the_same_run():
    config = TrainConfig(dataset="fashion-mnist", image_size=64, width=64, max_steps=300, lr=8e-4, sample_every=60)
    command = cli_command(config, "runs/x")
    args = build_parser().parse_args(command.split()[3:])
    assert (args.dataset, args.image_size, args.width, args.max_steps, args.lr, args.sample_every, args.out) == (
        "fashion-mnist", 64, 64, 300, 8e-4, 60, "runs/x")
    assert args.epochs is None and args.seed is None  # defaults are left out


def test_show_frames_and_eval_table_draw_and_measure(tmp_path, tiny_course_run, capsys):
    trainer = find_or_train("02_train_mnist_32", runs_dir=tmp_path, fast=True, check=False)
    fig = show_frames(trainer.history, trainer.out_dir, count=3)  # outside Jupyter the figure is returned
    assert [a.get_title() for a in fig.axes] == ["step 0", "step 6"]  # the two frames the run drew
    results = eval_table({"tiny": trainer.sampling_generator()}, "mnist", num=50, source="subset",
                         extra={"tiny": {"s/step": "0.10"}})
    out = capsys.readouterr().out
    assert "FD" in out and "s/step" in out and "0.10" in out
    assert results["tiny"]["num"] == 50 and results["tiny"]["fd"] > 0
    assert eval_table({"tiny": trainer.sampling_generator()}, "folder", extra={"tiny": {"a": "1"}}) == {}
    assert "no evaluation classifier for 'folder'" in capsys.readouterr().out


def test_legends_outside_moves_every_legend_off_the_axes():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2)
    for ax in axes:
        ax.plot([0, 1], [1, 0], label="a")
        ax.legend(loc="upper right")
    assert course.legends_outside(fig) is fig  # outside Jupyter the figure is returned
    fig.canvas.draw()
    for ax in axes:
        legend, box = ax.get_legend().get_window_extent(), ax.get_window_extent()
        assert legend.x0 >= box.x1  # to the right of the plotting area, covering none of it
    plt.close(fig)


def test_epoch_table_prints_the_epoch_means_and_the_worst_batch(capsys):
    h = new_history()
    h["step"], h["loss_g"] = [1, 2, 3, 4], [1.0, 7.5, 2.0, 1.5]
    for i, epoch in enumerate((1, 2, 3)):
        for key, value in (("epoch", epoch), ("step", 10 * epoch), ("loss_g", 2.0), ("loss_d", 0.5),
                           ("d_real", 0.8), ("d_fake", 0.2), ("grad_norm_g", 3.0 + i)):
            h["epoch"][key].append(value)
    course.epoch_table(h, every=2)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["epoch", "step"]
    assert [line.split()[0] for line in lines[1:-1]] == ["1", "3"]  # every 2nd epoch, and the last
    assert lines[1].split() == ["1", "10", "2.00", "0.50", "0.80", "0.20", "3.00"]
    assert lines[-1] == "largest one-batch G loss: 7.50 at step 2"


def test_hardware_summary_names_the_device():
    assert course.hardware_summary("cpu").startswith("CPU (")


def test_cli_command_names_the_recipe_and_writes_switches_as_flags():
    import torch

    from dcgan_utils.config import resolve_config

    modern, _ = resolve_config(TrainConfig(recipe="modern", dataset="mnist", max_minutes=5), torch.device("cpu"))
    command = cli_command(modern, "runs/m")
    assert "--recipe modern" in command and "True" not in command and "spectral" not in command
    args = build_parser().parse_args(command.split()[3:])
    assert (args.recipe, args.max_minutes, args.out) == ("modern", 5, "runs/m")
    ablation = TrainConfig(arch="upsample", image_size=64, first_batchnorm=False, spectral_norm=True)
    args = build_parser().parse_args(cli_command(ablation, "runs/a").split()[3:])
    assert (args.first_batchnorm, args.spectral_norm) == (False, True)


def test_edge_strength_falls_with_blur_and_ignores_a_checkerboard():
    from torchvision.transforms.functional import gaussian_blur

    from dcgan_utils import load_dataset
    from dcgan_utils.course import edge_strength

    faces = load_dataset("emoji-faces", 64).batch(slice(0, 64))
    sharp, blurred = edge_strength(faces), edge_strength(gaussian_blur(faces, 9, 2.0))
    assert blurred < 0.6 * sharp  # measured: 0.34 against 0.76 for sigma 2 over all faces
    checkered = faces.clone()
    checkered[..., ::2, ::2] += 0.3  # the period-2 pattern of transposed convolutions
    assert edge_strength(checkered) == pytest.approx(sharp, rel=1e-6)


def test_train_scored_scores_each_point_and_a_rerun_keeps_them(tmp_path, capsys):
    from dcgan_utils.course import train_scored

    settings = dict(dataset="mnist", source="subset", limit=256, width=16, batch_size=32, progress=False,
                    device="cpu", precision="fp32")
    trainer = train_scored(tmp_path / "run", [{"max_steps": 4}, {"max_steps": 8}], num=64, **settings)
    rows = trainer.history["eval"]
    assert [r["step"] for r in rows] == [4, 8] and all(r["num"] == 64 and r["fd"] > 0 for r in rows)
    assert rows[1]["minutes"] >= rows[0]["minutes"] > 0
    again = train_scored(tmp_path / "run", [{"max_steps": 4}, {"max_steps": 8}], num=64, **settings)
    assert again.step == 8 and [r["step"] for r in again.history["eval"]] == [4, 8]  # nothing trained or scored twice


def test_train_scored_trains_on_from_a_steps_point_to_a_minutes_point(tmp_path):
    from dcgan_utils.course import train_scored

    settings = dict(dataset="mnist", source="subset", limit=256, width=16, batch_size=32, progress=False,
                    device="cpu", precision="fp32")
    trainer = train_scored(tmp_path / "run", [{"max_steps": 4}, {"max_minutes": 0.02}], num=64, **settings)
    steps = [r["step"] for r in trainer.history["eval"]]
    assert steps[0] == 4 and steps[1] > 4 and trainer.history["eval"][1]["minutes"] >= 0.02


@pytest.mark.parametrize("control, variant, lower_is_better, expected", [
    ([8.07, 5.09], [4.83, 4.12], True, "better"),  # every variant seed below every control seed
    ([4.83, 4.12], [8.07, 5.09], True, "worse"),
    ([44.7, 38.2], [65.3, 12.8], True, "no difference measured"),  # the seeds' spread covers the difference
    ([0.30, 0.35], [0.40, 0.50], False, "better"),  # higher is better: every variant seed above every control seed
    ([0.40, 0.50], [0.30, 0.35], False, "worse"),
    ([0.158, 0.268], [0.256, 0.264], False, "no difference measured"),  # one control seed beats a variant seed
    ([10, 9], [1, 12], False, "no difference measured"),
    ([1.0], [2.0], True, "one seed: no verdict"),
])
def test_a_verdict_needs_every_seed_of_one_arm_to_beat_every_seed_of_the_other(control, variant, lower_is_better,
                                                                              expected):
    from dcgan_utils.course import verdict

    assert verdict(control, variant, lower_is_better) == expected


def test_seed_table_prints_every_seed_and_returns_the_verdicts(capsys):
    from dcgan_utils.course import seed_table

    results = {"a": [{"fd": 8.0, "confident": 0.2}, {"fd": 5.0, "confident": 0.3}],
               "b": [{"fd": 4.0, "confident": 0.25}, {"fd": 4.5, "confident": 0.26}]}
    verdicts = seed_table(results, control="a")
    assert verdicts["b"] == {"fd": "better", "confident": "no difference measured"}
    out = capsys.readouterr().out
    assert "8.00 / 5.00" in out and "25.0% / 26.0%" in out and "a (control)" in out
