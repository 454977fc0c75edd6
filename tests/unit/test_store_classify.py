"""Which store errors a retry can cure: decided by class and SQLSTATE (PostgreSQL)
or result code (SQLite), never by the message's words."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg
import pytest
from asyncpg.exceptions import _base as asyncpg_base

from bridge.store import postgres, sqlite


@pytest.mark.parametrize(
    "error",
    [
        # What a PostgreSQL restart looks like from a pooled connection.
        asyncpg.InternalClientError(
            "cannot switch to state 12; another operation (2) is in progress"
        ),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.CrashShutdownError("terminating connection because of crash of another process"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.ConnectionFailureError("x"),
        asyncpg.InterfaceError("connection is closed"),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.SerializationError("could not serialize access"),
        asyncpg.DeadlockDetectedError("deadlock detected"),
        asyncpg.ReadOnlySQLTransactionError("cannot execute UPDATE in a read-only transaction"),
        asyncpg.QueryCanceledError("canceling statement due to statement timeout"),
        ConnectionRefusedError(111, "Connection refused"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError(),
        OSError(113, "No route to host"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_postgres_errors_a_retry_cures(error: BaseException) -> None:
    assert postgres.unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.UniqueViolationError("duplicate key"),
        asyncpg.UndefinedTableError("relation does not exist"),
        asyncpg.PostgresSyntaxError("syntax error"),
        asyncpg.InvalidPasswordError("password authentication failed"),
        asyncpg.InvalidCatalogNameError('database "x" does not exist'),
        asyncpg.DataError("invalid input"),  # a value PostgreSQL refused (class 22)
        asyncpg_base.DataError("invalid input for query argument $1"),  # refused by asyncpg
        asyncpg.ClientConfigurationError("bad option"),
        # The words of an unavailable error in a bug's clothes: the class decides.
        asyncpg.UndefinedColumnError("column connection_closed does not exist"),
        ValueError("connection is closed"),
        RuntimeError("boom"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_postgres_errors_that_are_bugs_stay_bugs(error: BaseException) -> None:
    assert not postgres.unavailable(error)


def sqlite_error(database: str | Path, *statements: str) -> sqlite3.Error:
    """The error a real SQLite gives for ``statements`` (``database`` may be a file: URI)."""
    connection = sqlite3.connect(database, timeout=0, isolation_level=None, uri=True)
    try:
        for statement in statements:
            connection.execute(statement)
    except sqlite3.Error as exc:
        return exc
    finally:
        connection.close()
    raise AssertionError("no error")


def test_sqlite_a_file_locked_by_another_writer_is_unavailable(tmp_path: Path) -> None:
    database = tmp_path / "a.db"
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        error = sqlite_error(database, "INSERT INTO t VALUES (1)")
    finally:
        holder.close()
    assert error.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
    assert sqlite.unavailable(error)


def test_sqlite_a_file_it_may_not_write_is_unavailable(tmp_path: Path) -> None:
    database = tmp_path / "a.db"
    sqlite_error(database, "CREATE TABLE t (x)", "SELEC")
    error = sqlite_error(f"file:{database}?mode=ro", "INSERT INTO t VALUES (1)")
    assert error.sqlite_errorcode & 0xFF == sqlite3.SQLITE_READONLY
    assert sqlite.unavailable(error)


@pytest.mark.parametrize(
    "statements",
    [
        # "disk" and "locked" in a bug's message must not make it a 503.
        ("SELECT * FROM disk_usage",),
        ("CREATE TABLE locked (x UNIQUE)", "INSERT INTO locked VALUES (1)",
         "INSERT INTO locked VALUES (1)"),
        ("SELEC 1",),
    ],
    ids=["no-such-table", "constraint", "syntax"],
)  # fmt: skip
def test_sqlite_query_bugs_are_not_unavailable(tmp_path: Path, statements: tuple[str, ...]) -> None:
    assert not sqlite.unavailable(sqlite_error(tmp_path / "a.db", *statements))


def test_sqlite_errors_without_a_result_code_are_not_unavailable() -> None:
    assert not sqlite.unavailable(sqlite3.OperationalError("database is locked"))
