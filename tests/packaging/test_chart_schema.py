"""The chart's values schema knows every setting the bridge has.

`config:` in the chart's values becomes the bridge's config.yml, and
values.schema.json refuses unknown keys at every level (`helm install` stops on
a typo). So a setting the bridge has but the schema lacks cannot be set from
the chart at all. This walks bridge/config.py's `Config`, nested models, lists
and mappings included, and finds each setting's counterpart in the schema with
the same type, enum and bounds; and the other way round, every schema property
is a setting the bridge knows. Pure Python: no helm needed. The schema also
refuses, as the bridge does, a few wrong values of the new sections, and
takes the chart README's example.

That the rendered config.yml is one the bridge accepts, with these settings
set, is `.ci/lint`'s part (ci/serve-values.yaml sets them; test_packaging.py
runs it).
"""

from __future__ import annotations

import copy
import json
import types
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import jsonschema
import pytest
import yaml
from pydantic import BaseModel

from bridge.config import Config
from bridge.config_file import _SECRET_KEYS
from tests.conftest import REPO

SCHEMA_PATH = REPO / "helm/alertbridge/values.schema.json"
DURATION_REF = "#/definitions/duration"

# Settings the chart sets itself; the schema must refuse them under `config:`.
CHART_MANAGED = {
    "database_url": "from secrets.databaseUrl (or existingSecret) as ALERTBRIDGE_DATABASE_URL",
    "amqp_url": "from secrets.amqpUrl (or existingSecret) as ALERTBRIDGE_AMQP_URL",
    "listen": "from containerPort as ALERTBRIDGE_LISTEN, which the probes and Service use",
    "sqlite_path": (
        "the chart always runs on PostgreSQL and RabbitMQ (both URLs are required); "
        "the SQLite file is only read standalone"
    ),
    "telegram.token": (
        "from secrets.telegramToken (or existingSecret) as ALERTBRIDGE_TELEGRAM_TOKEN"
    ),
    "receiver.auth": (
        "from secrets.webhookBearerToken: the chart writes receiver.auth itself, "
        "replacing whatever config.receiver.auth would say"
    ),
}

_JSON_TYPES: dict[type, str] = {bool: "boolean", int: "integer", float: "number", str: "string"}


def load_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return schema


