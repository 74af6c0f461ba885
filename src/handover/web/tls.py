"""TLS contexts for the federation listener and for connections to peers.

The packet layer does not depend on TLS (packets are signed and encrypted end
to end), but who talks to whom does: the federation listener serves HTTPS
when `tls_cert` and `tls_key` are set. With `tls_client_ca`, partner nodes
must present a client certificate from that CA to post packets (mutual TLS).
Outgoing connections verify the peer against the system trust store, or the
CA bundle pinned for that peer with `handover peers add --ca FILE`, and
present `tls_client_cert` / `tls_client_key` (default: the server certificate).
"""

from __future__ import annotations

import ssl

from handover.node.config import NodeConfig
from handover.protocol.errors import ConfigError


def server_context(config: NodeConfig) -> ssl.SSLContext | None:
    """The federation listener's context, or None for plain HTTP.

    Raises:
        ConfigError: a certificate, key or CA file cannot be read.
    """
    if not config.tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, config, config.tls_cert, config.tls_key)
    if config.tls_client_ca:
        try:
            context.load_verify_locations(cafile=str(config.path(config.tls_client_ca)))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"tls_client_ca {config.tls_client_ca}: {exc}") from exc
        # Optional at the handshake: keysets and log heads stay public; the
        # routes that take packets refuse a connection without a certificate.
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def client_context(config: NodeConfig, ca_file: str | None = None) -> ssl.SSLContext:
    """A context for connecting to a peer: verified against `ca_file` if given,
    else the system trust store; presenting our client certificate if we have one.

    Raises:
        ConfigError: a file cannot be read.
    """
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"CA bundle {ca_file}: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    cert = config.tls_client_cert or config.tls_cert
    key = config.tls_client_key or config.tls_key
    if cert and key:
        _load_chain(context, config, cert, key)
    return context


def _load_chain(context: ssl.SSLContext, config: NodeConfig, cert: str, key: str) -> None:
    try:
        context.load_cert_chain(str(config.path(cert)), str(config.path(key)))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"TLS certificate {cert} or key {key}: {exc}") from exc
