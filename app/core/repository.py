"""SQL shapes more than one repository uses.

`claim_statement`: how a worker takes leased work from a queue table. Tasks (the poll
loop) and deliveries (the delivery loop) are both claimed this way: the oldest due rows,
SKIP LOCKED so replicas claim side by side without waiting on each other, the due column
moved to the lease's end (a replica that dies mid-work needs no reaper: its rows simply
fall due again), and a new fencing token that voids any older holder's write.
"""

from __future__ import annotations

from sqlalchemy import TextClause, text


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
