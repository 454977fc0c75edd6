"""Storm digests: many waiting notifications for one chat as one message. Pure.

When a datacenter falls over, a chat can have hundreds of notifications
waiting at one message a second. A digest gives the picture at once:
counts by status and alert name, and the labels they all share.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bridge.telegram_text import TELEGRAM_LIMIT, telegram_escape, utf16_len, visible_text

MAX_KINDS = 40


@dataclass(frozen=True, slots=True)
class DigestItem:
    """One coalesced notification."""

    status: str  # "firing" or "resolved"
    alert_count: int
    common_labels: Mapping[str, str]


def render_digest(items: Sequence[DigestItem]) -> str:
    """Telegram HTML: how many alerts, where, and of which kinds; always within the limit."""
    kinds: Counter[tuple[str, str]] = Counter()
    for item in items:
        kinds[(item.status, item.common_labels.get("alertname", "other"))] += item.alert_count
    firing = sum(n for (status, _), n in kinds.items() if status == "firing")
    resolved = sum(n for (status, _), n in kinds.items() if status == "resolved")
    shared = _shared_labels(items)
    where = ", ".join(f"{k}={v}" for k, v in sorted(shared.items()) if k != "alertname")
    head = f"🌪 <b>Storm digest: {firing} alert{'s' if firing != 1 else ''} firing"
    if resolved:
        head += f", {resolved} resolved"
    head += "</b>"
    if where:
        head += f" in <code>{telegram_escape(where[:300])}</code>"
    lines = [
        head,
        f"<i>{len(items)} notifications coalesced to keep up with Telegram's limits</i>",
        "",
    ]
    ordered = sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))
    for (status, name), count in ordered[:MAX_KINDS]:
        mark = "🔥" if status == "firing" else "✅"
        lines.append(f"{mark} {telegram_escape(name[:120])}: {count}")
    if len(ordered) > MAX_KINDS:
        lines.append(f"… and {len(ordered) - MAX_KINDS} more kinds")
    text = "\n".join(lines)
    while utf16_len(visible_text(text)) > TELEGRAM_LIMIT:  # only with absurd names
        lines.pop(-2 if lines[-1].startswith("…") else -1)
        text = "\n".join(lines)
    return text


def _shared_labels(items: Sequence[DigestItem]) -> dict[str, str]:
    if not items:
        return {}
    shared = dict(items[0].common_labels)
    for item in items[1:]:
        shared = {k: v for k, v in shared.items() if item.common_labels.get(k) == v}
    return shared
