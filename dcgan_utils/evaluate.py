"""Numbers for a GAN's samples: Fréchet distance and KID in a small classifier's feature space, class coverage.

Losses do not tell you whether a GAN's images are good (G's loss can rise while the samples improve). This
module measures the samples instead, offline:

* A small CNN classifier per dataset (MNIST, FashionMNIST, and the colour ``emoji-faces``: 19 classes, the kind
  of emoji by its colour, see :data:`EVAL_CLASSES`), trained by :func:`train_classifier` on the real training
  images. Its trained weights ship in ``data/classifiers/`` (so tests and CI need no training); a
  classifier you retrain is cached in ``data/cache/`` (ignored by git) and takes precedence.
* **FD** (Fréchet distance) and **KID** (kernel inception distance) between N generated images and N held-out
  real test images, computed by torchmetrics' ``FrechetInceptionDistance`` / ``KernelInceptionDistance`` with
  the classifier's 64-number penultimate layer as the feature extractor instead of Inception-v3 (whose weights
  cannot be downloaded offline). Lower is better; 0 means "the same feature statistics".
  **These are not comparable with the Inception FID numbers in papers**: another network, another feature
  space, another scale. Compare runs with each other and with the reference rows, never with a paper.
* **Class coverage**: the classifier's predicted-class histogram of the samples, how many classes hold at least
  1% of them, and its KL divergence to the uniform distribution (0 = every class equally often; log(10) = 2.30
  = a single class): mode collapse made visible.
* **Confident share**: the fraction of samples the classifier assigns to one class with probability >= 0.8
  (real MNIST test digits: 0.92; shapes between classes score lower). On its own it is fooled by inputs far
  from any digit: uniform noise is "confidently" one class. Read it together with FD and coverage.
* **Reference rows**: the same numbers for real training images vs the real test images (the floor a perfect
  generator would reach with this N) and for uniform noise (the ceiling).

Use::

    from dcgan_utils import evaluate_checkpoint, evaluate_generator
    result = evaluate_checkpoint("runs/02_train_mnist_32/checkpoint.pt", num=1000)   # dict, JSON-ready
    result["fd"], result["kid"], result["classes_present"], result["reference"]["real"]["fd"]
    evaluate_generator(G, "mnist", num=1000)    # a generator in memory, e.g. inside a notebook

CLI: ``python -m dcgan_utils evaluate --checkpoint RUN/checkpoint.pt [--num N] [--table]``.
FD has a positive bias that shrinks as N grows, so only compare numbers measured with the same N.
"""
from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import atomic_write, load_checkpoint, load_generator
from .data import CLASS_NAMES, FACE_KINDS, FACE_TONES, REPO_DATA_DIR, ImageData, class_labels, load_dataset, resize_uint8  # noqa: F401
from .sampling import generate

CLASSIFIER_SIZE = 32  # the classifier sees 32x32 images; 64x64 samples are resized (antialiased) to this
FEATURE_DIM = 64
CONFIDENT = 0.8  # a sample is "confidently classified" if its top class probability is at least this
PRESENT = 0.01  # a class "appears" if it holds at least this share of the samples
CLASSIFIER_FORMAT = 1
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "data" / "classifiers"
CACHE_DIR = REPO_DATA_DIR / "cache"
# The evaluation classes: each labelled dataset's classes (data.CLASS_NAMES); the colour faces' are the kind of
# emoji by its colour, so the features FD is measured in see both shape and colour.
EVAL_CLASSES = CLASS_NAMES
EVAL_CHANNELS = {"emoji-faces": 3}  # the others are grayscale
EVAL_DATASETS = tuple(EVAL_CLASSES)  # datasets with labels to train a classifier on


