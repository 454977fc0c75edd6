"""The one YAML config file, read into the schema (``bridge/config.py``).

A typo or a wrong type stops the process (or is refused by a reload) with the
file, the line and the key path, instead of surfacing at 3 a.m. as an alert
that went nowhere. ``${VAR}`` and ``${VAR:-default}`` are expanded, ``*_file``
secrets read (relative to the file), and a few environment variables override
the essentials.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bridge.config import Config, dotted
from bridge.errors import ConfigError

# Environment overrides for the essentials, so a container can be configured
# without templating the file. Dotted path in the config -> variable name.
ENV_OVERRIDES: Mapping[str, str] = {
    "database_url": "ALERTBRIDGE_DATABASE_URL",
    "amqp_url": "ALERTBRIDGE_AMQP_URL",
    "sqlite_path": "ALERTBRIDGE_SQLITE_PATH",
    "telegram.token": "ALERTBRIDGE_TELEGRAM_TOKEN",
    "telegram.api_url": "ALERTBRIDGE_TELEGRAM_API_URL",
    "listen": "ALERTBRIDGE_LISTEN",
}


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, expand, override and validate; every problem becomes a ConfigError."""
    env = os.environ if environ is None else environ
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from exc
    return parse_config(text, source=str(path), environ=env, base_dir=path.parent)


def parse_config(
    text: str,
    *,
    source: str = "<config>",
    environ: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> Config:
    env = os.environ if environ is None else environ
    lines = _LineIndex()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if node is None:
        raise ConfigError(f"{source}: the config file is empty; see the README for a minimal one")
    data = lines.build(node, source=source, environ=env)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of settings")
    _read_secret_files(data, base_dir or Path.cwd(), source, lines)
    _apply_env_overrides(data, env)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, source, lines)) from exc


class _LineIndex:
    """Turns a composed YAML tree into plain data, remembering each key's line."""

    def __init__(self) -> None:
        self.line_of: dict[tuple[str | int, ...], int] = {}

    def build(
        self,
        node: yaml.Node,
        *,
        source: str,
        environ: Mapping[str, str],
        path: tuple[str | int, ...] = (),
    ) -> Any:
        self.line_of.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value)
                if key in out:
                    line = key_node.start_mark.line + 1
                    raise ConfigError(f"{source}:{line}: {dotted((*path, key))} is set twice")
                self.line_of[(*path, key)] = key_node.start_mark.line + 1
                out[key] = self.build(value_node, source=source, environ=environ, path=(*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [
                self.build(item, source=source, environ=environ, path=(*path, i))
                for i, item in enumerate(node.value)
            ]
        assert isinstance(node, yaml.ScalarNode)
        if node.tag == "tag:yaml.org,2002:str" and "${" in node.value:
            return _expand(node.value, environ, f"{source}:{node.start_mark.line + 1}")
        # Let YAML resolve ints, bools and nulls as it would have.
        return yaml.safe_load(yaml.serialize(node))

    def line(self, loc: tuple[str | int, ...]) -> int | None:
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.line_of:
                return self.line_of[loc[:end]]
        return None


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value: str, environ: Mapping[str, str], where: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(
            f"{where}: environment variable {name} is not set; "
            f"export it or write ${{{name}:-default}}"
        )

    return _ENV_REF.sub(replace, value)


_SECRET_KEYS = (
    "token",
    "bearer_token",
    "password",
    "database_url",
    "amqp_url",
    "callback_secret",
)


def _read_secret_files(data: Any, base_dir: Path, source: str, lines: _LineIndex) -> None:
    """``token_file: /run/secrets/x`` becomes ``token: <contents>``, wherever it appears."""

    def walk(node: Any, path: tuple[str | int, ...]) -> None:
        if isinstance(node, dict):
            for key in list(node):
                if key.endswith("_file") and key[: -len("_file")] in _SECRET_KEYS:
                    target = key[: -len("_file")]
                    where = f"{source}:{lines.line((*path, key))}"
                    if target in node:
                        raise ConfigError(f"{where}: set {target} or {key}, not both")
                    file_path = base_dir / str(node.pop(key))
                    try:
                        node[target] = file_path.read_text(encoding="utf-8").strip()
                    except OSError as exc:
                        raise ConfigError(
                            f"{where}: cannot read {key} {file_path} ({exc.strerror})"
                        ) from exc
                else:
                    walk(node[key], (*path, key))
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, (*path, i))

    walk(data, ())


def _apply_env_overrides(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    for setting, variable in ENV_OVERRIDES.items():
        value = environ.get(variable)
        if not value:
            continue
        *parents, leaf = setting.split(".")
        node = data
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[leaf] = value


def _explain(exc: ValidationError, source: str, lines: _LineIndex) -> str:
    problems = []
    for error in exc.errors():
        # Pydantic adds union-member and validator names to the location;
        # keep only the parts that are keys in the file.
        loc = tuple(
            "continue" if part == "continue_" else part
            for part in error["loc"]
            if isinstance(part, int) or not (str(part).startswith("function-") or "[" in str(part))
        )
        line = lines.line(loc)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown setting (a typo?); see the README for the settings there are"
        elif error["type"] == "missing":
            message = "required setting is missing"
        where = f"{source}:{line}" if line else source
        problems.append(f"{where}: {dotted(loc)}: {message}")
    return "invalid config:\n  " + "\n  ".join(problems)
