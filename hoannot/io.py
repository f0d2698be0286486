"""The ground floor: hoannot's input error, atomic file writes and image I/O.

This module imports nothing of hoannot, so every layer (models, renderers, datasets,
fitting...) can use it without importing the layers above it.

:class:`InputError` is bad user input: its message is one line naming the file and the
problem, which the CLI prints with exit code 2.

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
from typing import Any, Callable, Iterator

import imageio.v3 as iio
import numpy as np


class InputError(ValueError):
    """Bad user input; the message is one line naming the file and the problem."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: the permissions of a new file (what ``open(path, "w")`` would give): the temporary file
#: that :func:`atomic_write` moves into place is made private by ``mkstemp`` otherwise
_FILE_MODE = 0o666 & ~_umask()


def _temp_beside(path: Path) -> tuple[int, str]:
    """A new temporary file in ``path``'s folder, with a new file's usual permissions.

    Raises:
        OSError: naming ``path`` (not the temporary file).
    """
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e
    with contextlib.suppress(OSError):  # e.g. a file system without modes
        os.fchmod(fd, _FILE_MODE)
    return fd, tmp


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside ``path`` and move it onto ``path`` on success.

    Args:
        path: destination file. Parent folders are created.
        mode: ``"wb"`` or ``"w"``.

    Yields:
        The open temporary file object. If the body raises, the temporary
        file is removed and ``path`` is left untouched.

    Raises:
        OSError: the folder cannot be made or written, or the disk is full: ``filename``
            is ``path`` (not the temporary file), so the error names what was being written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)  # an OSError here names the folder
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename in (None, tmp):  # a full disk's write() names no file
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise


def write_files(files: dict[str | os.PathLike, bytes]) -> None:
    """Write several files as one: each to a temporary file beside it first (all written and
    synced to disk), then all moved into place; if any write fails, none of ``files`` changes
    and no temporary file remains.

    Raises:
        OSError: as :func:`atomic_write` (``filename`` is the file that failed).
    """
    staged: list[tuple[Path, str]] = []
    try:
        for p, data in files.items():
            path = Path(p)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = _temp_beside(path)
            staged.append((path, tmp))
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:
                if e.filename in (None, tmp):
                    raise OSError(e.errno, e.strerror or str(e), str(path)) from e
                raise
        for path, tmp in staged:
            os.replace(tmp, path)
    finally:
        for _, tmp in staged:  # the moved ones are gone already
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def replace_dir(path: str | os.PathLike, fill: Callable[[Path], Any]) -> Any:
    """Rebuild the folder ``path`` as a whole: ``fill(staging)`` writes it in a sibling
    staging folder, which then takes the place of ``path``.

    If ``fill`` (or the move) fails, the staging folder is removed and ``path`` keeps its
    previous content: never a mix of old and new files. Moving a folder onto another is not
    one system call, so for an instant ``path`` is absent (its old content is then in
    ``.<name>.old`` beside it).

    Returns:
        what ``fill`` returned, with paths inside the staging folder mapped into ``path``.
    Raises:
        OSError: as :func:`atomic_write`; whatever ``fill`` raises.
    """
    import shutil

    path = Path(path)
    staging, old = path.parent / f".{path.name}.tmp", path.parent / f".{path.name}.old"
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        result = fill(staging)
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            path.rename(old)
        staging.rename(path)
    except BaseException as e:
        shutil.rmtree(staging, ignore_errors=True)
        if old.exists() and not path.exists():
            with contextlib.suppress(OSError):
                old.rename(path)
        if isinstance(e, OSError) and e.filename is not None and Path(e.filename).is_relative_to(staging):
            inside = path / Path(e.filename).relative_to(staging)  # name the file the user will look for
            raise OSError(e.errno, e.strerror or str(e), str(inside)) from e
        raise
    shutil.rmtree(old, ignore_errors=True)
    if isinstance(result, Path) and result.is_relative_to(staging):
        result = path / result.relative_to(staging)
    return result


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


def json_bytes(obj: Any) -> bytes:
    """``obj`` as indented JSON (what :func:`write_json` writes), for :func:`write_files`."""
    return (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()


def npz_bytes(**arrays: Any) -> bytes:
    """A compressed ``.npz`` of ``arrays`` (what :func:`write_npz` writes), for :func:`write_files`."""
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


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
