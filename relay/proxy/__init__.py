"""The HTTP front (DESIGN §4): ``server`` accepts and admits, ``visitor`` runs one connection,
``route`` decides what a request gets, ``forward`` moves it through a tunnel, ``portal`` and
``credentials`` are the relay's own pages and checks, ``reply`` its one serialiser. It meets the SSH
side only in :mod:`relay.tunnels` and never imports :mod:`relay.ssh`."""

from .server import Proxy

__all__ = ["Proxy"]
