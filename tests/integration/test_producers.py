"""Producers' own messages end to end: POST /v1/messages through the real receiver,
the store and queue of either mode (PostgreSQL and RabbitMQ, or standalone on one
SQLite file), the worker and the strict Telegram double."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bridge.sandbox.botapi import TelegramDouble
from tests.conftest import (
    ProxiedDatabase,
    RunningBridge,
    build_config,
    config_dict,
    start_bridge,
    wait_until,
)

BILLING = "billing-secret-token"
SHOP = "shop-secret-token"
CHAT = -1001234567890
PRODUCERS = {
    "billing": {"token": BILLING, "chats": [CHAT, 4242]},
    "shop": {"token": SHOP, "chats": [CHAT], "routes": True},
}


def auth(token: str = BILLING) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(params=["distributed", "standalone"])
async def api(
    request: pytest.FixtureRequest,
    bridge_factory: Any,
    telegram: TelegramDouble,
    tmp_path: Path,
) -> AsyncIterator[RunningBridge]:
    """A bridge with producers, in either mode: the API must not care."""
    (tmp_path / "messages").mkdir()
    template = "Invoice <b>{{ number }}</b>: {{ note }}"
    (tmp_path / "messages" / "invoice.html.j2").write_text(template)
    overrides: dict[str, Any] = {
        "producers": PRODUCERS,
        "template_dirs": [str(tmp_path)],
        "route": {"chats": [-1001], "routes": [{"matchers": ['team="ops"'], "chats": [-1002]}]},
    }
    if request.param == "distributed":
        yield await bridge_factory(**overrides)
        return
    sqlite = config_dict(None, None, telegram.url, sqlite_path=tmp_path / "ab.db", **overrides)
    bridge = await start_bridge(build_config(sqlite))
    try:
        yield bridge
    finally:
        await bridge.shutdown()


async def delivered(bridge: RunningBridge, message_id: str, token: str = BILLING) -> Any:
    """The message's record once it is delivered."""
    record: dict[str, Any] = {}

    async def done() -> bool:
        answer = await bridge.client.get(f"/v1/messages/{message_id}", headers=auth(token))
        record.update(answer.json())
        return bool(answer.status_code == 200 and record["status"] == "delivered")

    await wait_until(done)
    return record


async def test_a_message_posted_twice_and_at_once_is_one_telegram_message(
    api: RunningBridge, telegram: TelegramDouble
) -> None:
    body = {"message_id": "inv-1", "chat_id": CHAT, "text": "Invoice <b>42</b> paid"}
    first = await api.post("/v1/messages", body, headers=auth())
    assert first.status_code == 202
    assert first.json()["message_id"] == "inv-1"
    assert [d["chat_id"] for d in first.json()["deliveries"]] == [CHAT]

    again = await asyncio.gather(
        *(api.post("/v1/messages", body, headers=auth()) for _ in range(5))
    )
    assert {a.status_code for a in again} == {200}
    assert all(a.headers["Idempotent-Replayed"] == "true" for a in again)
    registry = api.metrics.registry
    for outcome, n in [("accepted", 1), ("replayed", 5)]:
        labels = {"producer": "billing", "outcome": outcome}
        assert registry.get_sample_value("alertbridge_producer_messages_total", labels) == n

    record = await delivered(api, "inv-1")
    (delivery,) = record["deliveries"]
    assert delivery["status"] == "delivered" and delivery["attempts"] == 1
    (sent,) = telegram.sent_messages()
    assert (sent.chat_id, sent.text, sent.message_id) == (
        CHAT,
        "Invoice 42 paid",
        delivery["telegram_message_id"],
    )


async def test_the_same_message_at_once_through_two_receivers_is_one_telegram_message(
    bridge_factory: Any, telegram: TelegramDouble
) -> None:
    # Two receiver processes on one database, as behind a load balancer: the
    # store, not either receiver, decides which post is the message.
    one, two = [await bridge_factory(producers=PRODUCERS) for _ in range(2)]
    body = {"message_id": "lb-1", "chat_id": CHAT, "text": "through either receiver"}
    answers = await asyncio.gather(
        *(bridge.post("/v1/messages", body, headers=auth()) for bridge in [one, two] * 4)
    )
    assert sorted(a.status_code for a in answers) == [200] * 7 + [202]
    await delivered(one, "lb-1")
    await delivered(two, "lb-1")
    assert [m.text for m in telegram.sent_messages()] == ["through either receiver"]


async def test_the_first_of_concurrent_posts_is_accepted_and_the_rest_replayed(
    api: RunningBridge, telegram: TelegramDouble
) -> None:
    text = "deploy <v2> done & dusted"
    body = {"chats": [CHAT, 4242], "text": text, "parse_mode": "plain"}
    answers = await asyncio.gather(
        *(
            api.post("/v1/messages", body, headers={**auth(), "Idempotency-Key": "deploy-7"})
            for _ in range(6)
        )
    )
    assert sorted(a.status_code for a in answers) == [200] * 5 + [202]
    await delivered(api, "deploy-7")
    assert sorted(m.chat_id for m in telegram.sent_messages()) == [CHAT, 4242]
    assert {m.text for m in telegram.sent_messages()} == {text}  # shown as given


