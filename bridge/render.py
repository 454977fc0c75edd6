"""Notifications to Telegram HTML, through operator-editable Jinja templates.

Pure: no network, no database. Templates are read from disk when the
environment loads them; everything else is computation on the models.

Three promises to the rest of the bridge:

* **Escaped.** Every template is autoescaped for Telegram's HTML parse mode,
  so a ``<`` or ``&`` in a label can never break the message.
* **Fits.** The text Telegram keeps is at most :data:`TELEGRAM_LIMIT` code
  points (as Telegram counts, :func:`telegram_length`), and the HTML at most
  :data:`TELEGRAM_SOURCE_LIMIT` bytes. Too many alerts? The message is
  rendered again with fewer of them and the template says how many were left
  out (``omitted``). Still too long? A minimal built-in message that always fits is sent.
  The HTML itself is never cut, so a tag or entity is never split.
* **Explained.** A template that fails to load or render raises
  :class:`~bridge.errors.TemplateError` naming the template, the line, and
  what to do about it.
"""

from __future__ import annotations

import importlib.resources
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from bridge.errors import ConfigError, TemplateError
from bridge.models import Alert, Destination, Notification, Status
from bridge.telegram_text import (
    ELLIPSIS,
    TELEGRAM_LIMIT,
    cut,
    fits,
    telegram_escape,
    visible_text,
)
from bridge.timefmt import as_datetime, duration, local_time, utc

__all__ = [
    "BUILTIN_TEMPLATES",
    "TEMPLATE_SUFFIX",
    "build_environment",
    "minimal_message",
    "render",
    "silence_url",
    "template_file",
]


#: The templates that ship with the bridge (``<repo>/templates``); the
#: operator's ``template_dirs`` are searched before it.
def _builtin_templates() -> Path:
    # A checkout (or an editable install) reads the repository's templates/;
    # an installed wheel carries the same files as the bridge.templates package.
    checkout = Path(__file__).resolve().parent.parent / "templates"
    if checkout.is_dir():
        return checkout
    return Path(str(importlib.resources.files("bridge"))) / "templates"


BUILTIN_TEMPLATES = _builtin_templates()

#: A route's ``template: foo`` is the file ``foo.html.j2``.
TEMPLATE_SUFFIX = ".html.j2"


# ------------------------------------------------------------------------ filters


@jinja2.pass_context
def _since_filter(
    context: jinja2.runtime.Context, value: datetime | str | None, now: datetime | None = None
) -> str:
    """How long ago ``value`` was, relative to the render's ``now``."""
    if value is None:
        return ""
    reference = now if now is not None else context.get("now")
    if not isinstance(reference, datetime):
        reference = datetime.now(UTC)
    return duration(utc(reference) - as_datetime(value))


def _duration_filter(value: timedelta | float | int | None) -> str:
    return "" if value is None else duration(value)


@jinja2.pass_environment
def _datetime_filter(
    env: jinja2.Environment,
    value: datetime | str | None,
    fmt: str = "%Y-%m-%d %H:%M:%S %Z",
    tz: str | None = None,
) -> str:
    """Format a datetime in ``tz`` (``"Europe/Berlin"``), by default the config's ``timezone``."""
    if value is None:
        return ""
    zone = tz if tz is not None else str(env.globals.get("timezone", "UTC"))
    return local_time(value, zone, fmt)


def _truncate_text(value: Any, length: int = 1000, end: str = ELLIPSIS) -> Any:
    """At most ``length`` characters, ``end`` marking a cut.

    Markup is cut on its visible text and escaped again, never mid-entity.
    """
    if value is None:
        return ""
    markup = isinstance(value, Markup)
    text = value.unescape() if markup else str(value)
    if len(text) > length:
        text = text[: max(length - len(end), 0)].rstrip() + end
    # S704: the text was just escaped for Telegram.
    return Markup(telegram_escape(text)) if markup else text  # noqa: S704


def _names(names: Iterable[Any]) -> list[str]:
    flat: list[str] = []
    for name in names:
        if isinstance(name, list | tuple | set | frozenset):
            flat.extend(str(n) for n in name)
        else:
            flat.append(str(name))
    return flat


def _exclude_labels(labels: Mapping[str, str] | None, *names: Any) -> dict[str, str]:
    """``labels`` without the given names (names or lists of names)."""
    dropped = set(_names(names))
    return {k: v for k, v in (labels or {}).items() if k not in dropped}


