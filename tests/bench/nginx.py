"""nginx in its two roles: the backend (static files, and ``/ws`` passed to the WebSocket echo server)
and the classic stack's front (a keep-alive reverse proxy to the port ``ssh -R`` forwards).

Each instance runs in the foreground under its own prefix directory with a generated config, as
Debian's defaults would have it where it matters (``worker_processes auto``, ``sendfile on``, proxy
buffering on)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .processes import Child, spawn, wait_listening

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

_MAIN = """\
{user}
worker_processes auto;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
    upstream up {{ server 127.0.0.1:{upstream}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port};
{locations}
    }}
}}
"""

#: Every request (and WebSocket) to the upstream over keep-alive connections. An empty Connection
#: header keeps the upstream connection open; "upgrade" is passed on for WebSockets.
_PROXY = """\
        location {path} {{
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 1h;
        }}
"""

_STATIC = """\
        location / {{ root {root}; }}
"""


def _write_config(prefix: Path, port: int, upstream: int, locations: str) -> Path:
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    # As root, nginx's workers would drop to "nobody", who cannot read a private temp directory.
    user = "user root;" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(_MAIN.format(user=user, prefix=prefix, port=port, upstream=upstream, locations=locations))
    return conf


async def _start(name: str, prefix: Path, conf: Path, port: int, logdir: Path) -> Child:
    child = spawn(name, [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")], logdir)
    await wait_listening(child, port)
    return child


async def start_backend(prefix: Path, port: int, root: Path, ws_port: int, logdir: Path) -> Child:
    """nginx serving ``root`` on ``port``; ``/ws`` goes to the WebSocket echo server on ``ws_port``."""
    locations = _STATIC.format(root=root) + _PROXY.format(path="/ws")
    return await _start(
        "nginx-backend", prefix, _write_config(prefix, port, ws_port, locations), port, logdir
    )


async def start_front(prefix: Path, port: int, forwarded: int, logdir: Path) -> Child:
    """The classic front: nginx on ``port`` proxying everything to the ``ssh -R`` port ``forwarded``."""
    locations = _PROXY.format(path="/")
    return await _start(
        "nginx-front", prefix, _write_config(prefix, port, forwarded, locations), port, logdir
    )
