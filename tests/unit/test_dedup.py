"""Notification keys: the same notification, however it arrives, has one key."""

from __future__ import annotations

import json
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from bridge.dedup import notification_key
from bridge.sources.alertmanager import parse
from tests.payloads import alert, webhook


def key_of(payload: dict) -> str:
    return str(notification_key(parse(json.dumps(payload).encode())))


def test_a_retry_has_the_same_key() -> None:
    payload = webhook(alert("A"), alert("B"))
    assert key_of(payload) == key_of(json.loads(json.dumps(payload)))


def test_each_ha_replica_yields_the_same_key() -> None:
    alerts = (alert("A"), alert("B"))
    assert key_of(webhook(*alerts, external_url="http://am-0:9093")) == key_of(
        webhook(*alerts, external_url="http://am-1:9093")
    )


def test_alert_order_does_not_matter() -> None:
    assert key_of(webhook(alert("A"), alert("B"))) == key_of(webhook(alert("B"), alert("A")))


def test_equal_instants_in_other_offsets_are_one_key() -> None:
    utc = webhook(alert("A", starts_at="2026-11-20T10:00:00Z"))
    cet = webhook(alert("A", starts_at="2026-11-20T11:00:00+01:00"))
    assert key_of(utc) == key_of(cet)


def test_what_changes_the_notification_changes_the_key() -> None:
    base = webhook(alert("A"))
    resolved = webhook(alert("A", status="resolved", ends_at="2026-11-20T11:00:00Z"))
    grown = webhook(alert("A"), alert("B"))
    other_receiver = webhook(alert("A"), receiver="pager")
    other_group = webhook(alert("A"), group_key='{}:{alertname="other"}')
    restarted = webhook(alert("A", starts_at="2026-11-21T10:00:00Z"))
    keys = {key_of(p) for p in (base, resolved, grown, other_receiver, other_group, restarted)}
    assert len(keys) == 6


def test_why_and_by_which_route_alertmanager_sent_it_do_not_change_the_key() -> None:
    # HA replicas keep their own notification logs: one may say "first
    # notification" where the other says "repeat interval elapsed", and a
    # retry after an upgrade may add routeLabels. Still one notification.
    plain = webhook(alert("A"))
    first = {**plain, "notification_reason": "first notification"}
    repeat = {**plain, "notification_reason": "repeat interval elapsed"}
    routed = {**repeat, "routeLabels": {"team": "db"}}
    assert key_of(plain) == key_of(first) == key_of(repeat) == key_of(routed)
    assert parse(json.dumps(routed).encode()).route_labels == {"team": "db"}


def test_annotations_do_not_make_a_new_notification() -> None:
    # Annotations may carry a live value ("current: 93%"); each re-evaluation
    # must not look like a new notification.
    a = webhook(alert("A", annotations={"summary": "93%"}))
    b = webhook(alert("A", annotations={"summary": "94%"}))
    assert key_of(a) == key_of(b)


# Any name a label can hold: all of Unicode but NUL, which no store can keep.
NAMES = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=8
)


@given(st.lists(NAMES, min_size=1, max_size=6, unique=True))
def test_keys_are_stable_across_calls_and_distinct_across_alert_sets(names) -> None:
    payload = webhook(*(alert(n) for n in names), group_key="g")
    notification = parse(json.dumps(payload).encode())
    assert notification_key(notification) == notification_key(replace(notification))
    fewer = webhook(*(alert(n) for n in names[:-1] or ["other"]), group_key="g")
    if names[:-1] or names != ["other"]:
        assert key_of(payload) != key_of(fewer)
