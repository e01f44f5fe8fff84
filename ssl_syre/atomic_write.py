"""Files written whole or not at all: a kill, a power cut or a full disk leaves the old file.

Every file a run keeps (checkpoints, metrics.json, eval files, pictures, export/) is written
to a temporary name in the folder it belongs in, fsynced, then renamed over its target:
rename is atomic on POSIX, so a reader sees the previous file or the new one, never half of
one. Writers that take a folder (matplotlib figures, timm's `save_for_hf`) write into a
staging folder beside the target, which `publish` then moves in file by file.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

# Staging folders of interrupted writes: tempfile.mkdtemp(prefix=".<purpose>" + STAGING)
# beside the target; removed by the next staged write of that purpose into the same folder.
STAGING = ".staging-"


def umask() -> int:
    """This process's umask, read without changing it where the OS allows."""
    try:  # Linux: reading is free of the set-and-restore race os.umask() has with threads
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def give_umask_mode(path: str | Path) -> None:
    """Set a file's mode to what open() would give a new file (0o666 less the umask).

    Temporary files (mkstemp, safetensors' writer) are created 0600 whatever the umask, and
    a rename keeps that mode: other users of a shared machine or a group project folder
    could not read the checkpoint or the export.
    """
    os.chmod(path, 0o666 & ~umask())


def fsync_directory(directory: Path) -> None:
    """Make renames inside `directory` survive a power cut (best effort)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:  # some file systems do not open folders; the rename is still atomic
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_atomically(target: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call `write(file)` on a temporary file beside `target`, fsync it, rename it over `target`.

    The temporary file is named `.<target name>.<random>` and removed if anything fails;
    one left by a kill can be recognised by that prefix.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        give_umask_mode(temporary)
        os.replace(temporary, target)
        fsync_directory(target.parent)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomically(target: str | Path, text: str) -> None:
    """`Path.write_text`, whole or not at all."""
    write_atomically(target, lambda file: file.write(text.encode()))


def write_file_atomically(target: str | Path, write_to: Callable[[Path], object]) -> None:
    """Call `write_to(path)` (a writer that takes a file name: matplotlib's savefig) on a
    temporary name beside `target` with the same suffix, then rename it over `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=target.suffix, dir=target.parent
    )
    os.close(handle)
    temporary = Path(name)
    try:
        write_to(temporary)
        with open(temporary, "rb") as file:
            os.fsync(file.fileno())
        give_umask_mode(temporary)
        os.replace(temporary, target)
        fsync_directory(target.parent)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def staging_folder(directory: str | Path, purpose: str) -> Path:
    """A fresh, empty folder `.<purpose>.staging-<random>` inside `directory` to write files
    into before `publish`.

    Staging folders of the same purpose left by earlier kills in `directory` are removed first.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    prefix = f".{purpose}{STAGING}"
    for leftover in directory.glob(f"{glob.escape(prefix)}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=directory))


def publish(staging: Path, target: Path, last: Sequence[str] = ()) -> list[Path]:
    """Move every file of `staging` (sub-folders too) to the same place under `target`.

    Each file is fsynced, given the umask's mode and renamed over its target; the files
    named in `last` (relative paths) move last, in that order, so a reader that trusts one
    of them (metrics.json: "this run is finished") never sees it before the rest. The
    staging folder is removed. Returns the paths written.
    """
    files = sorted(path for path in staging.rglob("*") if path.is_file())
    rank = {name: index for index, name in enumerate(last)}
    files.sort(key=lambda path: rank.get(str(path.relative_to(staging)), -1))
    written = []
    for source in files:
        destination = target / source.relative_to(staging)
        with open(source, "rb") as file:
            os.fsync(file.fileno())
        give_umask_mode(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, destination)
        fsync_directory(destination.parent)
        written.append(destination)
    shutil.rmtree(staging, ignore_errors=True)
    return written
