"""The image, the Helm chart, the dashboard, the rules and the example configs.

`.ci/lint` holds the checks (hadolint, the values schema with a typo that
must be rejected, helm lint and template in both modes, amtool, promtool,
the bridge's own check-config on every config the chart renders); running
it here puts it in the one test command CI runs.
"""

from __future__ import annotations

import subprocess

from tests.conftest import REPO


def test_ci_lint_passes() -> None:
    result = subprocess.run(
        ["bash", ".ci/lint"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[lint] all passed" in result.stderr