def _only_labels(labels: Mapping[str, str] | None, *names: Any) -> dict[str, str]:
    """Just the given names that ``labels`` has, in the order given."""
    source = labels or {}
    return {n: source[n] for n in _names(names) if n in source}


@jinja2.pass_eval_context
def _finalize(eval_ctx: jinja2.nodes.EvalContext, value: Any) -> Any:
    """With autoescape on, escape for Telegram (``&quot;``, ``'`` left alone).

    Jinja's own escaping (used by ``|e`` and Markup operations) also works:
    it writes ``&#34;`` and ``&#39;``, numeric entities Telegram accepts.
    """
    if eval_ctx.autoescape and not hasattr(value, "__html__"):
        return Markup(telegram_escape(str(value)))  # noqa: S704 - escaped right here
    return value


FILTERS: Mapping[str, Callable[..., Any]] = types.MappingProxyType(
    {
        "duration": _duration_filter,
        "since": _since_filter,
        "datetime": _datetime_filter,
        "truncate_text": _truncate_text,
        "exclude_labels": _exclude_labels,
        "only_labels": _only_labels,
    }
)


# --------------------------------------------------------------------- environment


def template_file(name: str) -> str:
    """The file a route's template name refers to: ``default`` -> ``default.html.j2``."""
    return name if name.endswith(".j2") else name + TEMPLATE_SUFFIX


def build_environment(
    template_dirs: Sequence[Path] = (),
    *,
    timezone: str = "UTC",
    builtin_dir: Path | None = BUILTIN_TEMPLATES,
) -> SandboxedEnvironment:
    """The sandboxed, autoescaping, strict environment every message is rendered in.

    ``template_dirs`` are searched first, in order, then ``builtin_dir`` (the
    bridge's own templates; ``None`` to leave them out). ``timezone`` is the
    zone the ``datetime`` filter shows times in unless a template names one.
    """
    search: list[Path] = []
    for directory in template_dirs:
        path = Path(directory)
        if not path.is_dir():
            raise ConfigError(
                f"template_dirs: {str(path)!r} is not a directory. "
                "Create it or remove it from template_dirs."
            )
        search.append(path)
    if builtin_dir is not None:
        search.append(Path(builtin_dir))
    env = SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(search),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        finalize=_finalize,
    )
    env.filters.update(FILTERS)
    env.globals["timezone"] = timezone
    return env


# -------------------------------------------------------------------------- errors


def _error_line(exc: BaseException) -> tuple[int | None, str | None]:
    """Line (and file) of the innermost template frame in a render traceback."""
    lineno: int | None = None
    filename: str | None = None
    tb = exc.__traceback__
    while tb is not None:
        # Jinja rewrites tracebacks so template frames point at the template
        # source; it marks them with ``__jinja_exception__`` in their globals.
        if "__jinja_exception__" in tb.tb_frame.f_globals:
            lineno, filename = tb.tb_lineno, tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return lineno, filename


def _error(name: str, lineno: int | None, message: str, file: str | None = None) -> TemplateError:
    """The error for template ``name``; ``file`` when the fault is in another file it uses."""
    where = f"template {name!r}"
    own = template_file(name)
    if file and Path(file).name != own and file != "<template>":
        where += f" (in {Path(file).name!r})"
    where += f" line {lineno if lineno is not None else '?'}"
    message = message.strip().rstrip(".")
    return TemplateError(f"{where}: {message}. Fix the template or point the route at another one.")


def _load(env: jinja2.Environment, name: str) -> jinja2.Template:
    try:
        return env.get_template(template_file(name))
    except jinja2.TemplateSyntaxError as exc:
        message = exc.message or "syntax error"
        raise _error(name, exc.lineno, message, exc.filename or exc.name) from exc
    except jinja2.TemplateNotFound as exc:
        searched = getattr(env.loader, "searchpath", None)
        where = f" in {', '.join(searched)}" if searched else ""
        raise TemplateError(
            f"template {name!r}: {exc.name} not found{where}. "
            "Create it or point the route at another template."
        ) from exc
    except Exception as exc:  # an unreadable file, a broken loader
        raise _error(name, None, f"cannot be loaded: {exc}") from exc


# -------------------------------------------------------------------------- render


