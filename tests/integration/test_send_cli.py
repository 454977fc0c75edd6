"""`alertbridge send` and `alertbridge status` as a shell script runs them: real
processes against a spawned standalone bridge (SQLite) and the Telegram double.
Every row of the exit code table (bridge.producer_cli.Exit) is reached here."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bridge.producer_cli import Exit
from bridge.sandbox.botapi import TelegramDouble
from tests.conftest import (
    REPO,
    ProxiedDatabase,
    build_config,
    config_dict,
    refusing_port,
    start_bridge,
    wait_until,
)
from tests.processes import Served, bridge_process
from tests.tcp_proxy import TcpProxy

TOKEN = "cli-producer-token"
CHAT = -1001234567890
OTHER = 4242


@dataclass
class Run:
    code: int
    out: str
    err: str


async def alertbridge(
    *args: str, url: str | None, token: str | None = TOKEN, stdin: str = ""
) -> Run:
    """The CLI in a subprocess, without blocking this loop (the double answers in it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTBRIDGE_")}
    if url is not None:
        env["ALERTBRIDGE_URL"] = url
    if token is not None:
        env["ALERTBRIDGE_PRODUCER_TOKEN"] = token
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        *args,
        cwd=REPO,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), timeout=120)
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


@pytest.fixture
async def served(telegram: TelegramDouble, tmp_path: Path) -> AsyncIterator[Served]:
    config = config_dict(
        None,
        None,
        telegram.url,
        sqlite_path=tmp_path / "alertbridge.db",
        producers={"app": {"token": TOKEN, "chats": [CHAT, OTHER]}},
    )
    async with bridge_process(config, log_level="warning") as bridge:
        yield bridge


async def test_send_prints_the_id_and_status_waits_until_delivered(
    served: Served, telegram: TelegramDouble
) -> None:
    sent = await alertbridge("send", "--chat", str(CHAT), "Export <b>42</b> ready", url=served.url)
    assert sent.code == Exit.OK, sent.err
    message_id = sent.out.strip()
    assert str(uuid.UUID(message_id)) == message_id  # stdout: the id alone
    assert "accepted" in sent.err

    status = await alertbridge("status", message_id, "--wait", url=served.url)
    assert status.code == Exit.OK, status.err
    first, *deliveries = status.out.splitlines()
    assert first == "delivered"
    assert deliveries[0].startswith(f"  chat {CHAT}: delivered · 1 attempt · telegram message")
    (message,) = telegram.sent_messages()
    assert (message.chat_id, message.text) == (CHAT, "Export 42 ready")


async def test_the_same_message_id_twice_is_one_telegram_message(
    served: Served, telegram: TelegramDouble
) -> None:
    args = ["send", "--chat", str(CHAT), "--chat", str(OTHER), "--message-id", "nightly-7"]
    # The text from stdin, as a pipe gives it: its last newline is not part of it.
    first = await alertbridge(*args, "--plain", "-", url=served.url, stdin="backup <done>\n")
    again = await alertbridge(*args, "backup <done>", "--plain", url=served.url)
    assert (first.code, again.code) == (Exit.OK, Exit.OK), again.err
    assert first.out == again.out == "nightly-7\n"
    assert "replayed" in again.err and "nothing is sent twice" in again.err

    done = await alertbridge("status", "nightly-7", "--wait=60", "--json", url=served.url)
    assert done.code == Exit.OK, done.err
    assert sorted(m.chat_id for m in telegram.sent_messages()) == sorted([CHAT, OTHER])
    assert {m.text for m in telegram.sent_messages()} == {"backup <done>"}


async def test_another_request_under_a_used_id_is_refused_naming_the_field(
    served: Served,
) -> None:
    args = ["send", "--chat", str(CHAT), "--message-id", "report-1"]
    assert (await alertbridge(*args, "first", url=served.url)).code == Exit.OK
    other = await alertbridge(*args, "second", url=served.url)
    assert other.code == Exit.REFUSED
    assert "HTTP 422" in other.err and "[differs: text]" in other.err
    assert other.out == ""


async def test_a_wrong_token_is_refused(served: Served) -> None:
    wrong = await alertbridge("send", "--chat", str(CHAT), "hi", url=served.url, token="nope")
    assert wrong.code == Exit.REFUSED
    assert "HTTP 401" in wrong.err and "bearer token" in wrong.err
    status = await alertbridge("status", "any", url=served.url, token="nope")
    assert status.code == Exit.REFUSED and "HTTP 401" in status.err


async def test_a_recipient_not_linked_is_refused(served: Served) -> None:
    unlinked = await alertbridge("send", "--recipient", "user-42", "hi", url=served.url)
    assert unlinked.code == Exit.REFUSED
    assert "HTTP 409" in unlinked.err and "user-42" in unlinked.err


async def test_status_of_an_unknown_id_is_not_found(served: Served) -> None:
    unknown = await alertbridge("status", "never/sent?", url=served.url)
    assert unknown.code == Exit.NOT_FOUND
    assert "'never/sent?'" in unknown.err


async def test_a_failed_delivery_is_not_delivered(served: Served, telegram: TelegramDouble) -> None:
    telegram.block_chat(OTHER)
    sent = await alertbridge("send", "--chat", str(OTHER), "to a blocked chat", url=served.url)
    assert sent.code == Exit.OK, sent.err
    status = await alertbridge("status", sent.out.strip(), "--wait", "60", url=served.url)
    assert status.code == Exit.NOT_DELIVERED, status.err
    assert status.out.splitlines()[0] == "failed"
    assert "blocked" in status.out


