"""The storm digest: counts by status and alert name, the shared labels, within the limit."""

from __future__ import annotations

from bridge.digest import DigestItem, render_digest
from bridge.sandbox.botapi import parse_telegram_html
from bridge.telegram_text import TELEGRAM_LIMIT, utf16_len


def item(name: str, status: str = "firing", count: int = 1, **labels: str) -> DigestItem:
    return DigestItem(status, count, {"alertname": name, "team": "db", **labels})


def test_counts_by_status_and_name_with_the_shared_labels() -> None:
    items = [item("DiskFull", count=3, host="a"), item("DiskFull", host="b"), item("Down")]
    items.append(item("Down", status="resolved", count=2))
    visible, _ = parse_telegram_html(render_digest(items))
    assert visible.startswith("🌪 Storm digest: 5 alerts firing, 2 resolved in team=db")
    assert "🔥 DiskFull: 4\n✅ Down: 2\n🔥 Down: 1" in visible  # most first


def test_thousands_of_kinds_with_hostile_names_stay_sendable() -> None:
    items = [item(f"<b>&{i}" + "😀" * 200) for i in range(5000)]
    visible, _ = parse_telegram_html(render_digest(items))
    assert utf16_len(visible) <= TELEGRAM_LIMIT
    assert "… and 4960 more kinds" in visible