def _context(
    notification: Notification,
    destination: Destination,
    shown: int,
    now: datetime,
) -> dict[str, Any]:
    """What a template sees, with the first ``shown`` alerts in ``alerts``.

    ``firing``/``resolved`` split the alerts shown; ``omitted`` counts the
    alerts left out (here, and by Alertmanager's ``truncatedAlerts``);
    ``total``, ``firing_count`` and ``resolved_count`` describe the whole
    notification; ``silence_url`` opens the sender's silence form (Alertmanager
    or Grafana) for the group's common labels.
    """
    alerts = list(notification.alerts[:shown])
    return {
        "notification": notification,
        "status": notification.status,
        "alerts": alerts,
        "firing": [a for a in alerts if a.status == Status.FIRING],
        "resolved": [a for a in alerts if a.status == Status.RESOLVED],
        "common_labels": notification.common_labels,
        "common_annotations": notification.common_annotations,
        "group_labels": notification.group_labels,
        "external_url": notification.external_url,
        "silence_url": silence_url(
            notification.source, notification.external_url, notification.common_labels
        ),
        "omitted": len(notification.alerts) - len(alerts) + notification.truncated_alerts,
        "total": len(notification.alerts) + notification.truncated_alerts,
        "firing_count": sum(a.status == Status.FIRING for a in notification.alerts),
        "resolved_count": sum(a.status == Status.RESOLVED for a in notification.alerts),
        "now": now,
        "destination": destination,
    }


def silence_url(source: str, external_url: str, labels: Mapping[str, str]) -> str:
    """The "new silence" form of the tool that sent the alert, prefilled with ``labels``.

    Alertmanager's UI takes one ``filter`` of matchers, Grafana's takes one
    ``matcher`` parameter per label. Empty for other sources, and unless
    ``external_url`` is an http(s) URL: the link must never point anywhere a
    label could choose.
    """
    if not external_url.startswith(("https://", "http://")) or not labels:
        return ""
    base = external_url.rstrip("/")
    pairs = sorted(labels.items())
    if source == "grafana":
        query = "&".join(f"matcher={quote(f'{name}={value}')}" for name, value in pairs)
        return f"{base}/alerting/silence/new?alertmanager=grafana&{query}"
    if source != "alertmanager":
        return ""

    def quoted(value: str) -> str:  # Alertmanager's matcher string escaping
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    matchers = ",".join(f"{name}={quoted(value)}" for name, value in pairs)
    return f"{base}/#/silences/new?filter={quote('{' + matchers + '}')}"


def _render_once(template: jinja2.Template, name: str, context: dict[str, Any]) -> str:
    try:
        html = template.render(context)
    except jinja2.TemplateSyntaxError as exc:  # an included template that does not parse
        message = exc.message or "syntax error"
        raise _error(name, exc.lineno, message, exc.filename or exc.name) from exc
    except jinja2.TemplateNotFound as exc:
        lineno, file = _error_line(exc)
        message = f"includes {exc.name!r}, which does not exist"
        raise _error(name, lineno, message, file) from exc
    except Exception as exc:  # whatever the template did: undefined, sandbox, type errors
        lineno, file = _error_line(exc)
        # Jinja's own errors (undefined, sandbox) say enough; name anything else.
        message = (
            str(exc) if isinstance(exc, jinja2.TemplateError) else f"{type(exc).__name__}: {exc}"
        )
        raise _error(name, lineno, message, file) from exc
    return html.strip()


#: Producers' templates: ``messages/NAME.html.j2`` in the template dirs. Apart from
#: the alerts' because their variables are the producer's data, not a notification.
MESSAGE_TEMPLATES = "messages/"


def render_data(env: jinja2.Environment, name: str, data: Mapping[str, Any]) -> str:
    """A producer's template ``name`` (``messages/NAME.html.j2`` in the same template
    dirs, the same sandbox and escaping as the alerts') with the producer's ``data``
    as its variables; TemplateError when it is missing or fails."""
    return _render_once(_load(env, MESSAGE_TEMPLATES + name), name, dict(data))


def minimal_message(notification: Notification, limit: int = TELEGRAM_LIMIT) -> str:
    """The last resort: status, alert name and count. Always within ``limit``."""
    firing = notification.status == Status.FIRING
    name = notification.common_labels.get("alertname") or "Alerts"
    total = len(notification.alerts) + notification.truncated_alerts
    counted = f"{total} alert" + ("" if total == 1 else "s")
    text = (
        f"{'🔥' if firing else '✅'} <b>{telegram_escape(cut(name, 200))}</b> "
        f"{notification.status.value}: {counted}\n"
        "The full message is too long for Telegram; see Alertmanager for details."
    )
    if not fits(text, limit):  # only for absurdly small limits
        text = telegram_escape(cut(visible_text(text), limit))
    return text


