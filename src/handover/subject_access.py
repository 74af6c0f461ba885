"""Subject access (LED Art 14): what this node holds for one case, in one export.

`SubjectAccess.export` gathers, for a case: the case record, every packet held
(received: its origin; sent: its recipients, the fields disclosed and those
withheld by minimisation, the consent relied on), the purposes and recipients
from the audit log, retention dates, restrictions and consent. A restricted
item is listed with its recorded reason but without its content (the LED
Art 15 ground); an erased item is listed as erased. The export is itself a
`consultation` in the audit log, with the operator's justification.

`render_markdown` turns an export into a report written for the data subject
and a caseworker reading it together.

    web/subject.py (GET /api/v1/cases/{ref}/export)  ->  SubjectAccess.export
    nodecli `handover export subject`  ->  that route  ->  render_markdown
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Any

from handover import crypto
from handover.audit import Appender
from handover.canonical import cj_loads
from handover.cases import CASE_REF_MAX
from handover.errors import ApiError, EncodingError
from handover.service import require_justification
from handover.store import cases as case_store
from handover.store import subject as subject_store
from handover.store.db import Connection

if TYPE_CHECKING:
    from handover.cases import Cases
    from handover.service import Operator, Service

EXPORT_FORMAT = "handover/subject-export/1"
PURPOSE = "subject access request"
# Audit operations whose justification is a purpose the data was used for.
PURPOSE_OPS = ("disclosure", "consultation")

KIND_WORDS = {"prison": "prison", "probation": "probation service", "exit": "exit organisation"}
ANCHOR_WORDS = {
    "supervision_end": "the end of supervision",
    "release": "the release date",
    "stored": "the date it was stored",
}
OP_WORDS = {"disclosure": "shared", "consultation": "looked at"}
STATUS_WORDS = {
    "pending": "not yet delivered",
    "delivered": "delivered",
    "rejected": "refused by the recipient",
    "expired": "not delivered (gave up)",
}


class SubjectAccess:
    def __init__(self, service: Service, cases: Cases) -> None:
        self.service = service
        self.cases = cases

    async def export(self, operator: Operator, ref: str, justification: object) -> dict[str, Any]:
        """Everything this node holds for the case `ref` (shared reference or local id).

        Raises:
            ApiError: 400 without a justification or with a malformed reference,
                404 for an unknown case, 500 if a stored body cannot be decrypted.
        """
        why = require_justification(justification)
        if not ref or len(ref) > CASE_REF_MAX:
            raise ApiError(400, "bad_request", "a case reference is 1 to 64 characters")
        case_ref = await self.cases.resolve(ref)
        async with self.service.db.connection() as conn:
            case = await case_store.get(conn, case_ref)
            received = await subject_store.received(conn, case_ref)
            sent = await subject_store.sent(conn, case_ref)
            entries = await subject_store.audit_entries(conn, case_ref)
            consents = await subject_store.consents(conn, case_ref)
        assert case is not None  # resolve() found it
        log = [_parse_entry(seq, raw) for seq, raw in entries]
        export: dict[str, Any] = {
            "format": EXPORT_FORMAT,
            "node": self.service.node,
            "agency_kind": self.service.config.kind,
            "case": {
                "case_ref": case_ref,
                "local_id": case["local_id"],
                "created_at": case["created_at"],
                "updated_at": case["updated_at"],
                "release_date": case["release_date"],
                "supervision_end": case["supervision_end"],
            },
            "received": [self._received_item(r) for r in received],
            "sent": [self._sent_item(r) for r in sent],
            "purposes": _purposes(log),
            "recipients": self._recipients(log, sent),
            "consents": [
                {
                    "scope": c["scope"],
                    "state": c["state"],
                    "consent_id": c["consent_id"],
                    "basis": c["basis"],
                    "pid": c["pid"],
                    "author": c["author"],
                    "recorded_at": c["recorded_at"],
                }
                for c in consents
            ],
        }
        items = export["received"] + export["sent"]
        # Art 25: the names of the fields shown, per packet; restricted and erased
        # packets are listed without content.
        shown = {p["pid"]: sorted(p["body"]) for p in items if "body" in p}
        withheld = [p["pid"] for p in items if "body" not in p]

        async def job(conn: Connection, appender: Appender) -> tuple[int, int]:
            position = appender.append(
                "consultation",
                case_ref=case_ref,
                purpose=PURPOSE,
                shown=shown or None,
                withheld=withheld or None,
                operator=operator.name,
                org=self.service.node,
                justification=why,
            )
            return position.seq, self.service.clock()

        seq, at = await self.service.writer.run(job)
        export["export"] = {
            "at": at,
            "operator": operator.name,
            "purpose": PURPOSE,
            "justification": why,
            "audit_seq": seq,
        }
        return export

    # --- one item per packet held ---------------------------------------------------

    def _retention_rule(self, schema: str) -> dict[str, Any]:
        rule, fallback = self.service.workflow.policy.retention(schema)
        return {
            "anchor": rule.anchor,
            "months": rule.months,
            "fallback": {"anchor": fallback.anchor, "months": fallback.months},
        }

    def _content(self, item: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
        """Add the state of the item's content, and the body when it may be shown."""
        item["erased"] = row["erased_at"] is not None or row["body_box"] is None
        item["erased_at"] = row["erased_at"]
        item["restricted"] = row["restricted"] is not None
        item["restriction_reason"] = row["restricted"]
        if not item["erased"] and not item["restricted"]:
            try:
                plain = crypto.open_at_rest(self.service.storage_key, bytes(row["body_box"]))
                item["body"] = cj_loads(plain)
            except (crypto.CryptoFailure, EncodingError) as exc:
                raise ApiError(
                    500, "storage_key", f"the stored body of {row['pid']} cannot be decrypted"
                ) from exc
        return item

    def _received_item(self, row: dict[str, Any]) -> dict[str, Any]:
        item = {
            "pid": row["pid"],
            "schema": row["schema_id"],
            "origin": {"node": row["sender"], "kind": self.service.directory.kind(row["sender"])},
            "issued_at": row["iat"],
            "received_at": row["received_at"],
            "review_at": row["review_at"],
            "retention_rule": self._retention_rule(row["schema_id"]),
            "rectified_by": row["rectified_by"],
        }
        return self._content(item, row)

    def _sent_item(self, row: dict[str, Any]) -> dict[str, Any]:
        item = {
            "pid": row["pid"],
            "schema": row["schema_id"],
            "sent_at": row["created_at"],
            "operator": row["operator"],
            "recipients": [
                {
                    "node": d["node"],
                    "kind": self.service.directory.kind(d["node"]),
                    "status": d["status"],
                    "reason": d["reason"],
                    "finished_at": d["finished_at"],
                }
                for d in row["deliveries"]
            ],
            "fields": list(row["fields"] or []),
            "withheld": list(row["removed"] or []),
            "consents": list(row["consents"] or []),
            "review_at": row["review_at"],
            "retention_rule": self._retention_rule(row["schema_id"]),
        }
        return self._content(item, row)

    def _recipients(
        self, log: list[dict[str, Any]], sent: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """One line per (disclosure, recipient) from the disclosure log, with the
        delivery state this node holds for it."""
        status = {(s["pid"], d["node"]): d["status"] for s in sent for d in s["deliveries"]}
        out = []
        for entry in log:
            if entry.get("op") != "disclosure":
                continue
            for node in entry.get("to", []):
                out.append(
                    {
                        "node": node,
                        "kind": self.service.directory.kind(node),
                        "pid": entry.get("pid"),
                        "schema": entry.get("schema"),
                        "at": entry.get("at"),
                        "fields": entry.get("fields", []),
                        "withheld": entry.get("removed", []),
                        "consents": entry.get("consents", []),
                        "operator": entry.get("operator"),
                        "justification": entry.get("justification"),
                        "status": status.get((entry.get("pid"), node)),
                        "audit_seq": entry["seq"],
                    }
                )
        return out


def _parse_entry(seq: int, raw: bytes) -> dict[str, Any]:
    try:
        entry = cj_loads(raw)
    except EncodingError:
        entry = None
    if not isinstance(entry, dict):  # `audit verify` names such an entry; list it as unreadable
        return {"seq": seq, "op": "unreadable"}
    return entry


def _purposes(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "op": e["op"],
            "at": e.get("at"),
            "justification": e.get("justification"),
            "purpose": e.get("purpose"),
            "pid": e.get("pid"),
            "schema": e.get("schema"),
            "counterpart": e.get("counterpart"),
            "to": e.get("to"),
            "operator": e.get("operator"),
            "audit_seq": e["seq"],
        }
        for e in log
        if e.get("op") in PURPOSE_OPS
    ]


