"""README's result table is the one ``benchmarks/readme_table.py`` generates from ``benchmarks/results/``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _module():
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
