#!/usr/bin/env python
"""Build ``data/emoji_faces.npz``: an offline colour dataset of emoji faces and people, 64x64 RGB.

    python tools/build_faces_dataset.py                          # Twemoji + Noto Emoji -> data/emoji_faces.npz
    python tools/build_faces_dataset.py --vendors twitter --out /tmp/twemoji_faces.npz
    python tools/build_faces_dataset.py --work-dir /tmp/emoji_npm   # keep (and reuse) the downloaded packages

Where the images come from: the npm packages ``emoji-datasource-<vendor>`` (iamcal's emoji-data, MIT), which
ship every emoji of one vendor as a 64x64 RGBA PNG (``img/<vendor>/64/*.png``) plus ``emoji.json`` naming each
image's category, subcategory, short names and skin-tone variants. ``twitter`` is Twemoji (CC-BY 4.0,
Twitter, Inc and other contributors), ``google`` is Noto Emoji (Apache 2.0, Google). This script runs
``npm pack`` itself into a temporary folder (nothing is written inside the repository but ``--out``), so it
needs ``npm`` and access to the npm registry; the result is deterministic for a given package version.

What it keeps (see ``is_face_like``): the "Smileys & Emotion" subcategories ``face-*`` (face-smiling,
face-affection, face-tongue, face-hand, face-neutral-skeptical, face-sleepy, face-unwell, face-hat,
face-glasses, face-concerned, face-negative, face-costume) and ``cat-face``, and the "People & Body" heads and
busts ``person``, ``person-gesture`` and ``person-role``, each with its five skin tones. Legacy aliases
(``obsoleted_by``) and images identical to one already kept are skipped.

Transparency: every PNG is converted to RGBA by PIL (Twemoji's are palette images with a transparency
table) and composited onto a flat background (``--background``, default white 255) as
``out = rgb * alpha + background * (1 - alpha)`` with ``alpha = A / 255``, so the arbitrary RGB values that
fully transparent pixels carry never show.

The ``.npz`` holds (N images):

* ``images`` uint8 (N, 3, 64, 64); ``background`` the uint8 value they were composited on;
* ``labels`` int64 (N,), an index into ``subcategories`` (str, e.g. 'face-smiling', 'person-role');
* ``attributes`` bool (N, K) with ``attribute_names`` (str, K): read from each emoji's name and short names
  with the word lists in ``ATTRIBUTE_WORDS`` (smiling, glasses, hat, tears, open_mouth, woman, man, ...), plus
  ``neutral`` (no expression word at all), ``person`` (People & Body) and ``skin_tone_1`` .. ``skin_tone_5``;
* ``skin_tone`` int8 (N,): 0 none (yellow smileys, default people), 1 light ... 5 dark (Fitzpatrick 1-2 .. 6);
* ``names`` (short name), ``codepoints`` (unified code points), ``vendor`` ('twitter' or 'google'), all str;
* ``is_test`` bool (N,): about ``--test-fraction`` of each subcategory, chosen by emoji (all skin tones and
  vendors of one emoji fall on the same side, so the test images are not near-copies of training ones);
  subcategories with fewer than 4 emoji stay entirely in training.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "data" / "emoji_faces.npz"
DEFAULT_VERSION = "16.0.0"
VENDORS = ("twitter", "google")
PEOPLE_SUBCATEGORIES = ("person", "person-gesture", "person-role")
SKIN_TONES = ("1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF")  # Fitzpatrick 1-2, 3, 4, 5, 6 -> skin_tone 1..5

# An attribute is set when any of its words is a whole word of the emoji's name or short names (lower case,
# split on anything but letters), or any of its phrases occurs in the name. Words, not substrings: "woman"
# must not count as "man", "grimacing" not as "grin".
ATTRIBUTE_WORDS = {
    "smiling": ({"smile", "smiling", "smiley", "grin", "grinning", "laugh", "laughing", "joy", "beaming",
                 "happy", "blush"}, ()),
    "glasses": ({"glasses", "sunglasses", "nerd", "monocle", "disguised"}, ()),
    "hat": ({"hat", "cowboy", "crown", "cap", "turban", "mao", "prince", "princess", "partying", "police", "cop",
             "guard", "guardsman", "firefighter", "pilot", "cook", "student", "construction", "detective", "farmer",
             "mechanic"}, ()),
    "tears": ({"tear", "tears", "cry", "crying", "sob", "sobbing"}, ()),
    "open_mouth": ({"astonished", "hushed", "scream", "screaming", "yawning", "tongue", "vomiting", "gasp"},
                   ("open mouth",)),
    "closed_eyes": ({"sleeping", "sleepy", "relieved"}, ("closed eyes",)),
    "love": ({"heart", "hearts", "kiss", "kissing", "love"}, ()),
    "sad": ({"sad", "disappointed", "pensive", "worried", "frowning", "weary", "tired", "anguished",
             "persevering", "confounded", "fearful", "cry", "crying", "sob", "sobbing"}, ()),
    "angry": ({"angry", "rage", "enraged", "pouting", "cursing", "triumph"}, ()),
    "woman": ({"woman", "women", "female", "girl", "princess", "bride", "lady"}, ()),
    "man": ({"man", "men", "male", "boy", "prince", "guardsman"}, ()),
    "old": ({"older", "old", "elderly"}, ()),
    "child": ({"baby", "child", "boy", "girl"}, ()),
    "beard": ({"beard", "bearded"}, ()),
    "blond": ({"blond"}, ()),
    "bald": ({"bald"}, ()),
}
EXPRESSIONS = ("smiling", "tears", "open_mouth", "love", "sad", "angry")  # 'neutral' = none of these
ATTRIBUTE_NAMES = (*ATTRIBUTE_WORDS, "neutral", "person", *(f"skin_tone_{t}" for t in range(1, 6)))


def is_face_like(entry: dict) -> bool:
    """A yellow-smiley face (``face-*``, ``cat-face``) or a person's head or bust (``person*``)."""
    if entry["category"] == "Smileys & Emotion":
        return entry["subcategory"].startswith("face-") or entry["subcategory"] == "cat-face"
    return entry["category"] == "People & Body" and entry["subcategory"] in PEOPLE_SUBCATEGORIES


