"""Colour in the data layer: the shipped emoji faces, transparency and bit depths in the folder loader, CelebA."""
import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dcgan_utils import DatasetError, ImageData, load_dataset
from dcgan_utils import data as data_module

REPO = Path(__file__).resolve().parent.parent
NPZ = REPO / "data" / "emoji_faces.npz"


@pytest.fixture(scope="module")
def npz():
    with np.load(NPZ) as arrays:
        return {k: arrays[k] for k in arrays.files}


def _tool():
    spec = importlib.util.spec_from_file_location("build_faces_dataset", REPO / "tools" / "build_faces_dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_file_has_the_documented_arrays(npz):
    n = len(npz["images"])
    assert 1500 <= n <= 3000 and NPZ.stat().st_size < 8e6
    assert npz["images"].dtype == np.uint8 and npz["images"].shape == (n, 3, 64, 64)
    assert npz["labels"].dtype == np.int64 and npz["labels"].min() == 0
    assert npz["labels"].max() == len(npz["subcategories"]) - 1
    assert {"face-smiling", "face-glasses", "person", "person-role"} <= set(npz["subcategories"])
    assert npz["attributes"].dtype == bool and npz["attributes"].shape == (n, len(npz["attribute_names"]))
    for key in ("names", "vendor", "codepoints", "skin_tone", "is_test"):
        assert len(npz[key]) == n, key
    assert set(npz["vendor"]) == {"twitter", "google"}
    assert set(npz["skin_tone"].tolist()) == {0, 1, 2, 3, 4, 5}
    assert 0.07 < npz["is_test"].mean() < 0.13
    # the split is by emoji: no emoji (in any skin tone or vendor) is on both sides
    assert not set(npz["names"][npz["is_test"]]) & set(npz["names"][~npz["is_test"]])


def test_attributes_match_the_names(npz):
    names = list(npz["attribute_names"])
    column = {a: npz["attributes"][:, names.index(a)] for a in names}
    emoji = list(npz["names"])
    for a in ("smiling", "glasses", "hat", "tears", "open_mouth", "woman", "man", "neutral", "person"):
        assert column[a].sum() >= 8, a
    assert column["smiling"][emoji.index("grinning")] and not column["smiling"][emoji.index("neutral_face")]
    assert column["glasses"][emoji.index("sunglasses")] and column["hat"][emoji.index("face_with_cowboy_hat")]
    assert column["tears"][emoji.index("sob")] and column["neutral"][emoji.index("neutral_face")]
    woman = emoji.index("woman")
    assert column["woman"][woman] and not column["man"][woman]  # whole words: 'woman' is not 'man'
    for tone in range(1, 6):
        assert (column[f"skin_tone_{tone}"] == (npz["skin_tone"] == tone)).all()
    assert column["person"][npz["skin_tone"] > 0].all()  # only people have skin tones


def test_images_are_composited_on_white(npz):
    images = npz["images"]
    top_corners = images[:, :, 0, [0, -1]].reshape(len(images), -1)
    assert (top_corners == 255).all(axis=1).mean() > 0.97  # busts may touch the bottom edge, never the top
    assert images[:, :, :2].mean() > 240  # the top rows are background: no black or orange halo
    middle = images[:, :, 24:40, 24:40].astype(float)
    assert middle.mean() < 200 and middle.std() > 30  # and the faces themselves are there, in colour


@pytest.mark.parametrize("size", [32, 64])
def test_emoji_faces_load_both_splits(npz, size):
    train = load_dataset("emoji-faces", size)
    test = load_dataset("emoji-faces", size, split="test")
    assert len(train) + len(test) == len(npz["images"]) and len(test) == npz["is_test"].sum()
    for data in (train, test):
        assert data.images.dtype == torch.uint8 and data.images.shape[1:] == (3, size, size)
        assert data.labels.dtype == torch.int64 and 0 <= data.labels.min() and data.labels.max() < len(
            data.label_names)
        assert data.attributes.dtype == torch.bool and data.attributes.shape == (len(data), 23)
        assert data.attribute_names == list(npz["attribute_names"]) and data.class_names is None
    assert sorted(test.labels.unique().tolist()) != [] and len(train.labels.unique()) == len(train.label_names)
    assert train.attribute("smiling").sum() > 20 and train.attribute("glasses").any()
    with pytest.raises(KeyError, match="use one of"):
        train.attribute("moustache")
    assert "emoji_faces.npz" in train.origin and "23 attributes" in repr(train)


def test_emoji_faces_resize_limit_gray_and_to():
    big = load_dataset("emoji-faces", 64, limit=40)
    small = load_dataset("emoji-faces", 32, limit=40)
    assert (torch.nn.functional.avg_pool2d(big.images.float(), 2) - small.images.float()).abs().mean() < 6
    gray = load_dataset("emoji-faces", 32, limit=40, channels=1)
    assert gray.images.shape == (40, 1, 32, 32) and gray.attributes.shape[0] == 40
    moved = big.to("cpu")
    assert moved.attributes is not None and moved.attribute_names == big.attribute_names
    assert moved.label_names == big.label_names and moved.origin == big.origin
    assert ImageData(big.images, None, "x", "y").attributes is None  # the positional form still works


def test_missing_emoji_file_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "REPO_DATA_DIR", tmp_path)
    with pytest.raises(DatasetError, match="build_faces_dataset.py"):
        load_dataset("emoji-faces", 64)


