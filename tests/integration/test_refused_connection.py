"""A Bot API that refuses the connection: nothing was written, so the delivery is
retried, never taken as ambiguous. With real refused connections (a port bound
and not listening), through aiohttp and through the real sender."""

from __future__ import annotations

import aiohttp
from aiogram.exceptions import TelegramNetworkError
from aiogram.methods import SendMessage

from bridge.config_file import parse_config
from bridge.delivery import Delivery
from bridge.telegram import Retry, TelegramSender, classify, create_bot
from tests.conftest import refusing_port

METHOD = SendMessage(chat_id=1, text="x")


async def test_a_refused_connection_is_retried_when_aiogram_does_not_chain_the_cause() -> None:
    # aiogram 3.13-3.24 raise TelegramNetworkError inside `except ClientError`
    # without `from e`: only Python's implicit __context__ holds the cause.
    with refusing_port() as port:
        url = f"http://127.0.0.1:{port}/bot123:ABC/sendMessage"
        async with aiohttp.ClientSession() as session:
            try:
                try:
                    await session.post(url, data={"chat_id": "1", "text": "x"})
                except aiohttp.ClientError as e:
                    raise TelegramNetworkError(method=METHOD, message=f"{type(e).__name__}: {e}")  # noqa: B904
            except TelegramNetworkError as error:
                assert error.__cause__ is None
                outcome = classify(error)
    assert isinstance(outcome, Retry), outcome


async def test_the_sender_retries_a_bot_api_that_refuses_the_connection() -> None:
    with refusing_port() as port:
        config = parse_config(
            f"""
telegram: {{token: "123:ABC", api_url: "http://127.0.0.1:{port}"}}
route: {{chats: [-1001]}}
""",
            environ={},
        )
        sender = TelegramSender(create_bot(config.telegram), lambda: config)
        try:
            outcome = await sender.send(
                Delivery(id=1, chat_id=-1001, thread_id=None, silent=False, text="x", attempts=1)
            )
        finally:
            await sender.close()
    assert isinstance(outcome, Retry), outcome
