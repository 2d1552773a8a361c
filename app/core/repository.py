"""SQL shapes more than one repository uses.

`claim_statement`: how a worker takes leased work from a queue table. Tasks (the poll
loop) and deliveries (the delivery loop) are both claimed this way: the oldest due rows,
SKIP LOCKED so replicas claim side by side without waiting on each other, the due column
moved to the lease's end (a replica that dies mid-work needs no reaper: its rows simply
fall due again), and a new fencing token that voids any older holder's write.

`rows_of` / `rows_param`: how a set of rows travels to the server in one parameter. The hot
paths write many rows per statement (`UPDATE ... FROM`, `INSERT ... SELECT`); one jsonb
array read by `jsonb_to_recordset`, with the column types taken from the model, keeps each
statement one round trip whatever the batch size, and nested JSON columns need no second
encoding.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import FromClause, TextClause, text
from sqlalchemy.dialects import postgresql

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


def claim_statement(*, table: str, due_column: str, where: str, returning: str) -> TextClause:
    """The claim for `table`, ordered by `due_column`; `where` narrows the due rows, and
    `returning` names what to return of each claimed row `c`. Parameters: `limit`, `owner`
    (who holds the lease) and `lease_s`."""
    return text(
        f"""
        WITH params AS (SELECT CAST(:lease_s AS float8) AS lease_s),
        due AS (
            SELECT id FROM {table}
            WHERE {where} AND {due_column} <= now()
            ORDER BY {due_column}
            LIMIT :limit
            FOR UPDATE SKIP LOCKED
        )
        UPDATE {table} c
        SET lease_owner = :owner,
            lease_expires_at = now() + make_interval(secs => params.lease_s),
            {due_column} = now() + make_interval(secs => params.lease_s),
            fencing_token = c.fencing_token + 1
        FROM due, params WHERE c.id = due.id
        RETURNING {returning}
        """
    )


def rows_of(table: FromClause, columns: Iterable[str], *, alias: str = "r", extra: str = "") -> str:
    """`jsonb_to_recordset(...) AS alias(col type, ...)` over the `rows` parameter, typed
    by `table`'s columns (`extra`: more `name type` pairs that are not columns)."""
    typed = [f"{name} {table.c[name].type.compile(dialect=_DIALECT)}" for name in columns]
    if extra:
        typed.append(extra)
    return f"jsonb_to_recordset(CAST(:rows AS jsonb)) AS {alias}({', '.join(typed)})"


def rows_param(rows: Iterable[Mapping[str, Any]]) -> str:
    """The `rows` parameter of `rows_of`: the rows as one JSON array."""
    return json.dumps(list(rows), default=_encode, separators=(",", ":"))


def _encode(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__} as a row value")