def attributes_of(entry: dict, skin_tone: int) -> np.ndarray:
    """The bool attribute row (in ``ATTRIBUTE_NAMES`` order) of one emoji image."""
    texts = [entry.get("name") or "", *entry.get("short_names", [])]
    words = {w for t in texts for w in re.split(r"[^a-z]+", t.lower()) if w}
    name = (entry.get("name") or "").lower()
    row = {a: bool(words & ws) or any(p in name for p in phrases) for a, (ws, phrases) in ATTRIBUTE_WORDS.items()}
    row["neutral"] = not any(row[a] for a in EXPRESSIONS)
    row["person"] = entry["category"] == "People & Body"
    for t in range(1, 6):
        row[f"skin_tone_{t}"] = skin_tone == t
    return np.array([row[a] for a in ATTRIBUTE_NAMES], dtype=bool)


def composite(png: bytes, background: int) -> np.ndarray:
    """RGBA (or palette + transparency) PNG bytes -> uint8 (3, H, W) on a flat ``background`` grey level."""
    with Image.open(io.BytesIO(png)) as img:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
    alpha = rgba[..., 3:] / 255.0
    out = rgba[..., :3] * alpha + float(background) * (1.0 - alpha)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).transpose(2, 0, 1)


def npm_pack(vendor: str, version: str, work_dir: Path) -> Path:
    """``npm pack emoji-datasource-<vendor>@<version>`` into ``work_dir`` (reused if already there)."""
    tgz = work_dir / f"emoji-datasource-{vendor}-{version}.tgz"
    if not tgz.is_file():
        if shutil.which("npm") is None:
            sys.exit("npm is not installed: install Node.js (e.g. 'apt-get install npm') and run this again")
        spec = f"emoji-datasource-{vendor}@{version}"
        print(f"npm pack {spec} ...", flush=True)
        done = subprocess.run(["npm", "pack", spec, "--loglevel", "error"], cwd=work_dir, capture_output=True,
                              text=True, check=False)
        if done.returncode != 0 or not tgz.is_file():
            sys.exit(f"'npm pack {spec}' failed (exit {done.returncode}): {done.stderr.strip()[-500:]}\n"
                     f"List the published versions with 'npm view emoji-datasource-{vendor} versions'.")
    return tgz


def read_package(tgz: Path, vendor: str) -> tuple[list[dict], dict[str, bytes]]:
    """``emoji.json`` and the 64x64 PNGs (by file name) of one packed emoji-datasource package."""
    prefix = f"package/img/{vendor}/64/"
    entries, pngs = None, {}
    with tarfile.open(tgz, "r:gz") as tar:
        for member in tar:
            if member.name == "package/emoji.json":
                entries = json.load(tar.extractfile(member))
            elif member.name.startswith(prefix) and member.name.endswith(".png"):
                pngs[member.name[len(prefix):]] = tar.extractfile(member).read()
    if entries is None or not pngs:
        sys.exit(f"{tgz} has no package/emoji.json or no {prefix}*.png: not an emoji-datasource package?")
    return entries, pngs


