"""Lists sent to PostgreSQL as binary arrays, for fixed-text `unnest` inserts.

An `INSERT ... SELECT FROM unnest(CAST(:column AS type[]), ...)` keeps one statement text
whatever the number of rows (psycopg parses it once, PostgreSQL plans it once), where a VALUES
list is a new statement per row count. psycopg dumps a plain list as a text array literal,
quoting and escaping every element in Python (about 15 us per reading of a batch); a
`BinaryArray` is packed by psycopg's C dumpers. Only this type is registered, so nobody else's
lists change form.
"""

from __future__ import annotations

from typing import Any

from psycopg.adapt import PyFormat
from psycopg.types.array import ListBinaryDumper
from sqlalchemy.orm import Session


class BinaryArray(list[Any]):
    """A list psycopg sends as a binary array (once `send_binary_arrays` ran on the
    connection)."""

    __slots__ = ()


def send_binary_arrays(db: Session) -> None:
    """Teach the session's (PostgreSQL) connection to send `BinaryArray` in binary.

    On the connection itself: SQLAlchemy's dialect copies psycopg's adapters when the engine
    is built, so a registration on `psycopg.adapters` made later reaches no connection.
    """
    adapters = db.connection().connection.driver_connection.adapters  # type: ignore[union-attr]
    if adapters.get_dumper(BinaryArray, PyFormat.AUTO) is not ListBinaryDumper:
        adapters.register_dumper(BinaryArray, ListBinaryDumper)


__all__ = ["BinaryArray", "send_binary_arrays"]
