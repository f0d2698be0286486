"""Atomic file writes and image I/O.

Every file hoannot writes goes through :func:`atomic_write`: the content is
written to a temporary file in the destination folder and moved into place with
``os.replace``, so an interrupted run never leaves a half-written file behind
and never destroys the previous version.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Iterator

import imageio.v3 as iio
import numpy as np


class InputError(ValueError):
    """Bad user input; the message is one line naming the file and the problem."""


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside ``path`` and move it onto ``path`` on success.

    Args:
        path: destination file. Parent folders are created.
        mode: ``"wb"`` or ``"w"``.

    Yields:
        The open temporary file object. If the body raises, the temporary
        file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive advisory lock (``flock``) on ``path`` for the ``with`` block.

    The operating system releases it when the process ends, however it ends (a killed run
    leaves no stale lock), so a second run is refused only while the first is alive.

    Raises:
        InputError: another process holds the lock (names ``what`` and the lock file).
    """
    import fcntl

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise InputError(f"{p}: {what} is already running here ({holder}); wait for it to finish") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def write_pickle(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` with pickle protocol 4 (HO-3D meta files)."""
    with atomic_write(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)


def write_npz(path: str | os.PathLike, **arrays: Any) -> None:
    """Atomically write a compressed ``.npz``."""
    with atomic_write(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Atomically write an image; the extension (``.png``/``.jpg``) picks the codec.

    Args:
        image: (H, W) uint8/uint16 or (H, W, 3) uint8.
    """
    path = Path(path)
    data = iio.imwrite("<bytes>", image, extension=path.suffix)
    with atomic_write(path, "wb") as f:
        f.write(data)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file.

    Raises:
        InputError: the file is missing or cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        return iio.imread(path)
    except Exception as e:  # noqa: BLE001 - any decoder failure is bad input
        raise InputError(f"{path}: unreadable image ({type(e).__name__}: {e})".splitlines()[0]) from None