# --- the readable report ---------------------------------------------------------------

# Characters that could turn held text into markup: always escaped, except an
# underscore inside a word (CommonMark never emphasises there: SUPPORT_REQUIRED
# stays readable) and `&` unless it starts an entity.
_MD_SPECIAL = re.compile(
    r"([\\`*\[\]<>#|]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])|&(?=#?[0-9A-Za-z]+;))"
)
# A held line that would start a list item or a heading underline after a line break.
_LINE_START = re.compile(r"(\n\s*\d*)([-+=.)])")


def _text(value: object) -> str:
    """Inline Markdown text: held data renders as written, never as markup or HTML."""
    escaped = _MD_SPECIAL.sub(r"\\\1", str(value))
    return _LINE_START.sub(lambda m: m.group(1) + "\\" + m.group(2), escaped)


def _date(ms: object) -> str:
    if not isinstance(ms, int) or isinstance(ms, bool):
        return "not known"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d")


def _title(schema: object) -> str:
    """`handover/release-notice/1` -> `Release notice`."""
    parts = str(schema).split("/")
    if len(parts) == 3 and parts[0] == "handover":
        return parts[1].replace("-", " ").capitalize()
    return str(schema)


def _agency(node: object, kind: object) -> str:
    word = KIND_WORDS.get(str(kind)) if kind is not None else None
    return f"{_text(node)} ({word})" if word else _text(node)


