"""Unit fixtures: the real SQLite store in a temporary file, on a fake clock.

Nothing here connects to PostgreSQL or RabbitMQ."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.store.sqlite import SqliteStore
from tests.unit.fakes import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "alertbridge.db"


@pytest.fixture
async def store(db_path: Path, clock: FakeClock) -> AsyncIterator[SqliteStore]:
    s = await SqliteStore.open(db_path, clock=clock.time)
    await s.migrate()
    yield s
    await s.close()
