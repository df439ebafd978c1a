"""The evaluation metrics behave like metrics: 0 against themselves, large for noise, monotone in damage,
and class coverage sees a generator that draws one class. Uses the classifiers shipped in data/classifiers/."""
import json
import math

import pytest
import torch
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from dcgan_utils import evaluate_generator, evaluate_images, load_classifier, load_dataset
from dcgan_utils.evaluate import FeatureDistances, class_coverage, classifier_accuracy, noise_images


@pytest.fixture(scope="module")
def classifier():
    return load_classifier("mnist")[0]


@pytest.fixture(scope="module")
def test_images():
    return load_dataset("mnist", 32, split="test", source="subset")


@pytest.fixture(scope="module")
def distances(classifier, test_images):
    return FeatureDistances(test_images.batch(slice(0, 500)), classifier)


def test_shipped_classifier_reaches_its_accuracy(test_images):
    model, info = load_classifier("mnist")
    assert info["test_accuracy"] >= 0.98
    assert classifier_accuracy(model, test_images) >= 0.98  # measured again here, on the shipped test digits


def test_shipped_fashion_classifier_accuracy():
    model, info = load_classifier("fashion-mnist")
    assert info["test_accuracy"] >= 0.89  # on the full 10,000 test images (aim was 0.90: 0.8948 measured)
    subset = load_dataset("fashion-mnist", 32, split="test", source="subset")
    assert classifier_accuracy(model, subset) >= 0.89  # the first 1,000 of them, shipped: 0.906 measured


def test_distance_is_zero_against_itself_and_large_for_noise(distances, test_images):
    same = distances(test_images.batch(slice(0, 500)))
    other_real = distances(test_images.batch(slice(500, 1000)))
    noise = distances(noise_images(500))
    assert same["fd"] < 1e-3 and abs(same["kid"]) < 1e-4 * noise["kid"]  # KID is unbiased: ~0, either sign
    assert other_real["fd"] > same["fd"]
    assert noise["fd"] > 50 * other_real["fd"]
    assert noise["kid"] > 50 * max(other_real["kid"], 1e-4)


@pytest.mark.parametrize("damage", ["blur", "noise"])
def test_distance_rises_with_damage(distances, test_images, damage):
    clean = test_images.batch(slice(500, 1000))
    rng = torch.Generator().manual_seed(0)
    if damage == "blur":
        damaged = [gaussian_blur(clean, kernel_size=9, sigma=s) for s in (0.5, 1.0, 1.5, 2.5)]
    else:
        damaged = [(clean + s * torch.randn(clean.shape, generator=rng)).clamp(-1, 1) for s in (0.1, 0.25, 0.5, 1.0)]
    fds = [distances(images)["fd"] for images in [clean, *damaged]]
    kids = [distances(images)["kid"] for images in [clean, *damaged]]
    assert all(a < b for a, b in zip(fds, fds[1:])), fds
    assert all(a < b for a, b in zip(kids, kids[1:])), kids


class OneClassGenerator(nn.Module):
    """A 'collapsed generator': whatever the latent, one of a few real images of a single class."""

    def __init__(self, images: torch.Tensor):
        super().__init__()
        self.register_buffer("images", images)
        self.latent_dim = 100
        self.anchor = nn.Parameter(torch.zeros(()))  # generate() looks up the device through the parameters

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        index = (z.flatten(1)[:, 0].abs() * 1000).long() % self.images.shape[0]
        return self.images[index]


def test_coverage_catches_a_generator_that_draws_one_class(classifier, test_images):
    real = class_coverage(test_images.batch(slice(None)), classifier)
    assert real["classes_present"] == 10
    assert real["class_kl"] < 0.05
    assert real["confident"] > 0.85
    sevens = test_images.batch(test_images.labels == 7)
    result = evaluate_generator(OneClassGenerator(sevens), "mnist", num=300, source="subset")
    assert result["classes_present"] == 1
    assert result["class_histogram"][7] > 0.97
    assert result["class_kl"] > 0.9 * math.log(10)
    assert result["fd"] > 10 * evaluate_images(test_images.batch(slice(300, 600)), "mnist", source="subset")["fd"]


def test_evaluate_handles_64px_images_and_reference_rows(test_images):
    images64 = torch.nn.functional.interpolate(test_images.batch(slice(0, 200)), size=64, mode="bilinear")
    result = evaluate_images(images64, "mnist", references=True, source="subset")
    assert result["image_size"] == 64 and result["num"] == 200
    real, noise = result["reference"]["real"], result["reference"]["noise"]
    assert result["fd"] < 3 * real["fd"]  # the test images themselves, resized up and down again (slightly blurred)
    assert noise["fd"] > 20 * real["fd"]
    assert noise["classes_present"] < real["classes_present"] == 10
    json.dumps(result)  # JSON-ready


def test_folder_dataset_has_no_classifier():
    with pytest.raises(ValueError, match="evaluation supports"):
        load_classifier("folder")


