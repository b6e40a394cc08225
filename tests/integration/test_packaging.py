"""The wheel: exactly one top-level package, ``arbor``, holding every module of the checkout's five folders."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from tests.conftest import REPO
from tests.unit.test_architecture import PACKAGES


def test_the_wheel_holds_one_top_level_package_with_every_module(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("arbor_rl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    code = [n for n in names if ".dist-info/" not in n]
    assert {n.split("/")[0] for n in code} == {"arbor"}
    top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
    assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["arbor"]
    expected = {f"arbor/{p.relative_to(REPO)}" for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    assert set(code) == expected  # every package folder is listed in pyproject.toml, and nothing else ships
