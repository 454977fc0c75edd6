"""`alertbridge send` and `alertbridge status`: a producer's own messages from a
shell script or cron, against a running bridge's ``/v1/messages``.

build the request (pure) → call, retrying what may not have arrived with the
same message_id → read the answer → one exit code from :class:`Exit`.

The HTTP client is the standard library's urllib: the CLI needs one request at
a time, and a runtime dependency for it would be weight for nothing.
"""

from __future__ import annotations

import enum
import http.client
import json
import random
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import Message
from typing import IO, Any, Protocol

from bridge import __version__
from bridge.delivery import TERMINAL, DeliveryState
from bridge.errors import BridgeError

URL_VARIABLE = "ALERTBRIDGE_URL"
TOKEN_VARIABLE = "ALERTBRIDGE_PRODUCER_TOKEN"  # noqa: S105 - a variable's name
#: The first pause between tries; it doubles up to MAX_DELAY.
FIRST_DELAY = 0.5
MAX_DELAY = 8.0
#: --wait polls this often at first, then less (up to MAX_POLL).
FIRST_POLL = 0.25
MAX_POLL = 2.0


class Exit(enum.IntEnum):
    """Every exit code of `send` and `status`: the table in their --help and the README."""

    OK = 0  # send: accepted, or replayed (accepted before); status: delivered
    NOT_DELIVERED = 1  # status: final and not delivered: failed, ambiguous or suppressed
    USAGE = 2  # bad arguments, no URL or no token (argparse's own 2 as well)
    REFUSED = 3  # the bridge refused the request (a 4xx; its reason printed)
    UNREACHABLE = 4  # no answer, or a 5xx (503: its database is down), after the retries
    NOT_FOUND = 5  # status: no message with this id from this producer (404)
    PENDING = 6  # status: not final yet (waiting, queued, sending, retry), or --wait ran out


EXIT_TABLE = """\
exit codes:
  0  send: accepted, or replayed (the same message_id and request were accepted
     before; nothing is sent twice). status: delivered
  1  status: final but not delivered: failed, ambiguous or suppressed
  2  usage: bad arguments, or no ALERTBRIDGE_URL / ALERTBRIDGE_PRODUCER_TOKEN
  3  refused by the bridge (a 4xx: bad token, chat not allowed, bad text, the
     message_id used before with a different request, ...): the reason is printed
  4  the bridge unreachable, or answering 5xx/503, after the retries
  5  status: no message with this id (for this producer's token)
  6  status: not final yet (waiting, queued, sending, retry), or --wait ran out
"""


class Unreachable(BridgeError):
    """No HTTP answer: refused, reset, timed out, or not HTTP."""


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer: its status, its JSON body (None when it is not JSON), headers."""

    status: int
    body: Any
    headers: Mapping[str, str]

    @property
    def error(self) -> str:
        """The bridge's reason for a refusal, or the status line when it gave none."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), str):
            return str(self.body["error"])
        return f"HTTP {self.status}"


class Transport(Protocol):
    def __call__(self, method: str, path: str, body: bytes | None) -> Answer: ...


