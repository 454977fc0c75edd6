"""`alertbridge deliveries` as a separate process beside a running standalone bridge."""

from __future__ import annotations

from pathlib import Path

from tests.integration.test_cli import alertbridge
from tests.unit.test_operator import standalone  # noqa: F401 - the fixture


def test_a_separate_process_reads_and_resends_while_the_bridge_holds_the_lock(
    standalone: tuple[Path, list[int]],  # noqa: F811 - the fixture imported above
) -> None:
    config, (delivered, unsure, _) = standalone
    listed = alertbridge("deliveries", "-c", str(config), "--state", "ambiguous")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split()[:2] == [str(unsure), "ambiguous"]
    resent = alertbridge("deliveries", "-c", str(config), "resend", str(unsure), str(delivered))
    assert resent.returncode == 1, resent.stderr
    assert f"delivery {unsure}: resent" in resent.stdout
    assert "only ambiguous or failed deliveries are resent" in resent.stderr


def test_help_teaches_with_examples() -> None:
    out = alertbridge("deliveries", "--help").stdout
    assert "resend 4711" in out and "--state ambiguous" in out and "Exit codes" in out


# -- pure formatting -----------------------------------------------------------------------
