"""The wheel carries the target profiles, and an installed wheel finds them."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from conftest import REPO


def test_wheel_ships_targets(tmp_path: Path):
    build = pytest.importorskip("hatchling.build")
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        name = build.build_wheel(str(tmp_path))
    finally:
        os.chdir(cwd)
    names = zipfile.ZipFile(tmp_path / name).namelist()
    shipped = {n.rsplit("/", 1)[-1] for n in names if n.startswith("edgeopt/_targets/")}
    assert shipped == {p.name for p in (REPO / "targets").glob("*.toml")}
    assert "edgeopt/cli/app.py" in names and not any(n.startswith("tests/") for n in names)
