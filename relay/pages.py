"""The relay's own HTML: the login form, the signed-in home page, and error pages. Pure builders."""

from __future__ import annotations

import time
from html import escape

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:34rem;margin:4rem auto;padding:0 1rem;"
    "color:#222}pre{background:#f3f3f3;padding:.6rem;overflow-x:auto;white-space:pre-wrap;"
    "word-break:break-all}h1{font-size:1.4rem}input[type=password]{width:100%;padding:.5rem;font-size:1rem;"
    "box-sizing:border-box}button{margin-top:.8rem;padding:.5rem 1.2rem;font-size:1rem}"
    ".err{color:#b00020}.muted{color:#666;font-size:.9rem}code{background:#f3f3f3;padding:0 .2rem}"
)


def _page(title: str, body: str) -> bytes:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        # same-origin, not no-referrer: under no-referrer a browser sends "Origin: null" with the login
        # form, which the relay's Origin check must refuse.
        f"<meta name=referrer content=same-origin><title>{escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    ).encode()


def login_page(*, next_url: str, error: str = "", relay_host: str, state: str = "") -> bytes:
    """The token form; ``error`` above it (a wrong token, or a user who may not open ``next_url``)."""
    err = f"<p class=err role=alert>{escape(error)}</p>" if error else ""
    target = f"<p class=muted>to open <code>{escape(next_url)}</code></p>" if next_url else ""
    return _page(
        "Sign in · Relay",
        f"<h1>Sign in to {escape(relay_host)}</h1>{target}{err}"
        '<form method=post action="/_relay/login">'
        "<label for=token>Access token</label>"
        "<input type=password id=token name=token autocomplete=current-password required autofocus>"
        f'<input type=hidden name=next value="{escape(next_url)}">'
        f'<input type=hidden name=state value="{escape(state)}">'
        "<button type=submit>Sign in</button></form>"
        "<p class=muted>Ask the relay's admin for a token (<code>relay token create USER</code>).</p>",
    )


def home_page(
    *,
    user: str,
    tunnel_urls: list[str],
    shared: list[tuple[str, str]] | None = None,
    public: frozenset[str] = frozenset(),
) -> bytes:
    """The signed-in home page: the user's live tunnels, and live tunnels others shared with them
    (``shared``: (URL, owner))."""
    if tunnel_urls:
        items = "".join(
            f'<li><a href="{escape(u)}">{escape(u)}</a>'
            + (" <span class=muted>public: no sign-in needed</span>" if u in public else "")
            + "</li>"
            for u in tunnel_urls
        )
        listing = f"<p>Your live tunnels:</p><ul>{items}</ul>"
    else:
        listing = "<p>You have no live tunnels. Open one with <code>ssh -R NAME:80:localhost:PORT</code>.</p>"
    if shared:
        items = "".join(
            f'<li><a href="{escape(u)}">{escape(u)}</a> <span class=muted>shared by {escape(o)}</span></li>'
            for u, o in shared
        )
        listing += f"<p>Shared with you:</p><ul>{items}</ul>"
    return _page(
        "Relay",
        f"<h1>Signed in as {escape(user)}</h1>{listing}"
        '<form method=post action="/_relay/logout"><button type=submit>Sign out</button></form>',
    )


def anonymous_home(*, relay_host: str) -> bytes:
    return _page("Relay", f'<h1>{escape(relay_host)}</h1><p><a href="/_relay/login">Sign in</a></p>')


def client_page(*, relay_origin: str, wheel_url: str, sha256: str, version: str) -> bytes:
    """The client's install page (public): the pip line with the wheel's hash pinned, the hash, and
    a Colab cell that needs only the ``RELAY_URL`` secret."""
    pinned = f"{wheel_url}#sha256={sha256}"
    pip = f'pip install "relay-client[lab] @ {pinned}"'
    cell = (
        f'!pip install -q "relay-client[lab] @ {pinned}"\n'
        "from client.notebook import connect\n"
        "conn = connect(lab=True)  # reads the RELAY_URL secret: your connect string\n"
        "print(conn.url)"
    )
    return _page(
        "Install relay-client · Relay",
        f"<h1>relay-client {escape(version)}</h1>"
        f"<p>The client for <code>{escape(relay_origin)}</code>, served by the relay itself: always the "
        "version it runs. Its dependencies come from the package index as usual.</p>"
        f"<p>Install:</p><pre><code>{escape(pip)}</code></pre>"
        f'<p class=muted>Wheel: <a href="{escape(wheel_url)}">{escape(wheel_url.rsplit("/", 1)[-1])}</a>'
        f"<br>SHA-256: <code>{escape(sha256)}</code> (pip checks it: it is in the line above)</p>"
        "<p>In Colab, add the secret <code>RELAY_URL</code> (the <code>relay://…</code> connect string "
        "your admin gave you, with notebook access on) and run:</p>"
        f"<pre><code>{escape(cell)}</code></pre>"
        "<p>In a terminal: <code>relay-client connect --port 8888</code> with <code>RELAY_URL</code> "
        "set, or <code>relay-client connect --relay relay://… --lab</code>.</p>",
    )


def forbidden_page(message: str, *, login_url: str) -> bytes:
    """A 403 for a signed-in visitor whose user may not open this tunnel, with a way forward."""
    return _page(
        "403 Forbidden",
        f"<h1>403 Forbidden</h1><p>{escape(message)}.</p>"
        f'<p><a href="{escape(login_url)}">Sign in as someone else</a></p>',
    )


def link_gone_page(message: str) -> bytes:
    """A share link that cannot be opened (410): never the app, never a hint about the host."""
    return _page(
        "Link no longer valid · Relay",
        f"<h1>This link is no longer valid</h1><p>{escape(message)}</p>"
        "<p class=muted>Share links end when they expire or when their owner revokes them.</p>",
    )


def ago(seconds: float) -> str:
    """``just now``, ``5 min ago``, ``3 h ago``, ``2 days ago``."""
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 2 * 86400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} days ago"


def offline_page(*, host: str, last_seen: float | None, now: float, nonce: str, status_path: str) -> bytes:
    """502 for a visitor allowed on a host whose client is away: when it was last seen, and a small
    script that polls the relay (never the backend) and reloads once the tunnel is back."""
    if last_seen is None:
        seen = "It has not been seen since this relay started keeping track."
    else:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(last_seen))
        seen = f"Last seen {when} ({ago(now - last_seen)})."
    name = host.partition(".")[0]
    script = (
        f"<script nonce={nonce}>(function(){{var t=setInterval(function(){{"
        f"fetch('{status_path}',{{cache:'no-store',credentials:'same-origin'}})"
        ".then(function(r){return r.ok?r.json():{};})"
        ".then(function(s){if(s.live){clearInterval(t);location.reload();}})"
        ".catch(function(){});},3000);})();</script>"
    )
    return _page(
        f"{name} is offline · Relay",
        f"<h1>{escape(name)} is offline</h1>"
        f"<p><code>{escape(host)}</code>: its client is not connected. {escape(seen)}</p>"
        "<p>It comes back at this same address when its client reconnects. This page waits and "
        "reloads by itself as soon as it is back.</p>"
        "<p class=muted role=status>Waiting for the tunnel…</p>" + script,
    )


def error_page(status: int, title: str, message: str) -> bytes:
    return _page(f"{status} {title}", f"<h1>{status} {escape(title)}</h1><p>{escape(message)}</p>")
