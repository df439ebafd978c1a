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
  Transparent images (RGBA, LA, palette or grey with a transparent colour) are composited onto a flat
  ``background`` (white by default), greyscale becomes RGB when ``channels=3``, 16-bit PNGs are scaled to 8 bits.

Colour faces:

* ``name="emoji-faces"``: 1,789 real 64x64 RGB emoji faces and people (Twemoji and Noto Emoji, on white),
  shipped in ``data/emoji_faces.npz`` (built by ``tools/build_faces_dataset.py``), offline. Labels are the
  emoji subcategory (``ImageData.label_names``, e.g. 'face-smiling', 'person-role'); ``ImageData.attributes``
  holds per-image flags such as smiling, glasses, hat, woman, man, skin_tone_1..5 (``attribute_names``).
* ``name="celeba"``: CelebA's aligned faces (``img_align_celeba/``), centre-cropped to a square and resized as in
  the PyTorch DCGAN tutorial, with its 40 attributes and train/test partition when their files sit beside the
  images. Found under ``data_dir`` (or ``data/celeba/``), else downloaded by torchvision (Google Drive, often
  over quota: the error then says how to use a manually downloaded copy).
"""
from __future__ import annotations

import gzip
import os
import re
import socket
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .models import SUPPORTED_SIZES
from .progress import progress_mode

# DCGAN_DATA_DIR moves the course's data folder (shipped subsets, downloads, cache); empty counts as unset
REPO_DATA_DIR = Path(os.environ.get("DCGAN_DATA_DIR") or Path(__file__).resolve().parent.parent / "data")
DATASETS = ("mnist", "fashion-mnist", "folder", "emoji-faces", "celeba")
SOURCES = ("auto", "full", "subset")
CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
}
# The colour faces' classes, for conditional training and the evaluation classifier: what kind of emoji (a face,
# or a person, a person gesturing, a person in a role: hats, uniforms) in which colour (the default yellow or one of
# the five skin tones). Telling them apart needs both shape (hands, hats) and colour.
FACE_KINDS = ("person", "person-gesture", "person-role")
FACE_TONES = ("yellow", "tone 1", "tone 2", "tone 3", "tone 4", "tone 5")
CLASS_NAMES["emoji-faces"] = ["emoji face"] + [f"{k}, {t}" for k in FACE_KINDS for t in FACE_TONES]
LABELLED_DATASETS = tuple(CLASS_NAMES)  # datasets whose images have a class: conditional GANs, evaluation
_SUBSET_FILES = {"mnist": "mnist_subset.npz", "fashion-mnist": "fashion_mnist_subset.npz"}
_TORCHVISION_DIRS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_SYSTEM_DIRS = {"fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")]}
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
EMOJI_FACES_FILE = "emoji_faces.npz"
CELEBA_FOLDER = "img_align_celeba"
_CELEBA_SPLITS = {"train": 0, "test": 2}  # list_eval_partition: 0 train, 1 valid (unused here), 2 test
_CELEBA_HELP = (
    "CelebA's Google Drive download often fails (daily quota, or no internet). Download img_align_celeba.zip "
    "yourself (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, or a mirror such as Kaggle's "
    "'celeba-dataset'), unzip it, and pass the folder that holds img_align_celeba/ (or that folder itself) as "
    "data_dir: load_dataset('celeba', 64, data_dir=...) (CLI: --dataset celeba --data-dir DIR); put "
    "list_eval_partition.txt and list_attr_celeba.txt (.txt or .csv) next to img_align_celeba/ for the "
    "train/test split and the attributes. --dataset folder --data-dir .../img_align_celeba works too. Offline "
    "colour faces ship with the course: load_dataset('emoji-faces') (CLI: --dataset emoji-faces)."
)
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
    """Images as uint8 (N, C, H, W) on one device, with optional int64 labels.

    Optional, for datasets that have them (``emoji-faces``, ``celeba``): ``label_names`` (what each label
    index means, e.g. emoji subcategories), and ``attributes``, a bool (N, K) tensor of per-image flags named
    by ``attribute_names`` (e.g. 'smiling', 'glasses'); :meth:`attribute` returns one column. These are what
    the DCGAN paper's latent arithmetic needs ("smiling woman - neutral woman + neutral man").
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    name: str
    origin: str  # where the images came from, in words (e.g. 'shipped subset mnist_subset.npz')
    attributes: torch.Tensor | None = None  # bool (N, K), or None
    attribute_names: list[str] | None = None  # K names, one per column of attributes
    label_names: list[str] | None = None  # the meaning of each label index, when not in CLASS_NAMES

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
        """The names of ``labels`` when they are the dataset's classes (MNIST, FashionMNIST; for the emoji
        faces ``labels`` are subcategories, see ``label_names``, and their classes come from :func:`class_labels`)."""
        return None if self.label_names else CLASS_NAMES.get(self.name)

    def attribute(self, name: str) -> torch.Tensor:
        """The bool (N,) column of attribute ``name`` (e.g. ``data.images[data.attribute('smiling')]``)."""
        if self.attributes is None or not self.attribute_names:
            raise KeyError(f"{self.name} has no attributes")
        if name not in self.attribute_names:
            raise KeyError(f"No attribute {name!r} in {self.name}: use one of {', '.join(self.attribute_names)}")
        return self.attributes[:, self.attribute_names.index(name)]

    def to(self, device: torch.device | str) -> "ImageData":
        labels = None if self.labels is None else self.labels.to(device)
        attributes = None if self.attributes is None else self.attributes.to(device)
        return replace(self, images=self.images.to(device), labels=labels, attributes=attributes)

    def batch(self, index: torch.Tensor | slice) -> torch.Tensor:
        """Images at ``index`` as float32 in [-1, 1]: the only per-step data work."""
        return self.images[index].float().mul_(2 / 255).sub_(1)

    def __repr__(self) -> str:
        extra = f", {len(self.attribute_names)} attributes" if self.attribute_names else ""
        return (f"ImageData({self.name}: {len(self)} images, {self.channels}x{self.image_size}x{self.image_size}, "
                f"{self.images.dtype} on {self.images.device}{extra}; from {self.origin})")


