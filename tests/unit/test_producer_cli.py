"""The send/status CLI's own logic, with a scripted transport: what is retried, with
which body, how long it pauses, and which exit code each answer gets."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest

from bridge.delivery import DeliveryState
from bridge.producer_cli import (
    EXIT_TABLE,
    Answer,
    Console,
    Exit,
    Unreachable,
    exit_for,
    send,
    send_request,
    status,
)
from bridge.producers import WAITING


class Scripted:
    """A transport that answers from a script and records every request."""

    def __init__(self, *answers: Answer | Exception) -> None:
        self.answers: Iterator[Answer | Exception] = iter(answers)
        self.requests: list[tuple[str, str, bytes | None]] = []

    def __call__(self, method: str, path: str, body: bytes | None) -> Answer:
        self.requests.append((method, path, body))
        answer = next(self.answers)
        if isinstance(answer, Exception):
            raise answer
        return answer


def ok(code: int, body: Any) -> Answer:
    return Answer(code, body, {})


def console() -> tuple[Console, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    return Console(out, err, "send"), out, err


BODY = send_request(
    message_id="m-1",
    chats=[5],
    text="hi",
    template=None,
    data=None,
    plain=False,
    silent=False,
)
RECORD = {"message_id": "m-1", "status": "queued", "deliveries": [{"chat_id": 5}]}


def test_every_try_sends_the_same_body_and_the_pauses_double() -> None:
    transport = Scripted(
        Unreachable("reset"), ok(503, {"error": "db down"}), ok(502, None), ok(202, RECORD)
    )
    pauses: list[float] = []
    c, out, err = console()
    code = send(transport, BODY, retries=4, json_out=False, console=c, sleep=pauses.append)
    assert code is Exit.OK and out.getvalue() == "m-1\n"
    assert len({body for _, _, body in transport.requests}) == 1
    assert len(transport.requests) == 4
    # 0.5 s doubling, each scaled by a jitter in [0.5, 1].
    for pause, full in zip(pauses, [0.5, 1.0, 2.0], strict=True):
        assert full / 2 <= pause <= full
    assert "HTTP 503: db down" in err.getvalue()


def test_a_refusal_is_not_retried() -> None:
    transport = Scripted(ok(403, {"error": "chat 5 is not allowed", "field": "chat_id"}))
    c, out, err = console()
    code = send(transport, BODY, retries=4, json_out=False, console=c, sleep=lambda _: None)
    assert code is Exit.REFUSED and len(transport.requests) == 1
    assert out.getvalue() == "" and "chat 5 is not allowed [field: chat_id]" in err.getvalue()


def test_giving_up_prints_the_id_to_try_again_under() -> None:
    transport = Scripted(*(ok(503, None) for _ in range(3)))
    c, out, err = console()
    code = send(transport, BODY, retries=2, json_out=True, console=c, sleep=lambda _: None)
    assert code is Exit.UNREACHABLE and len(transport.requests) == 3
    assert out.getvalue() == '{"message_id": "m-1"}\n'
    assert "after 3 tries" in err.getvalue()


def test_one_chat_or_several_text_or_template() -> None:
    assert BODY == {"message_id": "m-1", "chat_id": 5, "text": "hi"}
    many = send_request(
        message_id="x", chats=[1, 2], text=None, template="t", data={"a": 1}, plain=False,
        silent=True,
    )  # fmt: skip
    assert many == {"message_id": "x", "chats": [1, 2], "template": "t", "data": {"a": 1},
                    "silent": True}  # fmt: skip


@pytest.mark.parametrize(
    ("state", "code"),
    [
        (DeliveryState.DELIVERED, Exit.OK),
        (DeliveryState.FAILED, Exit.NOT_DELIVERED),
        (DeliveryState.AMBIGUOUS, Exit.NOT_DELIVERED),
        (DeliveryState.SUPPRESSED, Exit.NOT_DELIVERED),
        (DeliveryState.QUEUED, Exit.PENDING),
        (DeliveryState.SENDING, Exit.PENDING),
        (DeliveryState.RETRY, Exit.PENDING),
    ],
)
def test_each_state_has_its_exit_code(state: DeliveryState, code: Exit) -> None:
    assert exit_for(state.value) is code


def test_a_message_waiting_for_its_recipient_s_link_is_not_final() -> None:
    assert exit_for(WAITING) is Exit.PENDING


def test_wait_polls_until_final_backing_off() -> None:
    transport = Scripted(
        ok(200, {**RECORD, "status": "queued"}),
        ok(200, {**RECORD, "status": "sending"}),
        ok(200, {**RECORD, "status": "delivered"}),
    )
    now = [0.0]
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        now[0] += seconds

    c, out, _ = console()
    code = status(
        transport, "a/b c", wait=60, retries=0, json_out=False, console=c, sleep=sleep,
        clock=lambda: now[0],
    )  # fmt: skip
    assert code is Exit.OK and out.getvalue().splitlines()[0] == "delivered"
    assert pauses == [0.25, 0.5]
    assert transport.requests[0][1] == "/v1/messages/a%2Fb%20c"


def test_wait_gives_up_at_its_deadline() -> None:
    transport = Scripted(*(ok(200, RECORD) for _ in range(100)))
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    c, _, err = console()
    code = status(
        transport, "m-1", wait=5, retries=0, json_out=False, console=c, sleep=sleep,
        clock=lambda: now[0],
    )  # fmt: skip
    assert code is Exit.PENDING and now[0] == 5
    assert "not final after 5s: queued" in err.getvalue()


def test_the_exit_table_lists_every_code_once() -> None:
    listed = [line.split()[0] for line in EXIT_TABLE.splitlines() if line.startswith("  ")]
    codes = [c for c in listed if c.isdigit()]
    assert codes == [str(code.value) for code in Exit]


def test_the_readme_table_has_every_exit_code() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### From a shell: `alertbridge send`")[1].split("\n## ")[0]
    rows = [line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| ")]
    assert rows[2:] == [str(code.value) for code in Exit]  # the header and its rule first


def test_wait_before_the_id_reads_as_the_id_with_the_default_wait() -> None:
    from argparse import Namespace

    from bridge.cli import _parser
    from bridge.producer_cli import DEFAULT_WAIT, _status_target

    def target(*argv: str) -> tuple[str, float | None]:
        args: Namespace = _parser().parse_args(["status", *argv])
        return _status_target(args)

    assert target("m-1") == ("m-1", None)
    assert target("m-1", "--wait") == ("m-1", DEFAULT_WAIT)
    assert target("--wait", "m-1") == ("m-1", DEFAULT_WAIT)
    assert target("--wait", "123") == ("123", DEFAULT_WAIT)  # a numeric id is still the id
    assert target("--wait", "30", "m-1") == ("m-1", 30.0)
    assert target("m-1", "--wait=2.5") == ("m-1", 2.5)


def test_a_recipient_is_named_instead_of_its_chat() -> None:
    from bridge.producer_cli import describe

    body = send_request(
        message_id="r", chats=[], recipient="user-42", text="hi", template=None, data=None,
        plain=False, silent=False,
    )  # fmt: skip
    assert body == {"message_id": "r", "recipient": "user-42", "text": "hi"}
    record = {
        "status": "delivered",
        "deliveries": [
            {"chat_id": None, "recipient": "user-42", "status": "delivered", "attempts": 1}
        ],
    }
    assert describe(record)[1] == "  recipient user-42: delivered · 1 attempt"