def test_trainer_eval_every_fills_history(tmp_path, tiny):
    from dcgan_utils import Trainer
    from dcgan_utils.plots import plot_eval

    trainer = Trainer(out_dir=tmp_path / "run", epochs=2, eval_every=1, eval_num=100, source="subset", **tiny)
    trainer.fit()
    rows = trainer.history["eval"]
    assert [r["epoch"] for r in rows] == [1.0, 2.0]
    assert all(r["fd"] > 0 and 1 <= r["classes_present"] <= 10 for r in rows)
    saved = json.loads((tmp_path / "run" / "history.json").read_text())
    assert saved["eval"] == rows
    fig = plot_eval(trainer.history, show=False)
    assert len(fig.axes) == 3


def test_eval_every_rejects_unlabelled_data():
    from dcgan_utils import TrainConfig

    with pytest.raises(ValueError, match="labelled dataset"):
        TrainConfig(dataset="folder", eval_every=1).validate()


def test_cli_evaluate_prints_json_for_a_cli_run(tmp_path, capsys):
    from dcgan_utils.cli import main

    run = tmp_path / "cli_run"
    assert main(["train", "--dataset", "mnist", "--source", "subset", "--limit", "256", "--width", "16",
                 "--batch-size", "32", "--max-steps", "6", "--no-progress", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run / "checkpoint.pt"), "--num", "200", "--source", "subset"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["step"] == 6 and result["num"] == 200 and result["dataset"] == "mnist"
    assert result["fd"] > result["reference"]["real"]["fd"]  # 6 steps of training are far from real digits
    assert set(result["reference"]) == {"real", "noise"}
    assert main(["evaluate", "--checkpoint", str(run), "--num", "200", "--source", "subset", "--table"]) == 0
    table = capsys.readouterr().out
    assert "generated" in table and "noise (reference)" in table and "not comparable" in table


def test_cli_evaluate_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    from dcgan_utils.cli import main

    assert main(["evaluate", "--checkpoint", str(tmp_path / "nope" / "checkpoint.pt")]) == 2
    assert "No checkpoint" in capsys.readouterr().err


def test_face_classes_combine_the_kind_of_emoji_and_its_colour():
    from dcgan_utils.evaluate import EVAL_CLASSES, evaluation_labels

    faces = load_dataset("emoji-faces", 32)
    labels, names = evaluation_labels(faces), EVAL_CLASSES["emoji-faces"]
    subcategory = [faces.label_names[i] for i in faces.labels.tolist()]
    role_tone_3 = next(i for i, s in enumerate(subcategory) if s == "person-role" and faces.attribute("skin_tone_3")[i])
    smiley = subcategory.index("face-smiling")
    assert names[labels[role_tone_3]] == "person-role, tone 3" and names[labels[smiley]] == "emoji face"
    assert len(names) == 19 and set(labels.tolist()) == set(range(19))  # every class has training images


def test_shipped_face_classifier_reads_colour_and_tells_faces_from_noise():
    model, info = load_classifier("emoji-faces")
    test = load_dataset("emoji-faces", 32, split="test")  # other emoji than the training split's
    assert model.channels == 3 and info["test_accuracy"] >= 0.95  # 0.9727 measured
    assert classifier_accuracy(model, test) >= 0.95
    assert classifier_accuracy(model, load_dataset("emoji-faces", 64, split="test")) >= 0.9  # resized from 64
    gray = test.batch(slice(0, 8)).mean(1, keepdim=True)
    with pytest.raises(ValueError, match="3-channel images, got 1"):
        evaluate_images(gray, "emoji-faces")


def test_face_evaluation_measures_against_training_faces_with_anchors():
    faces = load_dataset("emoji-faces", 64)
    real = faces.batch(torch.randperm(len(faces), generator=torch.Generator().manual_seed(1))[:300])
    result = evaluate_images(real, "emoji-faces", references=True)
    blurred = evaluate_images(gaussian_blur(real, kernel_size=9, sigma=2.0), "emoji-faces")
    anchors = result["reference"]
    assert "training faces" in result["real_set"] and result["num"] == 300
    assert result["fd"] < 2.0 and anchors["real"]["fd"] < 2.0  # real vs real, both measured on 300
    assert result["fd"] < blurred["fd"] < anchors["noise"]["fd"] and anchors["noise"]["fd"] > 50
    assert result["classes_present"] >= 15 and result["confident"] > 0.8


def test_face_evaluation_caps_n_at_half_the_training_faces_and_says_so_once(capsys):
    images = load_dataset("emoji-faces", 32).batch(slice(0, 900))
    first, second = evaluate_images(images, "emoji-faces"), evaluate_images(images, "emoji-faces")
    out = capsys.readouterr().out
    assert first["num"] == second["num"] == 803 and first["num_requested"] == 900
    assert out.count("900 samples were asked for; the faces are measured against half of the training faces") == 1