def test_the_build_tool_composites_and_reads_words():
    tool = _tool()
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = (255, 120, 0)  # garbage colour under alpha 0
    rgba[20:40, 20:40] = (0, 0, 200, 255)
    rgba[0, 0] = (0, 0, 0, 128)  # half-transparent black
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, "PNG")
    out = tool.composite(buffer.getvalue(), 255)
    assert out.shape == (3, 64, 64) and (out[:, 63, 63] == 255).all() and out[:, 30, 30].tolist() == [0, 0, 200]
    assert out[:, 0, 0].tolist() == [127, 127, 127]  # 0 * 128/255 + 255 * 127/255
    entry = dict(name="WOMAN WITH HEADSCARF", short_names=["woman_cook"], category="People & Body")
    row = dict(zip(tool.ATTRIBUTE_NAMES, tool.attributes_of(entry, 3)))
    assert row["woman"] and not row["man"] and row["hat"] and row["skin_tone_3"] and row["neutral"]


# ---- the folder loader: transparency, palettes, greyscale, 16 bits, JPEG -------------------------------------

def _rgba_with_garbage():
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., :3] = (0, 0, 0)  # black under alpha 0: must not show
    rgba[:20, :, :3] = (255, 100, 0)  # orange under alpha 0: must not show either
    rgba[10:30, 10:30] = (0, 0, 255, 255)  # an opaque blue square
    return rgba


def test_folder_rgba_composites_on_the_background(tmp_path):
    Image.fromarray(_rgba_with_garbage(), "RGBA").save(tmp_path / "a.png")
    white = load_dataset("folder", 32, data_dir=tmp_path).images[0]
    assert (white[:, :4, :4] == 255).all() and (white[:, -4:, -4:] == 255).all()  # corners: background
    assert white[:, 16, 16].tolist() == [0, 0, 255]
    grey = load_dataset("folder", 32, data_dir=tmp_path, background=(10, 20, 30)).images[0]
    assert grey[:, 0, 0].tolist() == [10, 20, 30] and grey[:, 31, 31].tolist() == [10, 20, 30]
    gray1 = load_dataset("folder", 32, data_dir=tmp_path, channels=1).images[0]
    assert gray1.shape == (1, 32, 32) and (gray1[:, :4, :4] == 255).all()
    with pytest.raises(ValueError, match="background"):
        load_dataset("folder", 32, data_dir=tmp_path, background=300)