class SmallClassifier(nn.Module):
    """A 4-conv CNN for 32x32 images in [-1, 1] (1 channel, or 3 for the colour faces): a 4x4 stride-2 conv to
    16x16, then 3x3 convs with BatchNorm and ReLU (32 -> 32 -> 64 -> 64 filters, max-pool to 8x8 and 4x4). Small on
    purpose, so that it trains on a CPU.

    ``features(x)`` is the global-average-pooled last layer (64 numbers): the space FD and KID are measured in.
    ``forward(x)`` returns the class logits.
    """

    def __init__(self, num_classes: int = 10, widths: tuple[int, int] = (32, FEATURE_DIM), channels: int = 1):
        super().__init__()
        self.channels = channels

        def conv(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, kernel, stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
                    nn.ReLU(inplace=True)]

        w1, w2 = widths
        self.body = nn.Sequential(*conv(channels, w1, 4, 2), *conv(w1, w1), nn.MaxPool2d(2),  # 16x16 -> 8x8
                                  *conv(w1, w2), nn.MaxPool2d(2), *conv(w2, w2))        # 8x8 -> 4x4
        self.head = nn.Linear(w2, num_classes)
        self.num_features = w2

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def to_classifier_input(images: torch.Tensor, channels: int = 1) -> torch.Tensor:
    """Float images in [-1, 1], any square size, as a classifier's 32x32 input with ``channels`` channels (RGB is
    averaged to gray for a grayscale classifier)."""
    images = images.float()
    if images.shape[1] == 3 and channels == 1:
        images = images.mean(dim=1, keepdim=True)
    elif images.shape[1] != channels:
        raise ValueError(f"this classifier reads {channels}-channel images, got {images.shape[1]} channel(s): "
                         "measure colour samples with the colour dataset's classifier")
    if images.shape[-1] != CLASSIFIER_SIZE:
        images = F.interpolate(images, size=(CLASSIFIER_SIZE, CLASSIFIER_SIZE), mode="bilinear",
                               align_corners=False, antialias=images.shape[-1] > CLASSIFIER_SIZE)
    return images.clamp(-1, 1)


class ClassifierFeatures(nn.Module):
    """The feature extractor handed to torchmetrics: images in [-1, 1] (any size) -> (N, 64) features."""

    def __init__(self, classifier: SmallClassifier):
        super().__init__()
        self.classifier = classifier.eval()
        self.num_features = classifier.num_features  # torchmetrics reads this instead of probing with a dummy

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(to_classifier_input(images, self.classifier.channels))


# --------------------------------------------------------------------------------------------- the classifier
def _shift(images: torch.Tensor, generator: torch.Generator, pixels: int = 2) -> torch.Tensor:
    """Random translations by up to ``pixels`` (pad and crop): cheap augmentation for small training sets."""
    n, size = images.shape[0], images.shape[-1]
    padded = F.pad(images, [pixels] * 4, value=-1.0)
    dx, dy = torch.randint(0, 2 * pixels + 1, (2,), generator=generator).tolist()
    return padded[:, :, dy:dy + size, dx:dx + size][:n]


def evaluation_labels(data: ImageData) -> torch.Tensor:
    """The class of each image for the evaluation classifier (:func:`~dcgan_utils.data.class_labels`)."""
    return class_labels(data)


def train_classifier(dataset: str = "mnist", epochs: int | None = None, source: str = "auto",
                     data_dir: str | Path | None = None, batch_size: int = 128, seed: int = 0,
                     device: str | torch.device = "cpu", save_to: str | Path | None = None,
                     progress: bool = True) -> tuple[SmallClassifier, dict]:
    """Train the evaluation classifier on the real training images and measure it on the real test images.

    Returns the classifier (eval mode, CPU) and an info dict (``test_accuracy``, where the data came from,
    epochs, seconds). ``epochs=None`` picks 6 for the 9,000-image subset, 3 for a full 60,000-image set and 40
    for the 1,606 colour faces (also flipped left-right at random, as emoji come in both directions).
    ``save_to`` writes a file :func:`load_classifier` can read.
    """
    from tqdm.auto import tqdm

    if dataset not in EVAL_DATASETS:
        raise ValueError(f"No classifier for dataset {dataset!r}: evaluation supports {', '.join(EVAL_DATASETS)}")
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    train = load_dataset(dataset, CLASSIFIER_SIZE, data_dir, split="train", source=source)
    test = load_dataset(dataset, CLASSIFIER_SIZE, data_dir, split="test", source=source)
    labels = evaluation_labels(train)
    if epochs is None:
        epochs = 40 if len(train) <= 5_000 else 6 if len(train) <= 20_000 else 3
    model = SmallClassifier(len(EVAL_CLASSES[dataset]), channels=EVAL_CHANNELS.get(dataset, 1)).to(device)
    steps = epochs * (len(train) // batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    started = time.perf_counter()
    bar = tqdm(total=steps, desc=f"training the {dataset} classifier", disable=not progress, leave=False)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(train), generator=rng)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[start:start + batch_size]
            x = _shift(train.batch(idx), rng)
            if dataset == "emoji-faces":
                x = torch.where(torch.rand(len(x), 1, 1, 1, generator=rng) < 0.5, x.flip(-1), x)
            loss = F.cross_entropy(model(x.to(device)), labels[idx].to(device), label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    model = model.cpu().eval()
    accuracy = classifier_accuracy(model, test)
    info = {"dataset": dataset, "test_accuracy": round(accuracy, 4), "train_images": len(train),
            "test_images": len(test), "train_source": train.origin.split(" in /")[0], "epochs": epochs,
            "seed": seed, "seconds": round(time.perf_counter() - started, 1)}
    if save_to is not None:
        path = Path(save_to)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: torch.save({"format": CLASSIFIER_FORMAT, "state_dict": model.state_dict(),
                                                 "info": info}, f))
    return model, info