def class_labels(data: ImageData) -> torch.Tensor:
    """Each image's class, indexing ``CLASS_NAMES[data.name]``: the dataset's own labels, or for ``emoji-faces``
    its kind of emoji x colour (from the subcategory labels and the skin-tone attributes)."""
    if data.name not in LABELLED_DATASETS or data.labels is None:
        raise ValueError(f"{data.name} images have no classes: class labels exist for {', '.join(LABELLED_DATASETS)}")
    if data.name != "emoji-faces":
        return data.labels
    subcategory = [data.label_names[i] for i in data.labels.tolist()]
    kind = torch.tensor([FACE_KINDS.index(s) if s in FACE_KINDS else -1 for s in subcategory])
    tone = torch.zeros(len(data), dtype=torch.long)
    for t in range(1, 6):
        tone[data.attribute(f"skin_tone_{t}").cpu()] = t
    return torch.where(kind < 0, 0, 1 + kind * len(FACE_TONES) + tone).to(data.labels.device)


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


MAX_IDX_BYTES = 1 << 30  # 1 GiB: 20x full MNIST's training images; a header or a gzip claiming more is refused


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the original MNIST format), gzipped or not.

    The header's shape is checked before any data is read: every dimension at least 1, at most
    :data:`MAX_IDX_BYTES` in all, and (uncompressed) the file's length; a gzip is decompressed only up to the
    declared size plus one byte, so a small file that would expand to gigabytes is refused quickly.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    redownload = "delete it and download it again"
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != 0x08 or not 1 <= head[3] <= 4:
                raise DatasetError(f"{path} is not an IDX file of unsigned bytes; {redownload}")
            dims = f.read(4 * head[3])
            if len(dims) < 4 * head[3]:
                raise DatasetError(f"{path} is truncated inside its header; {redownload}")
            shape = tuple(int.from_bytes(dims[4 * i: 4 * i + 4], "big") for i in range(head[3]))
            expected = int(np.prod(shape, dtype=np.int64)) if all(shape) else 0
            if not expected:
                raise DatasetError(f"{path} declares an empty array (shape {shape}): every dimension must be at "
                                   f"least 1; {redownload}")
            if expected > MAX_IDX_BYTES:
                raise DatasetError(f"{path} declares {expected:,} bytes of data (shape {shape}), more than the "
                                   f"{MAX_IDX_BYTES:,} an MNIST-like file can need; {redownload}")
            offset = 4 + 4 * head[3]
            size = os.fstat(f.fileno()).st_size - offset if opener is open else None
            raw = b"" if size is not None and size != expected else f.read(expected + 1)  # a longer gzip stops here
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DatasetError(f"{path} is unreadable or corrupt ({err}); {redownload}") from err
    found = size if size is not None else len(raw)
    if found < expected:
        raise DatasetError(f"{path} is truncated: its header declares {expected:,} bytes of data (shape {shape}), "
                           f"it holds {found:,}; {redownload}")
    if found > expected:
        raise DatasetError(f"{path} does not match its header: it declares {expected:,} bytes of data (shape "
                           f"{shape}) and holds more; {redownload}")
    return np.frombuffer(raw, np.uint8).reshape(shape).copy()


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


