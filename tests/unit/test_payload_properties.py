"""Whatever body arrives, the answer is 2xx or a 4xx naming the field: never a 5xx.

Every source parser gets arbitrary JSON and "nearly valid" payloads (a real
sample with one field removed, nulled, retyped or replaced), and whatever it
accepts goes on through the rest of the receive path: key, route, render
with every shipped template, and what the store needs of it. One test sends
the same bodies through the HTTP app with a SQLite store.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bridge.config import Config, GenericSourceConfig
from bridge.dedup import group_ref, notification_key
from bridge.errors import PayloadError
from bridge.metrics import Metrics
from bridge.models import Destination, Notification
from bridge.queue.local import LocalQueue
from bridge.receiver import ReceiverDeps, Rules, create_app, route_and_render
from bridge.render import build_environment, render
from bridge.sandbox.botapi import parse_telegram_html
from bridge.sources import alertmanager, generic, grafana, is_internal, unstorable
from bridge.store.sqlite import SqliteStore
from bridge.telegram_text import TELEGRAM_LIMIT, utf16_len

ROOT = Path(__file__).resolve().parents[2]
PAYLOADS = ROOT / "alertmanager-examples" / "payloads"
NOW = datetime(2026, 11, 20, 11, 5, tzinfo=UTC)
TEMPLATES = ("default", "compact", "detailed")

UPTIME = GenericSourceConfig.model_validate(
    yaml.safe_load((ROOT / "alertmanager-examples" / "generic-source.yml").read_text())["sources"][
        "uptime"
    ]
)
# Every setting a generic source has, each reading a different kind of path.
EVERYTHING = GenericSourceConfig(
    alerts="data.items",
    status="state.code",
    firing_values=["down", "1"],
    labels={"alertname": "name", "host": "meta.host", "first_tag": "tags.0"},
    labels_from="extra",
    annotations={"summary": "text", "detail": "meta.detail"},
    fingerprint="id",
    starts_at="since",
    url="link",
    group_by=["alertname", "host"],
)
EVERYTHING_SAMPLE = {
    "data": {
        "items": [
            {
                "state": {"code": "down"},
                "name": "DiskFull",
                "meta": {"host": "db-1", "detail": "97% <used>"},
                "tags": ["storage", "prod"],
                "extra": {"team": "db", "__internal__": "x", "size": 97},
                "text": "Disk & inodes",
                "id": 17,
                "since": "2026-11-20T10:00:00Z",
                "link": "https://status.example/17",
            },
            {"state": {"code": 0}, "name": "DiskFull", "id": "18", "link": None},
        ]
    }
}

Parse = Callable[[bytes], Notification]
SOURCES: dict[str, tuple[str, Parse, list[Any]]] = {
    # name: (URL path, parser, valid samples)
    "alertmanager": (
        "/alertmanager",
        alertmanager.parse,
        [json.loads((PAYLOADS / f).read_text()) for f in ("firing.json", "resolved.json")],
    ),
    "grafana": (
        "/webhook/grafana",
        grafana.parse,
        [
            json.loads((PAYLOADS / f).read_text())
            for f in ("grafana-firing.json", "grafana-documented.json")
        ],
    ),
    "uptime": (
        "/webhook/uptime",
        partial(generic.parse, settings=UPTIME, name="uptime"),
        [json.loads((PAYLOADS / "generic-uptime.json").read_text())],
    ),
    "cron": (
        "/webhook/cron",
        partial(generic.parse, settings=GenericSourceConfig(), name="cron"),
        [{"status": "firing"}, {"status": "resolved", "more": [1, 2]}],
    ),
    "everything": (
        "/webhook/everything",
        partial(generic.parse, settings=EVERYTHING, name="everything"),
        [EVERYTHING_SAMPLE],
    ),
}

CONFIG = Config.model_validate(
    {
        "telegram": {"token": "123:ABC"},
        "sources": {"uptime": UPTIME, "cron": GenericSourceConfig(), "everything": EVERYTHING},
        # Every shipped template, for every notification.
        "route": {
            "chats": [-1000],
            "routes": [
                {"chats": [-1001], "template": "default", "continue": True},
                {"chats": [-1002], "template": "compact", "continue": True},
                {"chats": [-1003], "template": "detailed"},
            ],
        },
    }
)
RULES = Rules.from_config(CONFIG)
ENV = build_environment()

# ------------------------------------------------------------------ strategies

# Text with the characters that break stores and encoders mixed in.
TEXT = st.text(st.characters() | st.sampled_from(["\x00", "\ud800", "\udfff", "<", "&"]))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        items: Any = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return
    for key, child in items:
        yield (*prefix, key)
        yield from _paths(child, (*prefix, key))


def _retyped(value: Any) -> Any:
    if isinstance(value, str):
        return [value] if value.isdigit() else 12345
    if isinstance(value, bool) or value is None:
        return "true"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    return list(value.values())


@st.composite
def nearly_valid(draw: st.DrawFn, samples: list[Any]) -> Any:
    """A valid sample with one field removed, nulled, retyped or replaced."""
    document = copy.deepcopy(draw(st.sampled_from(samples)))
    path = draw(st.sampled_from(list(_paths(document))))
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    change = draw(st.sampled_from(["remove", "null", "retype", "replace", "internal label"]))
    if change == "remove":
        del parent[key]
    elif change == "null":
        parent[key] = None
    elif change == "retype":
        parent[key] = _retyped(parent[key])
    elif change == "replace":
        parent[key] = draw(JSON)
    elif isinstance(parent[key], dict):
        parent[key]["__alert_rule_uid__"] = draw(TEXT)
    return document


def _bodies(samples: list[Any]) -> st.SearchStrategy[bytes]:
    documents = JSON | nearly_valid(samples)
    return st.one_of(
        documents.map(lambda d: json.dumps(d).encode()),
        st.binary(max_size=40),
    )


# ------------------------------------------------------------------ the checks


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield where, value
    elif is_dataclass(value) and not isinstance(value, type):
        for f in fields(value):
            yield from _strings(getattr(value, f.name), f"{where}.{f.name}")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield f"{where} key", k
            yield from _strings(v, f"{where}.{k}")
    elif isinstance(value, tuple | list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{where}[{i}]")


def check_refusal(error: PayloadError) -> None:
    assert error.status in (400, 422), error
    if error.status == 422:  # the answer names the field it refuses
        assert error.field, error
        assert error.field in str(error), error


def check_accepted(notification: Notification) -> None:
    """Everything after parse: key, route, render, and what the store writes."""
    notification_key(notification)
    group_ref(notification)
    for where, text in _strings(notification, "notification"):
        assert unstorable(text) is None, (where, text)
    json.dumps(dict(notification.common_labels), ensure_ascii=False).encode()
    assert len(notification.alerts) + notification.truncated_alerts < 2**31
    for alert in notification.alerts:
        assert not any(is_internal(name) for name in alert.labels)
        for moment in (alert.starts_at, alert.ends_at):
            assert moment is None or moment.tzinfo is UTC
    assert not any(is_internal(name) for name in notification.common_labels)

    deliveries = route_and_render(RULES, notification)
    assert sorted(d.template for d in deliveries) == sorted(TEMPLATES)
    for template in TEMPLATES:
        # Directly too: route_and_render would hide a failing template behind its fallback.
        html = render(ENV, template, notification, Destination(chat_id=-1), now=NOW)
        visible, _ = parse_telegram_html(html)
        assert utf16_len(visible) <= TELEGRAM_LIMIT


def receive(parse: Parse, body: bytes) -> None:
    try:
        notification = parse(body)
    except PayloadError as error:
        check_refusal(error)
    else:
        check_accepted(notification)


PROPERTY = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_every_sample_is_accepted_whole(source: str) -> None:
    _, parse, samples = SOURCES[source]
    for sample in samples:
        check_accepted(parse(json.dumps(sample).encode()))


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_any_body_is_accepted_or_refused_by_field(source: str) -> None:
    _, parse, samples = SOURCES[source]

    @PROPERTY
    @given(_bodies(samples))
    def property_(body: bytes) -> None:
        receive(parse, body)

    property_()


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_nearly_valid_bodies_are_accepted_or_refused_by_field(source: str) -> None:
    _, parse, samples = SOURCES[source]

    @PROPERTY
    @given(nearly_valid(samples).map(lambda d: json.dumps(d).encode()))
    def property_(body: bytes) -> None:
        receive(parse, body)

    property_()


# ------------------------------------------------------------- through HTTP


def example_all(requests: list[tuple[str, bytes]]) -> Callable[[Any], Any]:
    def decorate(test: Any) -> Any:
        for request in requests:
            test = example(request)(test)
        return test

    return decorate


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[tuple[asyncio.Runner, httpx.AsyncClient]]:
    with asyncio.Runner() as runner:
        store = runner.run(SqliteStore.open(tmp_path / "alertbridge.db"))
        runner.run(store.migrate())
        deps = ReceiverDeps(rules=RULES, store=store, publisher=LocalQueue(), metrics=Metrics())
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(deps)), base_url="http://bridge"
        )
        yield runner, client
        runner.run(client.aclose())
        runner.run(store.close())


def _changed(sample: str, change: Callable[[Any], None]) -> bytes:
    document = json.loads((PAYLOADS / sample).read_text())
    change(document)
    return json.dumps(document).encode()


# Bodies that once got a 5xx, each for a different reason.
ONCE_5XX = [
    # A generic source's url: the alert lacks.
    ("/webhook/uptime", _changed("generic-uptime.json", lambda d: d["checks"][0].pop("url"))),
    # Text UTF-8 cannot encode.
    (
        "/webhook/everything",
        b'{"data": {"items": [{"state": {"code": "down"}, "id": 1, "extra": {"x": "\\udfff"}}]}}',
    ),
    # A count no column holds.
    ("/alertmanager", _changed("firing.json", lambda d: d.update(truncatedAlerts=2**63))),
    # A time no timezone conversion survives.
    (
        "/alertmanager",
        _changed("resolved.json", lambda d: d["alerts"][0].update(endsAt="9999-12-31T23:00-05:00")),
    ),
]


def test_through_the_app_every_answer_is_2xx_or_4xx_naming_the_field(app_client) -> None:
    runner, client = app_client
    paths = st.sampled_from(sorted(SOURCES)).flatmap(
        lambda s: st.tuples(st.just(SOURCES[s][0]), _bodies(SOURCES[s][2]))
    )

    @settings(
        deadline=None,
        max_examples=200,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(paths)
    @example_all(ONCE_5XX)
    def property_(request: tuple[str, bytes]) -> None:
        path, body = request
        answer = runner.run(client.post(path, content=body))
        assert answer.status_code in (200, 400, 422), answer.text
        if answer.status_code == 422:
            payload = answer.json()
            assert payload["field"] and payload["field"] in payload["error"]

    property_()