@torch.no_grad()
def classifier_accuracy(model: SmallClassifier, data: ImageData, batch_size: int = 1000) -> float:
    """Share of ``data``'s images the classifier labels correctly."""
    model.eval()
    correct, labels = 0, evaluation_labels(data)
    for start in range(0, len(data), batch_size):
        index = slice(start, start + batch_size)
        logits = model(to_classifier_input(data.batch(index), model.channels))
        correct += int((logits.argmax(1).cpu() == labels[index].cpu()).sum())
    return correct / len(data)


def classifier_paths(dataset: str) -> tuple[Path, Path]:
    """(your cache file, the shipped file) for ``dataset``'s classifier; the cache wins when both exist."""
    return CACHE_DIR / f"classifier_{dataset}.pt", SHIPPED_DIR / f"{dataset}.pt"


@functools.lru_cache(maxsize=4)
def load_classifier(dataset: str = "mnist", retrain: bool = False) -> tuple[SmallClassifier, dict]:
    """The evaluation classifier for ``dataset`` (CPU, eval mode) and its info (``test_accuracy``, data, ...).

    Looks in ``data/cache/`` (a classifier you trained), then ``data/classifiers/`` (shipped with the course);
    if neither exists, or ``retrain=True``, trains one (a minute or two on a CPU) and caches it.
    """
    if dataset not in EVAL_DATASETS:
        raise ValueError(f"No classifier for dataset {dataset!r}: evaluation supports {', '.join(EVAL_DATASETS)} "
                         "(an image folder has no labels to train one on)")
    cached, shipped = classifier_paths(dataset)
    path = next((p for p in (cached, shipped) if p.is_file()), None)
    if retrain or path is None:
        print(f"Training the {dataset} evaluation classifier once (cached in {cached})...")
        model, info = train_classifier(dataset, save_to=cached)
        print(f"{dataset} classifier: test accuracy {info['test_accuracy']:.2%} on {info['test_images']} real "
              "test images")
        return model, info
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = SmallClassifier(len(EVAL_CLASSES[dataset]), channels=EVAL_CHANNELS.get(dataset, 1))
        model.load_state_dict(state["state_dict"])
    except Exception as err:
        raise ValueError(f"{path} is not a readable classifier ({type(err).__name__}: {err}); delete it, or call "
                         f"load_classifier({dataset!r}, retrain=True)") from err
    return model.eval(), {**state["info"], "file": f"{path.parent.name}/{path.name}"}


# --------------------------------------------------------------------------------------------- the metrics
@torch.no_grad()
def classify(images: torch.Tensor, classifier: SmallClassifier, batch_size: int = 500) -> torch.Tensor:
    """Class probabilities (N, K) for images in [-1, 1]."""
    classifier.eval()
    return torch.cat([F.softmax(classifier(to_classifier_input(images[i:i + batch_size].cpu(), classifier.channels)),
                                dim=1)
                      for i in range(0, images.shape[0], batch_size)])