_DOWNLOAD_FAILED: set[str] = set()


def _download_reason(err: Exception) -> str:
    """Why a torchvision download failed, in a few words (its own first line is often just 'Error downloading X:')."""
    lines = [line.strip() for line in str(err.__cause__ or err).splitlines() if line.strip()]
    text = " ".join(lines)
    if any(word in text for word in ("urlopen error", "Name or service not known", "Temporary failure",
                                     "Network is unreachable", "No address", "timed out", "Connection")):
        return "no network connection"
    first = lines[0] if lines else type(err).__name__
    return first.rstrip(":") if len(first) > 25 else f"{first.rstrip(':')}: no network connection?"


def _load_subset(name: str, split: str) -> tuple[np.ndarray, np.ndarray, str]:
    path = REPO_DATA_DIR / _SUBSET_FILES[name]
    if not path.is_file():
        raise DatasetError(f"The shipped subset {path} is missing; restore it with 'git checkout -- data/' or set "
                           f"DCGAN_DATA_DIR to the course's data folder")
    with np.load(path) as arrays:
        return arrays[f"{split}_images"], arrays[f"{split}_labels"], f"shipped subset {path.name}"


def _background_rgb(background: int | tuple[int, int, int]) -> tuple[int, int, int]:
    rgb = (background,) * 3 if isinstance(background, (int, np.integer)) else tuple(background)
    if len(rgb) != 3 or not all(0 <= int(v) <= 255 for v in rgb):
        raise ValueError(f"background={background!r}: use a grey level 0..255 or an (r, g, b) tuple of them")
    return tuple(int(v) for v in rgb)


def _to_8bit(img, channels: int, background: tuple[int, int, int]):
    """A PIL image of any mode as 8-bit 'RGB' (channels=3) or 'L' (channels=1).

    16-bit greyscale (modes 'I;16*', and 'I' holding values above 255) is scaled by 1/257, so 65535 -> 255 and
    32768 -> 128 (PIL's own convert would clip it to white). Transparency (RGBA, LA, PA, or a palette, grey or
    RGB image with a transparent colour) is composited onto ``background``:
    ``rgb * alpha + background * (1 - alpha)`` with alpha in [0, 1], so the colour of fully transparent pixels,
    which is arbitrary, never shows.
    """
    from PIL import Image

    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        values = np.asarray(img).astype(np.float64)
        if img.mode.startswith("I;16") or (img.mode == "I" and values.max(initial=0) > 255):
            values = values / 257
        elif img.mode == "F" and values.max(initial=0) <= 1:
            values = values * 255
        img = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:] / 255.0
        rgb = rgba[..., :3] * alpha + np.array(background, dtype=np.float32) * (1.0 - alpha)
        img = Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), "RGB")
    return img.convert("L" if channels == 1 else "RGB")