def render(
    env: jinja2.Environment,
    template_name: str,
    notification: Notification,
    destination: Destination,
    *,
    now: datetime | None = None,
    limit: int = TELEGRAM_LIMIT,
) -> str:
    """Render ``notification`` for ``destination`` with template ``template_name``.

    Returns Telegram HTML whose visible text has a :func:`telegram_length` of at
    most ``limit`` (and which is within :data:`TELEGRAM_SOURCE_LIMIT`). If all
    the alerts do not fit, the largest leading run of them that does is shown
    and the template's ``omitted`` counts the rest; if not even that fits,
    :func:`minimal_message`.

    Raises :class:`TemplateError` if the template cannot be loaded or rendered,
    or renders nothing visible.
    """
    moment = utc(now) if now is not None else datetime.now(UTC)
    limit = min(limit, TELEGRAM_LIMIT)
    template = _load(env, template_name)

    def attempt(shown: int) -> str:
        return _render_once(
            template, template_name, _context(notification, destination, shown, moment)
        )

    # Show the most leading alerts that fit. Gallop up from one alert (1, 2,
    # 4, ... all), so a notification with thousands of alerts is never
    # rendered whole only to be thrown away, then binary search between the
    # last fit and the first miss. ``best`` is always a render checked to fit.
    count = len(notification.alerts)
    best: str | None = None
    fit, miss = -1, count + 1  # attempt(fit) fits (or fit == -1); attempt(miss) does not
    probe = min(1, count)
    while True:
        candidate = attempt(probe)
        if fit == -1 and not visible_text(candidate).strip():
            raise _error(template_name, None, "rendered an empty message, which Telegram refuses")
        if not fits(candidate, limit):
            miss = probe
            break
        best, fit = candidate, probe
        if probe == count:
            return candidate
        probe = min(probe * 2, count)
    if fit == -1 and miss > 0:  # not even one alert: try the header and the count alone
        candidate = attempt(0)
        if fits(candidate, limit):
            best, fit = candidate, 0
    while fit >= 0 and miss - fit > 1:
        middle = (fit + miss) // 2
        candidate = attempt(middle)
        if fits(candidate, limit):
            best, fit = candidate, middle
        else:
            miss = middle
    if best is not None and visible_text(best).strip():
        return best
    return minimal_message(notification, limit)


# ------------------------------------------------------------------------- checks


def _sample_notifications() -> list[Notification]:
    """A firing single alert, a firing group and a resolved group: what every template meets."""
    started = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)

    def alert(name: str, status: Status, instance: str) -> Alert:
        return Alert(
            fingerprint=f"{name}-{instance}",
            status=status,
            labels={"alertname": name, "severity": "critical", "instance": instance},
            annotations={"summary": f"{name} on {instance}", "description": "<&> check"},
            starts_at=started,
            ends_at=None if status is Status.FIRING else started + timedelta(minutes=5),
            generator_url="http://prometheus.example/graph",
        )

    def notification(status: Status, *instances: str) -> Notification:
        alerts = tuple(alert("SampleAlert", status, i) for i in instances)
        return Notification(
            source="alertmanager",
            receiver="check",
            group_key='{}:{alertname="SampleAlert"}',
            status=status,
            alerts=alerts,
            group_labels={"alertname": "SampleAlert"},
            common_labels={"alertname": "SampleAlert", "severity": "critical"},
            external_url="http://alertmanager.example:9093",
        )

    return [
        notification(Status.FIRING, "a"),
        notification(Status.FIRING, "a", "b", "c"),
        notification(Status.RESOLVED, "a", "b"),
    ]


def check_templates(env: jinja2.Environment) -> list[str]:
    """Render every template the environment can find against sample notifications.

    Returns the problems (template name, line, what is wrong): a broken
    template fails `check-config` and start-up, not a 3 a.m. alert.
    """
    problems: list[str] = []
    names = sorted(
        {n.removesuffix(TEMPLATE_SUFFIX) for n in env.list_templates() if n.endswith(".j2")}
    )
    # A producer's template has no sample data to render with: it must parse.
    for name in [n for n in names if n.startswith(MESSAGE_TEMPLATES)]:
        try:
            _load(env, name)
        except TemplateError as exc:
            problems.append(str(exc))
    for name in [n for n in names if not n.startswith(MESSAGE_TEMPLATES)]:
        for sample in _sample_notifications():
            try:
                render(env, name, sample, Destination(chat_id=0, template=name))
            except TemplateError as exc:
                problems.append(str(exc))
                break
    return problems