async def test_the_same_message_id_with_another_body_names_the_difference(
    api: RunningBridge,
) -> None:
    await api.post(
        "/v1/messages", {"message_id": "m", "chat_id": CHAT, "text": "a"}, headers=auth()
    )
    other = await api.post(
        "/v1/messages", {"message_id": "m", "chat_id": 4242, "text": "a"}, headers=auth()
    )
    assert other.status_code == 422
    assert other.json()["differs"] == ["chats"]
    assert "chats" in other.json()["error"]


async def test_who_may_send_where(api: RunningBridge) -> None:
    body = {"message_id": "x", "chat_id": CHAT, "text": "hi"}
    assert (await api.post("/v1/messages", body)).status_code == 401
    assert (await api.post("/v1/messages", body, headers=auth("wrong"))).status_code == 401
    wrong_chat = await api.post("/v1/messages", {**body, "chat_id": 777}, headers=auth())
    assert wrong_chat.status_code == 403 and "777" in wrong_chat.json()["error"]
    by_labels = await api.post(
        "/v1/messages", {"message_id": "y", "labels": {"team": "ops"}, "text": "hi"}, headers=auth()
    )
    assert by_labels.status_code == 403 and "routes" in by_labels.json()["error"]


async def test_a_producer_sees_only_its_own_message_ids(api: RunningBridge) -> None:
    body = {"message_id": "shared-id", "chat_id": CHAT, "text": "from billing"}
    assert (await api.post("/v1/messages", body, headers=auth())).status_code == 202
    theirs = await api.client.get("/v1/messages/shared-id", headers=auth(SHOP))
    assert theirs.status_code == 404
    unknown = await api.client.get("/v1/messages/never-sent", headers=auth())
    assert unknown.status_code == 404
    # The same id is the other producer's own: a new message, not a conflict.
    mine = await api.post("/v1/messages", {**body, "text": "from shop"}, headers=auth(SHOP))
    assert mine.status_code == 202


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"chat_id": CHAT, "text": "no id"}, 400, "message_id"),
        ({"message_id": "i" * 201, "chat_id": CHAT, "text": "x"}, 422, "message_id"),
        ({"message_id": "b", "chat_id": CHAT, "text": "<b>unclosed"}, 422, "text"),
        ({"message_id": "b", "chat_id": CHAT, "text": "<blink>x</blink>"}, 422, "text"),
        ({"message_id": "l", "chat_id": CHAT, "text": "x" * 4097}, 422, "text"),
        ({"message_id": "e", "chat_id": CHAT, "text": "  \n "}, 422, "text"),
        ({"message_id": "d", "text": "nowhere"}, 422, "chat_id"),
        ({"message_id": "t", "chat_id": CHAT, "template": "missing", "data": {}}, 422, "template"),
    ],
)
async def test_what_telegram_or_the_api_would_refuse_is_refused_at_accept(
    api: RunningBridge, body: dict[str, Any], status: int, field: str
) -> None:
    answer = await api.post("/v1/messages", body, headers=auth())
    assert (answer.status_code, answer.json()["field"]) == (status, field)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"message_id": "a\\u0000b", "chat_id": %d, "text": "x"}', "message_id"),
        ('{"message_id": "s", "chat_id": %d, "text": "x\\ud800y"}', "text"),
        ('{"message_id": "n", "chat_id": %d, "text": "x\\u0000y"}', "text"),
        (
            '{"message_id": "d", "chat_id": %d, "template": "invoice",'
            ' "data": {"number": 1, "note": "\\udfff"}}',
            "data.note",
        ),
        (
            '{"message_id": "k", "chat_id": %d, "template": "invoice", "data": {"\\u0000": 1}}',
            "data.\x00",
        ),
    ],
)
async def test_text_that_cannot_be_stored_is_refused_never_a_server_error(
    api: RunningBridge, telegram: TelegramDouble, raw: str, field: str
) -> None:
    # JSON can spell a NUL and half a surrogate pair; PostgreSQL cannot store the
    # first, UTF-8 cannot encode the second. Either way: a 422, on either store.
    answer = await api.client.post(
        "/v1/messages",
        content=raw % CHAT,
        headers={**auth(), "Content-Type": "application/json"},
    )
    assert (answer.status_code, answer.json()["field"]) == (422, field), answer.text
    unknown = await api.client.get("/v1/messages/a%00b", headers=auth())
    assert unknown.status_code == 404
    assert telegram.sent_messages() == []