def class_coverage(images: torch.Tensor, classifier: SmallClassifier, confident: float = CONFIDENT,
                   present: float = PRESENT) -> dict:
    """Predicted-class histogram of ``images`` and what it says about mode collapse (see :func:`coverage`)."""
    return coverage(classify(images, classifier), confident, present)


def coverage(probs: torch.Tensor, confident: float = CONFIDENT, present: float = PRESENT) -> dict:
    """From class probabilities (N, K): ``class_histogram`` (share per class), ``classes_present`` (classes with at
    least ``present`` of the samples), ``class_kl`` (KL(histogram || uniform) in nats: 0 = balanced, log(K) = one
    class) and ``confident`` (share of samples whose top class probability is at least ``confident``)."""
    k = probs.shape[1]
    hist = torch.bincount(probs.argmax(1), minlength=k).double() / probs.shape[0]
    nonzero = hist[hist > 0]
    kl = float((nonzero * (nonzero * k).log()).sum())
    return {"classes_present": int((hist >= present).sum()), "class_kl": round(kl, 4),
            "confident": round(float((probs.max(1).values >= confident).double().mean()), 4),
            "class_histogram": [round(float(h), 4) for h in hist]}


class _Precomputed(nn.Module):
    """The feature extractor torchmetrics runs: the identity, because :class:`FeatureDistances` computes each set's
    classifier features once and hands both metrics the same (N, 64) features."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


class FeatureDistances:
    """FD and KID (torchmetrics' FID and KID on the classifier's features) of image sets against one real set.

    The real set's features are computed once (``reset_real_features=False``); each call measures one more
    image set against it.
    """

    def __init__(self, real: torch.Tensor, classifier: SmallClassifier, kid_subset_size: int = 500,
                 kid_subsets: int = 20, batch_size: int = 500):
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance

        self.extractor = ClassifierFeatures(classifier)
        self.batch_size = batch_size
        self.num_real = real.shape[0]
        identity = _Precomputed(self.extractor.num_features)
        self.fid = FrechetInceptionDistance(feature=identity, reset_real_features=False)
        self.kid_subset_size, self.kid_subsets = kid_subset_size, kid_subsets
        with warnings.catch_warnings():  # its note that features are kept in memory: 1,000 x 64 floats here
            warnings.filterwarnings("ignore", message=".*will save all extracted features")
            self.kid = KernelInceptionDistance(feature=identity, reset_real_features=False, subsets=kid_subsets,
                                               subset_size=min(kid_subset_size, self.num_real))
        self._update(self.features(real), real=True)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The classifier's (N, 64) features of images in [-1, 1]."""
        return torch.cat([self.extractor(images[i:i + self.batch_size].float().cpu())
                          for i in range(0, images.shape[0], self.batch_size)])

    @torch.no_grad()
    def _update(self, features: torch.Tensor, real: bool) -> None:
        self.fid.update(features, real=real)
        self.kid.update(features, real=real)

    def __call__(self, images: torch.Tensor, seed: int = 0) -> dict:
        """``{"fd": ..., "kid": ..., "kid_std": ...}`` of ``images`` (in [-1, 1]) against the real set."""
        return self.from_features(self.features(images), seed)

    def from_features(self, features: torch.Tensor, seed: int = 0) -> dict:
        """The same, from features already computed with :meth:`features`."""
        n = features.shape[0]
        if n < 2:
            raise ValueError("FD needs at least 2 images; use num >= 100 for meaningful numbers")
        self.fid.reset()
        self.kid.reset()
        # KID averages over random subsets; when a subset is the whole (smaller) set, one is all there is
        self.kid.subset_size = min(self.kid_subset_size, self.num_real, n)
        self.kid.subsets = 1 if self.kid.subset_size == min(self.num_real, n) else self.kid_subsets
        self._update(features, real=False)
        fd = float(self.fid.compute())
        with torch.random.fork_rng(devices=[]):  # KID draws random subsets: make them repeatable
            torch.manual_seed(seed)
            kid_mean, kid_std = self.kid.compute()
        return {"fd": round(max(fd, 0.0), 4), "kid": round(float(kid_mean), 6), "kid_std": round(float(kid_std), 6)}


