"""Tests for ssl_syre.data.imagefolder: layouts, labels, corrupt files, user errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from lightly.transforms import (
    SimCLRTransform,
)
from PIL import Image

from ssl_syre import data
from ssl_syre.config import DataConfig
from ssl_syre.errors import UserError

# ---------------------------------------------------------------------------------------------
# imagefolder


def make_image_folder(root: Path) -> None:
    """Two classes of small images in every mode and several sizes, plus junk."""
    rng = np.random.default_rng(0)

    def noise(size: tuple[int, int]) -> Image.Image:
        return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))

    (root / "cat").mkdir(parents=True)
    (root / "dog" / "nested").mkdir(parents=True)
    noise((20, 30)).convert("L").save(root / "cat" / "grey.png")
    noise((40, 40)).convert("RGBA").save(root / "cat" / "alpha.png")
    palette = noise((16, 24)).convert("P")
    palette.info["transparency"] = 0
    palette.save(root / "cat" / "palette.png", transparency=0)
    noise((50, 35)).save(root / "dog" / "colour.png")
    noise((64, 64)).save(root / "dog" / "nested" / "deep.PNG")
    (root / "dog" / "corrupt.jpg").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    (root / "dog" / "notes.txt").write_text("not an image")


def test_imagefolder_labelled_skips_corrupt_files_with_one_warning(tmp_path: Path) -> None:
    make_image_folder(tmp_path)
    cfg = DataConfig(name="imagefolder", root=str(tmp_path), image_size=32)
    info = data.data_info(cfg)
    assert (info.in_chans, info.num_classes, info.image_size) == (3, 2, 32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ssl = data.build_ssl_dataset(
            cfg, SimCLRTransform(**data.ssl_transform_kwargs(info, cfg)), seed=0
        )
        train, test = data.build_eval_datasets(cfg, seed=0)
    messages = [str(warning.message) for warning in caught]
    assert len(messages) == 1, messages  # the second scan of the same files stays quiet
    assert "skipping 1 of 6" in messages[0] and "corrupt.jpg" in messages[0]

    assert len(ssl) == len(train) == 5 and test is None
    assert sorted(train.labels.tolist()) == [0, 0, 0, 1, 1]
    names = {Path(path).name: label for path, label in zip(train.paths, train.labels, strict=True)}
    assert names == {
        "alpha.png": 0,
        "grey.png": 0,
        "palette.png": 0,
        "colour.png": 1,
        "deep.PNG": 1,
    }
    for i in range(len(train)):
        tensor, _ = train[i]
        assert tensor.shape == (3, 32, 32)
    views, label = ssl[0]
    assert len(views) == 2 and views[0].shape == (3, 32, 32) and label in (0, 1)


def test_imagefolder_unlabelled_and_test_root(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "train")
    make_image_folder(tmp_path / "test")
    cfg = DataConfig(name="imagefolder", root=str(tmp_path / "train"), labelled=False)
    assert data.data_info(cfg).num_classes == 0
    with pytest.warns(UserWarning, match="skipping 1 of 6"):
        ssl = data.build_ssl_dataset(cfg, transform=None, seed=0)
    assert len(ssl) == 5 and set(ssl.labels.tolist()) == {-1}
    assert all(ssl[i][0].mode == "RGB" for i in range(len(ssl)))

    cfg = DataConfig(
        name="imagefolder", root=str(tmp_path / "train"), test_root=str(tmp_path / "test")
    )
    with pytest.warns(UserWarning):
        _, test = data.build_eval_datasets(cfg, seed=0)
    assert test is not None and sorted(test.labels.tolist()) == [0, 0, 0, 1, 1]
    assert test[0][0].shape == (3, 64, 64)  # imagefolder's default image_size

    (tmp_path / "test" / "bird").mkdir()
    with pytest.raises(UserError, match="bird"):
        data.build_eval_datasets(cfg, seed=0)


def test_imagefolder_skips_a_file_that_fails_at_load_time(tmp_path: Path) -> None:
    make_image_folder(tmp_path)
    whole = (tmp_path / "cat" / "grey.png").read_bytes()
    (tmp_path / "cat" / "grey.png").write_bytes(whole[: len(whole) // 2])  # header still reads
    cfg = DataConfig(name="imagefolder", root=str(tmp_path), image_size=16)
    with pytest.warns(UserWarning, match="skipping 1 of 6"):
        train, _ = data.build_eval_datasets(cfg, seed=0)
    position = [Path(p).name for p in train.paths].index("grey.png")
    with pytest.warns(UserWarning, match="grey.png"):
        tensor, label = train[position]
    assert tensor.shape == (3, 16, 16)
    assert label == train.labels[position + 1]


def test_imagefolder_user_errors(tmp_path: Path) -> None:
    def info(**kwargs: object) -> None:
        data.data_info(DataConfig(name="imagefolder", **kwargs))

    with pytest.raises(UserError, match="data.root is not set"):
        info()
    with pytest.raises(UserError, match="does not exist"):
        info(root=str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="no class sub-folders.*data.labelled=false"):
        info(root=str(tmp_path))
    (tmp_path / "empty_class").mkdir()
    (tmp_path / "empty_class" / "readme.txt").write_text("no images here")
    cfg = DataConfig(name="imagefolder", root=str(tmp_path))
    with pytest.raises(UserError, match="holds no image files"):
        data.build_ssl_dataset(cfg, transform=None, seed=0)
    (tmp_path / "empty_class" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.warns(UserWarning), pytest.raises(UserError, match="none of the image files"):
        data.build_ssl_dataset(cfg, transform=None, seed=0)