async def test_a_template_renders_the_data_escaped(
    api: RunningBridge, telegram: TelegramDouble
) -> None:
    body = {
        "message_id": "tpl",
        "chat_id": CHAT,
        "template": "invoice",
        "data": {"number": 42, "note": "<paid> & done"},
    }
    assert (await api.post("/v1/messages", body, headers=auth())).status_code == 202
    await delivered(api, "tpl")
    (sent,) = telegram.sent_messages()
    assert sent.text == "Invoice 42: <paid> & done"


async def test_labels_go_through_the_route_tree_when_allowed(
    api: RunningBridge, telegram: TelegramDouble
) -> None:
    body = {"message_id": "r", "labels": {"team": "ops"}, "text": "for ops"}
    answer = await api.post("/v1/messages", body, headers=auth(SHOP))
    assert answer.status_code == 202
    await delivered(api, "r", SHOP)
    assert [m.chat_id for m in telegram.sent_messages()] == [-1002]


async def test_a_batch_answers_each_message(api: RunningBridge, telegram: TelegramDouble) -> None:
    old = {"message_id": "old", "chat_id": CHAT, "text": "o"}
    assert (await api.post("/v1/messages", old, headers=auth())).status_code == 202
    answer = await api.post(
        "/v1/messages/batch",
        {
            "messages": [
                {"message_id": "n1", "chat_id": CHAT, "text": "one"},
                old,
                {"message_id": "n2", "chat_id": 777, "text": "not allowed"},
                {"message_id": "n3", "chat_id": 4242, "text": "three"},
            ]
        },
        headers=auth(),
    )
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [(r["code"], r["result"]) for r in results] == [
        (202, "accepted"),
        (200, "replayed"),
        (403, "refused"),
        (202, "accepted"),
    ]
    await telegram.wait_for_messages(3)
    assert sorted(m.text for m in telegram.sent_messages()) == ["o", "one", "three"]
    # In one line per chat, in order, but never as replies: a line is not a thread.
    assert [m.text for m in telegram.sent_messages(CHAT)] == ["o", "one"]
    assert all(m.reply_to is None for m in telegram.sent_messages())


async def test_without_a_producers_section_the_api_says_how_to_turn_it_on(
    bridge: RunningBridge,
) -> None:
    answer = await bridge.post("/v1/messages", {"message_id": "a"}, headers=auth())
    assert answer.status_code == 404 and "producers:" in answer.json()["error"]


async def test_an_oversized_body_is_413(api: RunningBridge) -> None:
    big = {"message_id": "big", "chat_id": CHAT, "text": "x" * (9 * 1024 * 1024)}
    answer = await api.post("/v1/messages", big, headers=auth())
    assert answer.status_code == 413


async def test_url_buttons_go_with_the_message_and_no_alert_buttons(
    bridge_factory: Any, telegram: TelegramDouble
) -> None:
    bot = {"set_commands": False}  # alert buttons on: a producer's message still gets none
    api = await bridge_factory(producers=PRODUCERS, bot=bot)
    pay = {"text": "Pay", "url": "https://example.com/pay"}
    body = {
        "message_id": "b",
        "chat_id": CHAT,
        "text": "Invoice due: https://example.com",
        "buttons": [pay],
        "disable_link_preview": True,
    }
    assert (await api.post("/v1/messages", body, headers=auth())).status_code == 202
    await delivered(api, "b")
    (sent,) = telegram.sent_messages()
    assert sent.reply_markup == {"inline_keyboard": [[pay]]}


async def test_the_database_down_is_503_and_the_retry_is_sent_once(
    proxied_database: ProxiedDatabase, amqp_names: dict[str, str], telegram: TelegramDouble
) -> None:
    proxy, through = proxied_database.proxy, proxied_database.url
    bridge = await start_bridge(
        build_config(config_dict(through, amqp_names, telegram.url, producers=PRODUCERS))
    )
    body = {"message_id": "down", "chat_id": CHAT, "text": "while the database is down"}
    try:
        await proxy.cut()
        for path, payload in [("/v1/messages", body), ("/v1/messages/batch", {"messages": [body]})]:
            answer = await bridge.post(path, payload, headers=auth())
            assert answer.status_code == 503 and "retry" in answer.json()["error"]
        assert (await bridge.client.get("/v1/messages/down", headers=auth())).status_code == 503

        await proxy.restore()
        assert (await bridge.post("/v1/messages", body, headers=auth())).status_code == 202
        await delivered(bridge, "down")
    finally:
        await bridge.shutdown()
    assert len(telegram.sent_messages()) == 1


async def test_database_pool_size_bounds_the_connections_a_process_opens(
    bridge_factory: Any, db: Any
) -> None:
    bridge = await bridge_factory(producers=PRODUCERS, database_pool_size=3)
    lookups = [bridge.client.get(f"/v1/messages/m{i}", headers=auth()) for i in range(40)]
    assert {a.status_code for a in await asyncio.gather(*lookups)} == {404}
    opened = await db.fetchval(
        """SELECT count(*) FROM pg_stat_activity
           WHERE datname = current_database() AND pid <> pg_backend_pid()"""
    )
    assert 1 <= opened <= 3
