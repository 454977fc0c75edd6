"""The Telegram double is as strict as Telegram, seen through real aiogram.

Every other test trusts the double's verdicts, so they are tested here."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, ReplyParameters
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.sandbox.botapi import (
    EntityParseError,
    StoredMessage,
    TelegramDouble,
    parse_telegram_html,
)
from bridge.telegram_text import telegram_escape


@pytest.fixture
async def bot(telegram: TelegramDouble):
    session = AiohttpSession(api=TelegramAPIServer.from_base(telegram.url), timeout=2)
    bot = Bot("123:ABC", session=session)
    yield bot
    await session.close()


async def test_send_returns_a_message_aiogram_accepts(bot, telegram) -> None:
    message = await bot.send_message(-1001, "<b>disk</b> full", parse_mode="HTML")
    assert message.message_id == 1 and message.chat.id == -1001
    assert message.text == "disk full"
    assert telegram.sent_messages(-1001)[0].raw_text == "<b>disk</b> full"


@pytest.mark.parametrize(
    "text",
    [
        "a < b",
        "<blink>x</blink>",
        "<b>x",
        "<b><i>x</b></i>",
        "<span>x</span>",
        "<a href=http://x.org>x</a>",  # an unquoted value is a name token: no ':' or '/'
        "<b>x</b x>",  # an end tag has no attributes
        "&#xD800;x",  # half a surrogate pair
        "&#57311;",
        '<tg-emoji emoji-id="0">x</tg-emoji>',
        '<tg-time unix="1" format="rt">x</tg-time>',
        "a\0b",
    ],
)
async def test_html_telegram_refuses_is_refused(bot, text) -> None:
    with pytest.raises(TelegramBadRequest, match="can't parse entities"):
        await bot.send_message(1, text, parse_mode="HTML")


@pytest.mark.parametrize(
    ("html", "shown"),
    [
        ("AT&T", "AT&T"),
        ("&foo; &nbsp;", "&foo; &nbsp;"),
        ("&lt b", "< b"),
        ("a &#1114112; b", "a &#1114112; b"),  # beyond Unicode: kept as written
        ("<i>x</>", "x"),
        ("<a>x</a>", "x"),
        ('<tg-time unix="1700000000" format="wDT">today</tg-time>', "today"),
        ("<B>x</b>", "x"),
    ],
)
async def test_html_telegram_accepts_is_accepted(bot, html, shown) -> None:
    message = await bot.send_message(1, html, parse_mode="HTML")
    assert message.text == shown


async def test_the_answer_carries_the_kept_text_and_its_entities(bot, telegram) -> None:
    message = await bot.send_message(
        1, '\n  <b>bold</b> <a href="example.org/x">link</a> \r\n\n', parse_mode="HTML"
    )
    assert message.text == "bold link"
    assert [(e.type, e.offset, e.length, e.url) for e in message.entities or []] == [
        ("bold", 0, 4, None),
        ("text_link", 5, 4, "http://example.org/x"),
    ]
    assert telegram.sent_messages()[0].text == "bold link"


async def test_the_limit_is_4096_code_points_of_the_kept_text(bot) -> None:
    # TDLib (MessageContent.cpp): utf8_length(text) > message_text_length_max,
    # after fix_formatted_text has cleaned and trimmed it: code points, not UTF-16.
    for fits in (
        "x" * 4096,
        "😀" * 4096,  # 8192 UTF-16 code units
        "  \n" + "x" * 4096 + " \n\n",  # trimmed before counting
        "x\r" * 4096,  # every \r is dropped
    ):
        await bot.send_message(1, fits)
    await bot.send_message(1, "<b>" + "x" * 4096 + "</b>", parse_mode="HTML")
    await bot.send_message(1, "&amp;" * 4096, parse_mode="HTML")
    for too_long in ("x" * 4097, "😀" * 4097, "é" * 4097, "<i>" + "x" * 4097 + "</i>"):
        with pytest.raises(TelegramBadRequest, match="message is too long"):
            await bot.send_message(1, too_long, parse_mode="HTML")


async def test_text_over_32_kib_is_refused_before_parsing(bot) -> None:
    # telegram-bot-api Client::get_formatted_text: text.size() > (1 << 15).
    await bot.send_message(1, "<b></b>" * 4681 + "x", parse_mode="HTML")  # 32768 bytes
    with pytest.raises(TelegramBadRequest, match="text is too long"):
        await bot.send_message(1, "<b></b>" * 4681 + "xy", parse_mode="HTML")


@pytest.mark.parametrize(
    ("text", "parse_mode", "description"),
    [
        ("", None, "message text is empty"),
        (" \n ", None, "text must be non-empty"),
        ("<b></b>", "HTML", "text must be non-empty"),
        ("\u200b\u00a0", None, "text must be non-empty"),
        ("x", "Markdown2", "unsupported parse_mode"),
    ],
)
async def test_empty_text_is_refused_as_telegram_refuses_it(
    telegram, text, parse_mode, description
) -> None:
    answer = await api(telegram, "sendMessage", chat_id="1", text=text, parse_mode=parse_mode)
    assert answer == {"ok": False, "error_code": 400, "description": f"Bad Request: {description}"}


async def api(telegram: TelegramDouble, method: str, **params: Any) -> dict[str, Any]:
    """``method`` called as a form, with exactly ``params`` (None: left out)."""
    form = {k: v for k, v in params.items() if v is not None}
    async with httpx.AsyncClient(base_url=telegram.url) as client:
        answer = await client.post(f"/bot{telegram.token}/{method}", data=form)
    assert answer.status_code < 500
    return answer.json()  # type: ignore[no-any-return]


async def test_answer_callback_query_needs_a_query_telegram_sent(telegram) -> None:
    # Client.cpp reads callback_query_id with td::to_integer; the server refuses
    # an id it did not send with QUERY_ID_INVALID.
    invalid = "Bad Request: query is too old and response timeout expired or query ID is invalid"
    for params in ({}, {"callback_query_id": ""}, {"callback_query_id": "12"}):
        answer = await api(telegram, "answerCallbackQuery", **params)
        assert (answer["error_code"], answer["description"]) == (400, invalid)
    await api(telegram, "sendMessage", chat_id="-1001", text="x")
    update = telegram.press_button(-1001, 1, "ack")
    query_id = update["callback_query"]["id"]
    assert query_id.isdigit()
    assert await api(telegram, "answerCallbackQuery", callback_query_id=query_id) == {
        "ok": True,
        "result": True,
    }


async def test_set_my_commands_checks_each_command(telegram) -> None:
    # Client::get_bot_commands: no commands is an empty list (clearing them).
    assert (await api(telegram, "setMyCommands"))["ok"]
    good = '[{"command": "ack", "description": "Acknowledge"}]'
    assert (await api(telegram, "setMyCommands", commands=good))["ok"]
    for commands, description in [
        ("[", "can't parse commands JSON object"),
        ("{}", "expected an Array of BotCommand"),
        ("[1]", "can't parse BotCommand: expected an Object"),
        ('[{"command": "ack"}]', "can't parse BotCommand: Can't find field \"description\""),
        ('[{"command": " ", "description": "d"}]', "command must be non-empty"),
        ('[{"command": "a", "description": " "}]', "command description must be non-empty"),
        ('[{"command": "Ack!", "description": "d"}]', "BOT_COMMAND_INVALID"),
        (f'[{{"command": "{"a" * 33}", "description": "d"}}]', "command length must not exceed 32"),
    ]:
        answer = await api(telegram, "setMyCommands", commands=commands)
        assert answer["description"] == f"Bad Request: {description}", commands


async def test_set_webhook_without_url_deletes_it_and_get_updates_waits_for_that(
    telegram,
) -> None:
    # Client::process_set_webhook_query: an empty url is deleteWebhook.
    answer = await api(telegram, "setWebhook")
    assert answer == {"ok": True, "result": True, "description": "Webhook is already deleted"}
    bad = await api(telegram, "setWebhook", url="http://[nope/")
    assert bad["description"] == "Bad Request: invalid webhook URL specified"
    secret = await api(
        telegram, "setWebhook", url="https://bridge.example/hook", secret_token="a b"
    )
    assert secret["description"] == "Bad Request: secret token contains unallowed characters"
    assert (await api(telegram, "setWebhook", url="https://bridge.example/hook"))["ok"]
    conflict = await api(telegram, "getUpdates")
    assert conflict["error_code"] == 409
    assert (await api(telegram, "deleteWebhook"))["description"] == "Webhook was deleted"
    assert (await api(telegram, "getUpdates", timeout="0")) == {"ok": True, "result": []}


async def test_json_bodies_are_read_as_the_bot_api_reads_them(telegram) -> None:
    async with httpx.AsyncClient(base_url=f"{telegram.url}/bot{telegram.token}") as client:
        # A number is its JSON text: chat_id 1 is "1".
        sent = await client.post("/sendMessage", json={"chat_id": 1, "text": "x"})
        assert sent.json()["ok"]
        for body in (b"{", b"[1]", b'{"chat_id": 1, "text": "\\ud800"}'):
            answer = await client.post(
                "/sendMessage", content=body, headers={"content-type": "application/json"}
            )
            assert answer.status_code == 400, body


METHODS = [
    "getMe", "sendMessage", "editMessageText", "editMessageReplyMarkup", "deleteMessage",
    "answerCallbackQuery", "setMyCommands", "setWebhook", "deleteWebhook", "getUpdates",
    "getChat", "getWebhookInfo", "sendmessage", "noSuchMethod",
]  # fmt: skip
NAMES = [
    "chat_id", "text", "parse_mode", "reply_markup", "reply_parameters", "message_id",
    "callback_query_id", "commands", "url", "secret_token", "offset", "limit", "timeout",
    "message_thread_id", "disable_notification", "reply_to_message_id", "language_code",
]  # fmt: skip
VALUES = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        ["1", "-1001", "HTML", "html", "<b>x</b>", "&#xD800;", "[]", "{}", "null", "[[{}]]",
         '{"inline_keyboard": [[{"text": "a", "callback_data": ""}]]}', '{"message_id": "x"}',
         '[{"command": 5, "description": []}]', "http://", "9" * 30, "-" * 3]
    ),
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(METHODS), st.dictionaries(st.sampled_from(NAMES), VALUES, max_size=6))
def test_no_input_makes_the_double_fail(method: str, params: dict[str, str]) -> None:
    double = TelegramDouble()
    double.messages[(1, 1)] = StoredMessage(1, 1, "x", "x", None)
    answer = double.answer(method, params)
    status = getattr(answer, "status", 200)
    assert status < 500


async def test_429_carries_retry_after(bot, telegram) -> None:
    telegram.rate_limit_next(1, retry_after=3)
    with pytest.raises(TelegramRetryAfter) as error:
        await bot.send_message(1, "x")
    assert error.value.retry_after == 3
    await bot.send_message(1, "x")


async def test_5xx(bot, telegram) -> None:
    telegram.fail_next(1)
    with pytest.raises(TelegramServerError):
        await bot.send_message(1, "x")
    assert telegram.sent_messages() == []


async def test_blocked_kicked_missing_and_migrated_chats(bot, telegram) -> None:
    telegram.block_chat(1)
    telegram.kick_from_chat(-2)
    telegram.remove_chat(-3)
    telegram.migrate_chat(-4, -1004)
    with pytest.raises(TelegramForbiddenError, match="blocked by the user"):
        await bot.send_message(1, "x")
    with pytest.raises(TelegramForbiddenError, match="kicked"):
        await bot.send_message(-2, "x")
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.send_message(-3, "x")
    with pytest.raises(TelegramMigrateToChat) as migrated:
        await bot.send_message(-4, "x")
    assert migrated.value.migrate_to_chat_id == -1004


async def test_dropped_after_accept_is_stored_but_unanswered(bot, telegram) -> None:
    telegram.drop_after_accept_next(1)
    with pytest.raises(TelegramNetworkError):
        await bot.send_message(1, "x")
    assert len(telegram.sent_messages()) == 1


async def test_a_hang_outlasts_the_client_timeout(bot, telegram) -> None:
    telegram.hang_next(1, seconds=3)
    with pytest.raises(TelegramNetworkError, match="timeout"):
        await bot.send_message(1, "x", request_timeout=1)
    assert len(telegram.sent_messages()) == 1


async def test_replies_and_edits(bot, telegram) -> None:
    first = await bot.send_message(1, "first")
    reply = await bot.send_message(
        1, "second", reply_parameters=ReplyParameters(message_id=first.message_id)
    )
    assert reply.reply_to_message.message_id == first.message_id
    with pytest.raises(TelegramBadRequest, match="message to be replied not found"):
        await bot.send_message(1, "x", reply_parameters=ReplyParameters(message_id=99))
    await bot.edit_message_text("edited", chat_id=1, message_id=first.message_id)
    assert telegram.messages[(1, first.message_id)].text == "edited"
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text("edited", chat_id=1, message_id=first.message_id)
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text("x", chat_id=1, message_id=99)


async def test_callback_data_over_64_bytes_is_refused(bot) -> None:
    markup = InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text="Ack", callback_data="x" * 65)]]
    )
    with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
        await bot.send_message(1, "x", reply_markup=markup)


async def test_rate_limits_when_enforced(bot, telegram) -> None:
    telegram.enforce_rate_limits = True
    await bot.send_message(-5, "x")
    with pytest.raises(TelegramRetryAfter):
        await bot.send_message(-5, "x")
    await bot.send_message(-6, "another chat is not limited")
    assert telegram.rate_limited == 1


@pytest.mark.parametrize(
    ("html", "visible"),
    [
        ("<b>bold <i>both</i></b>", "bold both"),
        ('<a href="http://x?a=1&amp;b=2">link</a>', "link"),
        ('<span class="tg-spoiler">s</span>', "s"),
        ('<pre><code class="language-py">x</code></pre>', "x"),
        ("<blockquote expandable>q</blockquote>", "q"),
        ("&lt;&gt;&amp;&quot;&#39;&#x1F600;", "<>&\"'😀"),
        ("a > b", "a > b"),
    ],
)
def test_parse_accepts_what_telegram_accepts(html, visible) -> None:
    assert parse_telegram_html(html)[0] == visible


@pytest.mark.parametrize(
    "html", ["<b><i>x</b></i>", "<span>x</span>", "x</b>", "<a href=http://x>x</a>"]
)
def test_parse_refuses_what_telegram_refuses(html) -> None:
    with pytest.raises(EntityParseError):
        parse_telegram_html(html)


def test_an_escaped_label_with_a_nul_is_html_telegram_accepts() -> None:
    # TDLib's parse_html refuses NUL bytes; no escape can carry one.
    assert parse_telegram_html(telegram_escape("a\0<b>")) == ("a <b>", [])
