"""Every module of the bridge imports on its own: no import cycle hides behind the
order in which the rest of the suite happens to import things."""

from __future__ import annotations

import subprocess
import sys

# In a fresh interpreter: each module imported first, the bridge's modules forgotten
# between two (third-party ones stay loaded, so this takes a second, not a minute).
SCRIPT = """
import importlib, pkgutil, sys
import bridge
modules = pkgutil.walk_packages(bridge.__path__, "bridge.")
names = sorted(m.name for m in modules if not m.name.endswith("__main__"))  # runs the CLI
failed = []
for name in names:
    for loaded in [m for m in sys.modules if m == "bridge" or m.startswith("bridge.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
print(len(names))
print("\\n".join(failed))
"""


def test_each_module_imports_first_without_a_cycle() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=True
    )
    count, *failures = done.stdout.splitlines()
    assert int(count) > 50  # every module was tried
    assert [f for f in failures if f] == []
