"""The producer API fuzzed from its own /openapi.json: no input gets a 5xx.

The receiver runs as it does in standalone mode (a SQLite file, the local
queue); schemathesis generates valid and invalid requests for every operation,
authorized as a producer that may send to a few chats and by labels.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from starlette.testclient import TestClient

from bridge.metrics import Metrics
from bridge.producer_openapi import openapi
from bridge.queue.local import LocalQueue
from bridge.receiver import ReceiverDeps, Rules, create_app
from bridge.store.sqlite import SqliteStore
from tests.conftest import build_config

TOKEN = "fuzz-token"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    folder: Path = tmp_path_factory.mktemp("fuzz")
    (folder / "messages").mkdir()
    (folder / "messages" / "note.html.j2").write_text("Note: {{ text }} {{ n | default(0) }}")
    config = build_config(
        {
            "telegram": {"token": "123:ABC"},
            "sqlite_path": str(folder / "alertbridge.db"),
            "route": {"chats": [-1001]},
            "template_dirs": [str(folder)],
            "receiver": {"max_body_bytes": 256 * 1024},
            "producers": {"fuzz": {"token": TOKEN, "chats": [-1001, 0, 1, 42], "routes": True}},
        }
    )
    store = asyncio.run(_open(folder / "alertbridge.db"))
    deps = ReceiverDeps(
        rules=Rules.from_config(config), store=store, publisher=LocalQueue(), metrics=Metrics()
    )
    with TestClient(create_app(deps), raise_server_exceptions=False) as served:
        yield served
    asyncio.run(store.close())


async def _open(path: Path) -> SqliteStore:
    store = await SqliteStore.open(path)
    await store.migrate()
    return store


#: The document the API serves, read as it is served (a test below checks that).
schema = schemathesis.openapi.from_dict(openapi())


def test_the_api_serves_the_document_fuzzed_here(client: TestClient) -> None:
    assert client.get("/openapi.json").json() == openapi()


@schema.parametrize()
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
def test_no_request_gets_a_server_error(case: Any, client: TestClient) -> None:
    request = case.as_transport_kwargs(headers={"Authorization": f"Bearer {TOKEN}"})
    response = client.request(**request)
    case.validate_response(response, checks=[not_a_server_error])
