"""The RabbitMQ ingress's decision, pure: (body, routing key, properties) → a message
to store, or a rejection with a typed reason."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest

from bridge.config_file import parse_config
from bridge.ingress import Envelope, conflict, decide, named_recipient, unlinked
from bridge.producers import parse_message
from bridge.receiver import Rules

CHAT = -100123


def rules(**producer: Any) -> Rules:
    entry = {"token": "t", "chats": [CHAT], **producer}
    text = textwrap.dedent(
        f"""
        telegram: {{token: "1:A"}}
        route: {{chats: [-1]}}
        receiver: {{max_body_bytes: 2000}}
        producers:
          billing: {json.dumps(entry)}
        """
    )
    return Rules.from_config(parse_config(text, source="test"))


def body(**fields: Any) -> bytes:
    return json.dumps({"message_id": "m-1", "chat_id": CHAT, "text": "paid", **fields}).encode()


def test_a_good_message_from_a_known_producer_is_one_to_store() -> None:
    decision = decide(rules(), Envelope(body(), "billing"), {})
    assert decision.rejection is None and decision.message is not None
    assert (decision.producer, decision.message_id) == ("billing", "m-1")
    assert decision.message.producer == "billing"
    assert [d.chat_id for d in decision.message.deliveries] == [CHAT]


@pytest.mark.parametrize(
    ("envelope", "reason", "words"),
    [
        (Envelope(b"{not json", "billing"), "400:body", "not JSON"),
        (Envelope(body(), "nobody"), "401:routing_key", "'nobody'"),
        (Envelope(body(chat_id=777), "billing"), "403:chats", "777"),
        (Envelope(body(text="<b>unclosed"), "billing"), "422:text", "HTML"),
        (Envelope(body(text="x" * 2100), "billing"), "413:body", "over 2000"),
        (Envelope(body(colour="red"), "billing"), "422:colour", "unknown field"),
        (
            Envelope(json.dumps({"chat_id": CHAT, "text": "x"}).encode(), "billing"),
            "400:message_id",
            "required",
        ),
        (Envelope(b"[1, 2]", "billing"), "422:body", "JSON object"),
    ],
)
def test_what_is_rejected_and_why(envelope: Envelope, reason: str, words: str) -> None:
    decision = decide(rules(), envelope, {})
    assert decision.message is None and decision.rejection is not None
    assert decision.rejection.reason == reason
    assert decision.rejection.outcome == f"rejected_{reason.split(':')[0]}"
    assert words in decision.rejection.error


def test_an_unknown_routing_key_is_no_producer_label() -> None:
    """Any routing key can be published; the metric label must stay bounded."""
    assert decide(rules(), Envelope(body(), "anything-at-all"), {}).producer == ""


def test_with_amqp_user_the_user_id_property_must_be_it() -> None:
    strict = rules(amqp_user="billing-app")
    ok = decide(strict, Envelope(body(), "billing", user_id="billing-app"), {})
    assert ok.message is not None
    for user in (None, "guest", "billing"):
        wrong = decide(strict, Envelope(body(), "billing", user_id=user), {})
        assert wrong.rejection is not None and wrong.rejection.reason == "401:user_id"
        assert "billing-app" in wrong.rejection.error
    # Without amqp_user, whoever may publish the routing key speaks for the producer.
    assert decide(rules(), Envelope(body(), "billing", user_id="guest"), {}).message is not None


def test_a_message_id_stored_with_another_body_is_a_conflict_naming_the_difference() -> None:
    stored = parse_message(json.loads(body()))
    again = parse_message(json.loads(body(text="refunded")))
    rejection = conflict(stored.request, again)
    assert rejection.reason == "409:message_id"
    assert "text" in rejection.error


def test_without_a_producers_section_every_message_is_rejected_saying_so() -> None:
    text = 'telegram: {token: "1:A"}\nroute: {chats: [-1]}\n'
    off = Rules.from_config(parse_config(text, source="test"))
    decision = decide(off, Envelope(body(), "billing"), {})
    assert decision.rejection is not None and decision.rejection.reason == "401:routing_key"
    assert "no producers: section" in decision.rejection.error


def test_a_recipient_is_addressed_through_the_chat_it_is_linked_to() -> None:
    raw = json.dumps({"message_id": "r-1", "recipient": "user-7", "text": "hi"}).encode()
    envelope = Envelope(raw, "billing")
    assert named_recipient(envelope) == "user-7"
    assert named_recipient(Envelope(body(), "billing")) is None
    linked = decide(rules(), envelope, {"user-7": 555})
    assert linked.message is not None
    assert [d.chat_id for d in linked.message.deliveries] == [555]
    # Not linked: refused, but with its request, in case it is a replay of one stored.
    alone = decide(rules(), envelope, {})
    assert alone.rejection is not None and alone.rejection.reason == "409:recipient"
    assert unlinked(alone) and alone.request is not None and alone.message_id == "r-1"
    assert not unlinked(decide(rules(), Envelope(body(chat_id=777), "billing"), {}))
