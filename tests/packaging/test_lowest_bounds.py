"""The lower bounds in pyproject.toml are true: with every direct dependency at
the lowest version they allow (and the rest as new as they come), the package
installs and the unit tests pass.

The lock files keep every install reproducible, at the newest pins; this is
what keeps pyproject.toml honest for everyone who installs without them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import REPO

# What tests/unit imports besides the package: the test runner and its helpers.
UNIT_TEST_TOOLS = {"pytest", "pytest-asyncio", "hypothesis", "httpx"}


def unit_test_tools() -> list[str]:
    dev = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"][
        "dev"
    ]
    chosen = [r for r in dev if Requirement(r).name in UNIT_TEST_TOOLS]
    assert {Requirement(r).name for r in chosen} == UNIT_TEST_TOOLS
    return chosen


@pytest.mark.slow
def test_the_unit_tests_pass_on_the_lowest_allowed_versions(tmp_path: Path) -> None:
    uv = str(Path(sys.executable).parent / "uv")
    venv = tmp_path / "lowest"
    env = {**os.environ, "VIRTUAL_ENV": str(venv)}
    subprocess.run(
        [uv, "venv", "--quiet", "--python", sys.executable, str(venv)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    install = subprocess.run(
        [uv, "pip", "install", "--resolution", "lowest-direct", "-e", ".", *unit_test_tools()],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr

    installed = subprocess.run(
        [uv, "pip", "freeze"], env=env, capture_output=True, text=True, check=True
    ).stdout
    versions = {
        canonicalize_name(name): Version(version)
        for name, _, version in (line.partition("==") for line in installed.splitlines())
        if version
    }
    runtime = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for bound in map(Requirement, runtime):
        (lowest,) = (Version(s.version) for s in bound.specifier if s.operator == ">=")
        assert versions[canonicalize_name(bound.name)] == lowest, installed

    tests = subprocess.run(
        [str(venv / "bin/python"), "-m", "pytest", "tests/unit", "-q", "-p", "no:cacheprovider"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert tests.returncode == 0, f"{installed}\n{tests.stdout[-6000:]}{tests.stderr[-2000:]}"