def _label(name: object) -> str:
    return _text(str(name).replace("_", " "))


def _scalar(value: object) -> str:
    if value is None:
        return "none"
    if value is True:
        return "yes"
    if value is False:
        return "no"
    return _text(value)


def _value_lines(name: str, value: object, indent: int) -> list[str]:
    """`- name: value` lines; objects and lists of objects nest, indented."""
    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            return [f"{pad}- {_label(name)}: none"]
        lines = [f"{pad}- {_label(name)}:"]
        for key, inner in value.items():
            lines += _value_lines(key, inner, indent + 1)
        return lines
    if isinstance(value, list):
        if not value:
            return [f"{pad}- {_label(name)}: none"]
        if all(not isinstance(v, dict | list) for v in value):
            return [f"{pad}- {_label(name)}: {', '.join(_scalar(v) for v in value)}"]
        lines = [f"{pad}- {_label(name)}:"]
        for number, inner in enumerate(value, 1):
            lines += _value_lines(f"{name} {number}", inner, indent + 1)
        return lines
    text = _scalar(value).replace("\n", "\n" + pad + "  ")
    return [f"{pad}- {_label(name)}: {text}"]


def _retention_text(item: dict[str, Any]) -> str:
    rule = item.get("retention_rule") or {}
    review = item.get("review_at")
    when = f"review due on {_date(review)}" if review is not None else "review date not yet set"
    if not rule:
        return when
    anchor = ANCHOR_WORDS.get(rule.get("anchor", ""), str(rule.get("anchor")))
    text = f"{when}; the rule is a review {rule.get('months')} months after {anchor}"
    fallback = rule.get("fallback")
    if fallback:
        fallback_anchor = ANCHOR_WORDS.get(fallback.get("anchor", ""), fallback.get("anchor"))
        text += (
            f" (or {fallback.get('months')} months after {fallback_anchor} while that is not known)"
        )
    return text


def _content_lines(item: dict[str, Any]) -> list[str]:
    if item.get("erased"):
        when = item.get("erased_at")
        on = f" on {_date(when)}" if when is not None else ""
        return [f"- Content: erased{on}. Only the record that this item existed is kept."]
    if item.get("restricted"):
        reason = item.get("restriction_reason")
        because = f" (recorded reason: {_text(reason)})" if reason else ""
        return [
            f"- Content: withheld. Use of this item is restricted{because}; it is listed"
            " here, but its content is not shown."
        ]
    body = item.get("body")
    if not isinstance(body, dict):
        return ["- Content: not available."]
    lines = ["- Content:"]
    for key, value in body.items():
        lines += _value_lines(key, value, 1)
    return lines


