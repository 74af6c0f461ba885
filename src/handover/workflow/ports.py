"""What the workflow needs from the node, as interfaces (the node implements them).

The workflow sits below the node runtime; it never imports it. The
composition root (`node/runtime.py`) passes the real objects in.
"""

from __future__ import annotations

from typing import Any, Protocol

from handover.protocol.keyset import Keyset
from handover.workflow.access import Operator


class Peers(Protocol):
    """The directory of pinned peers (`handover.node.directory.Directory`)."""

    def kind(self, node: str) -> str | None:
        """The agency kind a peer was pinned with, or None for an unknown node."""
        ...

    def keyset(self, node: str) -> Keyset | None:
        """The peer's accepted keyset while it is valid, or None."""
        ...


class Submitter(Protocol):
    """Sending a packet through the normal path (`handover.node.sending.Sender`):
    policy, `disclosure` entry, sealing, outbox."""

    async def submit(
        self,
        operator: Operator,
        *,
        to: object,
        schema_id: object,
        body: object,
        justification: object,
        minimise: object = False,
        attachments: object = None,
        share_attachments: bool = False,
    ) -> list[dict[str, Any]]: ...