def _resolve(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node and node["$ref"] != DURATION_REF:
        *_, name = node["$ref"].split("/")
        node = root["definitions"][name]
    return node


def _types_of(node: dict[str, Any]) -> set[str]:
    declared = node.get("type", [])
    return {declared} if isinstance(declared, str) else set(declared)


def _without_none(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def _bounds(annotation: Any, metadata: list[Any]) -> dict[str, Any]:
    """The JSON Schema keywords pydantic's constraints on a field amount to."""
    wanted: dict[str, Any] = {}
    for mark in metadata:
        if isinstance(mark, annotated_types.Ge):
            wanted["minimum"] = mark.ge
        elif isinstance(mark, annotated_types.Le):
            wanted["maximum"] = mark.le
        elif isinstance(mark, annotated_types.Gt):
            # An integer above n is at least n + 1; a number above n is exclusive.
            if annotation is int:
                wanted["minimum"] = mark.gt + 1
            else:
                wanted["exclusiveMinimum"] = mark.gt
        elif isinstance(mark, annotated_types.MinLen):
            key = "minItems" if get_origin(annotation) is list else "minLength"
            wanted[key] = mark.min_length
        elif getattr(mark, "pattern", None) is not None:
            wanted["pattern"] = mark.pattern
    return wanted


def _setting_gaps(
    root: dict[str, Any],
    annotation: Any,
    metadata: list[Any],
    node: dict[str, Any],
    path: str,
    seen: set[tuple[type, int]],
) -> Iterator[str]:
    annotation = _without_none(annotation)
    if get_origin(annotation) is Annotated:  # Annotated[T, ...] | None keeps its marks inside
        metadata = [*metadata, *annotation.__metadata__]
        annotation = get_args(annotation)[0]
    node = _resolve(root, node)
    if annotation is timedelta:
        if node.get("$ref") != DURATION_REF:
            yield f"{path}: a duration, expected {{'$ref': '{DURATION_REF}'}}, got {node}"
        return
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield from _model_gaps(root, annotation, node, path, seen)
        return
    if get_origin(annotation) is Literal:
        if set(node.get("enum", [])) != set(get_args(annotation)):
            yield f"{path}: enum {node.get('enum')}, the bridge takes {list(get_args(annotation))}"
        return
    origin = get_origin(annotation)
    if origin is list:
        expected = "array"
    elif origin is dict:
        expected = "object"
    elif annotation is Path:
        expected = "string"
    else:
        expected = _JSON_TYPES.get(annotation, "")
    # JSON Schema's integers are numbers too: a float setting takes either.
    if not expected or expected not in _types_of(node):
        yield f"{path}: type {node.get('type')}, the bridge takes {annotation}"
        return
    for keyword, value in _bounds(annotation, metadata).items():
        if node.get(keyword) != value:
            yield f"{path}: {keyword} {node.get(keyword)}, the bridge checks {value}"
    if origin is list:
        (item,) = get_args(annotation)
        yield from _setting_gaps(root, item, [], node.get("items", {}), f"{path}[]", seen)
    elif origin is dict:
        _, value_type = get_args(annotation)
        values = node.get("additionalProperties")
        if not isinstance(values, dict):
            yield f"{path}: a mapping, expected additionalProperties to describe its values"
        else:
            yield from _setting_gaps(root, value_type, [], values, f"{path}.*", seen)


def _model_gaps(
    root: dict[str, Any],
    model: type[BaseModel],
    node: dict[str, Any],
    path: str,
    seen: set[tuple[type, int]],
) -> Iterator[str]:
    if (model, id(node)) in seen:  # a recursive model (routes in routes), checked once
        return
    seen.add((model, id(node)))
    where = path or "config"
    if node.get("additionalProperties") is not False:
        yield f"{where}: additionalProperties must be false, as the bridge refuses unknown keys"
    properties: dict[str, Any] = node.get("properties", {})
    names = set()
    for name, info in model.model_fields.items():
        key = info.alias or name
        names.add(key)
        dotted = f"{path}.{key}" if path else key
        if dotted in CHART_MANAGED:
            if key in properties:
                why = CHART_MANAGED[dotted]
                yield f"{dotted}: set by the chart ({why}), the schema must refuse it"
            continue
        if key not in properties:
            yield f"{dotted}: a setting of the bridge that values.schema.json does not have"
            continue
        yield from _setting_gaps(
            root, info.annotation, list(info.metadata), properties[key], dotted, seen
        )
    for key in properties:
        secret_file = key.endswith("_file") and key.removesuffix("_file") in _SECRET_KEYS
        if key not in names and not (secret_file and key.removesuffix("_file") in names):
            yield f"{where}.{key}: in values.schema.json, but the bridge has no such setting"


def schema_gaps(schema: dict[str, Any]) -> list[str]:
    config = schema["properties"]["config"]
    return list(_model_gaps(schema, Config, config, "", set()))


def test_the_chart_schema_has_every_setting_of_the_bridge() -> None:
    assert schema_gaps(load_schema()) == []


def _schema_node(schema: dict[str, Any], dotted: str) -> tuple[dict[str, Any], str]:
    """The properties mapping holding ``dotted``'s last part, through $refs and ``*``."""
    node = schema["properties"]["config"]
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = _resolve(schema, node)
        node = node["additionalProperties"] if part == "*" else node["properties"][part]
    return _resolve(schema, node)["properties"], leaf


# One of each kind: top level, nested, in a mapping's values, in a shared definition.
@pytest.mark.parametrize(
    "setting",
    [
        "retention",
        "rate_limits.digest_after",
        "bot.allow.silence",
        "bot.link_expiry",
        "alertmanager.basic.password",
        "amqp.shards",
        "amqp.ingress_batch_wait",
        "producers.*.callback_secret",
        "receipts.concurrency",
        "sources.*.group_by",
        "route.routes",
    ],
)
def test_a_setting_missing_from_the_schema_is_found(setting: str) -> None:
    schema = copy.deepcopy(load_schema())
    properties, leaf = _schema_node(schema, setting)
    del properties[leaf]
    gaps = schema_gaps(schema)
    assert any(gap.startswith(f"{setting}: ") for gap in gaps), gaps


def test_a_wrong_bound_or_enum_or_type_is_found() -> None:
    schema = copy.deepcopy(load_schema())
    rate_limits, _ = _schema_node(schema, "rate_limits.enabled")
    rate_limits["per_group_per_minute"]["minimum"] = 0
    bot, _ = _schema_node(schema, "bot.updates")
    bot["updates"]["enum"] = ["webhook"]
    bot["link_expiry"] = {"type": "string"}
    assert sorted(schema_gaps(schema)) == [
        "bot.link_expiry: a duration, expected {'$ref': '#/definitions/duration'}, "
        "got {'type': 'string'}",
        "bot.updates: enum ['webhook'], the bridge takes ['webhook', 'polling']",
        "rate_limits.per_group_per_minute: minimum 0, the bridge checks 1",
    ]


def test_chart_managed_settings_stay_refused() -> None:
    schema = copy.deepcopy(load_schema())
    schema["properties"]["config"]["properties"]["listen"] = {"type": "string"}
    telegram, _ = _schema_node(schema, "telegram.token")
    telegram["token"] = {"type": "string"}
    assert sorted(schema_gaps(schema)) == [
        f"listen: set by the chart ({CHART_MANAGED['listen']}), the schema must refuse it",
        f"telegram.token: set by the chart ({CHART_MANAGED['telegram.token']}), "
        "the schema must refuse it",
    ]


def test_a_schema_property_the_bridge_does_not_know_is_found() -> None:
    schema = copy.deepcopy(load_schema())
    amqp, _ = _schema_node(schema, "amqp.shards")
    amqp["shard"] = {"type": "integer"}
    assert schema_gaps(schema) == [
        "amqp.shard: in values.schema.json, but the bridge has no such setting"
    ]


def _values_with(config: dict[str, Any]) -> dict[str, Any]:
    """values.yaml with ``config`` merged over its config, as helm merges -f files."""
    values: dict[str, Any] = yaml.safe_load((REPO / "helm/alertbridge/values.yaml").read_text())
    values["config"] = {**values["config"], **config}
    values["secrets"] = {
        "telegramToken": "123456:test-token",
        "databaseUrl": "postgresql://alertbridge@postgresql/alertbridge",
        "amqpUrl": "amqp://alertbridge@rabbitmq/",
    }
    return values


def _readme_example() -> dict[str, Any]:
    readme = (REPO / "helm/alertbridge/README.md").read_text()
    block = readme.split("with `extraEnv`. For example, the bot and Alertmanager's API:\n")[1]
    text = block.split("```yaml\n", 1)[1].split("```", 1)[0]
    example: dict[str, Any] = yaml.safe_load(text)["config"]
    return example


def test_the_chart_readme_example_passes_the_schema() -> None:
    example = _readme_example()
    assert {"bot", "alertmanager", "rate_limits", "retention"} <= example.keys()
    jsonschema.Draft7Validator(load_schema()).validate(_values_with(example))


@pytest.mark.parametrize(
    ("config", "refused"),
    [
        ({"bot": {"updates": "webhook"}}, "'webhook_secret' is a required property"),
        ({"bot": {"updates": "poll"}}, "'poll' is not one of ['webhook', 'polling']"),
        ({"rate_limits": {"per_chat_per_second": 0}}, "less than or equal to the minimum of 0"),
        ({"retention": "30 days"}, "is not valid under any of the given schemas"),
        ({"alertmanager": {"urls": []}}, "should be non-empty"),
        ({"alertmanager": {"urls": ["alertmanager:9093"]}}, "does not match '^https?://'"),
        ({"listen": "0.0.0.0:9090"}, "('listen' was unexpected)"),
        ({"bot": {"allow": {"ack": {"user": [1]}}}}, "('user' was unexpected)"),
    ],
)
def test_the_schema_refuses_what_the_bridge_refuses(config: dict[str, Any], refused: str) -> None:
    errors = list(jsonschema.Draft7Validator(load_schema()).iter_errors(_values_with(config)))
    assert any(refused in error.message for error in errors), [e.message for e in errors]