def http_transport(base_url: str, token: str, timeout: float) -> Transport:
    """Requests to ``base_url`` with the producer's bearer token (urllib, no proxy:
    the bridge is a service beside the caller, not something on the internet)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    base = base_url.rstrip("/")

    def call(method: str, path: str, body: bytes | None) -> Answer:
        # The scheme is http or https: connection() refuses any other.
        request = urllib.request.Request(  # noqa: S310
            base + path,
            data=body,
            method=method,
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": f"alertbridge-cli/{__version__}",
            },
        )
        try:
            with opener.open(request, timeout=timeout) as response:
                return _answer(response.status, response.read(), response.headers)
        except urllib.error.HTTPError as exc:
            with exc:
                return _answer(exc.code, exc.read(), exc.headers)
        except urllib.error.URLError as exc:
            raise Unreachable(f"cannot reach {base}: {exc.reason}") from exc
        except (OSError, http.client.HTTPException) as exc:
            # Reset, timed out, or closed before an answer: it may have arrived.
            raise Unreachable(f"no answer from {base}: {exc or type(exc).__name__}") from exc

    return call


def _answer(status: int, raw: bytes, headers: Message) -> Answer:
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    return Answer(status, body, {k.lower(): v for k, v in headers.items()})


def retryable(status: int) -> bool:
    """Answers after which the same request may succeed: the bridge's 503 (its
    database down), any 5xx of a proxy in front of it, a 429."""
    return status >= 500 or status == 429


class GaveUp(BridgeError):
    """Every try ended without an answer to act on."""


def call_with_retries(
    transport: Transport,
    method: str,
    path: str,
    body: bytes | None,
    *,
    retries: int,
    sleep: Callable[[float], None],
    say: Callable[[str], None],
    jitter: Callable[[], float] = lambda: random.uniform(0.5, 1.0),
) -> Answer:
    """The first answer that is not worth another try; GaveUp after ``retries``
    more tries. ``body`` is sent unchanged each time: for a POST it carries the
    one message_id, so a try that arrived unanswered is replayed, not sent again."""
    delay = FIRST_DELAY
    for attempt in range(retries + 1):
        try:
            answer = transport(method, path, body)
            if not retryable(answer.status):
                return answer
            problem = f"HTTP {answer.status}: {answer.error}"
        except Unreachable as exc:
            problem = str(exc)
        if attempt == retries:
            tries = f"{retries + 1} {'try' if retries == 0 else 'tries'}"
            raise GaveUp(f"{problem} (after {tries})")
        pause = delay * jitter()
        say(f"{problem}; try {attempt + 2} of {retries + 1} in {pause:.1f}s")
        sleep(pause)
        delay = min(delay * 2, MAX_DELAY)
    raise AssertionError("unreachable")  # pragma: no cover


# ----------------------------------------------------------------------------- send


def send_request(
    *,
    message_id: str,
    chats: list[int],
    recipient: str | None = None,
    text: str | None,
    template: str | None,
    data: dict[str, Any] | None,
    plain: bool,
    silent: bool,
) -> dict[str, Any]:
    """The POST /v1/messages body for the arguments (already checked)."""
    body: dict[str, Any] = {"message_id": message_id}
    if recipient is not None:
        body["recipient"] = recipient
    elif len(chats) == 1:
        body["chat_id"] = chats[0]
    else:
        body["chats"] = chats
    if template is not None:
        body["template"] = template
        body["data"] = data or {}
    else:
        body["text"] = text
        if plain:
            body["parse_mode"] = "plain"
    if silent:
        body["silent"] = True
    return body


def read_data(value: str, stdin: IO[str]) -> dict[str, Any]:
    """--data: a JSON object inline, ``@FILE``, or ``-`` for stdin."""
    where = "--data"
    try:
        if value == "-":
            value, where = stdin.read(), "--data - (stdin)"
        elif value.startswith("@"):
            with open(value[1:], encoding="utf-8") as file:
                value, where = file.read(), f"--data {value}"
        data = json.loads(value)
    except OSError as exc:
        raise BridgeError(f"cannot read {value[1:]}: {exc.strerror}") from exc
    except ValueError as exc:
        raise BridgeError(f"{where} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BridgeError(f"{where} must be a JSON object (the template's variables)")
    return data


@dataclass(frozen=True, slots=True)
class Console:
    """Where results go (stdout: only what a script reads) and messages (stderr)."""

    out: IO[str]
    err: IO[str]
    name: str

    def result(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def say(self, line: str) -> None:
        print(f"alertbridge {self.name}: {line}", file=self.err, flush=True)


def send(
    transport: Transport,
    body: dict[str, Any],
    *,
    retries: int,
    json_out: bool,
    console: Console,
    sleep: Callable[[float], None] = time.sleep,
) -> Exit:
    message_id = body["message_id"]
    raw = json.dumps(body).encode()
    try:
        answer = call_with_retries(
            transport, "POST", "/v1/messages", raw, retries=retries, sleep=sleep, say=console.say
        )
    except GaveUp as exc:
        console.say(
            f"{exc}. Message {message_id!r} may or may not be stored: "
            f"`alertbridge status {message_id}` tells, and sending again with "
            f"--message-id {message_id} is safe (never sent twice)"
        )
        # The id, so that a script can check it or try again under it.
        console.result(json.dumps({"message_id": message_id}) if json_out else message_id)
        return Exit.UNREACHABLE
    if answer.status in (200, 202) and isinstance(answer.body, dict):
        replayed = answer.status == 200
        record = answer.body
        where = ", ".join(_addressee(d) for d in record.get("deliveries", []))
        if replayed:
            console.say(
                f"replayed: message {message_id!r} was accepted before with this same "
                f"request; nothing is sent twice (status {record.get('status')})"
            )
        else:
            console.say(f"accepted: message {message_id!r} to {where or 'no chat'}")
        if json_out:
            result = "replayed" if replayed else "accepted"
            console.result(json.dumps({"result": result, **record}))
        else:
            console.result(message_id)
        return Exit.OK
    console.say(f"refused (HTTP {answer.status}): {answer.error}{_field(answer)}")
    return Exit.REFUSED


def _field(answer: Answer) -> str:
    body = answer.body if isinstance(answer.body, dict) else {}
    if body.get("differs"):
        return f" [differs: {', '.join(map(str, body['differs']))}]"
    return f" [field: {body['field']}]" if body.get("field") else ""


# --------------------------------------------------------------------------- status


def exit_for(status: str) -> Exit:
    """A message's status as an exit code."""
    try:
        state = DeliveryState(status)
    except ValueError:
        return Exit.PENDING  # a state this CLI does not know yet is not one it calls final
    if state is DeliveryState.DELIVERED:
        return Exit.OK
    return Exit.NOT_DELIVERED if state in TERMINAL else Exit.PENDING