def test_folder_half_transparent_pixels_blend(tmp_path):
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[...] = (0, 0, 0, 51)  # black at 20% opacity on white: 255 * 0.8 = 204
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    image = load_dataset("folder", 64, data_dir=tmp_path).images[0]
    assert (image == 204).all()


def test_folder_palette_with_transparency(tmp_path):
    pal = np.zeros((40, 40), np.uint8)  # index 0: transparent, and its colour is pure red
    pal[10:30, 10:30] = 1  # index 1: opaque green
    img = Image.fromarray(pal, "P")
    img.putpalette([255, 0, 0, 0, 200, 0] + [0] * 762)
    img.save(tmp_path / "p.png", transparency=0)
    assert Image.open(tmp_path / "p.png").mode == "P"
    image = load_dataset("folder", 32, data_dir=tmp_path).images[0]
    assert (image[:, :3, :3] == 255).all() and image[:, 16, 16].tolist() == [0, 200, 0]


def test_folder_la_and_grey_with_a_transparent_value(tmp_path):
    la = np.zeros((32, 32, 2), np.uint8)
    la[8:24, 8:24] = (60, 255)
    Image.fromarray(la, "LA").save(tmp_path / "a_la.png")
    grey = np.full((32, 32), 7, np.uint8)
    grey[8:24, 8:24] = 60
    Image.fromarray(grey, "L").save(tmp_path / "b_grey_trns.png", transparency=7)
    data = load_dataset("folder", 32, data_dir=tmp_path)
    for image in data.images:
        assert (image[:, 0, 0] == 255).all() and (image[:, 16, 16] == 60).all()


def test_folder_greyscale_becomes_three_channels(tmp_path):
    grey = np.tile(np.linspace(0, 255, 48).astype(np.uint8), (48, 1))
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    image = load_dataset("folder", 32, data_dir=tmp_path).images[0]
    assert image.shape == (3, 32, 32)
    assert (image[0] == image[1]).all() and (image[1] == image[2]).all()
    assert image[0, :, 0].float().mean() < 20 and image[0, :, -1].float().mean() > 235


def test_folder_16_bit_png_scales_to_8_bits(tmp_path):
    values = np.full((40, 40), 32768, np.uint16)
    values[:, 20:] = 65535
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")  # PIL reads it as 16-bit
    image = load_dataset("folder", 64, data_dir=tmp_path).images[0].float()
    assert abs(image[:, 32, 5].mean().item() - 128) <= 1  # mid grey, not clipped to white
    assert (image[:, 32, -5] == 255).all()
    one = load_dataset("folder", 32, data_dir=tmp_path, channels=1).images[0].float()
    assert abs(one[0, 16, 2].item() - 128) <= 1


