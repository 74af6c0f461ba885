"""Art 25 at the edge: every local API route that answers with case-linked
data writes one `consultation` entry (node/consultation.py) before the answer
leaves; a justification is optional on listings (query `justification` or
header `Handover-Justification`) and, when given, checked and its purpose code
recorded."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from handover.node.consultation import CONSULTATION
from handover.web.edge import NODE_KEY, operator_of
from handover.workflow.access import Operator


def stated_justification(request: web.Request) -> str | None:
    """The justification the client gave with a read, if any."""
    return request.query.get("justification") or request.headers.get("Handover-Justification")


def checked_justification(request: web.Request) -> str | None:
    """The stated justification, checked (raises RequestRefused when too weak)."""
    return request.app[NODE_KEY].consultations.check(stated_justification(request))


async def consulted(
    request: web.Request,
    shown: str,
    *,
    op: str = CONSULTATION,
    why: str | None = None,
    count: int | None = None,
    fields: Sequence[str] | None = None,
    case_ref: str | None = None,
    pid: str | None = None,
    cases: Sequence[str | None] | None = None,
    break_glass: bool = False,
    operator: Operator | None = None,
) -> None:
    """Log what this request showed: one entry, whatever the size of the answer
    (`operator`: the web interface's session operator; default the bearer's)."""
    await request.app[NODE_KEY].consultations.record(
        operator or operator_of(request),
        shown,
        op=op,
        justification=why,
        count=count,
        fields=fields,
        case_ref=case_ref,
        pid=pid,
        cases=[c for c in cases or () if c],
        break_glass=break_glass,
    )


def break_glass(request: web.Request) -> str | None:
    """The justification of a break-glass read (header `Handover-Break-Glass`), if any."""
    return request.headers.get("Handover-Break-Glass")


async def check_case(
    request: web.Request, case_ref: str | None, operator: Operator | None = None
) -> bool:
    """Least privilege: may this operator see the case? True if only by breaking the glass."""
    node = request.app[NODE_KEY]
    who = operator or operator_of(request)
    return await node.assignments.check(who, case_ref, break_glass(request))


async def visible_items(
    request: web.Request, items: list[dict[str, Any]], operator: Operator | None = None
) -> list[dict[str, Any]]:
    """The items of a listing whose `case_ref` the operator may see."""
    node = request.app[NODE_KEY]
    operator = operator or operator_of(request)
    if not node.assignments.limited(operator):
        return items
    seen = await node.assignments.visible(operator, [i.get("case_ref") for i in items])
    return [i for i in items if i.get("case_ref") in seen]
