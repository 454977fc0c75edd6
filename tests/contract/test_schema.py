"""One schema: PostgreSQL's migrations and the standalone SQLite file's end in the
same tables, columns and indexes (only the column types are each one's own)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from bridge.store import PostgresStore
from bridge.store.sqlite import SqliteStore
from tests.contract.test_store import open_store

Schema = dict[str, set[str]]  # table or "index:<table>" → its columns or index names


async def postgres_schema(store: PostgresStore) -> Schema:
    schema: Schema = {}
    async with store.connection() as conn:
        columns = await conn.fetch(
            """SELECT table_name, column_name FROM information_schema.columns
               WHERE table_schema = 'public' AND table_name <> 'schema_migrations'"""
        )
        indexes = await conn.fetch(
            """SELECT tablename, indexname FROM pg_indexes
               WHERE schemaname = 'public' AND indexname NOT LIKE '%\\_pkey'"""
        )
    _fill(schema, [(r[0], r[1]) for r in columns], [(r[0], r[1]) for r in indexes])
    return schema


async def sqlite_schema(store: SqliteStore) -> Schema:
    def read(db: sqlite3.Connection, now: float) -> Schema:
        tables = [
            r[0]
            for r in db.execute(
                """SELECT name FROM sqlite_master WHERE type = 'table'
                   AND name NOT IN ('schema_migrations', 'sqlite_sequence')"""
            )
        ]
        columns = [(t, r[1]) for t in tables for r in db.execute(f"PRAGMA table_info({t})")]
        indexes = db.execute(
            """SELECT tbl_name, name FROM sqlite_master
               WHERE type = 'index' AND name NOT LIKE 'sqlite_autoindex_%'"""
        ).fetchall()
        schema: Schema = {}
        _fill(schema, columns, [(r[0], r[1]) for r in indexes])
        return schema

    return await store._run(read)


def _fill(
    schema: Schema, columns: Iterable[tuple[str, str]], indexes: Iterable[tuple[str, str]]
) -> None:
    for table, column in columns:
        schema.setdefault(table, set()).add(column)
    for table, index in indexes:
        schema.setdefault(f"index:{table}", set()).add(index)


async def test_both_stores_migrate_to_the_same_tables_columns_and_indexes(
    tmp_path: Path,
) -> None:
    async with open_store("postgres", tmp_path) as pg, open_store("sqlite", tmp_path) as lite:
        assert isinstance(pg, PostgresStore) and isinstance(lite, SqliteStore)
        postgres, sqlite = await postgres_schema(pg), await sqlite_schema(lite)
    assert postgres == sqlite
    assert "deliveries_by_chat" in postgres["index:deliveries"]  # the drift this test found


async def test_the_comparison_sees_a_missing_index(tmp_path: Path) -> None:
    async with open_store("postgres", tmp_path) as pg, open_store("sqlite", tmp_path) as lite:
        assert isinstance(pg, PostgresStore) and isinstance(lite, SqliteStore)
        async with pg.connection() as conn:
            await conn.execute("DROP INDEX deliveries_by_chat")
        assert await postgres_schema(pg) != await sqlite_schema(lite)