async def test_a_message_not_final_yet_is_pending_and_wait_gives_up(
    served: Served, telegram: TelegramDouble
) -> None:
    telegram.rate_limit_next(1, retry_after=600)  # retried in ten minutes: long after the test
    sent = await alertbridge(
        "send", "--chat", str(CHAT), "--message-id", "later", "x", url=served.url
    )
    assert sent.code == Exit.OK, sent.err
    async with httpx.AsyncClient(base_url=served.url) as client:

        async def retrying() -> bool:
            answer = await client.get(
                "/v1/messages/later", headers={"Authorization": f"Bearer {TOKEN}"}
            )
            return bool(answer.json()["status"] == "retry")

        await wait_until(retrying)
    now = await alertbridge("status", "later", url=served.url)
    assert now.code == Exit.PENDING and now.out.splitlines()[0] == "retry"
    waited = await alertbridge("status", "later", "--wait", "0.5", url=served.url)
    assert waited.code == Exit.PENDING and "not final after 0.5s: retry" in waited.err


async def test_a_bridge_that_is_down_is_unreachable_after_the_retries() -> None:
    with refusing_port() as port:
        down = await alertbridge(
            "send", "--chat", str(CHAT), "--retries", "2", "hi", url=f"http://127.0.0.1:{port}"
        )
        status = await alertbridge("status", "x", "--retries", "0", url=f"http://127.0.0.1:{port}")
    assert down.code == Exit.UNREACHABLE
    assert "try 2 of 3" in down.err and "try 3 of 3" in down.err and "after 3 tries" in down.err
    message_id = down.out.strip()
    assert f"--message-id {message_id} is safe" in down.err
    assert status.code == Exit.UNREACHABLE and "after 1 try" in status.err


async def test_a_lost_answer_is_retried_under_the_same_id_and_sent_once(
    served: Served, telegram: TelegramDouble
) -> None:
    host, port = served.address.rsplit(":", 1)
    proxy = TcpProxy(host, int(port))
    await proxy.start()
    proxy.lose_answers(1)  # the first request is served; its answer never arrives
    try:
        sent = await alertbridge(
            "send", "--chat", str(CHAT), "lost answer", url=f"http://127.0.0.1:{proxy.port}"
        )
    finally:
        await proxy.stop()
    assert sent.code == Exit.OK, sent.err
    assert "no answer" in sent.err and "try 2 of 5" in sent.err
    assert "replayed" in sent.err  # the second try carried the first one's message_id
    status = await alertbridge("status", sent.out.strip(), "--wait", url=served.url)
    assert status.code == Exit.OK, status.err
    assert [m.text for m in telegram.sent_messages()] == ["lost answer"]


@pytest.mark.parametrize(
    ("args", "token", "says"),
    [
        (["send", "--chat", "1", "hi"], None, "ALERTBRIDGE_PRODUCER_TOKEN"),
        (["send", "hi"], TOKEN, "--chat"),
        (["send", "--chat", "1", "--recipient", "u", "hi"], TOKEN, "one of them"),
        (["send", "--chat", "1"], TOKEN, "give the TEXT"),
        (["send", "--chat", "1", "hi", "--template", "t"], TOKEN, "not both"),
        (["send", "--chat", "1", "--template", "t", "--data", "[1]"], TOKEN, "JSON object"),
        (["status"], TOKEN, "give the MESSAGE_ID"),
        (["status", "x", "--wait=soon"], TOKEN, "--wait takes seconds"),
    ],
)
async def test_usage_errors_say_what_is_missing(
    args: list[str], token: str | None, says: str
) -> None:
    run = await alertbridge(*args, url="http://127.0.0.1:9", token=token)
    assert run.code == Exit.USAGE
    assert says in run.err and "Traceback" not in run.err


async def test_without_a_url_it_says_how_to_give_one() -> None:
    run = await alertbridge("status", "x", url=None)
    assert run.code == Exit.USAGE and "ALERTBRIDGE_URL" in run.err


async def test_help_has_the_exit_codes_and_no_token_flag() -> None:
    for command in ("send", "status"):
        run = await alertbridge(command, "--help", url=None)
        assert run.code == 0
        for code in Exit:
            assert f"\n  {code.value}  " in run.out, (command, code)
        assert "--token" not in run.out
    assert "never a flag" in (await alertbridge("send", "--help", url=None)).out
    overview = (await alertbridge("--help", url=None)).out
    assert "  send " in overview and "  status " in overview


async def test_a_database_that_is_down_is_503_then_the_same_id_goes_through(
    proxied_database: ProxiedDatabase, amqp_names: dict[str, str], telegram: TelegramDouble
) -> None:
    proxy, through = proxied_database.proxy, proxied_database.url
    producers = {"app": {"token": TOKEN, "chats": [CHAT]}}
    bridge = await start_bridge(
        build_config(config_dict(through, amqp_names, telegram.url, producers=producers))
    )
    args = ["send", "--chat", str(CHAT), "--message-id", "while-down", "--retries", "1", "hi"]
    try:
        await proxy.cut()
        down = await alertbridge(*args, url=f"http://{bridge.config.listen}")
        await proxy.restore()
        again = await alertbridge(*args, url=f"http://{bridge.config.listen}")
        status = await alertbridge(
            "status", "while-down", "--wait", url=f"http://{bridge.config.listen}"
        )
    finally:
        await bridge.shutdown()
    assert down.code == Exit.UNREACHABLE
    assert "HTTP 503" in down.err and "after 2 tries" in down.err
    assert down.out == "while-down\n"
    assert again.code == Exit.OK and "accepted" in again.err
    assert status.code == Exit.OK, status.err
    assert [m.text for m in telegram.sent_messages()] == ["hi"]
