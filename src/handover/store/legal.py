"""Queries for the legal duties of issue 16: Art 15 decisions to withhold from
subject access, case assignments and operator teams (Art 20, 29), and the
roles of operators (a subject access report names staff by role)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from handover.store.db import Connection, to_rows


@dataclass(frozen=True, slots=True)
class Withholding:
    """An admin's Art 15 decision: an item, or the existence of its restriction,
    is left out of subject access exports until `review_on`."""

    case_ref: str
    pid: str
    what: str
    ground: str
    review_on: str
    decided_by: str
    decided_at: int


@dataclass(frozen=True, slots=True)
class Assignment:
    case_ref: str
    kind: str
    assignee: str
    assigned_by: str
    assigned_at: int


async def withhold(conn: Connection, w: Withholding) -> None:
    """Record (or replace) a decision to withhold."""
    await conn.execute(
        "INSERT INTO subject_withholdings"
        " (case_ref, pid, what, ground, review_on, decided_by, decided_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (case_ref, pid, what) DO UPDATE SET ground = excluded.ground,"
        " review_on = excluded.review_on, decided_by = excluded.decided_by,"
        " decided_at = excluded.decided_at",
        w.case_ref,
        w.pid,
        w.what,
        w.ground,
        w.review_on,
        w.decided_by,
        w.decided_at,
    )


async def withholdings(conn: Connection, case_ref: str) -> list[Withholding]:
    rows = await conn.fetch(
        "SELECT case_ref, pid, what, ground, review_on, decided_by, decided_at"
        " FROM subject_withholdings WHERE case_ref = $1 ORDER BY pid, what",
        case_ref,
    )
    return to_rows(Withholding, rows)


async def operator_roles(conn: Connection) -> dict[str, str]:
    """Every operator's role by name (disabled ones too: they acted once)."""
    rows = await conn.fetch("SELECT name, role FROM operators")
    return {r["name"]: r["role"] for r in rows}


# --- case assignment (least privilege) -------------------------------------------------


async def assign(
    conn: Connection,
    case_ref: str,
    *,
    operators: Sequence[str],
    teams: Sequence[str],
    by: str,
    now: int,
) -> None:
    """Replace a case's assignment with these operators and teams."""
    await conn.execute("DELETE FROM case_assignments WHERE case_ref = $1", case_ref)
    rows = [(case_ref, "operator", name, by, now) for name in operators]
    rows += [(case_ref, "team", name, by, now) for name in teams]
    if rows:
        await conn.executemany(
            "INSERT INTO case_assignments (case_ref, kind, assignee, assigned_by, assigned_at)"
            " VALUES ($1, $2, $3, $4, $5)",
            rows,
        )


async def assignments(conn: Connection, case_ref: str) -> list[Assignment]:
    rows = await conn.fetch(
        "SELECT case_ref, kind, assignee, assigned_by, assigned_at FROM case_assignments"
        " WHERE case_ref = $1 ORDER BY kind, assignee",
        case_ref,
    )
    return to_rows(Assignment, rows)


async def assigned_to(conn: Connection, case_ref: str, operator: str) -> bool:
    """Is the case assigned to this operator, or to a team the operator is in?"""
    found = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM case_assignments a WHERE a.case_ref = $1 AND ("
        " (a.kind = 'operator' AND a.assignee = $2) OR (a.kind = 'team' AND a.assignee IN"
        " (SELECT team FROM operator_teams WHERE operator = $2))))",
        case_ref,
        operator,
    )
    return bool(found)


async def visible_cases(conn: Connection, operator: str, case_refs: Sequence[str]) -> set[str]:
    """Those of `case_refs` assigned to the operator or one of their teams."""
    rows = await conn.fetch(
        "SELECT DISTINCT a.case_ref FROM case_assignments a WHERE a.case_ref = ANY($1) AND ("
        " (a.kind = 'operator' AND a.assignee = $2) OR (a.kind = 'team' AND a.assignee IN"
        " (SELECT team FROM operator_teams WHERE operator = $2)))",
        list(case_refs),
        operator,
    )
    return {r["case_ref"] for r in rows}


async def set_teams(conn: Connection, operator: str, teams: Sequence[str]) -> None:
    await conn.execute("DELETE FROM operator_teams WHERE operator = $1", operator)
    if teams:
        await conn.executemany(
            "INSERT INTO operator_teams (operator, team) VALUES ($1, $2)",
            [(operator, t) for t in teams],
        )


async def teams_of(conn: Connection, operator: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT team FROM operator_teams WHERE operator = $1 ORDER BY team", operator
    )
    return [r["team"] for r in rows]