def measure(images: torch.Tensor, distances: FeatureDistances, classifier: SmallClassifier) -> dict:
    """FD, KID and class coverage of one image set (in [-1, 1]), from one pass through the classifier."""
    features = distances.features(images)
    with torch.no_grad():
        probs = F.softmax(classifier.head(features), dim=1)
    return {**distances.from_features(features), **coverage(probs), "num": int(images.shape[0])}


def noise_images(num: int, image_size: int = CLASSIFIER_SIZE, channels: int = 1, seed: int = 0) -> torch.Tensor:
    """Uniform noise in [-1, 1]: the 'worst generator' reference."""
    rng = torch.Generator().manual_seed(seed)
    return torch.rand(num, channels, image_size, image_size, generator=rng) * 2 - 1


@functools.lru_cache(maxsize=8)
def _real_sets(dataset: str, num: int, image_size: int, source: str, data_dir: str | None):
    """(the real set samples are measured against at 32x32, the real anchor set at ``image_size``)."""
    if dataset == "emoji-faces":
        # Its test split (183 faces) is too small for FD, so the two sets are halves of the 1,606 training faces,
        # shuffled once (the file is ordered by emoji): as GAN papers measure FID against the training set.
        train = load_dataset(dataset, image_size, data_dir, split="train")
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
        half = min(num, len(train) // 2)

        def pick(index: torch.Tensor, size: int) -> ImageData:
            return dataclasses.replace(train, images=resize_uint8(train.images[index], size),
                                       labels=train.labels[index], attributes=train.attributes[index],
                                       origin=f"{len(index)} of the {len(train):,} training faces, shuffled")
        return pick(order[:half], CLASSIFIER_SIZE), pick(order[half:2 * half], image_size)
    test = load_dataset(dataset, CLASSIFIER_SIZE, data_dir, split="test", source=source, limit=num)
    train = load_dataset(dataset, image_size, data_dir, split="train", source=source, limit=num)
    return test, train


def real_test_images(dataset: str, num: int = 1000, source: str = "auto", data_dir: str | Path | None = None
                     ) -> ImageData:
    """The first ``num`` real test images at 32x32: the held-out set samples are measured against."""
    return _real_sets(dataset, num, CLASSIFIER_SIZE, source, str(data_dir) if data_dir else None)[0]


@functools.lru_cache(maxsize=8)
def _distances_for(dataset: str, num: int, source: str, data_dir: str | None) -> FeatureDistances:
    classifier, _ = load_classifier(dataset)
    return FeatureDistances(real_test_images(dataset, num, source, data_dir).batch(slice(None)), classifier)


@functools.lru_cache(maxsize=None)
def _print_once(message: str) -> None:
    """Print a note once per process (a table of runs would repeat it for every row)."""
    print(message)


def evaluate_images(images: torch.Tensor, dataset: str = "mnist", references: bool = False,
                    source: str = "auto", data_dir: str | Path | None = None, seed: int = 0,
                    num_requested: int | None = None) -> dict:
    """FD, KID, class coverage and confident share of ``images`` (N, 1, H, W in [-1, 1]) vs N real test images.

    With ``references=True``, ``result["reference"]`` holds the same numbers for N real training images
    (``"real"``) and N uniform-noise images (``"noise"``). Returns a JSON-ready dict. ``num_requested``: how many
    samples the caller asked for, when it drew only as many as there are real test images
    (:func:`evaluate_generator` does), for the note saying so.
    """
    if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"images must be (N, C, H, W) square images in [-1, 1], got shape {tuple(images.shape)}")
    num = int(images.shape[0])
    classifier, info = load_classifier(dataset)
    data_dir = str(data_dir) if data_dir else None
    asked = max(num, num_requested or 0)
    test = real_test_images(dataset, asked, source, data_dir)
    note = None
    if len(test) < asked:
        where = test.origin.split(" in /")[0]
        more = (" The shipped subset holds 1,000 test images; the full test set (10,000) needs source='full' "
                "(CLI: --source full) or the IDX files in data_dir (--data-dir)." if "subset" in where else "")
        if dataset == "emoji-faces":
            note = (f"{asked} samples were asked for; the faces are measured against half of the training faces "
                    f"({len(test)}), so {len(test)} samples were measured.")
        else:
            note = (f"{asked} samples were asked for but only {len(test)} real test images are available ({where}), "
                    f"so {len(test)} samples were measured.{more}")
        _print_once(note)
        num = min(num, len(test))
        images = images[:num]
    distances = _distances_for(dataset, num, source, data_dir)
    result = {"dataset": dataset, "image_size": int(images.shape[-1]), **measure(images, distances, classifier),
              "classifier_accuracy": info["test_accuracy"],
              "real_set": (test.origin if dataset == "emoji-faces"
                           else f"{num} real test images ({test.origin.split(' in /')[0]})")}
    if note:
        result.update(num_requested=asked, note=note)
    if references:
        real_train = _real_sets(dataset, num, int(images.shape[-1]), source, data_dir)[1].batch(slice(None))
        noise = noise_images(num, int(images.shape[-1]), images.shape[1], seed=seed)
        result["reference"] = {"real": measure(real_train, distances, classifier),
                               "noise": measure(noise, distances, classifier)}
    return result


