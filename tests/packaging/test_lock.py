"""The lock files: complete, hash-pinned, in step with pyproject.toml, and what
the image installs.

requirements.lock pins what the application runs on; requirements-dev.lock
the same pins plus the test and lint tools (.ci/setup installs it, so every
test in this suite already runs from it). `bash .ci/lock` writes both.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO

RUNTIME_LOCK = REPO / "requirements.lock"
DEV_LOCK = REPO / "requirements-dev.lock"
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;]+)(?:\s*;\s*([^\\]+?))?\s*\\?$")


def pins(lock: Path) -> dict[tuple[str, str], list[str]]:
    """(name, marker) -> [version, hashes...] for every pinned line."""
    found: dict[tuple[str, str], list[str]] = {}
    current: list[str] | None = None
    for line in lock.read_text().splitlines():
        match = PIN.match(line)
        if match:
            name, version, marker = match[1], match[2], (match[3] or "").strip()
            current = found.setdefault((canonicalize_name(name), marker), [version])
        elif current is not None and line.strip().startswith("--hash=sha256:"):
            current.append(line.strip().removeprefix("--hash=sha256:").rstrip(" \\"))
        elif line.strip() and not line.lstrip().startswith("#"):
            raise AssertionError(f"{lock.name}: a line that is not a pin or a hash: {line!r}")
    return found


def project() -> dict[str, list[Requirement]]:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {
        "runtime": [Requirement(r) for r in meta["dependencies"]],
        "dev": [Requirement(r) for r in meta["optional-dependencies"]["dev"]],
    }


def versions_here(lock: Path) -> dict[str, str]:
    """What pip would install from the lock on this interpreter and platform."""
    chosen: dict[str, str] = {}
    for (name, marker), (version, *_) in pins(lock).items():
        if not marker or Marker(marker).evaluate():
            assert name not in chosen, f"{lock.name}: two pins of {name} apply here"
            chosen[name] = version
    return chosen


@pytest.mark.parametrize("lock", [RUNTIME_LOCK, DEV_LOCK], ids=lambda p: p.name)
def test_every_pin_is_exact_and_has_hashes(lock: Path) -> None:
    found = pins(lock)
    assert len(found) > 20
    unhashed = sorted(name for (name, _), (_, *hashes) in found.items() if not hashes)
    assert unhashed == []
    for _, (_, *hashes) in found.items():
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), hashes


@pytest.mark.parametrize(
    ("lock", "group"), [(RUNTIME_LOCK, "runtime"), (DEV_LOCK, "runtime"), (DEV_LOCK, "dev")]
)
def test_the_lock_satisfies_every_bound_in_pyproject(lock: Path, group: str) -> None:
    locked = versions_here(lock)
    for requirement in project()[group]:
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{lock.name} has no pin of {requirement}: run bash .ci/lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{lock.name} pins {name}=={locked[name]}, pyproject.toml asks {requirement}: "
            "run bash .ci/lock"
        )


def test_the_tests_run_on_exactly_what_ships() -> None:
    runtime = pins(RUNTIME_LOCK)
    dev = pins(DEV_LOCK)
    differ = {key: (runtime[key], dev.get(key)) for key in runtime if dev.get(key) != runtime[key]}
    assert differ == {}


def test_dot_ci_lock_reproduces_the_committed_pins(tmp_path: Path) -> None:
    """The lock files are what `bash .ci/lock` makes of pyproject.toml today.
    Versions only: PyPI may add a file (a new platform's wheel) to a pinned
    release, which changes a hash list but not what is pinned."""
    for name in ("pyproject.toml", "README.md", RUNTIME_LOCK.name, DEV_LOCK.name, ".ci/lock"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    uv = Path(sys.executable).parent / "uv"
    subprocess.run(
        ["bash", ".ci/lock"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=300,
        env={**os.environ, "UV": str(uv)},
    )
    for lock in (RUNTIME_LOCK, DEV_LOCK):
        made = {key: value[0] for key, value in pins(tmp_path / lock.name).items()}
        committed = {key: value[0] for key, value in pins(lock).items()}
        assert made == committed, f"{lock.name} is stale: run bash .ci/lock"


# --- the image -------------------------------------------------------------------


def docker_pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: anchored at the context's root,
    `*` and `?` stay within one path element, `**` crosses them."""
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            regex, i = regex + pattern[i : end + 1], end + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.compile(regex)


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its
    parent directories decides; a `!` pattern takes the path back in."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = docker_pattern(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


def build_context(dest: Path) -> None:
    """The builder stage's COPY sources, as a build context filtered by
    .dockerignore would give them."""
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    dockerfile = (REPO / "Dockerfile").read_text()
    builder = dockerfile.split("\nFROM ")[1]
    for line in builder.splitlines():
        if not line.startswith("COPY "):
            continue
        *sources, _ = shlex.split(line)[1:]
        for source in sources:
            root = REPO / source
            files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
            for file in files:
                relative = str(file.relative_to(REPO))
                if not dockerignored(relative, patterns):
                    (dest / relative).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(file, dest / relative)


def test_the_build_context_follows_dockers_rules() -> None:
    patterns = [
        "**/__pycache__",
        "**/*.py[cod]",
        "*.egg-info",
        "tests",
        "alertmanager-examples",
        "!alertmanager-examples/payloads",
    ]
    assert dockerignored("bridge/__pycache__/x.pyc", patterns)
    assert dockerignored("bridge/store/x.pyc", patterns)
    assert dockerignored("alertbridge.egg-info/PKG-INFO", patterns)
    assert not dockerignored("bridge/x.egg-info", patterns)  # anchored at the root
    assert dockerignored("tests/unit/test_x.py", patterns)
    assert dockerignored("alertmanager-examples/config.yml", patterns)
    assert not dockerignored("alertmanager-examples/payloads/firing.json", patterns)
    assert not dockerignored("bridge/cli.py", patterns)


@pytest.mark.slow
def test_the_image_installs_from_the_runtime_lock_alone(tmp_path: Path) -> None:
    """The Dockerfile's steps, without Docker: wheels of every pin, checked
    against the lock's hashes; the project's wheel from the build context; a
    fresh venv that gets nothing else, is consistent (pip check), imports every
    module and renders a payload with the shipped templates."""
    context, wheels, venv = tmp_path / "src", tmp_path / "wheels", tmp_path / "venv"
    context.mkdir()
    build_context(context)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]

    def run(*args: str, cwd: Path = context) -> str:
        done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{shlex.join(args)}\n{done.stdout}{done.stderr}"
        return done.stdout

    run(*pip, "wheel", "--require-hashes", "--wheel-dir", str(wheels), "-r", "requirements.lock")
    run(*pip, "wheel", "--no-deps", "--wheel-dir", str(wheels), ".")
    run(sys.executable, "-m", "venv", str(venv))
    vpip = [str(venv / "bin/python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    run(
        *vpip,
        "install",
        "--no-index",
        "--find-links",
        str(wheels),
        "--require-hashes",
        "-r",
        str(context / "requirements.lock"),
    )
    (wheel,) = wheels.glob("alertbridge-*.whl")
    run(*vpip, "install", "--no-index", "--no-deps", str(wheel))
    run(*vpip[:-1], "check")

    imported = run(
        str(venv / "bin/python"),
        "-c",
        "import importlib, pkgutil, bridge\n"
        "names = [m.name for m in pkgutil.walk_packages(bridge.__path__, 'bridge.')\n"
        "         if not m.name.endswith('__main__')]\n"
        "for name in names: importlib.import_module(name)\n"
        "print(len(names))",
        cwd=tmp_path,
    )
    assert int(imported) > 30
    config = tmp_path / "alertbridge.yml"
    config.write_text('telegram: {token: "1:x"}\nroute: {chats: [-1001]}\n')
    payload = REPO / "alertmanager-examples/payloads/firing.json"
    rendered = run(
        str(venv / "bin/alertbridge"), "render", "-c", str(config), str(payload), cwd=tmp_path
    )
    assert "-1001" in rendered and "FIRING" in rendered
