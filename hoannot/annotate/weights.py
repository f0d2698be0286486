"""Trained perception weights: saved with their config and a SHA-256 hash, found by path or cache.

A weights file ``NAME.pt`` is a ``torch.save`` of ``{"kind", "config", "state_dict",
"meta"}``; beside it ``NAME.pt.json`` records ``kind``, ``config``, ``meta`` and the
``sha256`` of the ``.pt`` file. Loading checks the hash, so a truncated or swapped file
is refused instead of silently giving wrong masks or joints.

Where weights are looked for (:func:`find_weights`), first hit wins:

1. the path given by the user (a file, or a folder holding ``<kind>.pt``);
2. the user cache: ``$HOANNOT_CACHE/<kind>.pt`` if the variable is set, else
   ``~/.cache/hoannot/<kind>.pt``;
3. weights bundled with the package: ``hoannot/annotate/weights/<kind>.pt``. These are
   small models trained on 2 CPU cores by ``benchmarks/perception.py`` (3000 synthetic
   views; ``segmentation.pt`` is its RGB-D DeepLabV3+, 20 min; ``keypoints.pt`` its
   CPM, 45 min). On held-out synthetic views they reach hand/object IoU 0.78/0.67 and
   PCK@10px 0.46 (``benchmarks/results/perception.json``): a start, not annotation
   quality; train longer (``hoannot train-seg``/``train-kp``, GPU: ``--device cuda``).

Kinds: ``"segmentation"`` (trained by ``hoannot train-seg``) and ``"keypoints"``
(trained by ``hoannot train-kp``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import torch

from hoannot.io import InputError, atomic_write, write_json

KINDS = {"segmentation": "hoannot train-seg", "keypoints": "hoannot train-kp"}
BUNDLED = Path(__file__).parent / "weights"


def cache_dir() -> Path:
    """The user weights cache: ``$HOANNOT_CACHE`` or ``~/.cache/hoannot``."""
    env = os.environ.get("HOANNOT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hoannot"


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_weights(path: str | Path, kind: str, config: dict, state_dict: dict, meta: dict | None = None) -> str:
    """Atomically write ``path`` (``.pt``) and its ``.pt.json`` sidecar with the hash.

    Args:
        path: destination ``.pt`` file.
        kind: ``"segmentation"`` or ``"keypoints"``.
        config: everything needed to rebuild the network (JSON-serialisable).
        state_dict: the network's ``state_dict()``.
        meta: training record (steps, losses, data, time...), JSON-serialisable.
    Returns:
        the SHA-256 hex digest of the written ``.pt``.
    Raises:
        InputError: unknown ``kind``.
    """
    if kind not in KINDS:
        raise InputError(f"{path}: unknown weights kind {kind!r} (expected one of {sorted(KINDS)})")
    path = Path(path)
    buf = io.BytesIO()
    cpu_state = {k: v.detach().cpu() for k, v in state_dict.items()}
    torch.save({"kind": kind, "config": config, "state_dict": cpu_state, "meta": meta or {}}, buf)
    data = buf.getvalue()
    with atomic_write(path, "wb") as f:
        f.write(data)
    digest = hashlib.sha256(data).hexdigest()
    write_json(sidecar(path), {"kind": kind, "sha256": digest, "config": config, "meta": meta or {}})
    return digest


def sidecar(path: str | Path) -> Path:
    """The JSON sidecar of a weights file: ``<path>.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def candidates(kind: str, path: str | Path | None = None) -> list[Path]:
    """Files :func:`find_weights` tries, in order."""
    if path is not None:
        p = Path(path).expanduser()
        return [p / f"{kind}.pt"] if p.is_dir() else [p]
    return [cache_dir() / f"{kind}.pt", BUNDLED / f"{kind}.pt"]


def find_weights(kind: str, path: str | Path | None = None) -> Path:
    """Locate the weights file of ``kind`` (see module docstring for the search order).

    Raises:
        InputError: none found; the message names where it looked and the command
            that trains such weights.
    """
    if kind not in KINDS:
        raise InputError(f"unknown weights kind {kind!r} (expected one of {sorted(KINDS)})")
    tried = candidates(kind, path)
    for p in tried:
        if p.is_file():
            return p
    where = ", ".join(str(p) for p in tried)
    raise InputError(f"no {kind} weights found (looked in {where}); train them with `{KINDS[kind]} OUT.pt` "
                     f"or pass a weights file")  # fmt: skip


def load_weights(kind: str, path: str | Path | None = None) -> dict[str, Any]:
    """Load and verify a weights file.

    Args:
        kind: ``"segmentation"`` or ``"keypoints"``.
        path: a weights file or a folder; None searches the cache and bundled weights.
    Returns:
        ``{"kind", "config", "state_dict", "meta", "path", "sha256"}``.
    Raises:
        InputError: not found; hash different from the sidecar's; unreadable file;
            a file of another kind.
    """
    p = find_weights(kind, path)
    digest = sha256_file(p)
    side = sidecar(p)
    if side.is_file():
        try:
            expected = json.loads(side.read_text()).get("sha256")
        except json.JSONDecodeError:
            raise InputError(f"{side}: invalid JSON sidecar") from None
        if expected and expected != digest:
            raise InputError(f"{p}: SHA-256 {digest[:12]}... does not match {side.name} ({str(expected)[:12]}...); "
                             f"the file is corrupt or was replaced")  # fmt: skip
    else:
        raise InputError(f"{p}: missing hash sidecar {side.name}; re-save the weights with `{KINDS[kind]}`")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is bad input
        raise InputError(f"{p}: unreadable weights ({type(e).__name__}: {e})".splitlines()[0]) from None
    if not isinstance(data, dict) or data.get("kind") != kind:
        got = data.get("kind") if isinstance(data, dict) else type(data).__name__
        raise InputError(f"{p}: holds {got!r} weights, expected {kind!r}")
    data["path"], data["sha256"] = p, digest
    return data
