"""The node's HTTP surface: federation API, local API, health and metrics."""
