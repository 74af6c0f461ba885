"""The node runtime: settings, key files, the directory of pinned peers, the
transport, sending and receiving, the inbox, the delivery worker, witnessing of
peers' logs, and the composition root (`runtime.Node`) that wires them."""
