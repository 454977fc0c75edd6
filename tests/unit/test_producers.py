"""Producers' messages, the pure rules: the request's shape, its canonical form (what a
replay must match), who may send where, what Telegram would refuse, and the status."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from bridge.config import ProducerConfig, plan_reload
from bridge.config_file import load_config, parse_config
from bridge.delivery import DeliveryState
from bridge.errors import ConfigError, PayloadError
from bridge.producer_api import producer_for
from bridge.producers import (
    as_html,
    authorize,
    check_text,
    differences,
    message_key,
    message_status,
    parse_message,
)
from bridge.render import build_environment, check_templates, render_data
from bridge.sandbox.formatting import MESSAGE_LIMIT, parse_html
from bridge.store.base import MessageDelivery

S = DeliveryState


def refused(body: object, header: str | None = None) -> PayloadError:
    with pytest.raises(PayloadError) as caught:
        parse_message(body, header)
    return caught.value


def test_the_message_id_comes_from_the_body_or_the_idempotency_key() -> None:
    assert parse_message({"message_id": "a", "chat_id": 1, "text": "x"}).message_id == "a"
    assert parse_message({"chat_id": 1, "text": "x"}, "k").message_id == "k"
    assert parse_message({"message_id": "k", "chat_id": 1, "text": "x"}, "k").message_id == "k"
    missing = refused({"chat_id": 1, "text": "x"})
    assert (missing.status, missing.field) == (400, "message_id")
    assert refused({"message_id": "a", "chat_id": 1, "text": "x"}, "b").status == 422
    assert refused({"message_id": "i" * 201, "chat_id": 1, "text": "x"}).status == 422
    assert parse_message({"message_id": "i" * 200, "chat_id": 1, "text": "x"})


def test_defaults_and_spelling_do_not_make_another_request() -> None:
    """A retry that spells the same message differently is still the same message."""
    short = parse_message({"message_id": "a", "chat_id": 1, "text": "x"})
    spelled_out = parse_message(
        {
            "text": "x",
            "chats": [1, 1],
            "parse_mode": "HTML",
            "silent": False,
            "thread_id": None,
            "message_id": "a",
        }
    )
    assert short.request_hash == spelled_out.request_hash
    other = parse_message({"message_id": "a", "chat_id": 1, "text": "x", "silent": True})
    assert other.request_hash != short.request_hash
    assert differences(short.request, other) == ["silent"]


def test_the_message_id_is_not_part_of_the_request() -> None:
    a = parse_message({"message_id": "a", "chat_id": 1, "text": "x"})
    b = parse_message({"message_id": "b", "chat_id": 1, "text": "x"})
    assert a.request == b.request


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"message_id": "a", "text": "x"}, "chat_id"),
        ({"message_id": "a", "chat_id": 1, "chats": [2], "text": "x"}, "chats"),
        ({"message_id": "a", "chat_id": True, "text": "x"}, "chat_id"),
        ({"message_id": "a", "chat_id": 2**63, "text": "x"}, "chat_id"),
        ({"message_id": "a", "chats": [], "text": "x"}, "chats"),
        ({"message_id": "a", "chats": [1, "2"], "text": "x"}, "chats.1"),
        ({"message_id": "a", "labels": {"a": 1}, "text": "x"}, "labels"),
        ({"message_id": "a", "recipient": 5, "text": "x"}, "recipient"),
        ({"message_id": "a", "chat_id": 1}, "text"),
        ({"message_id": "a", "chat_id": 1, "text": "x", "template": "t"}, "text"),
        ({"message_id": "a", "chat_id": 1, "text": "x", "parse_mode": "Markdown"}, "parse_mode"),
        ({"message_id": "a", "chat_id": 1, "text": "x", "data": {}}, "data"),
        ({"message_id": "a", "chat_id": 1, "template": "../etc/passwd"}, "template"),
        ({"message_id": "a", "chat_id": 1, "template": "t", "data": [1]}, "data"),
        ({"message_id": "a", "chat_id": 1, "text": "x", "silent": "yes"}, "silent"),
        ({"message_id": "a", "chat_id": 1, "text": "x", "colour": "red"}, "colour"),
    ],
)
def test_a_malformed_message_is_refused_naming_its_field(body: dict[str, Any], field: str) -> None:
    exc = refused(body)
    assert (exc.status, exc.field) == (422, field)


def test_a_body_that_is_not_an_object_is_refused() -> None:
    assert refused([1, 2]).status == 422


def test_a_producer_addresses_only_what_its_entry_allows() -> None:
    billing = ProducerConfig(token="t", chats=[1, 2])
    authorize(billing, parse_message({"message_id": "a", "chats": [2, 1], "text": "x"}))
    with pytest.raises(PayloadError, match="chat 3") as caught:
        authorize(billing, parse_message({"message_id": "a", "chats": [1, 3], "text": "x"}))
    assert caught.value.status == 403
    by_labels = parse_message({"message_id": "a", "labels": {"team": "ops"}, "text": "x"})
    with pytest.raises(PayloadError, match="routes: true"):
        authorize(billing, by_labels)
    authorize(ProducerConfig(token="t", routes=True), by_labels)


def test_message_ids_are_each_producer_s_own() -> None:
    assert message_key("billing", "a") == message_key("billing", "a")
    assert message_key("billing", "a") != message_key("shop", "a")
    assert message_key("a:b", "c") != message_key("a", "b:c")


@pytest.mark.parametrize(
    "text",
    [
        "<b>unclosed",
        "<b>crossed <i>tags</b></i>",
        "<blink>unknown</blink>",
        " \n\t",  # nothing left to show
        "x" * (MESSAGE_LIMIT + 1),
        "\x00",
    ],
)
def test_text_telegram_would_refuse_is_refused_at_accept(text: str) -> None:
    with pytest.raises(PayloadError) as caught:
        check_text(text)
    assert (caught.value.status, caught.value.field) == (422, "text")


def test_text_telegram_takes_is_taken() -> None:
    check_text("<b>42</b> &amp; <a href='https://example.com'>link</a> & more")
    check_text("x" * MESSAGE_LIMIT)
    check_text("<b>" + "x" * MESSAGE_LIMIT + "</b>")  # markup is not counted
    check_text(as_html("<b>unclosed & <not a tag>", "plain"))  # plain text is escaped
    with pytest.raises(PayloadError):
        check_text(as_html("<" * (MESSAGE_LIMIT + 1), "plain"))  # counted as shown


def test_plain_text_is_shown_exactly_as_given() -> None:
    text = "a < b && c > d <b>not bold</b>"
    assert parse_html(as_html(text, "plain")) == (text, [])
    assert as_html(text, "HTML") == text


def test_buttons_are_rows_of_url_buttons_telegram_takes() -> None:
    def buttons(value: object) -> object:
        body = {"message_id": "a", "chat_id": 1, "text": "x", "buttons": value}
        return parse_message(body).canonical["buttons"]

    pay = {"text": "Pay", "url": "https://example.com/pay"}
    assert buttons([pay, [pay, pay]]) == [[pay], [pay, pay]]
    for wrong, field in [
        ([], "buttons"),
        ([[]], "buttons"),
        ([{"text": "Pay"}], "buttons.0.0"),
        ([{"text": " ", "url": "https://example.com"}], "buttons.0.0"),
        ([{"text": "Pay", "url": "javascript:alert(1)"}], "buttons.0.0"),
        ([[pay, {"text": "x", "url": "http://"}]], "buttons.0.1"),
        ([pay] * 101, "buttons"),
    ]:
        with pytest.raises(PayloadError) as caught:
            buttons(wrong)
        assert caught.value.field == field, wrong


def delivery(state: S) -> MessageDelivery:
    return MessageDelivery(1, 1, state, 0, None, None, None, None, False)


@pytest.mark.parametrize(
    ("states", "shown"),
    [
        ([S.DELIVERED, S.DELIVERED], S.DELIVERED),
        ([S.DELIVERED, S.QUEUED], S.QUEUED),
        ([S.RETRY, S.SENDING], S.SENDING),
        ([S.DELIVERED, S.FAILED], S.FAILED),
        ([S.AMBIGUOUS, S.DELIVERED], S.AMBIGUOUS),
    ],
)
def test_a_message_shows_the_state_still_moving_else_the_worst(states: list[S], shown: S) -> None:
    assert message_status([delivery(s) for s in states]) == shown


def test_the_producer_is_found_by_its_bearer_token() -> None:
    producers = {"a": ProducerConfig(token="one"), "b": ProducerConfig(token="two")}
    assert producer_for(producers, "Bearer two") == ("b", producers["b"])
    assert producer_for(producers, "bearer one") == ("a", producers["a"])
    assert producer_for(producers, "Basic two") is None
    assert producer_for(producers, "Bearer three") is None
    assert producer_for(producers, "") is None


CHAT = -1001234567890
CONFIG = textwrap.dedent(
    """\
    telegram: {token: "123:ABC"}
    route: {chats: [-1001]}
    producers:
      billing:
        token_file: billing-token
        chats: [-1001234567890, 4242]
    """
)


def test_a_producer_s_token_comes_from_its_file(tmp_path: Path) -> None:
    (tmp_path / "billing-token").write_text("s3cret\n")
    (tmp_path / "c.yml").write_text(CONFIG)
    config = load_config(tmp_path / "c.yml", environ={})
    assert config.producers is not None
    billing = config.producers["billing"]
    assert (billing.token, billing.chats, billing.routes) == (
        "s3cret",
        [-1001234567890, 4242],
        False,
    )


def test_without_producers_the_api_is_off() -> None:
    assert (
        parse_config('telegram: {token: "1:A"}\nroute: {chats: [1]}\n', environ={}).producers
        is None
    )


@pytest.mark.parametrize(
    "producers",
    [
        "{Billing: {token: t}}",
        "{a: {token: t}, b: {token: t}}",
        "{a: {token: ''}}",
        "{a: {chats: [1]}}",
    ],
)
def test_a_wrong_producer_entry_is_a_config_error(producers: str) -> None:
    text = f'telegram: {{token: "1:A"}}\nroute: {{chats: [1]}}\nproducers: {producers}\n'
    with pytest.raises(ConfigError):
        parse_config(text, environ={})


def test_a_producer_s_template_is_checked_for_syntax_not_rendered_as_an_alert(
    tmp_path: Path,
) -> None:
    (tmp_path / "messages").mkdir()
    (tmp_path / "messages" / "invoice.html.j2").write_text("Invoice <b>{{ number }}</b>")
    env = build_environment([tmp_path])
    assert check_templates(env) == []
    assert render_data(env, "invoice", {"number": "<42>"}) == "Invoice <b>&lt;42&gt;</b>"
    (tmp_path / "messages" / "broken.html.j2").write_text("{% if %}")
    assert [p for p in check_templates(build_environment([tmp_path])) if "broken" in p]


def test_the_readme_s_producer_example_is_a_valid_config(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    example = readme.split("```yaml\nproducers:\n", 1)[1].split("```", 1)[0]
    (tmp_path / "billing-token").write_text("t0ken")
    (tmp_path / "billing-hmac").write_text("hm4c")
    example = example.replace("/run/secrets/billing-token", str(tmp_path / "billing-token"))
    example = example.replace("/run/secrets/billing-hmac", str(tmp_path / "billing-hmac"))
    text = 'telegram: {token: "1:A"}\nroute: {chats: [1]}\nproducers:\n' + example
    config = parse_config(text, environ={})
    assert config.producers is not None and config.producers["billing"].token == "t0ken"
    assert config.producers["billing"].callback_secret == "hm4c"
    assert config.producers["billing"].callback_url == "https://billing.internal/telegram-receipts"


def test_a_reload_puts_producers_and_their_tokens_in_force_at_once() -> None:
    base = 'telegram: {token: "1:A"}\nroute: {chats: [1]}\n'
    running = parse_config(base, environ={})
    loaded = parse_config(base + "producers: {billing: {token: new, chats: [1]}}\n", environ={})
    reloaded = plan_reload(running, loaded)
    assert reloaded.needs_restart == []
    assert reloaded.config.producers is not None
    assert reloaded.config.producers["billing"].token == "new"