LARGE_IMAGE_PIXELS = 4096 * 4096  # beyond this an image is first shrunk by a whole factor, in 8 bits


def _shrink_large(img, image_size: int):
    """An image of more than :data:`LARGE_IMAGE_PIXELS` (a 9400x9400 PNG) reduced at once by a whole factor, in
    8 bits (premultiplied by its alpha when transparent, so hidden colours do not bleed), to a short side of at
    least twice ``image_size``: converting and compositing it then take megabytes, not gigabytes. Smaller images
    are returned as they are (the usual path, unchanged)."""
    factor = min(img.size) // (2 * image_size)
    if img.width * img.height <= LARGE_IMAGE_PIXELS or factor < 2:
        return img
    if img.mode == "P" or "transparency" in img.info:
        img = img.convert("RGBA")
    premultiplied = {"RGBA": "RGBa", "LA": "La"}.get(img.mode)
    try:
        if premultiplied:
            return img.convert(premultiplied).reduce(factor).convert(img.mode)
        return img.reduce(factor)
    except ValueError:  # a mode Pillow cannot reduce (16-bit): decoded as it is
        return img


def _read_images(files: list[Path], image_size: int, channels: int, background: int | tuple[int, int, int],
                 folder: Path) -> torch.Tensor:
    """Decode, centre-crop to a square and resize ``files`` once: uint8 (N, channels, image_size, image_size).

    The square crop then resize is what the PyTorch DCGAN tutorial's ``Resize(s)`` + ``CenterCrop(s)`` does.
    """
    from PIL import Image, ImageOps
    from tqdm.auto import tqdm

    if channels not in (1, 3):
        raise ValueError(f"channels={channels}: use 3 (RGB) or 1 (grayscale)")
    background = _background_rgb(background)
    out = torch.empty(len(files), channels, image_size, image_size, dtype=torch.uint8)
    for i, path in enumerate(tqdm(files, desc=f"resizing {len(files)} images once", leave=False,
                                  disable=progress_mode() != "bar")):  # no bar redrawn into logs
        try:
            with warnings.catch_warnings():  # PIL only warns between 1x and 2x its pixel limit: refuse those too
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(path)
            with img:
                if img.format == "JPEG":
                    img.draft(None, (image_size, image_size))  # decode JPEGs at a reduced scale >= image_size
                img = _to_8bit(ImageOps.exif_transpose(_shrink_large(img, image_size)), channels, background)
                side = min(img.size)
                left, top = (img.width - side) // 2, (img.height - side) // 2
                img = img.crop((left, top, left + side, top + side)).resize((image_size, image_size),
                                                                            Image.Resampling.BILINEAR)
                arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise DatasetError(f"{path} is too large to decode safely ({err}); shrink it or remove it from "
                               f"{folder}") from err
        except (OSError, ValueError, SyntaxError) as err:  # PIL raises all three on broken files
            raise DatasetError(f"{path} is not a readable image ({err}); remove it from {folder}") from err
        out[i] = arr.unsqueeze(0) if channels == 1 else arr.permute(2, 0, 1)
    return out


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file())


def _load_folder(data_dir: Path | None, image_size: int, limit: int | None, channels: int,
                 background: int | tuple[int, int, int] = 255) -> ImageData:
    """Every image under ``data_dir`` (recursively), centre-cropped, resized, transparency on ``background``.

    ``background`` (default 255, white) is the grey level, or (r, g, b), behind transparent pixels.
    """
    if data_dir is None:
        raise DatasetError("name='folder' needs data_dir, the folder of images to train on (CLI: --data-dir); for "
                           "faces, unzip e.g. CelebA's img_align_celeba there")
    if not Path(data_dir).is_dir():
        where = "" if Path(data_dir).is_absolute() else f" (looked for {Path(data_dir).absolute()}: a relative " \
                "folder is found from the current folder)"
        what = "is a file, not a folder" if Path(data_dir).exists() else "does not exist"
        raise DatasetError(f"The image folder {data_dir} {what}{where}: pass the folder of images as data_dir "
                           "(CLI: --data-dir)")
    files = _image_files(data_dir)
    if not files:
        raise DatasetError(f"No images ({', '.join(sorted(_IMAGE_SUFFIXES))}) found under {data_dir}")
    files = files[:limit] if limit else files
    out = _read_images(files, image_size, channels, background, data_dir)
    return ImageData(out, None, "folder", f"{len(files)} images under {data_dir}")


