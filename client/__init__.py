"""relay-client: publish a local port or JupyterLab through a Relay server."""

__version__ = "0.1.0"
