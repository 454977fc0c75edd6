"""The Telegram double is as strict as Telegram, seen through real aiogram.

Every other test trusts the double's verdicts, so they are tested here."""

from __future__ import annotations

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

from bridge.sandbox.botapi import EntityParseError, TelegramDouble, parse_telegram_html


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
    ["a < b", "AT&T", "&foo;", "<blink>x</blink>", "<b>x", "<b><i>x</b></i>", "<span>x</span>"],
)
async def test_html_telegram_refuses_is_refused(bot, text) -> None:
    with pytest.raises(TelegramBadRequest, match="can't parse entities"):
        await bot.send_message(1, text, parse_mode="HTML")


async def test_the_limit_is_4096_utf16_units_of_visible_text(bot) -> None:
    await bot.send_message(1, "x" * 4096)
    await bot.send_message(1, "<b>" + "x" * 4096 + "</b>", parse_mode="HTML")
    await bot.send_message(1, "&amp;" * 4096, parse_mode="HTML")
    for too_long in ("x" * 4097, "😀" * 2049):
        with pytest.raises(TelegramBadRequest, match="message is too long"):
            await bot.send_message(1, too_long)


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


@pytest.mark.parametrize("html", ["<b><i>x</b></i>", "<span>x</span>", "<a>x</a>", "x</b>"])
def test_parse_refuses_what_telegram_refuses(html) -> None:
    with pytest.raises(EntityParseError):
        parse_telegram_html(html)
