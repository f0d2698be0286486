"""The ground floor's atomic writes (hoannot.io)."""

from __future__ import annotations

import os
import stat

import numpy as np

from hoannot.io import atomic_write, write_files, write_npz


def test_written_files_have_a_new_files_permissions(tmp_path):
    """Files moved into place from a private temporary file get the permissions a plain
    ``open(path, "w")`` gives (umask applied), not mkstemp's owner-only 0600."""
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    want = stat.S_IMODE(plain.stat().st_mode)
    with atomic_write(tmp_path / "a.txt", "w") as f:
        f.write("x")
    write_files({tmp_path / "b.json": b"{}", tmp_path / "sub" / "c.bin": b"1"})
    write_npz(tmp_path / "d.npz", x=np.zeros(2))
    for name in ("a.txt", "b.json", "sub/c.bin", "d.npz"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == want, name
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