def _gray(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) RGB -> (N, 1, H, W) luma, with PIL's weights (ITU-R 601-2)."""
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (images.float() * weights).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)


def _load_emoji_faces(data_dir: Path | None, image_size: int, split: str, limit: int | None,
                      channels: int) -> ImageData:
    """The shipped colour emoji faces (``data/emoji_faces.npz``), one split, with subcategory labels and attributes."""
    path = REPO_DATA_DIR / EMOJI_FACES_FILE
    if data_dir is not None:
        path = data_dir if data_dir.suffix == ".npz" else data_dir / EMOJI_FACES_FILE
    if not path.is_file():
        raise DatasetError(f"{path} is missing; restore it with 'git checkout -- data/' or rebuild it with "
                           f"'python tools/build_faces_dataset.py' (needs npm)")
    if channels not in (1, 3):
        raise ValueError(f"channels={channels}: use 3 (RGB) or 1 (grayscale)")
    with np.load(path) as arrays:
        keep = arrays["is_test"] == (split == "test")
        images, labels = arrays["images"][keep], arrays["labels"][keep]
        attributes = arrays["attributes"][keep]
        attribute_names = [str(a) for a in arrays["attribute_names"]]
        label_names = [str(s) for s in arrays["subcategories"]]
    if limit:
        images, labels, attributes = images[:limit], labels[:limit], attributes[:limit]
    tensor = resize_uint8(torch.from_numpy(np.ascontiguousarray(images)), image_size)
    if channels == 1:
        tensor = _gray(tensor)
    return ImageData(tensor, torch.from_numpy(labels.astype(np.int64)), "emoji-faces",
                     f"shipped {path.name} ({split} split, Twemoji + Noto Emoji on white)",
                     torch.from_numpy(attributes.astype(bool)), attribute_names, label_names)


def _celeba_folder(root: Path) -> Path | None:
    """The folder of CelebA's aligned images under ``root``: root/img_align_celeba, root/celeba/img_align_celeba
    (torchvision's layout), or root itself when it holds the images."""
    for folder in (root / CELEBA_FOLDER, root / "celeba" / CELEBA_FOLDER, root):
        if folder.is_dir() and (folder.name == CELEBA_FOLDER or any(
                p.suffix.lower() in _IMAGE_SUFFIXES for p in folder.iterdir())):
            return folder
    return None


def _celeba_table(folder: Path, root: Path, stem: str) -> tuple[list[list[str]], Path] | None:
    """Rows of CelebA's ``stem``.txt (space-separated) or Kaggle's ``stem``.csv, next to or above ``folder``, and
    the file they come from."""
    for where in dict.fromkeys((folder, folder.parent, root, folder.parent.parent)):
        for suffix in (".txt", ".csv"):
            path = where / f"{stem}{suffix}"
            if path.is_file():
                try:
                    text = path.read_text()
                except (OSError, UnicodeDecodeError) as err:
                    raise DatasetError(f"{path} is not a readable text table ({err}); restore CelebA's original "
                                       "file, or remove it") from err
                return [re.split(r"[,\s]+", line.strip()) for line in text.splitlines() if line.strip()], path
    return None


