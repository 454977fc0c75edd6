"""What the worker does with each answer from the Bot API. Anything that may
have reached Telegram is never retried blindly."""

from __future__ import annotations

from datetime import timedelta

import aiohttp
import pytest
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.methods import SendMessage

from bridge.delivery import Reason
from bridge.telegram import (
    Ambiguous,
    Failed,
    Migrated,
    Retry,
    classify,
)

METHOD = SendMessage(chat_id=1, text="x")


def network_error(cause: BaseException) -> TelegramNetworkError:
    error = TelegramNetworkError(method=METHOD, message=f"{type(cause).__name__}: {cause}")
    error.__cause__ = cause
    return error


def connector_error() -> aiohttp.ClientConnectorError:
    from aiohttp.client_reqrep import ConnectionKey

    key = ConnectionKey("127.0.0.1", 1, False, True, None, None, None)
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "refused"))


def test_429_retries_after_exactly_what_telegram_said() -> None:
    outcome = classify(TelegramRetryAfter(method=METHOD, message="Too Many", retry_after=7))
    assert isinstance(outcome, Retry) and outcome.reason is Reason.RATE_LIMITED
    assert outcome.delay == timedelta(seconds=7)


def test_a_parsed_5xx_is_retried_with_backoff() -> None:
    outcome = classify(TelegramServerError(method=METHOD, message="Internal Server Error"))
    assert isinstance(outcome, Retry) and outcome.delay is None
    assert outcome.reason is Reason.SERVER_ERROR


def test_a_connection_never_made_is_retried() -> None:
    outcome = classify(network_error(connector_error()))
    assert isinstance(outcome, Retry) and outcome.reason is Reason.CONNECT


@pytest.mark.parametrize(
    "cause",
    [
        aiohttp.ServerDisconnectedError(),
        TimeoutError(),
        aiohttp.ClientPayloadError("truncated"),
    ],
    ids=["disconnected", "timeout", "truncated"],
)
def test_no_answer_after_the_request_was_written_is_ambiguous(cause) -> None:
    assert isinstance(classify(network_error(cause)), Ambiguous)


def test_an_undecodable_answer_is_ambiguous() -> None:
    error = ClientDecodeError("Failed to decode object", ValueError("x"), "<html>502</html>")
    assert isinstance(classify(error), Ambiguous)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            TelegramForbiddenError(method=METHOD, message="Forbidden: bot was blocked by the user"),
            Reason.FORBIDDEN,
        ),
        (
            TelegramForbiddenError(method=METHOD, message="Forbidden: bot was kicked"),
            Reason.FORBIDDEN,
        ),
        (
            TelegramBadRequest(method=METHOD, message="Bad Request: chat not found"),
            Reason.CHAT_NOT_FOUND,
        ),
        (
            TelegramBadRequest(
                method=METHOD, message="Bad Request: message to be replied not found"
            ),
            Reason.REPLY_TARGET_GONE,
        ),
        (
            TelegramBadRequest(method=METHOD, message="Bad Request: message is too long"),
            Reason.BAD_REQUEST,
        ),
    ],
)
def test_blocked_kicked_and_chat_not_found_fail_without_retry(error, reason) -> None:
    outcome = classify(error)
    assert isinstance(outcome, Failed) and outcome.reason is reason
    assert error.message in outcome.detail


def test_a_parse_error_is_marked_for_the_plain_text_resend() -> None:
    error = TelegramBadRequest(method=METHOD, message="Bad Request: can't parse entities: x")
    outcome = classify(error)
    assert isinstance(outcome, Failed) and outcome.reason is Reason.PARSE_ERROR


def test_a_migrated_group_is_followed() -> None:
    error = TelegramMigrateToChat(method=METHOD, message="upgraded", migrate_to_chat_id=-100123)
    assert classify(error) == Migrated(new_chat_id=-100123)


def test_a_wrong_token_keeps_deliveries_queued() -> None:
    assert isinstance(classify(TelegramUnauthorizedError(method=METHOD, message="x")), Retry)


def test_an_unknown_exception_is_ambiguous_not_retried() -> None:
    assert isinstance(classify(RuntimeError("boom")), Ambiguous)
