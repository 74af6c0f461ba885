"""handover: signed, end-to-end encrypted hp1 packets between agency nodes."""

__version__ = "0.1.0"