def _load_celeba_folder(folder: Path, root: Path, image_size: int, split: str, limit: int | None, channels: int,
                        background: int | tuple[int, int, int]) -> ImageData:
    files = _image_files(folder)
    if not files:
        raise DatasetError(f"No images found under {folder}. " + _CELEBA_HELP)
    partition = _celeba_table(folder, root, "list_eval_partition")
    if partition is not None:
        part = {row[0]: int(row[1]) for row in partition[0] if len(row) > 1 and row[1].isdigit()}
        files = [f for f in files if part.get(f.name) == _CELEBA_SPLITS[split]]
        if not files:
            raise DatasetError(f"No {split} images of list_eval_partition under {folder}. " + _CELEBA_HELP)
    elif split == "test":
        raise DatasetError(f"split='test' needs CelebA's list_eval_partition.txt (or .csv) next to {folder}; "
                           "without it every image is training data")
    files = files[:limit] if limit else files
    attributes = attribute_names = None
    found = _celeba_table(folder, root, "list_attr_celeba")
    if found is not None:
        table, path = found
        if table and len(table[0]) == 1:  # the .txt starts with the number of images
            table = table[1:]
        try:
            count = len(table[1]) - 1
            attribute_names = table[0][-count:]
            rows = {row[0]: [int(v) > 0 for v in row[1:]] for row in table[1:]}
            if any(len(values) != count for values in rows.values()):
                raise ValueError("its rows have different numbers of values")
        except (IndexError, ValueError) as err:
            raise DatasetError(f"{path} is not CelebA's attribute table (a header of names, then one row of -1/1 "
                               f"values per image; {err}): restore the original file, or remove it to train "
                               "without attributes") from err
        if all(f.name in rows for f in files):
            attributes = torch.tensor([rows[f.name] for f in files], dtype=torch.bool).view(len(files), count)
        else:
            attribute_names = None
    images = _read_images(files, image_size, channels, background, folder)
    where = f"{len(files)} CelebA images under {folder}" + (f" ({split} partition)" if partition else "")
    return ImageData(images, None, "celeba", where, attributes, attribute_names)


def _download_celeba() -> Path:
    """torchvision's CelebA download into data/celeba/; any failure becomes a DatasetError, quickly."""
    try:
        from torchvision import datasets

        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(60)  # a silent network must fail, not hang
        try:
            datasets.CelebA(str(REPO_DATA_DIR), split="all", target_type=[], download=True)
        finally:
            socket.setdefaulttimeout(previous)
    except Exception as err:  # torchvision/gdown raise RuntimeError, OSError, FileURLRetrievalError, ...
        raise DatasetError(f"Downloading CelebA with torchvision failed ({type(err).__name__}: {err}). "
                           + _CELEBA_HELP) from err
    return REPO_DATA_DIR / "celeba" / CELEBA_FOLDER


def _load_celeba(data_dir: Path | None, image_size: int, split: str, source: str, limit: int | None,
                 channels: int, background: int | tuple[int, int, int]) -> ImageData:
    if data_dir is not None:
        folder = _celeba_folder(data_dir) if data_dir.is_dir() else None
        if folder is None:
            raise DatasetError(f"No {CELEBA_FOLDER}/ folder of images in {data_dir}. " + _CELEBA_HELP)
        return _load_celeba_folder(folder, data_dir, image_size, split, limit, channels, background)
    if source == "subset":
        raise DatasetError("CelebA has no shipped subset. " + _CELEBA_HELP)
    folder = REPO_DATA_DIR / "celeba" / CELEBA_FOLDER  # torchvision's layout, from an earlier download
    if not folder.is_dir():
        folder = _download_celeba()
    return _load_celeba_folder(folder, REPO_DATA_DIR, image_size, split, limit, channels, background)