def collect(vendor: str, entries: list[dict], pngs: dict[str, bytes], background: int) -> list[dict]:
    """One record per face-like image of ``vendor`` (base image and its skin tones), exact duplicates dropped."""
    records, seen = [], set()
    for entry in sorted(entries, key=lambda e: e["sort_order"]):
        if not is_face_like(entry) or entry.get("obsoleted_by"):
            continue
        variants = [(0, entry)]
        variants += [(SKIN_TONES.index(k) + 1, v) for k, v in (entry.get("skin_variations") or {}).items()
                     if k in SKIN_TONES]  # one tone only; multi-person entries use keys like '1F3FB-1F3FC'
        for tone, variant in variants:
            if not variant.get(f"has_img_{vendor}", False) or variant["image"] not in pngs:
                continue
            image = composite(pngs[variant["image"]], background)
            if image.shape != (3, 64, 64):
                print(f"  skipping {variant['image']}: {image.shape[1]}x{image.shape[2]}, not 64x64")
                continue
            digest = hashlib.sha1(image.tobytes()).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            records.append(dict(image=image, subcategory=entry["subcategory"], name=entry["short_name"],
                                codepoints=variant["unified"], group=entry["unified"], vendor=vendor,
                                skin_tone=tone, attributes=attributes_of(entry, tone)))
    return records


def test_split(records: list[dict], fraction: float, seed: int) -> np.ndarray:
    """``is_test``: about ``fraction`` of each subcategory's emoji (with all their tones and vendors)."""
    rng = np.random.default_rng(seed)
    groups = defaultdict(list)  # subcategory -> emoji, in a fixed order
    for r in records:
        if r["group"] not in groups[r["subcategory"]]:
            groups[r["subcategory"]].append(r["group"])
    test_groups = set()
    for subcategory in sorted(groups):
        members = groups[subcategory]
        if len(members) < 4:
            continue
        count = max(1, round(fraction * len(members)))
        test_groups.update(members[i] for i in rng.permutation(len(members))[:count])
    return np.array([r["group"] in test_groups for r in records], dtype=bool)


def build(vendors: list[str], version: str, out: Path, background: int, fraction: float, seed: int,
          work_dir: Path | None) -> None:
    with tempfile.TemporaryDirectory(prefix="emoji_npm_") as tmp:
        folder = Path(work_dir) if work_dir else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        records = []
        for vendor in vendors:
            entries, pngs = read_package(npm_pack(vendor, version, folder), vendor)
            found = collect(vendor, entries, pngs, background)
            print(f"{vendor}: {len(found)} face-like images", flush=True)
            records += found
    if not records:
        sys.exit("No images collected")
    subcategories = sorted({r["subcategory"] for r in records})
    is_test = test_split(records, fraction, seed)
    arrays = dict(
        images=np.stack([r["image"] for r in records]),
        labels=np.array([subcategories.index(r["subcategory"]) for r in records], dtype=np.int64),
        subcategories=np.array(subcategories),
        attributes=np.stack([r["attributes"] for r in records]),
        attribute_names=np.array(ATTRIBUTE_NAMES),
        skin_tone=np.array([r["skin_tone"] for r in records], dtype=np.int8),
        names=np.array([r["name"] for r in records]),
        codepoints=np.array([r["codepoints"] for r in records]),
        vendor=np.array([r["vendor"] for r in records]),
        is_test=is_test,
        background=np.uint8(background),
        source=np.array(", ".join(f"emoji-datasource-{v}@{version}" for v in vendors)),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    print(f"wrote {out}: {len(records)} images ({int(is_test.sum())} test), {out.stat().st_size / 1e6:.2f} MB")
    counts = Counter(r["subcategory"] for r in records)
    print("subcategories: " + ", ".join(f"{s} {counts[s]}" for s in subcategories))
    totals = arrays["attributes"].sum(0)
    print("attributes: " + ", ".join(f"{a} {int(n)}" for a, n in zip(ATTRIBUTE_NAMES, totals)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vendors", default=",".join(VENDORS),
                        help=f"comma-separated emoji-datasource vendors (default: {','.join(VENDORS)})")
    parser.add_argument("--version", default=DEFAULT_VERSION, help=f"package version (default: {DEFAULT_VERSION})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output .npz (default: {DEFAULT_OUT})")
    parser.add_argument("--background", type=int, default=255, help="grey level behind transparency (default: 255)")
    parser.add_argument("--test-fraction", type=float, default=0.1, help="share of test emoji per subcategory")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/test split (default: 0)")
    parser.add_argument("--work-dir", type=Path, help="keep the .tgz packages here and reuse them (default: a "
                                                      "temporary folder, deleted afterwards)")
    args = parser.parse_args(argv)
    vendors = [v.strip() for v in args.vendors.split(",") if v.strip()]
    if not vendors:
        parser.error("--vendors is empty")
    if not 0 <= args.background <= 255:
        parser.error("--background must be in 0..255")
    build(vendors, args.version, args.out, args.background, args.test_fraction, args.seed, args.work_dir)


if __name__ == "__main__":
    main()
