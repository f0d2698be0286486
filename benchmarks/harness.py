"""What every benchmark shares: where the data is, the stamp a result carries, and how results
are written.

A result is reproducible when it says what made it. :func:`stamp` gives every result the same
provenance block:

* ``command``: the command line that made it (``python benchmarks/NAME.py ARGS``);
* ``git_commit``: the checkout's commit, ``+dirty`` when ``hoannot/`` or ``benchmarks/`` had
  uncommitted changes;
* ``date``: when the result was written (UTC, ISO 8601);
* ``package_digest``: sha256 of the package source and shipped weights (12 hex digits), which
  also names the code of a dirty checkout;
* ``config_digest``: the fit settings' :meth:`hoannot.fitting.config.FitConfig.digest` (when
  the benchmark fits), or a digest of the benchmark's own settings;
* ``data_sha256`` / ``weights_sha256``: sha256 (16 hex digits) of each input file or folder;
* ``machine``: host, CPU count, load average at the start and end, Python and torch versions,
  and the torch thread count, as the speed numbers depend on them.

:func:`write_result` writes ``benchmarks/results/NAME.json`` (and ``NAME.md``) together, all or
none. README's result table is generated from these files (``benchmarks/readme_table.py``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
#: the project's reference material (real YCB meshes, the WebXR hand...); benchmarks need it
SHARED = REPO.parent / "shared" / "data"
WEBXR_HAND = SHARED / "hands" / "webxr_generic_hand" / "right.glb"


def git_commit(paths: Iterable[str] = ("hoannot", "benchmarks")) -> str:
    """The checkout's full commit hash, ``+dirty`` when ``paths`` have uncommitted changes, or
    ``"unknown"`` outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *paths], cwd=REPO, capture_output=True, text=True,
                               check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def sha256(path: str | os.PathLike, digits: int = 16) -> str:
    """sha256 of a file, or of a folder's files (their relative paths and bytes, in sorted order).

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f.relative_to(path).as_posix().encode())
            h.update(f.read_bytes())
    else:
        h.update(path.read_bytes())
    return h.hexdigest()[:digits]


def package_digest() -> str:
    """sha256 of the package source (``hoannot/**/*.py``, templates) and shipped weights, 12 hex
    digits: a cache key that changes whenever the code a benchmark runs changes."""
    h = hashlib.sha256()
    for p in sorted((REPO / "hoannot").rglob("*")):
        if p.is_file() and p.suffix in (".py", ".pt", ".j2", ".json", ".pkl", ".npz"):
            h.update(p.relative_to(REPO).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:12]


def settings_digest(settings: Any) -> str:
    """12 hex digits of a JSON-able settings object (a benchmark's own knobs)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; elsewhere ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine() -> dict[str, Any]:
    """Where a number was measured: host, CPU model, CPUs, load average, Python, torch, its
    threads and the CPU kernels it picked (``torch_cpu_capability``, e.g. AVX512 or AVX2: the
    float sums, and so a chaotic fit's path, differ between them)."""
    out: dict[str, Any] = {"host": platform.node(), "arch": platform.machine(), "cpu_model": cpu_model(),
                           "cpus": os.cpu_count(), "python": platform.python_version()}  # fmt: skip
    if hasattr(os, "getloadavg"):
        out["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        out.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                   torch_cpu_capability=torch.backends.cpu.get_cpu_capability())  # fmt: skip
    return out


def stamp(
    script: str | os.PathLike,
    argv: list[str] | None = None,
    *,
    config_digest: str | None = None,
    data: Mapping[str, str | os.PathLike] | None = None,
    weights: Mapping[str, str | os.PathLike] | None = None,
) -> dict[str, Any]:
    """The provenance block of a result (see the module docstring).

    Args:
        script: the benchmark's ``__file__``.
        argv: its arguments (default ``sys.argv[1:]``).
        config_digest: the fit settings' digest (``FitConfig.digest()``) or
            :func:`settings_digest` of the benchmark's own settings.
        data, weights: name -> file or folder the result was computed from; each is hashed
            (:func:`sha256`); a missing one is recorded as ``"missing"``.
    Returns:
        a dict to merge first into the result (``{**stamp(...), ...}``).
    """
    args = sys.argv[1:] if argv is None else argv
    rel = Path(script).resolve()
    rel = rel.relative_to(REPO) if rel.is_relative_to(REPO) else rel

    def hashes(m):
        return {k: (sha256(p) if Path(p).exists() else "missing") for k, p in (m or {}).items()}

    out = {"command": " ".join(["python", rel.as_posix(), *args]), "git_commit": git_commit(),
           "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "package_digest": package_digest(),
           "config_digest": config_digest, "data_sha256": hashes(data), "machine": machine()}  # fmt: skip
    if weights:
        out["weights_sha256"] = hashes(weights)
    return out


def write_result(out: str | os.PathLike, result: Mapping[str, Any], markdown: str | None = None) -> Path:
    """Write a result's JSON (and its Markdown beside it, same name, ``.md``) together, all or
    none; the machine's load average at the end joins ``result["machine"]``.

    Args:
        out: a name (``"speed"`` -> ``benchmarks/results/speed.json``) or a ``.json`` path
            (quick runs write into their work folder).
    Returns:
        the JSON path.
    Raises:
        OSError: a file could not be written (then neither changed).
    """
    from hoannot.io import json_bytes, write_files

    path = RESULTS / f"{out}.json" if isinstance(out, str) and "/" not in out and not out.endswith(".json") else Path(out)
    res = dict(result)
    if isinstance(res.get("machine"), dict) and hasattr(os, "getloadavg"):
        res["machine"] = {**res["machine"], "loadavg_end": [round(x, 2) for x in os.getloadavg()]}
    files = {path: json_bytes(res)}
    if markdown is not None:
        files[path.with_suffix(".md")] = markdown.encode()
    write_files(files)
    return path


def machine_line(res: Mapping[str, Any]) -> str:
    """``x86_64, 2 CPUs, torch 2.12.1, load 1.9`` from a result's ``machine`` (older results: a string)."""
    m = res.get("machine")
    if not isinstance(m, dict):
        return str(m)
    load = f", load {m['loadavg'][0]:.1f}" if m.get("loadavg") else ""
    return f"{m.get('arch')}, {m.get('cpus')} CPUs, torch {m.get('torch', '?')}{load}"
