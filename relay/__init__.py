"""Relay: token-gated HTTP tunnels over SSH reverse forwards."""

__version__ = "0.1.0"