def evaluate_generator(generator: nn.Module, dataset: str = "mnist", num: int = 1000, seed: int = 0,
                       references: bool = False, source: str = "auto", data_dir: str | Path | None = None,
                       device: str | torch.device | None = None) -> dict:
    """Draw ``num`` samples from ``generator`` (seeded) and :func:`evaluate_images` them; at most as many as there
    are real test images to measure them against (the note in the result says so).

    64x64 generators are fine: their samples are resized to the classifier's 32x32.
    """
    load_classifier(dataset)  # a dataset without one is refused before drawing anything
    data_dir = str(data_dir) if data_dir else None
    available = len(real_test_images(dataset, num, source, data_dir))
    images = generate(generator, min(num, available), seed=seed, device=device)  # never more than are measured
    return evaluate_images(images, dataset, references=references, source=source, data_dir=data_dir, seed=seed,
                           num_requested=num)


def evaluate_checkpoint(path: str | Path, num: int = 1000, seed: int = 0, references: bool = True,
                        source: str = "auto", data_dir: str | Path | None = None, ema: bool = True,
                        device: str | torch.device = "cpu") -> dict:
    """Evaluate the generator in a run's ``checkpoint.pt`` (or run folder) against its dataset's test images."""
    state = load_checkpoint(path)
    config = state["config"]
    generator, _ = load_generator(path, device=device, ema=ema, state=state)
    result = evaluate_generator(generator, config["dataset"], num=num, seed=seed, references=references,
                                source=source, data_dir=data_dir, device=device)
    return {"checkpoint": str(path), "step": int(state["step"]), "epoch": int(state["epoch"]), "arch": config["arch"],
            **result}


# --------------------------------------------------------------------------------------------- reading it
_COLUMNS = (("fd", "FD", "{:.2f}"), ("kid", "KID", "{:.4f}"), ("classes_present", "classes", "{}"),
            ("class_kl", "KL to uniform", "{:.3f}"), ("confident", "confident", "{:.1%}"))


def results_table(rows: dict[str, dict]) -> str:
    """A plain-text table, one row per named result (e.g. {"my run": result, **result["reference"]})."""
    header = ["", *(title for _, title, _ in _COLUMNS)]
    lines = [[name, *(fmt.format(r[key]) for key, _, fmt in _COLUMNS)] for name, r in rows.items()]
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    def fmt_line(line):
        return "  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w) for i, (v, w) in enumerate(zip(line, widths)))
    return "\n".join([fmt_line(header), *(fmt_line(line) for line in lines)])


def format_result(result: dict) -> str:
    """A readable summary of :func:`evaluate_checkpoint`'s result: the run and its reference rows."""
    rows = {"generated": result, **{"real train (reference)" if k == "real" else f"{k} (reference)": v
                                    for k, v in result.get("reference", {}).items()}}
    names = EVAL_CLASSES.get(result["dataset"], [])
    hist = ", ".join(f"{n}: {h:.0%}" for n, h in zip(names, result["class_histogram"]))
    return (f"{result['dataset']}, {result['num']} samples vs {result['real_set']}; classifier test accuracy "
            f"{result['classifier_accuracy']:.2%}\n{results_table(rows)}\nclass histogram of the samples: {hist}\n"
            "FD/KID: classifier features, lower is better; not comparable with Inception FID in papers."
            + (f"\nNote: {result['note']}" if result.get("note") else ""))

