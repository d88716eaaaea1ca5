"""Images are opened only under their image root, with errors that name the file and the item."""
import os

import pytest
from PIL import Image

from dataengine.errors import DataError
from dataengine.images import load_image, resolve


def test_resolve_keeps_paths_under_the_root(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    assert resolve(root, "a/x.png") == (root / "a" / "x.png").resolve()
    for bad in ("../x.png", "a/../../x.png", str(tmp_path / "x.png")):
        with pytest.raises(DataError, match="leaves the image root root/"):
            resolve(root, bad, where="sample 7")
    os.symlink(tmp_path, root / "out")
    with pytest.raises(DataError, match="sample 7: image path leaves the image root"):
        resolve(root, "out/x.png", where="sample 7")


def test_load_image_converts_and_names_bad_files(tmp_path):
    Image.new("L", (4, 3), 128).save(tmp_path / "grey.png")
    img = load_image(tmp_path, "grey.png")
    assert img.mode == "RGB" and img.size == (4, 3)
    with pytest.raises(DataError, match=r"nope.png: question q1: image not found"):
        load_image(tmp_path, "nope.png", where="question q1")
    (tmp_path / "bad.png").write_bytes(b"not a picture")
    with pytest.raises(DataError, match=r"bad.png: question q1: cannot read image"):
        load_image(tmp_path, "bad.png", where="question q1")


def test_huge_pictures_are_named_or_decoded_small(tmp_path, monkeypatch):
    Image.new("RGB", (2000, 1600), (10, 200, 30)).save(tmp_path / "big.jpg")
    small = load_image(tmp_path, "big.jpg", max_side=128)
    assert 128 <= min(small.size) and max(small.size) <= 500  # decoded at 1/8 scale, not 2000 x 1600
    assert load_image(tmp_path, "big.jpg").size == (2000, 1600)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # what a decompression bomb looks like to Pillow
    with pytest.raises(DataError, match="big.jpg: question 3: the picture is larger than Pillow's safety limit"):
        load_image(tmp_path, "big.jpg", where="question 3")
