"""SQL shapes more than one repository uses.

How a worker takes leased work from a queue table: SKIP LOCKED so replicas claim side by
side without waiting on each other, the due column moved to the lease's end (a replica
that dies mid-work needs no reaper: its rows simply fall due again), and a new fencing
token that voids any older holder's write. Two orders choose the rows:

* `claim_statement`: the oldest due rows first (deliveries).
* `fair_claim_statement`: a share of the batch per owner of due rows, then the oldest due
  rows (tasks, shared between tenants; the rule is in docs/architecture.md, "Fair shares").

How a set of rows travels to the server, so that a statement over many rows (`UPDATE ...
FROM`, `INSERT ... SELECT`) stays one round trip whatever the batch size. Two ways, each for
its kind of row:

* `rows_of` / `rows_param`: rows with JSON columns (task outcomes, events, samples, the
  outbox) as one jsonb array read by `jsonb_to_recordset`, typed by the model's columns:
  nested JSON needs no second encoding.
* `arrays_of`: rows of plain scalars (registrations, delivery attempts, held claims) as one
  typed array per column, unnested together: asyncpg encodes the arrays in binary, with no
  JSON to build in Python or to parse in Postgres, and the caller builds each array in one
  comprehension.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, FromClause, TextClause, text, true
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import InstrumentedAttribute

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


def _lease(table: str, due_column: str, returning: str, *, rows: str) -> str:
    """Lease the rows `c` that `rows` (a FROM and WHERE, with the CTE `params` and its
    `lease_s` in the FROM) picks out."""
    return f"""
        UPDATE {table} c
        SET lease_owner = :owner,
            lease_expires_at = now() + make_interval(secs => params.lease_s),
            {due_column} = now() + make_interval(secs => params.lease_s),
            fencing_token = c.fencing_token + 1
        {rows}
        RETURNING {returning}
        """


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
        {_lease(table, due_column, returning, rows="FROM due, params WHERE c.id = due.id")}
        """
    )


# The planner cannot tell how many rows the fair claim's CTEs hold (their limits are
# computed), and a join to them was seen planned as a hash join over the whole table: the
# ids as an array make the update an index scan on the primary key whatever the estimate.
_BY_ID = "FROM params WHERE c.id = ANY(ARRAY(SELECT id FROM due))"


def fair_claim_statement(
    *, table: str, due_column: str, share_column: str, where: str, returning: str
) -> TextClause:
    """The claim for `table`, shared between the values of `share_column` (the owners) that
    have rows due: with n of them and a batch of `limit`, each owner's floor(limit / n) most
    overdue rows (at least one, for the `limit` owners with the oldest due row when n >
    limit), then the rest of the batch in overdue order across owners. Rows come back in
    turns: every owner's most overdue row, then every owner's second, and so on.

    `where` narrows the rows without looking at the due column and must be served, with the
    ordering, by an index on (its equality columns, `share_column`, `due_column`); `returning`
    names what to return of each claimed row `c`, `c.id` among it. Parameters as
    `claim_statement`'s.

    Why this shape: a recursive CTE walks that index one owner at a time (a loose index scan:
    one descent per owner with rows in `where`, whatever their number of rows), and each due
    owner's share is an index range scan of its own. The cost grows with the owners that
    have rows in `where` and with the batch, not with the rows, due or not.
    """
    return text(
        f"""
        WITH RECURSIVE params AS (
            SELECT CAST(:lease_s AS float8) AS lease_s, CAST(:limit AS integer) AS batch
        ),
        heads AS (
            (SELECT {share_column} AS owner, {due_column} AS head FROM {table}
             WHERE {where}
             ORDER BY {share_column}, {due_column} LIMIT 1)
            UNION ALL
            SELECT nxt.owner, nxt.head FROM heads h CROSS JOIN LATERAL (
                SELECT {share_column} AS owner, {due_column} AS head FROM {table}
                WHERE {where} AND {share_column} > h.owner
                ORDER BY {share_column}, {due_column} LIMIT 1
            ) nxt
        ),
        owners AS (SELECT owner, head FROM heads WHERE head <= now()),
        shares AS (
            SELECT s.id, s.owner, s.due_at
            FROM (
                SELECT owner FROM owners ORDER BY head LIMIT (SELECT batch FROM params)
            ) o
            CROSS JOIN LATERAL (
                SELECT id, {share_column} AS owner, {due_column} AS due_at FROM {table}
                WHERE {where} AND {share_column} = o.owner AND {due_column} <= now()
                ORDER BY {due_column}
                LIMIT (SELECT greatest(1, batch / greatest(1, (SELECT count(*) FROM owners)))
                       FROM params)
                FOR UPDATE SKIP LOCKED
            ) s
        ),
        rest AS (
            SELECT id, {share_column} AS owner, {due_column} AS due_at FROM {table}
            WHERE {where} AND {due_column} <= now()
              AND id NOT IN (SELECT id FROM shares)
            ORDER BY {due_column}
            LIMIT (SELECT greatest(0, batch - (SELECT count(*) FROM shares)) FROM params)
            FOR UPDATE SKIP LOCKED
        ),
        due AS (
            SELECT id, due_at, row_number() OVER (PARTITION BY owner ORDER BY due_at) AS turn
            FROM (SELECT * FROM shares UNION ALL SELECT * FROM rest) d
        ),
        claimed AS ({_lease(table, due_column, returning, rows=_BY_ID)})
        SELECT claimed.* FROM claimed JOIN due ON due.id = claimed.id
        ORDER BY due.turn, due.due_at
        """
    )


def rows_of(table: FromClause, columns: Iterable[str], *, alias: str = "r", extra: str = "") -> str:
    """`jsonb_to_recordset(...) AS alias(col type, ...)` over the `rows` parameter, typed
    by `table`'s columns (`extra`: more `name type` pairs that are not columns)."""
    typed = [f"{name} {table.c[name].type.compile(dialect=_DIALECT)}" for name in columns]
    if extra:
        typed.append(extra)
    return f"jsonb_to_recordset(CAST(:rows AS jsonb)) AS {alias}({', '.join(typed)})"


def arrays_of(columns: Mapping[str, str], *, alias: str, ordinality: str | None = None) -> str:
    """`unnest(CAST(:name AS type[]), ...) AS alias(name, ...)`: the rows whose columns
    (`name: SQL type`) arrive as one array parameter each, named after the column, all of
    one length. `ordinality` names an extra column numbering the rows from 1, in the order
    given."""
    arrays = ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in columns.items())
    names = list(columns)
    if ordinality is not None:
        names.append(ordinality)
    with_ordinality = " WITH ORDINALITY" if ordinality is not None else ""
    return f"unnest({arrays}){with_ordinality} AS {alias}({', '.join(names)})"


def rows_param(rows: Iterable[Mapping[str, Any]]) -> str:
    """The `rows` parameter of `rows_of`: the rows as one JSON array."""
    return json.dumps(list(rows), default=_encode, separators=(",", ":"))


def _encode(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__} as a row value")


def of_tenant(
    column: ColumnElement[str] | InstrumentedAttribute[str], tenant: str | None
) -> ColumnElement[bool]:
    """The scope of a caller's reads and changes: one tenant's rows, or every tenant's for
    None (an operator)."""
    return true() if tenant is None else column == tenant
