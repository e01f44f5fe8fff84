"""Image folders: files found with torchvision's folder helpers, unreadable ones skipped.

Items decode on access (in DataLoader workers); on the device path the transform only decodes
the whole picture to a uint8 square (`DeviceDecode`), and the batch is augmented on the
training device.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension, make_dataset

from ssl_syre.config import DataConfig
from ssl_syre.data.datasets import ImageDataset, Transform
from ssl_syre.errors import UserError

# torchvision's image extensions, plus GIF; matched case-insensitively.
IMAGE_EXTENSIONS = (*IMG_EXTENSIONS, ".gif")
# Consecutive undecodable files after which loading gives up instead of skipping on.
MAX_SKIPPED_IN_A_ROW = 32


class ImageFileDataset(ImageDataset):
    """Image files decoded on access and converted to RGB.

    A file that fails to decode is skipped with a warning naming it, and the next file's
    sample (in the split's order) is returned instead, so one bad file does not end a long run.
    """

    def __init__(
        self, paths: Sequence[str], labels: np.ndarray, transform: Transform | None = None
    ) -> None:
        super().__init__(labels, transform)
        self.paths = list(paths)

    def _image(self, index: int) -> Image.Image:
        return _open_rgb(self.paths[index])

    def __getitem__(self, first: int) -> tuple[Any, int]:
        for attempt in range(min(len(self), MAX_SKIPPED_IN_A_ROW)):
            index = (first + attempt) % len(self)
            try:
                image = self._image(index)
            except Exception as error:  # PIL raises many types for corrupt or truncated files
                warnings.warn(
                    f"skipping image file '{self.paths[index]}' that fails to decode "
                    f"({type(error).__name__}: {error}); remove or replace it",
                    stacklevel=2,
                )
                continue
            return self._item(index, image)
        raise UserError(
            f"{MAX_SKIPPED_IN_A_ROW} image files in a row failed to decode, starting at "
            f"'{self.paths[first]}'; check that the image folder is intact"
        )


def _open_rgb(path: str) -> Image.Image:
    """torchvision's `default_loader` (PIL, convert to RGB), minus its warning on palette
    images with a transparent colour."""
    with Image.open(path) as image:
        # Palette images with a transparent colour warn when converted straight to RGB.
        if image.mode == "P" and "transparency" in image.info:
            return image.convert("RGBA").convert("RGB")
        return image.convert("RGB")


# --------------------------------------------------------------------------------------------
# imagefolder


def imagefolder_root(path: str | None, key: str) -> Path:
    if not path:
        raise UserError(f"{key} is not set; set {key}=<folder of images> for data.name=imagefolder")
    root = Path(path).expanduser()
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise UserError(f"{key} '{root}' {what}; set {key} to a folder of images")
    return root


def class_folders(root: Path, key: str) -> list[str]:
    """Sorted class sub-folder names. Like torchvision's `find_classes`, but hidden folders
    are not classes and an empty root is a one-line UserError, not FileNotFoundError."""
    classes = sorted(
        entry.name
        for entry in os.scandir(root)
        if entry.is_dir() and not entry.name.startswith(".")
    )
    if not classes:
        raise UserError(
            f"{key} '{root}' has no class sub-folders; put each class's images in its own "
            f"sub-folder ({root}/<class>/<image>), or set data.labelled=false"
        )
    return classes


def _is_visible_image(root: Path) -> Callable[[str], bool]:
    """A `make_dataset` filter: an image extension (any case), and no hidden file or folder
    (.ipynb_checkpoints, .DS_Store, ...) on the way from `root`."""

    def check(path: str) -> bool:
        hidden = any(part.startswith(".") for part in Path(os.path.relpath(path, root)).parts)
        return not hidden and has_file_allowed_extension(path, IMAGE_EXTENSIONS)

    return check


def _image_files(folder: Path) -> list[str]:
    """Every visible image file under `folder`, at any depth (the unlabelled layout, which
    torchvision's `make_dataset` does not cover: it wants class sub-folders)."""
    check = _is_visible_image(folder)
    found = []
    for directory, subdirectories, files in os.walk(folder, followlinks=True):
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
        found.extend(os.path.join(directory, name) for name in files)
    return sorted(path for path in found if check(path))


def _has_readable_header(path: str) -> bool:
    try:
        with Image.open(path) as image:  # lazy: reads the header, not the pixels
            return image.width > 0 and image.height > 0
    except Exception:  # PIL raises many types for corrupt files
        return False


# Header checks of recent scans, keyed on the files' paths, sizes and modification times, so
# that building the SSL and the eval data sets from one folder opens each file (and warns) once.
_HEADER_CHECKS: dict[int, list[bool]] = {}


def _drop_unreadable(
    paths: list[str], labels: list[int], root: Path
) -> tuple[list[str], list[int]]:
    """Keep the files whose header PIL can read; warn once, counting and naming the others."""
    stats = [os.stat(path) for path in paths]
    key = hash(tuple((p, s.st_size, s.st_mtime_ns) for p, s in zip(paths, stats, strict=True)))
    readable = _HEADER_CHECKS.get(key)
    if readable is None:
        # Threads: opening headers waits on the disk (or network file system), not the CPU.
        with ThreadPoolExecutor(max_workers=8) as pool:
            readable = list(pool.map(_has_readable_header, paths))
        if len(_HEADER_CHECKS) >= 8:
            _HEADER_CHECKS.pop(next(iter(_HEADER_CHECKS)))
        _HEADER_CHECKS[key] = readable
        bad = [path for path, ok in zip(paths, readable, strict=True) if not ok]
        if bad:
            names = ", ".join(f"'{os.path.relpath(path, root)}'" for path in bad[:3])
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            warnings.warn(
                f"skipping {len(bad)} of {len(paths)} image files under '{root}' that PIL "
                f"cannot open: {names}{more}; remove or replace them",
                stacklevel=3,
            )
    kept = [i for i, ok in enumerate(readable) if ok]
    return [paths[i] for i in kept], [labels[i] for i in kept]


def _scan_imagefolder(
    root: Path, key: str, class_to_index: dict[str, int] | None
) -> ImageFileDataset:
    """All readable images under `root`: by class sub-folder when `class_to_index` is given
    (sub-folders missing from it are an error), else all of them, unlabelled (-1)."""
    paths: list[str] = []
    labels: list[int] = []
    if class_to_index is None:
        paths = _image_files(root)
        labels = [-1] * len(paths)
    else:
        classes = class_folders(root, key)
        unknown = [name for name in classes if name not in class_to_index]
        if unknown:
            raise UserError(
                f"{key} '{root}' has class folders that data.root lacks: "
                f"{', '.join(unknown[:5])}; use the same class names in both folders"
            )
        # torchvision's walk, with our filter; empty classes are fine (the count below checks).
        found = make_dataset(
            str(root),
            {name: class_to_index[name] for name in classes},
            is_valid_file=_is_visible_image(root),
            allow_empty=True,
        )
        paths = [path for path, _ in found]
        labels = [label for _, label in found]
    if not paths:
        raise UserError(
            f"{key} '{root}' holds no image files ({', '.join(IMAGE_EXTENSIONS)}); "
            f"point {key} at a folder of images"
        )
    paths, labels = _drop_unreadable(paths, labels, root)
    if not paths:
        raise UserError(
            f"none of the image files under {key} '{root}' can be opened; check that they are "
            "intact images"
        )
    return ImageFileDataset(paths, np.asarray(labels, dtype=np.int64))


def load_imagefolder(
    data_cfg: DataConfig, split: str, transform: Transform | None
) -> ImageFileDataset | None:
    root = imagefolder_root(data_cfg.root, "data.root")
    train_classes = class_folders(root, "data.root") if data_cfg.labelled else None
    if split != "test":
        mapping = None if train_classes is None else {c: i for i, c in enumerate(train_classes)}
        dataset = _scan_imagefolder(root, "data.root", mapping)
    else:
        if not data_cfg.test_root:
            return None
        test_root = imagefolder_root(data_cfg.test_root, "data.test_root")
        classes = train_classes or class_folders(test_root, "data.test_root")
        dataset = _scan_imagefolder(
            test_root, "data.test_root", {c: i for i, c in enumerate(classes)}
        )
    dataset.transform = transform
    return dataset
