"""The benchmark harness: the provenance stamp of a result, and README's result table generated from ``benchmarks/results/``."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _module():
    if str(REPO / "benchmarks") not in sys.path:  # the benchmarks import each other as scripts do
        sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("readme_table", REPO / "benchmarks" / "readme_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_table_is_generated_from_results():
    mod = _module()
    text = (REPO / "README.md").read_text()
    assert mod.render_readme(text) == text, "README's results table is out of date: python benchmarks/readme_table.py"


def test_table_follows_the_results_files(tmp_path):
    """Changing a number in a results file changes the table, and every file in the table has rows."""
    mod = _module()
    for stem in mod.TABLE:
        r = json.loads((mod.RESULTS / f"{stem}.json").read_text())
        assert mod.TABLE[stem](r), stem
    r = json.loads((mod.RESULTS / "fit.json").read_text())
    r["hand_mpjpe_mm_after"] = 123.4
    (tmp_path / "fit.json").write_text(json.dumps(r))
    assert "-> 123.4 mm" in mod.table(tmp_path)
    assert "-> 123.4 mm" not in mod.table()
    with pytest.raises(ValueError, match="no <!-- results-table:begin -->"):
        mod.render_readme("# a README without the block\n")


def test_stamp_names_the_command_commit_config_and_data(tmp_path):
    _module()
    import harness

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.bin").write_bytes(b"one")
    st = harness.stamp(REPO / "benchmarks" / "fit.py", ["--frames", "2"], config_digest="abc",
                       data={"capture": tmp_path / "d", "absent": tmp_path / "none"})
    assert st["command"] == "python benchmarks/fit.py --frames 2"
    assert st["config_digest"] == "abc" and st["data_sha256"]["absent"] == "missing"
    assert len(st["package_digest"]) == 12 and st["date"].endswith("+00:00")
    assert st["git_commit"] == "unknown" or len(st["git_commit"].removesuffix("+dirty")) == 40
    before = st["data_sha256"]["capture"]
    (tmp_path / "d" / "a.bin").write_bytes(b"two")  # a changed input file changes its hash
    assert harness.sha256(tmp_path / "d") != before
    out = harness.write_result(tmp_path / "r.json", {**st, "x": 1}, "# r\n")
    assert json.loads(out.read_text())["x"] == 1 and (tmp_path / "r.md").read_text() == "# r\n"
    assert "loadavg_end" in json.loads(out.read_text())["machine"]
