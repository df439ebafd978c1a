"""Datasets as one pre-resized uint8 tensor that lives on the training device.

Images are decoded and resized once, at load time; a training step only indexes the tensor and scales the
batch to [-1, 1] (:meth:`ImageData.batch`). No PIL, no DataLoader workers inside the loop.

Where the images come from (``source`` in :func:`load_dataset`):

* ``"auto"``: the full dataset if it is on disk (``data_dir``, the repository's ``data/``, or Debian's
  ``/usr/share/datasets/fashion-mnist``), else a torchvision download into ``data/``, else the small real
  subset shipped in ``data/`` (9,000 train / 1,000 test images), with a message saying so.
* ``"full"``: the full dataset, downloading if needed; a failed download raises an error saying what to do.
* ``"subset"``: the shipped subset only (fast, offline, what CI uses).
* ``name="folder"``: every image under ``data_dir`` (e.g. CelebA crops), centre-cropped and resized.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO_DATA_DIR = Path(os.environ.get("DCGAN_DATA_DIR", Path(__file__).resolve().parent.parent / "data"))
DATASETS = ("mnist", "fashion-mnist", "folder")
SOURCES = ("auto", "full", "subset")
CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
}
_SUBSET_FILES = {"mnist": "mnist_subset.npz", "fashion-mnist": "fashion_mnist_subset.npz"}
_TORCHVISION_DIRS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_SYSTEM_DIRS = {"fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")]}
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
_OFFLINE_HELP = (
    "Offline? Use the real subset shipped with the course (source='subset', CLI: --source subset), or put the "
    "four original IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...) in a folder "
    "and pass it as data_dir (CLI: --data-dir). On Debian/Ubuntu, 'apt-get install dataset-fashion-mnist' puts "
    "FashionMNIST in /usr/share/datasets/fashion-mnist, which is found automatically."
)


class DatasetError(RuntimeError):
    """A dataset could not be loaded; the message says what to do."""


@dataclass
class ImageData:
    """Images as uint8 (N, C, H, W) on one device, with optional int64 labels."""

    images: torch.Tensor
    labels: torch.Tensor | None
    name: str
    origin: str  # where the images came from, in words (e.g. 'shipped subset mnist_subset.npz')

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def class_names(self) -> list[str] | None:
        return CLASS_NAMES.get(self.name)

    def to(self, device: torch.device | str) -> "ImageData":
        labels = None if self.labels is None else self.labels.to(device)
        return ImageData(self.images.to(device), labels, self.name, self.origin)

    def batch(self, index: torch.Tensor | slice) -> torch.Tensor:
        """Images at ``index`` as float32 in [-1, 1]: the only per-step data work."""
        return self.images[index].float().mul_(2 / 255).sub_(1)

    def __repr__(self) -> str:
        return (f"ImageData({self.name}: {len(self)} images, {self.channels}x{self.image_size}x{self.image_size}, "
                f"{self.images.dtype} on {self.images.device}; from {self.origin})")


def resize_uint8(images: torch.Tensor, image_size: int, chunk: int = 4096) -> torch.Tensor:
    """Resize uint8 (N, C, h, w) square images to ``image_size`` once (bilinear, antialiased when shrinking)."""
    if images.shape[-1] == image_size and images.shape[-2] == image_size:
        return images
    out = torch.empty(images.shape[0], images.shape[1], image_size, image_size, dtype=torch.uint8)
    for start in range(0, images.shape[0], chunk):
        part = images[start:start + chunk].float()
        part = F.interpolate(part, size=(image_size, image_size), mode="bilinear", align_corners=False,
                             antialias=image_size < images.shape[-1])
        out[start:start + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the original MNIST format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DatasetError(f"{path} is unreadable or corrupt ({err}); delete it and download it again") from err
    if len(raw) < 8 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{path} is not an IDX file of unsigned bytes; delete it and download it again")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(shape)):
        raise DatasetError(f"{path} is truncated: expected {int(np.prod(shape))} bytes of data, found "
                           f"{len(raw) - offset}; delete it and download it again")
    return np.frombuffer(raw, np.uint8, offset=offset).reshape(shape).copy()


def _find_idx(folder: Path, split: str) -> tuple[Path, Path] | None:
    prefix = "train" if split == "train" else "t10k"
    found = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        candidates = [folder / f"{prefix}-{kind}{ext}" for ext in ("", ".gz")]
        hit = next((p for p in candidates if p.is_file()), None)
        if hit is None:
            return None
        found.append(hit)
    return found[0], found[1]


def _idx_folders(name: str, data_dir: Path | None) -> list[Path]:
    roots = [data_dir] if data_dir is not None else [REPO_DATA_DIR, *_SYSTEM_DIRS.get(name, [])]
    sub = _TORCHVISION_DIRS[name]
    return [p for root in roots for p in (root, root / sub / "raw")]


def _load_idx(name: str, split: str, data_dir: Path | None) -> tuple[np.ndarray, np.ndarray, str] | None:
    for folder in _idx_folders(name, data_dir):
        pair = _find_idx(folder, split)
        if pair is not None:
            images, labels = _read_idx(pair[0]), _read_idx(pair[1])
            if images.ndim != 3 or labels.shape != (images.shape[0],):
                raise DatasetError(f"{pair[0]} and {pair[1]} do not match (images {images.shape}, labels "
                                   f"{labels.shape}); replace them with the original files")
            return images, labels, f"IDX files in {folder}"
    return None


def _download(name: str, split: str) -> tuple[np.ndarray, np.ndarray, str]:
    from torchvision import datasets

    cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    try:
        ds = cls(str(REPO_DATA_DIR), train=split == "train", download=True)
    except Exception as err:  # torchvision raises RuntimeError/URLError/OSError depending on the failure
        raise DatasetError(f"Downloading {name} with torchvision failed ({type(err).__name__}: {err}). "
                           + _OFFLINE_HELP) from err
    return ds.data.numpy(), ds.targets.numpy(), f"torchvision download in {REPO_DATA_DIR}"


def _load_subset(name: str, split: str) -> tuple[np.ndarray, np.ndarray, str]:
    path = REPO_DATA_DIR / _SUBSET_FILES[name]
    if not path.is_file():
        raise DatasetError(f"The shipped subset {path} is missing; restore it with 'git checkout -- data/' or set "
                           f"DCGAN_DATA_DIR to the course's data folder")
    with np.load(path) as arrays:
        return arrays[f"{split}_images"], arrays[f"{split}_labels"], f"shipped subset {path.name}"


def _load_folder(data_dir: Path | None, image_size: int, limit: int | None, channels: int) -> ImageData:
    from PIL import Image
    from tqdm.auto import tqdm

    if data_dir is None or not Path(data_dir).is_dir():
        raise DatasetError(f"name='folder' needs data_dir pointing at a folder of images (got {data_dir}); "
                           "for faces, unzip e.g. CelebA's img_align_celeba there")
    files = sorted(p for p in Path(data_dir).rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(f"No images ({', '.join(sorted(_IMAGE_SUFFIXES))}) found under {data_dir}")
    files = files[:limit] if limit else files
    out = torch.empty(len(files), channels, image_size, image_size, dtype=torch.uint8)
    mode = "L" if channels == 1 else "RGB"
    for i, path in enumerate(tqdm(files, desc=f"resizing {len(files)} images once", leave=False)):
        try:
            with Image.open(path) as img:
                img = img.convert(mode)
                side = min(img.size)
                left, top = (img.width - side) // 2, (img.height - side) // 2
                img = img.crop((left, top, left + side, top + side)).resize((image_size, image_size),
                                                                            Image.Resampling.BILINEAR)
                arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())
        except OSError as err:
            raise DatasetError(f"{path} is not a readable image ({err}); remove it from {data_dir}") from err
        out[i] = arr.unsqueeze(0) if channels == 1 else arr.permute(2, 0, 1)
    return ImageData(out, None, "folder", f"{len(files)} images under {data_dir}")


def load_dataset(name: str = "mnist", image_size: int = 32, data_dir: str | Path | None = None, split: str = "train",
                 source: str = "auto", limit: int | None = None, device: torch.device | str = "cpu",
                 channels: int = 3) -> ImageData:
    """Load a dataset once as a pre-resized uint8 tensor on ``device``.

    Args:
        name: ``"mnist"``, ``"fashion-mnist"`` or ``"folder"`` (an image folder given by ``data_dir``).
        image_size: 32 or 64; images are resized once here.
        data_dir: folder with the four IDX files (or torchvision's layout), or the image folder for ``"folder"``.
        split: ``"train"`` or ``"test"``.
        source: ``"auto"``, ``"full"`` or ``"subset"`` (see the module docstring).
        limit: keep only the first ``limit`` images.
        device: where the tensor lives (the training device).
        channels: for ``"folder"`` only: 3 (RGB) or 1 (grayscale).
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}: use one of {', '.join(DATASETS)}")
    if image_size not in (32, 64):
        raise ValueError(f"image_size={image_size} is not supported: use 32 or 64")
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}: use 'train' or 'test'")
    if source not in SOURCES:
        raise ValueError(f"source={source!r}: use one of {', '.join(SOURCES)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit={limit} must be at least 1")
    data_dir = Path(data_dir).expanduser() if data_dir is not None else None
    if name == "folder":
        return _load_folder(data_dir, image_size, limit, channels).to(device)
    if data_dir is not None and not data_dir.is_dir():
        raise DatasetError(f"data_dir {data_dir} does not exist. " + _OFFLINE_HELP)

    found = None if source == "subset" else _load_idx(name, split, data_dir)
    if found is None and data_dir is not None and source != "subset":
        raise DatasetError(f"No {split} IDX files for {name} in {data_dir} (looked for {split if split == 'train' else 't10k'}"
                           f"-images-idx3-ubyte[.gz] and -labels-idx1-ubyte[.gz], also in {data_dir}/"
                           f"{_TORCHVISION_DIRS[name]}/raw). " + _OFFLINE_HELP)
    if found is None and source == "full":
        found = _download(name, split)
    elif found is None and source == "auto":
        try:
            found = _download(name, split)
        except DatasetError as err:
            reason = str(err.__cause__ or err).splitlines()[0][:120]
            print(f"Could not download {name} ({reason}). Using the real subset shipped in data/ instead "
                  f"(9,000 train / 1,000 test images). For the full dataset offline, see load_dataset's data_dir.")
    if found is None:
        found = _load_subset(name, split)
    images, labels, where = found
    if limit:
        images, labels = images[:limit], labels[:limit]
    tensor = resize_uint8(torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1), image_size)
    return ImageData(tensor, torch.from_numpy(labels.astype(np.int64)), name, where).to(device)
