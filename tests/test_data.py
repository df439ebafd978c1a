import gzip

import numpy as np
import pytest
import torch
from PIL import Image

from dcgan_utils import DatasetError, load_dataset
from dcgan_utils import data as data_module


def _write_idx(folder, prefix, images, labels, gz):
    folder.mkdir(parents=True, exist_ok=True)
    header_i = bytes([0, 0, 8, 3]) + b"".join(int(n).to_bytes(4, "big") for n in images.shape)
    header_l = bytes([0, 0, 8, 1]) + int(len(labels)).to_bytes(4, "big")
    for kind, payload in (("images-idx3-ubyte", header_i + images.tobytes()),
                          ("labels-idx1-ubyte", header_l + labels.tobytes())):
        path = folder / f"{prefix}-{kind}{'.gz' if gz else ''}"
        path.write_bytes(gzip.compress(payload) if gz else payload)


def _fake_mnist(n=20, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("size", [32, 64])
def test_shipped_subset_is_real_resized_uint8(name, size):
    train = load_dataset(name, size, source="subset")
    test = load_dataset(name, size, source="subset", split="test")
    assert (len(train), len(test)) == (9000, 1000)
    assert train.images.dtype == torch.uint8 and train.images.shape == (9000, 1, size, size)
    assert sorted(train.labels.unique().tolist()) == list(range(10))
    assert len(train.class_names) == 10
    # real images: mostly black background with bright strokes, not noise
    mean = train.images.float().mean().item()
    assert 30 < mean < 110
    assert (train.images == 0).float().mean() > 0.3
    batch = train.batch(torch.arange(8))
    assert batch.dtype == torch.float32 and batch.min() >= -1 and batch.max() <= 1
    assert batch.min() == -1  # black background maps to -1


def test_resize_keeps_the_picture():
    small = load_dataset("mnist", 32, source="subset", limit=50)
    big = load_dataset("mnist", 64, source="subset", limit=50)
    down = torch.nn.functional.avg_pool2d(big.images.float(), 2)
    assert (down - small.images.float()).abs().mean() < 12  # same digits, up to interpolation


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_idx_folder_gzipped_or_not(tmp_path, gz, layout):
    images, labels = _fake_mnist()
    folder = tmp_path if layout == "flat" else tmp_path / "MNIST" / "raw"
    _write_idx(folder, "train", images, labels, gz)
    data = load_dataset("mnist", 32, data_dir=tmp_path)
    assert len(data) == 20 and data.labels.tolist() == labels.tolist()
    assert "IDX files" in data.origin
    with pytest.raises(DatasetError, match="No test IDX files"):
        load_dataset("mnist", 32, data_dir=tmp_path, split="test")


def test_corrupt_and_truncated_idx_files_say_what_to_do(tmp_path):
    images, labels = _fake_mnist()
    _write_idx(tmp_path, "train", images, labels, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetError, match="truncated.*download it again"):
        load_dataset("mnist", 32, data_dir=tmp_path)
    path.write_bytes(b"not an idx file at all")
    with pytest.raises(DatasetError, match="not an IDX file"):
        load_dataset("mnist", 32, data_dir=tmp_path)
    gz = tmp_path / "train-images-idx3-ubyte.gz"
    path.unlink()
    gz.write_bytes(b"\x1f\x8b broken gzip")
    with pytest.raises(DatasetError, match="corrupt"):
        load_dataset("mnist", 32, data_dir=tmp_path)


def test_failed_download_explains_offline_options(tmp_path, monkeypatch):
    from torchvision import datasets

    def no_network(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: Name or service not known")

    monkeypatch.setattr(data_module, "REPO_DATA_DIR", tmp_path)
    monkeypatch.setattr(data_module, "_SYSTEM_DIRS", {})
    monkeypatch.setattr(datasets, "MNIST", no_network)
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", 32, source="full")
    assert "Downloading mnist with torchvision failed" in str(err.value)
    assert "source='subset'" in str(err.value) and "data_dir" in str(err.value)


def test_auto_falls_back_to_the_subset_when_offline(tmp_path, monkeypatch, capsys):
    from torchvision import datasets

    monkeypatch.setattr(data_module, "_load_idx", lambda *args: None)  # as if no full copy were on disk
    monkeypatch.setattr(data_module, "_DOWNLOAD_FAILED", set())
    monkeypatch.setattr(datasets, "MNIST", lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried x, got:\n<urlopen error [Errno -3] "
                     "Temporary failure in name resolution>")))
    data = load_dataset("mnist", 32, source="auto", limit=10)
    assert "shipped subset" in data.origin and len(data) == 10
    out = capsys.readouterr().out
    assert "Using the real subset shipped in data/" in out
    assert "Could not download mnist (no network connection)" in out  # a reason, not torchvision's empty one
    load_dataset("mnist", 32, split="test", source="auto", limit=10)  # the same process: said once, not again
    assert capsys.readouterr().out == ""


def test_missing_subset_file_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "REPO_DATA_DIR", tmp_path)
    with pytest.raises(DatasetError, match="git checkout -- data/"):
        load_dataset("mnist", 32, source="subset")


def test_image_folder_is_centre_cropped_and_resized(tmp_path):
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(80, 60), (50, 70), (64, 64)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"face{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    data = load_dataset("folder", 64, data_dir=tmp_path)
    assert data.images.shape == (3, 3, 64, 64) and data.labels is None
    gray = load_dataset("folder", 32, data_dir=tmp_path, channels=1, limit=2)
    assert gray.images.shape == (2, 1, 32, 32)


def test_image_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="No images"):
        load_dataset("folder", 64, data_dir=tmp_path)
    with pytest.raises(DatasetError, match="needs data_dir"):
        load_dataset("folder", 64)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="broken.jpg is not a readable image"):
        load_dataset("folder", 64, data_dir=tmp_path)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(name="cifar10"), ValueError, "Unknown dataset 'cifar10': use one of mnist, fashion-mnist, folder"),
    (dict(image_size=28), ValueError, "image_size=28 is not supported: use 32 or 64"),
    (dict(split="val"), ValueError, "split='val'"),
    (dict(source="web"), ValueError, "source='web'"),
    (dict(limit=0), ValueError, "limit=0 must be at least 1"),
    (dict(data_dir="/nonexistent/mnist"), DatasetError, "does not exist"),
])
def test_bad_input_gets_a_clear_error(kwargs, error, message):
    with pytest.raises(error) as err:
        load_dataset(**{"name": "mnist", "image_size": 32, **kwargs})
    assert message in str(err.value)