def test_folder_jpeg(tmp_path):
    rgb = np.zeros((90, 120, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[..., 2] = 40
    Image.fromarray(rgb).save(tmp_path / "photo.JPG", quality=95)
    image = load_dataset("folder", 32, data_dir=tmp_path).images[0].float()
    assert abs(image[0].mean().item() - 200) < 4 and image[1].mean() < 6 and abs(image[2].mean().item() - 40) < 5


# ---- CelebA: a local img_align_celeba/, and a download that fails --------------------------------------------

def _fake_celeba(root, count=8, partition=True, attributes=True):
    """``count`` emoji faces as CelebA-shaped 178x218 JPEGs: the face fills the centre square, red bands above
    and below (the part a centre crop removes)."""
    with np.load(NPZ) as arrays:
        faces = arrays["images"][:count].transpose(0, 2, 3, 1)
    folder = root / "img_align_celeba"
    folder.mkdir(parents=True)
    for i, face in enumerate(faces):
        canvas = Image.new("RGB", (178, 218), (255, 0, 0))
        canvas.paste(Image.fromarray(face).resize((178, 178), Image.Resampling.BICUBIC), (0, 20))
        canvas.save(folder / f"{i + 1:06d}.jpg", quality=95)
    if partition:
        (root / "list_eval_partition.txt").write_text(
            "".join(f"{i + 1:06d}.jpg {2 if i >= count - 2 else 0}\n" for i in range(count)))
    if attributes:
        lines = [str(count), "Eyeglasses Smiling"]
        lines += [f"{i + 1:06d}.jpg  {1 if i % 2 else -1} {-1 if i % 3 else 1}" for i in range(count)]
        (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    return faces


def test_celeba_from_a_local_folder(tmp_path):
    faces = _fake_celeba(tmp_path)
    train = load_dataset("celeba", 64, data_dir=tmp_path)
    test = load_dataset("celeba", 32, data_dir=tmp_path, split="test")
    assert train.images.shape == (6, 3, 64, 64) and test.images.shape == (2, 3, 32, 32)
    assert train.name == "celeba" and "train partition" in train.origin
    # centre square, resized: the face comes back and the red bands are gone
    error = (train.images.float() - torch.from_numpy(faces[:6]).permute(0, 3, 1, 2).float()).abs().mean()
    assert error < 8
    assert train.attribute_names == ["Eyeglasses", "Smiling"]
    assert train.attribute("Eyeglasses").tolist() == [False, True, False, True, False, True]
    assert train.attribute("Smiling").tolist() == [True, False, False, True, False, False]
    limited = load_dataset("celeba", 32, data_dir=tmp_path / "img_align_celeba", limit=3)  # the folder itself
    assert len(limited) == 3 and limited.attributes.shape == (3, 2)


def test_celeba_without_partition_file_and_through_the_folder_loader(tmp_path):
    _fake_celeba(tmp_path, count=4, partition=False, attributes=False)
    data = load_dataset("celeba", 32, data_dir=tmp_path)
    assert len(data) == 4 and data.attributes is None
    with pytest.raises(DatasetError, match="list_eval_partition"):
        load_dataset("celeba", 32, data_dir=tmp_path, split="test")
    folder = load_dataset("folder", 32, data_dir=tmp_path / "img_align_celeba")
    assert torch.equal(folder.images, data.images)


def test_celeba_kaggle_csv_layout(tmp_path):
    _fake_celeba(tmp_path, count=4, partition=False, attributes=False)
    (tmp_path / "list_eval_partition.csv").write_text(
        "image_id,partition\n000001.jpg,0\n000002.jpg,1\n000003.jpg,2\n000004.jpg,0\n")
    (tmp_path / "list_attr_celeba.csv").write_text(
        "image_id,Male,Smiling\n000001.jpg,1,-1\n000002.jpg,-1,1\n000003.jpg,1,1\n000004.jpg,-1,-1\n")
    data = load_dataset("celeba", 32, data_dir=tmp_path)
    assert len(data) == 2 and data.attribute("Male").tolist() == [True, False]


@pytest.mark.parametrize("source", ["auto", "full"])
def test_celeba_failed_download_says_how_to_use_a_local_copy(tmp_path, monkeypatch, source):
    from torchvision import datasets

    def over_quota(*args, **kwargs):
        raise RuntimeError("Too many users have viewed or downloaded this file recently")

    monkeypatch.setattr(data_module, "REPO_DATA_DIR", tmp_path)
    monkeypatch.setattr(datasets, "CelebA", over_quota)
    with pytest.raises(DatasetError) as err:
        load_dataset("celeba", 64, source=source)
    message = str(err.value)
    assert "Downloading CelebA with torchvision failed" in message and "Too many users" in message
    assert "img_align_celeba" in message and "data_dir" in message and "emoji-faces" in message


def test_celeba_errors(tmp_path):
    with pytest.raises(DatasetError, match="No img_align_celeba/"):
        load_dataset("celeba", 64, data_dir=tmp_path)
    with pytest.raises(DatasetError, match="no shipped subset"):
        load_dataset("celeba", 64, source="subset")
