"""The readable subject access report: the export of `subject_access.py` as
Markdown, written for the data subject (plain words, no internal identifiers
beyond what the export already holds)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from handover.workflow.subject_access import PURPOSE

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
    "cancelled": "not delivered (erased or restricted before it went out)",
}

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
        return [
            "- Content: withheld. Use of this item is restricted; it is listed"
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
        out.append(
            f"- {number}. {_title(item.get('schema'))}: restricted;"
            " its content is not shown in this report."
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
    out += _legal_lines(export)
    return "\n".join(out) + "\n"


def _legal_lines(export: dict[str, Any]) -> list[str]:
    """Legal basis, rights and the supervisory authority (Art 13, 14)."""
    out = ["", "## The law and your rights", ""]
    if export.get("legal_basis"):
        out.append(f"- Legal basis: {_text(export['legal_basis'])}")
    for right in export.get("rights") or []:
        out.append(f"- {_text(right.get('text'))}")
    if export.get("supervisory_authority"):
        out.append(f"- Supervisory authority: {_text(export['supervisory_authority'])}")
    if export.get("withheld_notice"):
        out.append(f"- {_text(export['withheld_notice'])}")
    return out
