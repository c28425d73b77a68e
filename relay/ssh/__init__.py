"""The SSH side (DESIGN §4): ``server`` authenticates and turns ``-R`` into tunnels, ``session`` and
``commands`` answer sessions, ``channels`` is its side of the seam, ``connections`` the live set;
asyncssh's per-packet overheads are removed by the shared ``ssh_tuning`` package. It never imports
:mod:`relay.proxy`."""

from .connections import SshConnections
from .server import SshContext, start_ssh_server, start_stream_server

__all__ = ["SshConnections", "SshContext", "start_ssh_server", "start_stream_server"]
