"""The bot's commands and buttons against the SQLite store's records, a fake
Alertmanager and the Bot API faked under a real aiogram Bot: who may, what is
recorded, what is said back, and that an ack silences the reminders."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from aiogram import Bot
from aiogram.types import Update

from bridge.alertmanager_api import AlertmanagerClient
from bridge.bot.commands import BotHandler
from bridge.bot.updates import process
from bridge.config import AlertmanagerApiConfig, AllowList, BotConfig, BotPermissions
from bridge.metrics import Metrics
from bridge.store.sqlite import SqliteStore
from tests.unit.fakes import (
    WINDOW,
    FakeAlertmanager,
    FakeBotSession,
    FakeClock,
    Line,
    accept,
    config,
    notification,
)

GROUP = -1001
ANN = 11  # on call: may ack and silence
BOB = 22  # in the chat, may read, may not act
DISK = notification("DiskFull", labels={"severity": "critical", "host": "db1"})


@dataclass
class Bench:
    handler: BotHandler
    telegram: FakeBotSession
    alertmanager: FakeAlertmanager
    bridge: Line
    bot: Bot
    metrics: Metrics
    alert_message_id: int
    alert_delivery_id: int
    updates: int = 0

    def update(self, user: int, *, text: str = "", reply_to: int | None = None,
               button: str | None = None) -> Update:  # fmt: skip
        self.updates += 1
        who = {"id": user, "is_bot": False, "first_name": "Ann" if user == ANN else "Bob",
               "username": "ann" if user == ANN else "bob"}  # fmt: skip
        chat = {"id": GROUP, "type": "supergroup", "title": "ops"}
        message: dict[str, Any] = {
            "message_id": 700 + self.updates,
            "date": 0,
            "chat": chat,
            "from": who,
            "text": text,
        }
        if reply_to is not None:
            message["reply_to_message"] = {
                "message_id": reply_to, "date": 0, "chat": chat, "text": "an alert"
            }  # fmt: skip
        data: dict[str, Any] = {"update_id": self.updates}
        if button is None:
            data["message"] = message
        else:
            message["message_id"] = reply_to or 1
            data["callback_query"] = {
                "id": f"q{self.updates}", "from": who, "chat_instance": "ops",
                "data": button, "message": message,
            }  # fmt: skip
        return Update.model_validate(data, context={"bot": self.bot})

    def said(self) -> str:
        return str(self.telegram.sent()[-1].text)

    def counted(self, command: str, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "alertbridge_bot_commands_total", {"command": command, "outcome": outcome}
        )
        return 0.0 if value is None else value


@pytest.fixture
async def bench(clock: FakeClock, store: SqliteStore, db_path: Path) -> AsyncIterator[Bench]:
    bridge = Line(clock, store, db_path)
    [delivery_id] = await bridge.receive(DISK, [GROUP])
    await bridge.drain()
    [alert] = bridge.sender.messages
    telegram = FakeBotSession()
    bot = Bot("123:ABC", session=telegram)
    alertmanager = FakeAlertmanager(silence_labels=["alertname", "host"])
    on_call = AllowList(users=[ANN])
    settings = BotConfig(
        allow=BotPermissions(read=AllowList(chats=[GROUP]), ack=on_call, silence=on_call)
    )
    metrics = Metrics()
    in_force = config().model_copy(
        update={
            "bot": settings,
            "alertmanager": AlertmanagerApiConfig(
                urls=[alertmanager.ui_url], silence_labels=["alertname", "host"]
            ),
        }
    )
    handler = BotHandler(
        bot,
        store.interactions(),
        lambda _: cast(AlertmanagerClient, alertmanager),
        lambda: in_force,
        metrics,
    )
    yield Bench(handler, telegram, alertmanager, bridge, bot, metrics, alert.message_id,
                delivery_id)  # fmt: skip


async def test_ack_records_it_marks_the_message_and_stops_the_reminders(
    bench: Bench, clock: FakeClock, store: SqliteStore
) -> None:
    await bench.handler.handle(bench.update(ANN, text="/ack", reply_to=bench.alert_message_id))

    [edit] = bench.telegram.of("EditMessageText")
    assert (edit.chat_id, edit.message_id) == (GROUP, bench.alert_message_id)
    assert "Acked by @ann" in edit.text
    assert bench.said().startswith("Acked by @ann: no more reminders")
    assert bench.counted("ack", "ok") == 1

    # Alertmanager's repeat_interval reminder, after the dedup window: not sent here.
    clock.advance(WINDOW.total_seconds() + 1)
    reminder = await accept(store, DISK, [GROUP, -2002])
    assert [chat for _, chat in reminder] == [-2002]  # an ack holds in its own chat only

    await bench.handler.handle(bench.update(ANN, text="/ack", reply_to=bench.alert_message_id))
    assert bench.said() == "Already acked."


async def test_a_user_not_allowed_is_refused_and_nothing_changes(bench: Bench) -> None:
    await bench.handler.handle(bench.update(BOB, text="/ack", reply_to=bench.alert_message_id))
    await bench.handler.handle(
        bench.update(BOB, text="/silence 2h", reply_to=bench.alert_message_id)
    )
    await bench.handler.handle(bench.update(BOB, button=f"ack:{bench.alert_delivery_id}",
                                            reply_to=bench.alert_message_id))  # fmt: skip

    replies = [str(m.text) for m in bench.telegram.sent()]
    assert replies == [
        "Sorry, you are not allowed to ack alerts here.",
        "Sorry, you are not allowed to silence alerts here.",
    ]
    [answer] = bench.telegram.of("AnswerCallbackQuery")
    assert answer.text == "Sorry, you are not allowed to ack alerts here." and answer.show_alert
    assert bench.telegram.of("EditMessageText") == []
    assert bench.alertmanager.created == {}
    assert bench.counted("ack", "denied") == bench.counted("silence", "denied") == 1
    assert bench.counted("button_ack", "denied") == 1
    # No ack was recorded: the one on call still acks it.
    await bench.handler.handle(bench.update(ANN, text="/ack", reply_to=bench.alert_message_id))
    assert bench.said().startswith("Acked by @ann")


async def test_silence_from_a_reply_and_undo_from_its_button(
    bench: Bench, store: SqliteStore
) -> None:
    await bench.handler.handle(
        bench.update(ANN, text="/silence 2h disk being replaced", reply_to=bench.alert_message_id)
    )
    [(silence_id, silence)] = bench.alertmanager.created.items()
    assert silence.labels == {"alertname": "DiskFull", "host": "db1"}  # silence_labels only
    assert silence.ends_at - silence.starts_at == timedelta(hours=2)
    assert (silence.created_by, silence.comment) == ("@ann", "disk being replaced")
    [notice] = bench.telegram.sent()
    assert notice.reply_parameters is not None
    assert notice.reply_parameters.message_id == bench.alert_message_id
    assert notice.reply_markup is not None
    [[undo]] = notice.reply_markup.inline_keyboard  # type: ignore[union-attr]
    assert undo.callback_data is not None and undo.callback_data.startswith("undo:")

    await bench.handler.handle(bench.update(ANN, button=undo.callback_data, reply_to=5001))
    assert bench.alertmanager.expired == [silence_id]
    [answer] = bench.telegram.of("AnswerCallbackQuery")
    assert answer.text == "Silence expired"
    [cleared] = bench.telegram.of("EditMessageReplyMarkup")
    assert cleared.reply_markup is None
    row = await store.interactions().silence(int(undo.callback_data.split(":")[1]))
    assert row is not None and row.expired and row.silence_id == silence_id
    assert bench.counted("silence", "ok") == bench.counted("button_undo", "ok") == 1


async def test_a_reply_to_something_else_is_refused(bench: Bench) -> None:
    await bench.handler.handle(bench.update(ANN, text="/silence 2h", reply_to=99_999))
    await bench.handler.handle(bench.update(ANN, text="/silence soon", reply_to=99_999))
    await bench.handler.handle(bench.update(ANN, text="/ack"))
    assert [str(m.text) for m in bench.telegram.sent()] == [
        "That message is not an alert the bridge sent.",
        "Usage: reply to an alert with /silence 2h [comment].",
        "Reply to an alert message with /ack.",
    ]
    assert bench.counted("silence", "invalid") == 2 and bench.counted("ack", "invalid") == 1
    assert bench.alertmanager.created == {}


async def test_an_update_seen_twice_is_acted_on_once(bench: Bench, store: SqliteStore) -> None:
    update = bench.update(ANN, button=f"ack:{bench.alert_delivery_id}",
                          reply_to=bench.alert_message_id)  # fmt: skip
    assert await process(update, bench.handler, store.interactions())
    assert not await process(update, bench.handler, store.interactions())  # Telegram's retry
    [answer] = bench.telegram.of("AnswerCallbackQuery")
    assert answer.text.startswith("Acked by @ann")
    assert len(bench.telegram.of("EditMessageText")) == 1
