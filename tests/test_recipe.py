"""The ladder's recipe (``--recipe modern``, notebook 11): what it sets, that its runs are ordinary course runs
(resume, evaluate, sample, notebook 06's sliders and walks, notebook 08's tools), and that a class-conditional
generator draws the class it is given, checked with the course's own classifier."""
import json
from pathlib import Path

import pytest
import torch

from dcgan_utils import Trainer, TrainConfig, build_models, evaluate_checkpoint, load_checkpoint, load_generator
from dcgan_utils.analysis import feature_maps, first_layer_filters, latent_pool, top_activating, vector_arithmetic
from dcgan_utils.cli import build_parser, main
from dcgan_utils.config import resolve_config
from dcgan_utils.data import CLASS_NAMES
from dcgan_utils.evaluate import classify, load_classifier
from dcgan_utils.latent import latent_explorer, plot_walks, walk_images
from dcgan_utils.sampling import generate, seeded_latents

DATA = Path(__file__).parent / "data"
TINY = dict(dataset="mnist", source="subset", limit=256, width=16, batch_size=32, progress=False, device="cpu")


def test_the_modern_recipe_sets_the_ladders_rungs_and_explicit_choices_win():
    cpu = torch.device("cpu")
    c, note = resolve_config(TrainConfig(recipe="modern"), cpu)
    assert (c.spectral_norm, c.d_batchnorm, c.conditional, c.loss, c.r1, c.augment) == (True, False, True, "bce", 0.0,
                                                                                         "")
    assert (c.width, c.lr, c.lr_d, c.ema) == (128, 8e-4, 2e-4, 0.999)  # the CPU profile, as for "course"
    folder, _ = resolve_config(TrainConfig(recipe="modern", dataset="folder", data_dir="x"), cpu)
    assert not folder.conditional and folder.spectral_norm  # no classes: the rest of the recipe still applies
    mine, _ = resolve_config(TrainConfig(recipe="modern", conditional=False, spectral_norm=False), cpu)
    assert not mine.conditional and not mine.spectral_norm and not mine.d_batchnorm
    course, _ = resolve_config(TrainConfig(), cpu)
    assert (course.spectral_norm, course.d_batchnorm, course.conditional) == (False, True, False)
    assert "modern" in build_parser().parse_args(["train", "--recipe", "modern", "--out", "x"]).recipe


def test_a_modern_run_records_its_recipe_resumes_exactly_and_is_evaluated(tmp_path):
    straight = Trainer(out_dir=tmp_path / "straight", recipe="modern", max_steps=6, **TINY).fit()
    Trainer(out_dir=tmp_path / "resumed", recipe="modern", max_steps=3, **TINY).fit()
    resumed = Trainer(out_dir=tmp_path / "resumed", recipe="modern", max_steps=6, **TINY).fit()
    for a, b in ((straight.generator, resumed.generator), (straight.discriminator, resumed.discriminator)):
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), name  # spectral norm's power-iteration vectors and the classes drawn too
    state = load_checkpoint(tmp_path / "resumed")
    assert state["config"]["recipe"] == "modern" and state["config"]["conditional"] and state["num_classes"] == 10
    assert json.loads((tmp_path / "resumed" / "history.json").read_text())["step"][-1] == 6
    result = evaluate_checkpoint(tmp_path / "resumed", num=64, references=False, source="subset")
    assert result["num"] == 64 and result["fd"] > 0 and sum(result["class_histogram"]) == pytest.approx(1.0)


def test_sample_draws_a_chosen_class_of_a_conditional_run(tmp_path, capsys):
    Trainer(out_dir=tmp_path / "run", recipe="modern", max_steps=2, **TINY).fit()
    assert main(["sample", "--checkpoint", str(tmp_path / "run"), "--num", "8", "--label", "3", "--out",
                 str(tmp_path / "threes.npz")]) == 0
    import numpy as np

    images = torch.from_numpy(np.load(tmp_path / "threes.npz")["images"])
    G, _ = load_generator(tmp_path / "run")
    torch.testing.assert_close(images, generate(G, 8, seed=0, labels=3))
    assert main(["sample", "--checkpoint", str(tmp_path / "run"), "--num", "4", "--out", str(tmp_path / "a.png")]) == 0
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(tmp_path / "run"), "--label", "12", "--out",
                 str(tmp_path / "b.png")]) == 2
    assert "--label 12: this run draws classes 0..9" in capsys.readouterr().err


def _fixture_generator():
    """A conditional MNIST generator of notebook 11's recipe (width 128, 8,000 steps, its EMA; stored in fp16)."""
    saved = torch.load(DATA / "conditional_mnist_generator.pt", weights_only=True)
    c = saved["config"]
    G, _ = build_models(c["arch"], c["image_size"], 1, width=c["width"], num_classes=saved["num_classes"],
                        d_batchnorm=c["d_batchnorm"], spectral_norm=c["spectral_norm"])
    G.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in saved["generator"].items()})
    return G.eval()


def test_a_conditional_generator_draws_the_class_it_is_given():
    G = _fixture_generator()
    classifier, _ = load_classifier("mnist")
    for digit in range(10):
        predicted = classify(generate(G, 50, seed=1, labels=digit), classifier).argmax(1)
        assert (predicted == digit).float().mean() >= 0.9, digit  # measured: 97-100% for every digit


def test_notebook_06s_sliders_and_walks_and_notebook_08s_tools_work_on_a_conditional_generator(tmp_path):
    G = _fixture_generator()
    z0, z1 = seeded_latents(2, 0).flatten(1)
    explorer = latent_explorer(G, z0, z1, dims=(0,), size=32, label=4, class_names=CLASS_NAMES["mnist"])
    assert explorer.label.value == 4 and explorer.renders == 1
    walk = walk_images(G, z0, z1, steps=6, labels=(3, 5))
    classifier, _ = load_classifier("mnist")
    first, last = classify(walk[[0, -1]], classifier).argmax(1).tolist()
    assert (first, last) == (3, 5)  # a 3 turning into a 5
    assert plot_walks(G, z0, z1, steps=4, labels=(0, 1), show=False) is not None

    pool = latent_pool(G, classifier, num=300)
    assert pool.drawn is not None and (pool.label == pool.drawn).float().mean() > 0.9
    sevens, ones = pool.choose(7, "thick"), pool.choose(1, "thin")
    out = vector_arithmetic(G, pool.z[sevens], pool.z[ones], pool.z[ones], variations=4,
                            classes=(pool.drawn[sevens], pool.drawn[ones], pool.drawn[ones]))
    assert out["results"].shape == (4, 1, 32, 32)
    assert (classify(out["results"], classifier).argmax(1) == 7).all()  # 7 - 1 + 1: a 7 again

    _, D = build_models("dcgan", 32, 1, width=16, num_classes=10, d_batchnorm=False, spectral_norm=True)
    assert first_layer_filters(D).shape[0] == 4
    maps = feature_maps(D, pool.images[:8])
    assert len(maps) == 3 and maps[0][1].shape[0] == 8
    assert len(top_activating(D, pool.images[:40], k=3)) == 4