def _addressee(delivery: Mapping[str, Any]) -> str:
    """A delivery's chat, or the recipient it went to (whose chat is not shown)."""
    if delivery.get("chat_id") is None and delivery.get("recipient") is not None:
        return f"recipient {delivery['recipient']}"
    return f"chat {delivery.get('chat_id')}"


def describe(record: Mapping[str, Any]) -> list[str]:
    """The status, then a line a delivery: what `status` prints."""
    lines = [str(record.get("status"))]
    for d in record.get("deliveries", []):
        attempts = d.get("attempts", 0)
        parts = [f"{_addressee(d)}: {d.get('status')}"]
        parts.append(f"{attempts} attempt{'' if attempts == 1 else 's'}")
        if d.get("telegram_message_id") is not None:
            parts.append(f"telegram message {d['telegram_message_id']}")
        if d.get("delivered_at"):
            parts.append(f"delivered {d['delivered_at']}")
        elif d.get("last_attempt_at"):
            parts.append(f"last attempt {d['last_attempt_at']}")
        if d.get("was_ambiguous"):
            parts.append("was ambiguous")
        if d.get("error"):
            parts.append(f"error: {d['error']}")
        lines.append("  " + " · ".join(parts))
    return lines


def status(
    transport: Transport,
    message_id: str,
    *,
    wait: float | None,
    retries: int,
    json_out: bool,
    console: Console,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Exit:
    path = "/v1/messages/" + urllib.parse.quote(message_id, safe="")
    deadline = None if wait is None else clock() + wait
    poll = FIRST_POLL
    while True:
        try:
            answer = call_with_retries(
                transport, "GET", path, None, retries=retries, sleep=sleep, say=console.say
            )
        except GaveUp as exc:
            console.say(str(exc))
            return Exit.UNREACHABLE
        if answer.status == 404:
            console.say(f"not found: {answer.error}")
            return Exit.NOT_FOUND
        if answer.status != 200 or not isinstance(answer.body, dict):
            console.say(f"refused (HTTP {answer.status}): {answer.error}")
            return Exit.REFUSED
        record = answer.body
        code = exit_for(str(record.get("status")))
        if code is not Exit.PENDING or deadline is None or clock() >= deadline:
            break
        sleep(min(poll, max(deadline - clock(), 0.0)))
        poll = min(poll * 2, MAX_POLL)
    if json_out:
        console.result(json.dumps(record))
    else:
        for line in describe(record):
            console.result(line)
    if code is Exit.PENDING and deadline is not None:
        console.say(f"not final after {wait:g}s: {record.get('status')}")
    return code


# ---------------------------------------------------------------------- arguments


def connection(url: str | None, environ: Mapping[str, str]) -> tuple[str, str]:
    """The bridge's URL and the producer's token, or a usage error saying how."""
    base = url or environ.get(URL_VARIABLE, "")
    if not base:
        raise BridgeError(f"no bridge URL: set {URL_VARIABLE} (or pass --url)")
    if not base.startswith(("http://", "https://")):
        raise BridgeError(f"the bridge URL must start with http:// or https://, not {base!r}")
    token = environ.get(TOKEN_VARIABLE, "")
    if not token:
        raise BridgeError(
            f"no producer token: set {TOKEN_VARIABLE} (never a flag: ps would show it)"
        )
    return base, token


def new_message_id() -> str:
    return str(uuid.uuid4())


def main(args: Any, environ: Mapping[str, str], stdin: IO[str] = sys.stdin) -> int:
    """`send` or `status` for parsed arguments (see bridge/cli.py for the parser)."""
    console = Console(sys.stdout, sys.stderr, args.command)
    try:
        base, token = connection(args.url, environ)
        if args.retries < 0 or args.timeout <= 0:
            raise BridgeError("--retries must be 0 or more and --timeout more than 0")
        transport = http_transport(base, token, args.timeout)
        if args.command == "send":
            if (args.chat is None) == (args.recipient is None):
                raise BridgeError("give --chat ID (one or more) or --recipient ID, one of them")
            body = send_request(
                message_id=args.message_id or new_message_id(),
                chats=args.chat or [],
                recipient=args.recipient,
                text=_text(args, stdin),
                template=args.template,
                data=None if args.data is None else read_data(args.data, stdin),
                plain=args.plain,
                silent=args.silent,
            )
            return send(transport, body, retries=args.retries, json_out=args.json, console=console)
        message_id, wait = _status_target(args)
        return status(
            transport,
            message_id,
            wait=wait,
            retries=args.retries,
            json_out=args.json,
            console=console,
        )
    except BridgeError as exc:
        console.say(str(exc))
        return Exit.USAGE
    except KeyboardInterrupt:
        return 130  # the shell's code for SIGINT; no traceback


def _text(args: Any, stdin: IO[str]) -> str | None:
    if args.template is None and args.text is None:
        raise BridgeError("give the TEXT (or - to read it from stdin), or --template NAME")
    if args.template is not None:
        if args.text is not None:
            raise BridgeError("give either TEXT or --template, not both")
        if args.plain:
            raise BridgeError("--plain goes with TEXT: a template renders HTML")
        return None
    if args.data is not None:
        raise BridgeError("--data goes with --template")
    if args.text == "-":
        # The newline a shell command's output ends with is not part of the message.
        return stdin.read().removesuffix("\n")
    return str(args.text)


def _status_target(args: Any) -> tuple[str, float | None]:
    """(message_id, seconds to wait or None). ``--wait ID`` reads as the ID with
    the default wait: argparse hands an optional value the next word."""
    wait = args.wait
    message_id = args.message_id
    if message_id is None:
        if wait is None or wait == DEFAULT_WAIT_MARK:
            raise BridgeError("give the MESSAGE_ID (the id `alertbridge send` printed)")
        message_id, wait = wait, DEFAULT_WAIT_MARK
    if wait is None:
        return message_id, None
    if wait == DEFAULT_WAIT_MARK:
        return message_id, DEFAULT_WAIT
    try:
        seconds = float(wait)
    except ValueError:
        raise BridgeError(f"--wait takes seconds, not {wait!r}") from None
    if seconds < 0:
        raise BridgeError("--wait takes 0 seconds or more")
    return message_id, seconds


#: --wait without SECONDS: how long to poll.
DEFAULT_WAIT = 60.0
#: What argparse stores for a bare --wait (its ``const``).
DEFAULT_WAIT_MARK = "default"
