"""The image, the Helm chart, the dashboard, the rules and the example configs.

`.ci/lint` holds the checks (hadolint, the values schema with a typo that
must be rejected, helm lint and template in both modes, amtool, promtool,
the bridge's own check-config on every config the chart renders); running
it here puts it in the one test command CI runs.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile

from tests.conftest import REPO


def test_ci_lint_passes() -> None:
    result = subprocess.run(
        ["bash", ".ci/lint"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[lint] all passed" in result.stderr


def test_the_wheel_holds_every_module_template_and_sample(tmp_path) -> None:
    """The image installs the wheel, not the checkout: a package missing from
    pyproject's list would import fine here and fail in production."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-q", "-w", str(tmp_path)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("alertbridge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        str(path.relative_to(REPO))
        for pattern in ("*.py", "*.sql", "*.html", "*.js", "*.css")
        for path in (REPO / "bridge").rglob(pattern)
    }
    expected |= {f"bridge/templates/{p.name}" for p in (REPO / "templates").glob("*.j2")}
    expected |= {
        f"bridge/examples/{p.name}"
        for p in (REPO / "alertmanager-examples" / "payloads").glob("*.json")
    }
    assert expected - names == set()