def _packets(export: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(direction, item) for every packet held, oldest first."""
    items = [("received", p) for p in export.get("received", [])]
    items += [("sent", p) for p in export.get("sent", [])]
    return sorted(items, key=lambda di: di[1].get("received_at") or di[1].get("sent_at") or 0)


def render_markdown(export: dict[str, Any]) -> str:
    """A readable report of an export: plain words, dates as YYYY-MM-DD (UTC)."""
    case = export.get("case", {})
    ref = case.get("case_ref", "")
    node = export.get("node", "this node")
    made = export.get("export") or {}
    out = [f"# What {_text(node)} holds about case {_text(ref)}", ""]
    out.append(
        f"This report lists the information that {_agency(node, export.get('agency_kind'))}"
        " holds about this case: where it came from, why it was used, who it was shared"
        " with, how long it is kept, and any restrictions on its use."
    )
    if made:
        out.append(
            f"It was produced on {_date(made.get('at'))} by {_text(made.get('operator'))}"
            f" for a {PURPOSE} (reason given: {_text(made.get('justification'))})."
        )
    out += ["", "## The case", ""]
    out.append(f"- Case reference shared between the agencies: {_text(ref)}")
    local = case.get("local_id")
    out.append(f"- This agency's own case number: {_text(local) if local else 'none recorded'}")
    out.append(f"- First recorded here: {_date(case.get('created_at'))}")
    out.append(f"- Last changed: {_date(case.get('updated_at'))}")
    out.append(f"- Release date: {_text(case.get('release_date') or 'not known')}")
    out.append(f"- End of supervision: {_text(case.get('supervision_end') or 'not known')}")

    packets = _packets(export)
    out += ["", "## Information held"]
    if not packets:
        out += ["", "No information is held for this case."]
    for number, (direction, item) in enumerate(packets, 1):
        out.append("")
        if direction == "received":
            origin = item.get("origin") or {}
            source = _agency(origin.get("node"), origin.get("kind"))
            out += [f"### {number}. {_title(item.get('schema'))}, received from {source}", ""]
            out.append(f"- Received on: {_date(item.get('received_at'))}")
            if item.get("rectified_by"):
                out.append(f"- Corrected later by item {_text(item['rectified_by'])}")
        else:
            to = ", ".join(
                _agency(r.get("node"), r.get("kind")) for r in item.get("recipients", [])
            )
            out += [f"### {number}. {_title(item.get('schema'))}, sent to {to}", ""]
            out.append(f"- Sent on: {_date(item.get('sent_at'))}")
            for r in item.get("recipients", []):
                status = STATUS_WORDS.get(str(r.get("status")), _text(r.get("status")))
                out.append(f"- Delivery to {_text(r.get('node'))}: {status}")
            shared = item.get("fields") or []
            out.append(f"- Parts shared: {', '.join(_label(f) for f in shared) or 'none'}")
            withheld = item.get("withheld") or []
            if withheld:
                out.append(
                    "- Parts left out (the sharing rules do not allow them for this recipient): "
                    + ", ".join(_label(f) for f in withheld)
                )
            consents = item.get("consents") or []
            if consents:
                out.append(f"- Shared on the basis of consent: {', '.join(map(_label, consents))}")
        out.append(f"- Item id: {_text(item.get('pid'))}")
        out += _content_lines(item)

    out += ["", "## Why the information was used", ""]
    purposes = export.get("purposes") or []
    if not purposes:
        out.append("No use of this information is recorded.")
    for p in purposes:
        what = OP_WORDS.get(str(p.get("op")), _text(p.get("op")))
        about = f" ({_title(p['schema'])})" if p.get("schema") else ""
        reason = p.get("justification") or "no reason recorded"
        purpose = f" [{_text(p['purpose'])}]" if p.get("purpose") else ""
        out.append(
            f"- {_date(p.get('at'))}: {what}{about} by {_text(p.get('operator') or 'the node')}"
            f", because: {_text(reason)}{purpose}"
        )

    out += ["", "## Who it was shared with", ""]
    recipients = export.get("recipients") or []
    if not recipients:
        out.append("This agency has not shared information about this case.")
    for r in recipients:
        status = STATUS_WORDS.get(str(r.get("status")), "delivery state not known")
        parts = ", ".join(_label(f) for f in r.get("fields") or []) or "none"
        out.append(
            f"- {_date(r.get('at'))}: {_title(r.get('schema'))} to"
            f" {_agency(r.get('node'), r.get('kind'))}, {status}; parts shared: {parts}"
        )

    out += ["", "## How long it is kept", ""]
    if not packets:
        out.append("Nothing is held.")
    for number, (_direction, item) in enumerate(packets, 1):
        out.append(f"- {number}. {_title(item.get('schema'))}: {_retention_text(item)}")

    out += ["", "## Restrictions and erasure", ""]
    limited = [(n, i) for n, (_d, i) in enumerate(packets, 1) if i.get("restricted")]
    erased = [(n, i) for n, (_d, i) in enumerate(packets, 1) if i.get("erased")]
    if not limited and not erased:
        out.append("No item is restricted or erased.")
    for number, item in limited:
        reason = item.get("restriction_reason")
        out.append(
            f"- {number}. {_title(item.get('schema'))}: restricted"
            + (f" (recorded reason: {_text(reason)})" if reason else "")
            + "; its content is not shown in this report."
        )
    for number, item in erased:
        when = item.get("erased_at")
        out.append(
            f"- {number}. {_title(item.get('schema'))}: erased"
            + (f" on {_date(when)}" if when is not None else "")
        )

    out += ["", "## Consent", ""]
    consents = export.get("consents") or []
    if not consents:
        out.append("No consent is recorded for this case.")
    for c in consents:
        state = "given" if c.get("state") == "GIVEN" else "withdrawn"
        out.append(
            f"- {_date(c.get('recorded_at'))}: {_label(c.get('scope'))} {state}"
            f" ({_label(c.get('basis'))}, recorded by {_text(c.get('author'))})"
        )
    return "\n".join(out) + "\n"
