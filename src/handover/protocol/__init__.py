"""hp1 itself, usable without a node: canonical JSON and strict base64url, the
cryptography (`crypto` is the only importer of nacl), keysets, packets and
receipts, the audit-chain formula and checkpoints. Imports nothing else from
handover (an import-linter contract holds it to that)."""
