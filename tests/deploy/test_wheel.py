"""The wheel holds the whole product: every package and every data file the code reads.
The image installs WrenchAI with `pip install .`, so a package or file left out of the wheel
is missing in production while every test run from the source tree passes."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = ("events", "processors", "projections", "api", "wrenchai")


def _source_files() -> set[str]:
    """Every file of the product's packages in the tree, as a path inside the wheel."""
    found = set()
    for root in ROOTS:
        for path in (REPO / root).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                found.add(path.relative_to(REPO).as_posix())
    return found


def test_the_wheel_holds_every_module_and_data_file(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("wrenchai-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        inside = {name for name in archive.namelist() if not name.endswith("/")}
    missing = sorted(_source_files() - inside)
    assert missing == [], f"left out of the wheel: {missing}"
    # The packages found are the product's only: no tests, benches or build output.
    assert not any(name.startswith(("tests/", "bench/", "build/")) for name in inside)