def load_dataset(name: str = "mnist", image_size: int = 32, data_dir: str | Path | None = None, split: str = "train",
                 source: str = "auto", limit: int | None = None, device: torch.device | str = "cpu",
                 channels: int = 3, background: int | tuple[int, int, int] = 255) -> ImageData:
    """Load a dataset once as a pre-resized uint8 tensor on ``device``.

    Args:
        name: ``"mnist"``, ``"fashion-mnist"``, ``"folder"`` (an image folder given by ``data_dir``),
            ``"emoji-faces"`` (shipped colour faces, 64x64 native) or ``"celeba"`` (see the module docstring).
        image_size: 32 or 64; images are resized once here.
        data_dir: folder with the four IDX files (or torchvision's layout), or the image folder for ``"folder"``,
            or the folder holding ``img_align_celeba/`` for ``"celeba"`` (or another ``emoji_faces.npz``).
        split: ``"train"`` or ``"test"``.
        source: ``"auto"``, ``"full"`` or ``"subset"`` (see the module docstring).
        limit: keep only the first ``limit`` images.
        device: where the tensor lives (the training device).
        channels: for ``"folder"``, ``"celeba"`` and ``"emoji-faces"``: 3 (RGB) or 1 (grayscale).
        background: for ``"folder"`` and ``"celeba"``: the grey level 0..255 (or an (r, g, b) tuple) that
            transparent pixels are composited onto; 255, white, by default (emoji-faces were built on white).
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}: use one of {', '.join(DATASETS)}")
    if image_size not in SUPPORTED_SIZES:
        raise ValueError(f"image_size={image_size} is not supported: use {' or '.join(map(str, SUPPORTED_SIZES))}")
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}: use 'train' or 'test'")
    if source not in SOURCES:
        raise ValueError(f"source={source!r}: use one of {', '.join(SOURCES)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit={limit} must be at least 1")
    data_dir = Path(data_dir).expanduser() if data_dir is not None else None
    if data_dir is None and os.environ.get("DCGAN_DATA_DIR") and not REPO_DATA_DIR.is_dir():
        what = "is a file, not a folder" if REPO_DATA_DIR.exists() else "does not exist"
        raise DatasetError(f"DCGAN_DATA_DIR={os.environ['DCGAN_DATA_DIR']} {what}: point it at the course's data "
                           "folder (the one holding mnist_subset.npz), or unset it")
    if name == "folder":
        return _load_folder(data_dir, image_size, limit, channels, background).to(device)
    if name == "emoji-faces":
        return _load_emoji_faces(data_dir, image_size, split, limit, channels).to(device)
    if name == "celeba":
        return _load_celeba(data_dir, image_size, split, source, limit, channels, background).to(device)
    if data_dir is not None and not data_dir.is_dir():
        raise DatasetError(f"data_dir {data_dir} does not exist. " + _OFFLINE_HELP)

    found = None if source == "subset" else _load_idx(name, split, data_dir)
    if found is None and data_dir is not None and source != "subset":
        raise DatasetError(f"No {split} IDX files for {name} in {data_dir} (looked for {split if split == 'train' else 't10k'}"
                           f"-images-idx3-ubyte[.gz] and -labels-idx1-ubyte[.gz], also in {data_dir}/"
                           f"{_TORCHVISION_DIRS[name]}/raw). " + _OFFLINE_HELP)
    if found is None and source == "full":
        found = _download(name, split)
    elif found is None and source == "auto" and name not in _DOWNLOAD_FAILED:
        try:
            found = _download(name, split)
        except DatasetError as err:
            _DOWNLOAD_FAILED.add(name)  # once per dataset and process: no retry, no repeated message
            print(f"Could not download {name} ({_download_reason(err)}). Using the real subset shipped in data/ "
                  "instead (9,000 train / 1,000 test images). For the full dataset offline, see load_dataset's "
                  "data_dir.")
    if found is None:
        found = _load_subset(name, split)
    images, labels, where = found
    if limit:
        images, labels = images[:limit], labels[:limit]
    if images.shape[1] != images.shape[2]:  # never stretch: keep the centre square, as the folder loader does
        h, w = images.shape[1:]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        images = images[:, top:top + side, left:left + side]
        print(f"{name} images from {where} are {h}x{w}, not square: using their centre {side}x{side} square")
    tensor = resize_uint8(torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1), image_size)
    return ImageData(tensor, torch.from_numpy(labels.astype(np.int64)), name, where).to(device)
