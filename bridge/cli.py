"""The `alertbridge` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from bridge import __version__, logs
from bridge.config import Config
from bridge.config_file import load_config
from bridge.errors import BridgeError

DESCRIPTION = """\
Alertbridge receives Alertmanager webhooks and delivers each notification
to Telegram exactly once: routed by label, rendered from Jinja templates,
queued through RabbitMQ, with its state in PostgreSQL.

Point Alertmanager at it:

  receivers:
    - name: telegram
      webhook_configs:
        - url: http://alertbridge:8080/alertmanager
          send_resolved: true
"""

EPILOG = """\
commands:
  demo          the whole product offline: a sandbox Telegram with a chat page
  serve         receiver + worker in one process (the usual way to run it)
  receiver      only the HTTP side: accept, store, queue
  worker        only the delivery side: claim, send, record (scale it out)
  migrate       apply database migrations and exit (serve does it too)
  check-config  validate the config file, print the route tree, exit
  render        show what a payload becomes in each chat, without sending
  deliveries    list deliveries, show one, resend an ambiguous or failed one
                (beside the running bridge, on either store)
  send          send a producer's own message through a running bridge
  status        what became of a message send sent (--wait: until it is final)

The config file comes from --config FILE or $ALERTBRIDGE_CONFIG; check-config
and render also take it as their first argument, as amtool check-config does.
These variables override it: ALERTBRIDGE_DATABASE_URL, ALERTBRIDGE_AMQP_URL,
ALERTBRIDGE_SQLITE_PATH, ALERTBRIDGE_TELEGRAM_TOKEN,
ALERTBRIDGE_TELEGRAM_API_URL, ALERTBRIDGE_LISTEN. With neither
database_url nor amqp_url, serve runs standalone on the SQLite file
sqlite_path (default ./alertbridge.db); with both, on PostgreSQL and RabbitMQ.

examples:
  alertbridge demo
  alertbridge check-config alertbridge.yml
  alertbridge render alertbridge.yml alertmanager-examples/payloads/firing.json
  alertbridge serve --config alertbridge.yml
  alertbridge deliveries --config alertbridge.yml --state ambiguous --since 2h
  id=$(alertbridge send --chat -1001234 "Export <b>42</b> ready") && alertbridge status "$id" --wait
"""

SEND_EPILOG = """\
The bridge: $ALERTBRIDGE_URL (or --url). The producer's token:
$ALERTBRIDGE_PRODUCER_TOKEN, never a flag (ps would show it to every user).

Without --message-id, send makes one (a UUID) and reuses it on its own retries
(no answer, 5xx, 503: up to --retries more tries, 0.5 s apart and doubling),
so a retry is answered "replayed" and never sends the message twice. Standard
output carries only the message_id (with --json, the bridge's answer), for
`alertbridge status`; everything else goes to standard error. With exit code
4 the id is printed too: sending again with --message-id ID is safe.

{exits}
examples:
  alertbridge send --chat -1001234 "Export <b>42</b> is ready"
  df -h | alertbridge send --chat -1001234 --plain -
  alertbridge send --recipient user-42 --message-id invoice-42 --template invoice \\
      --data '{{"number": 42}}'
  id=$(alertbridge send --chat -1001234 "Backup done") && alertbridge status "$id" --wait
"""

STATUS_EPILOG = """\
Prints the message's status (queued, sending, retry, delivered, failed,
ambiguous, suppressed) on the first line, then a line a delivery: its chat,
status, attempts, Telegram's message id, time and error. --json prints the
bridge's record. $ALERTBRIDGE_URL and $ALERTBRIDGE_PRODUCER_TOKEN as for send.

{exits}
examples:
  alertbridge status 3f0c6c3e-8d1b-4f59-9a55-0e4a3c1d2b7e
  alertbridge status invoice-42 --wait          until final, at most 60 s
  alertbridge status invoice-42 --wait=300 --json
"""

DELIVERIES_EPILOG = """\
Runs beside the bridge, on either store (a standalone bridge's SQLite file is
read without taking its lock). Exit codes: 0 found or done, 1 nothing found
or a delivery refused, 2 a usage or config error.

examples:
  alertbridge deliveries -c alertbridge.yml                   the latest 50
  alertbridge deliveries -c alertbridge.yml --state ambiguous --since 24h
  alertbridge deliveries -c alertbridge.yml --chat -1001234 --limit 200 --json
  alertbridge deliveries -c alertbridge.yml show 4711         everything about one
  alertbridge deliveries -c alertbridge.yml resend 4711 4712  after checking the chat

An ambiguous delivery is one whose request reached Telegram without an answer:
the message may or may not be in the chat. Look in the chat (show prints the
text as Telegram shows it); if it is not there, resend it.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alertbridge",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"alertbridge {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    # No default here: a file named on the command line, either way, must be
    # told apart from $ALERTBRIDGE_CONFIG, which only fills in when none is.
    common.add_argument(
        "--config",
        "-c",
        type=Path,
        metavar="FILE",
        help="the YAML config file (default: $ALERTBRIDGE_CONFIG)",
    )
    common.add_argument(
        "--log-level",
        default=os.environ.get("ALERTBRIDGE_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
        help="how much to log (default: info)",
    )
    common.add_argument(
        "--log-format",
        default=os.environ.get("ALERTBRIDGE_LOG_FORMAT", "text"),
        choices=["text", "json"],
        help="text lines, or one JSON object a line with delivery_id, chat_id and "
        "group_key fields (default: text; $ALERTBRIDGE_LOG_FORMAT)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in (
        ("serve", "run receiver and worker in one process"),
        ("receiver", "run only the HTTP receiver"),
        ("worker", "run only the delivery worker and scheduler"),
        ("migrate", "apply database migrations and exit"),
    ):
        commands.add_parser(name, parents=[common], help=help_text, description=help_text)
    check = commands.add_parser(
        "check-config",
        parents=[common],
        help="validate the config and print the route tree",
        description="Validate the config file (every mistake with its file, line and key), "
        "print the route tree with each matcher as Alertmanager would write it, and exit: "
        "0 when the file is good, 2 when it is not.",
        epilog="example: alertbridge check-config alertbridge.yml",
    )
    check.add_argument(
        "config_file",
        nargs="?",
        type=Path,
        metavar="CONFIG",
        help="the YAML config file (or --config FILE, or $ALERTBRIDGE_CONFIG)",
    )
    demo = commands.add_parser(
        "demo",
        help="the whole product offline, with a sandbox Telegram and its chat page",
        description="Start a sandbox Telegram (the Bot API and a chat page on one local "
        "port), run the bridge standalone against it (SQLite in a temporary directory), and "
        "fire the sample payloads: a group firing, growing, resolving, then a storm that "
        "becomes a digest. Open the printed URL to see the chats, press Ack or Silence, and "
        "post your own payloads. Needs nothing else installed and no network.",
    )
    demo.add_argument("--port", type=int, default=8081, help="the sandbox's port (default 8081)")
    demo.add_argument(
        "--bridge-port", type=int, default=8080, help="the bridge's port (default 8080)"
    )
    demo.add_argument(
        "--exit-when-done",
        action="store_true",
        help="stop once the samples are delivered, instead of waiting for Ctrl-C",
    )
    render = commands.add_parser(
        "render",
        parents=[common],
        help="show what a payload becomes in each chat, without sending",
        description="Route and render a webhook payload exactly as the receiver would, and\n"
        "print, per destination, the text that would be sent and its length. Needs no\n"
        "database, broker or Telegram.",
        epilog="examples:\n"
        "  alertbridge render alertbridge.yml payload.json\n"
        "  alertbridge render --config alertbridge.yml payload.json\n"
        "  ALERTBRIDGE_CONFIG=alertbridge.yml alertbridge render - < payload.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    render.add_argument(
        "config_file",
        nargs="?",
        type=Path,
        metavar="CONFIG",
        help="the YAML config file (or --config FILE, or $ALERTBRIDGE_CONFIG)",
    )
    render.add_argument(
        "payload", type=Path, metavar="PAYLOAD", help="a webhook body (JSON file), or - for stdin"
    )
    render.add_argument(
        "--source",
        default="auto",
        help="alertmanager, grafana or a configured source name "
        "(default: by the payload's version field)",
    )
    render.add_argument(
        "--visible", action="store_true", help="print the text as Telegram shows it, not the HTML"
    )
    _deliveries_parser(commands, common)
    _producer_parsers(commands)
    return parser


def _producer_parsers(commands: Any) -> None:
    from bridge.producer_cli import DEFAULT_WAIT_MARK, EXIT_TABLE

    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument(
        "--url",
        metavar="URL",
        help="the bridge, e.g. http://alertbridge:8080 (default: $ALERTBRIDGE_URL)",
    )
    remote.add_argument(
        "--retries",
        type=int,
        default=4,
        metavar="N",
        help="more tries after no answer or a 5xx (default 4)",
    )
    remote.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="for each request (default 10)",
    )
    remote.add_argument("--json", action="store_true", help="the bridge's answer as JSON")
    send = commands.add_parser(
        "send",
        parents=[remote],
        help="send a producer's own message through a running bridge",
        description="Send a message to Telegram chats through a running bridge's producer "
        "API (POST /v1/messages), as the producer whose token you give, exactly once.",
        epilog=SEND_EPILOG.format(exits=EXIT_TABLE),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    send.add_argument(
        "text", nargs="?", metavar="TEXT", help="the message (HTML unless --plain), or - for stdin"
    )
    send.add_argument(
        "--chat",
        type=int,
        action="append",
        metavar="ID",
        help="a chat id the producer may send to; again for more chats",
    )
    send.add_argument(
        "--recipient",
        metavar="ID",
        help="instead of --chat: your own id of a user linked through POST /v1/recipients/ID/link",
    )
    send.add_argument(
        "--message-id",
        metavar="ID",
        help="your own id (up to 200 characters): the same id and request again is "
        "replayed, never sent twice (default: a new UUID)",
    )
    send.add_argument("--silent", action="store_true", help="without a notification sound")
    send.add_argument(
        "--plain", action="store_true", help="TEXT shown exactly as given, not read as HTML"
    )
    send.add_argument(
        "--template",
        metavar="NAME",
        help="render messages/NAME.html.j2 from the bridge's template dirs instead of TEXT",
    )
    send.add_argument(
        "--data",
        metavar="JSON",
        help="the template's variables: a JSON object, @FILE, or - for stdin",
    )
    status = commands.add_parser(
        "status",
        parents=[remote],
        help="what became of a message send sent (--wait: until it is final)",
        description="What became of a producer's message (GET /v1/messages/ID).",
        epilog=STATUS_EPILOG.format(exits=EXIT_TABLE),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("message_id", nargs="?", metavar="MESSAGE_ID", help="the id send printed")
    status.add_argument(
        "--wait",
        nargs="?",
        const=DEFAULT_WAIT_MARK,
        metavar="SECONDS",
        help="poll until the message is final (delivered, failed, ambiguous, suppressed), "
        "at most SECONDS (default 60)",
    )


def _deliveries_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    from bridge.delivery import DeliveryState

    deliveries = commands.add_parser(
        "deliveries",
        parents=[common],
        help="list deliveries, show one, resend an ambiguous or failed one",
        description="List deliveries, newest first: id, state, chat (and topic), source, "
        "attempts, last attempt, error. Read-only.",
        epilog=DELIVERIES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    deliveries.add_argument(
        "--state", choices=[s.value for s in DeliveryState], help="only deliveries in this state"
    )
    deliveries.add_argument("--chat", type=int, metavar="ID", help="only this chat")
    deliveries.add_argument(
        "--source", metavar="NAME", help="only from this source (alertmanager, grafana, ...)"
    )
    deliveries.add_argument(
        "--producer",
        metavar="NAME",
        help="only this producer's own messages (producers: in the config)",
    )
    deliveries.add_argument(
        "--since", metavar="AGE", help="only accepted within AGE: 30m, 2h, 1d, 1h30m"
    )
    deliveries.add_argument(
        "--limit", type=int, default=50, metavar="N", help="at most N rows (default 50)"
    )
    deliveries.add_argument("--json", action="store_true", help="JSON, for scripts")
    actions = deliveries.add_subparsers(dest="action", metavar="ACTION")
    # A leaf's own --config must not reset one given before the action: SUPPRESS.
    leaf = argparse.ArgumentParser(add_help=False)
    leaf.add_argument(
        "--config",
        "-c",
        type=Path,
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="the YAML config file (default: $ALERTBRIDGE_CONFIG)",
    )
    show = actions.add_parser(
        "show",
        parents=[leaf],
        help="everything about one delivery",
        description="Everything about one delivery: every field, its attempts, its "
        "group's thread in its chat, and its text as Telegram shows it.",
        epilog="example: alertbridge deliveries -c alertbridge.yml show 4711",
    )
    show.add_argument("id", type=int, metavar="ID")
    show.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON")
    resend = actions.add_parser(
        "resend",
        parents=[leaf],
        help="send ambiguous or failed deliveries again, after checking the chat",
        description="Send ambiguous or failed deliveries again: each becomes due at once "
        "and the running bridge sends it (a new attempt). The row records who asked and "
        "when; alertbridge_operator_resends_total counts it. Any other state is refused "
        "(exit 1). Check the chat first: an ambiguous message may already be there.",
        epilog="example: alertbridge deliveries -c alertbridge.yml resend 4711 4712 --by alice",
    )
    resend.add_argument("ids", type=int, nargs="+", metavar="ID")
    resend.add_argument(
        "--by", metavar="NAME", help="who asks, recorded on the row (default: the OS user)"
    )


async def _deliveries(config: Config, args: argparse.Namespace) -> int:
    import shutil

    from bridge import operator
    from bridge.delivery import DeliveryState
    from bridge.store.base import DeliveryQuery

    if args.producer is not None and args.source is not None:
        raise BridgeError(
            "--producer and --source: give one (a producer's source is producer:NAME)"
        )
    if args.action is None and args.limit < 1:
        raise BridgeError("--limit must be 1 or more")
    query = DeliveryQuery(
        state=None if args.state is None else DeliveryState(args.state),
        chat_id=args.chat,
        # A producer's messages are notifications of source producer:NAME.
        source=args.source if args.producer is None else f"producer:{args.producer}",
        since=None if args.since is None else operator.parse_since(args.since),
        limit=args.limit,
    )
    store = await operator.open_store(config, write=args.action == "resend")
    try:
        if args.action == "show":
            return await operator.show_command(store, args.id, json_out=args.json)
        if args.action == "resend":
            by = args.by or operator.operator_name()
            return await operator.resend_command(store, args.ids, by=by)
        # Sized to a terminal; whole lines into a pipe, where grep wants them.
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
        return await operator.list_command(store, query, json_out=args.json, width=width)
    finally:
        await store.close()


def _config_path(args: argparse.Namespace) -> Path:
    named = getattr(args, "config_file", None)
    if named is not None and args.config is not None and named.resolve() != args.config.resolve():
        raise BridgeError(f"two config files: {named} and --config {args.config}; give one of them")
    path = named or args.config or os.environ.get("ALERTBRIDGE_CONFIG")
    if not path:
        usage = {"check-config": "FILE", "render": "FILE PAYLOAD"}.get(args.command)
        how = f"name it (alertbridge {args.command} {usage}), " if usage else ""
        raise BridgeError(f"no config file: {how}pass --config FILE or set ALERTBRIDGE_CONFIG")
    return Path(path)


async def _migrate(config: Config) -> None:
    from bridge.service import open_store

    store = await open_store(config)
    try:
        applied = await store.migrate()
    finally:
        await store.close()
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))


def _check_config(config: Config, path: Path) -> None:
    from bridge.receiver import Rules
    from bridge.routing import describe

    rules = Rules.from_config(config)  # raises on a broken template, naming it and the line
    print(f"{path}: ok (templates: {', '.join(sorted(rules.templates.list_templates()))})")
    print(describe(rules.routes))
    summary = {
        "database_url": bool(config.database_url),
        "amqp_url": bool(config.amqp_url),
        "telegram.api_url": config.telegram.api_url,
        "listen": config.listen,
    }
    print(json.dumps(summary, indent=2))


def _render(config: Config, payload_path: Path, source: str, visible: bool) -> None:
    from functools import partial

    from bridge.receiver import Rules, route_and_render
    from bridge.sources import alertmanager, generic, grafana
    from bridge.telegram_text import TELEGRAM_LIMIT, utf16_len, visible_text

    try:
        body = sys.stdin.buffer.read() if str(payload_path) == "-" else payload_path.read_bytes()
    except OSError as exc:
        raise BridgeError(f"cannot read the payload {payload_path}: {exc.strerror}") from exc
    if source == "auto":
        try:
            version = json.loads(body).get("version")
        except (ValueError, AttributeError):
            version = None
        source = {"4": "alertmanager", "1": "grafana"}.get(str(version), "")
        if not source:
            raise BridgeError("cannot tell the payload's source from its version; pass --source")
    if source == "alertmanager":
        parse = alertmanager.parse
    elif source == "grafana":
        parse = grafana.parse
    elif source in config.sources:
        parse = partial(generic.parse, settings=config.sources[source], name=source)
    else:
        raise BridgeError(f"unknown source {source!r}: alertmanager, grafana or one in sources:")
    notification = parse(body)
    rules = Rules.from_config(config)
    deliveries = route_and_render(rules, notification)
    if not deliveries:
        print("no destination: the route tree sends this nowhere")
    for delivery in deliveries:
        shown = visible_text(delivery.text)
        where = f"chat {delivery.chat_id}"
        if delivery.thread_id is not None:
            where += f" topic {delivery.thread_id}"
        print(
            f"== {where} · template {delivery.template}"
            f"{' · silent' if delivery.silent else ''}"
            f" · {utf16_len(shown)}/{TELEGRAM_LIMIT} UTF-16 units visible"
        )
        print(shown if visible else delivery.text)
        print()


def _announce(address: str) -> None:
    """The one line on standard output, whatever the log level: where HTTP is
    served (with a listen port of 0, the port the system chose)."""
    print(f"listening on {address}", flush=True)


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop: its sockets and callbacks cost about half of asyncio's, and
    this process spends most of its time in them."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("send", "status"):
        from bridge import producer_cli

        return producer_cli.main(args, os.environ)
    if args.command == "demo":
        logs.configure("warning", "text")
        from bridge.demo import run_demo

        try:
            _run(
                run_demo(
                    port=args.port,
                    bridge_port=args.bridge_port,
                    exit_when_done=args.exit_when_done,
                )
            )
        except (BridgeError, OSError) as exc:
            print(f"alertbridge demo: {exc}", file=sys.stderr)
            return 2
        return 0
    logs.configure(args.log_level, args.log_format)
    try:
        args.config = _config_path(args)
        config = load_config(args.config)
        # Now that the secrets are known, no record may show them.
        logs.configure(args.log_level, args.log_format, logs.config_secrets(config))
        if args.command == "check-config":
            _check_config(config, args.config)
        elif args.command == "render":
            _render(config, args.payload, args.source, args.visible)
        elif args.command == "migrate":
            _run(_migrate(config))
        elif args.command == "deliveries":
            return asyncio.run(_deliveries(config, args))
        else:
            from bridge.service import run_until_signalled

            _run(
                run_until_signalled(
                    config,
                    receiver=args.command in ("serve", "receiver"),
                    worker=args.command in ("serve", "worker"),
                    config_path=args.config,
                    listening=_announce,
                )
            )
    except BridgeError as exc:
        print(f"alertbridge: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
