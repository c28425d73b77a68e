"""The relay's wire vocabulary: every name, limit and timeout that crosses a socket.

Users, scripts and the client depend on these values (see DESIGN.md §3); change them only together
with the docs and the tests.
"""

from __future__ import annotations

from .limits import Limits

_DEFAULTS = Limits()

#: Ports in ``ssh -R NAME:PORT:...`` that mean "an HTTP tunnel". Nothing is ever bound on them.
TUNNEL_PORTS = frozenset({80, 443})

#: Bind addresses in ``-R`` that select the user's default name.
DEFAULT_BIND_ADDRESSES = frozenset({"", "localhost", "0.0.0.0", "*", "::", "127.0.0.1"})

#: Exec commands a session may run (``ssh relay -- tunnels --json``).
EXEC_TUNNELS = "tunnels"

#: Header carrying a visitor token for scripts and API clients.
TOKEN_HEADER = "x-relay-token"
#: Query parameter carrying a visitor token; exchanged for a cookie by a 303.
TOKEN_QUERY = "relay_token"
#: Session cookie name over plain HTTP, and its ``__Host-`` form under HTTPS.
SESSION_COOKIE = "relay_session"
SESSION_COOKIE_SECURE = "__Host-relay_session"
#: Sign-in state cookie, set on a tunnel host before it sends the browser to the login origin; the
#: hand-off code is redeemed there only together with it (the same browser that started).
STATE_COOKIE = "relay_state"
STATE_COOKIE_SECURE = "__Host-relay_state"
#: How long a started sign-in may take, seconds (typing a token included).
STATE_TTL = 600
#: A share link's guest session on its tunnel host (never valid anywhere else).
GUEST_COOKIE = "relay_guest"
GUEST_COOKIE_SECURE = "__Host-relay_guest"
#: On the relay host only, between opening a share link and its hand-off: the link's code, so that
#: it never travels to the tunnel host (``__Secure-``: its path is the share path, not ``/``).
LINK_COOKIE = "relay_link"
LINK_COOKIE_SECURE = "__Secure-relay_link"
RELAY_COOKIE_NAMES = frozenset(
    {
        SESSION_COOKIE,
        SESSION_COOKIE_SECURE,
        STATE_COOKIE,
        STATE_COOKIE_SECURE,
        GUEST_COOKIE,
        GUEST_COOKIE_SECURE,
        LINK_COOKIE,
        LINK_COOKIE_SECURE,
    }
)

#: Every path the relay answers itself lives under this prefix, on any host it serves.
RELAY_PATH_PREFIX = "/_relay/"
LOGIN_PATH = "/_relay/login"
LOGOUT_PATH = "/_relay/logout"
SSO_PATH = "/_relay/sso"
HEALTH_PATH = "/_relay/health"
#: The dashboard's pages, forms and event stream on the relay host (its home page ``/`` too, once
#: signed in). The front passes who the visitor is in these headers, stripped from visitors' own.
DASHBOARD_PATH = "/_relay/dashboard"
DASHBOARD_HEADER_PREFIX = "x-relay-dashboard-"
DASHBOARD_USER_HEADER = "x-relay-dashboard-user"
DASHBOARD_SESSION_HEADER = "x-relay-dashboard-session"
DASHBOARD_CSRF_HEADER = "x-relay-dashboard-csrf"
DASHBOARD_CLIENT_HEADER = "x-relay-dashboard-client"  # the visitor's address (for the audit log)
#: A share link is ``SHARE_PATH/CODE`` on the relay host; ``SHARE_PATH?host=&state=`` continues it.
SHARE_PATH = "/_relay/share"
#: On a tunnel host, for those who may visit it: ``{"live": ..., "last_seen": ...}`` (the offline
#: page polls it and reloads itself once the tunnel is back).
STATUS_PATH = "/_relay/status"
#: On a tunnel host: where a share link's hand-off starts (sets the sign-in state, nothing else).
GUEST_PATH = "/_relay/guest"
#: On the relay host, public: the client's install page, and the wheel of the running version at
#: ``DIST_PATH/<file>`` (DESIGN §3.7).
CLIENT_PATH = "/_relay/client"
DIST_PATH = "/_relay/dist"
#: On the relay host: SSH over WebSocket (``wss://RELAY/_relay/ssh``), for networks that allow only 443.
SSH_WS_PATH = "/_relay/ssh"
#: Caddy's on-demand TLS ``ask``: 200 only for hosts the relay serves (``?domain=HOST``).
TLS_ASK_PATH = "/_relay/tls-ask"

#: Session lifetime, seconds (a browser session is re-established through the login origin).
SESSION_TTL = 7 * 24 * 3600
#: Single-use SSO hand-off code lifetime, seconds.
SSO_CODE_TTL = 60

#: Largest body the relay reads itself (its own login form), bytes.
MAX_FORM_BYTES = 16 * 1024
#: Read size for streaming bodies, bytes (asyncssh's packet size is 32 KiB).
PUMP_CHUNK = 64 * 1024

# Every other limit and timeout (head size and count, keep-alive, channel open, login, keepalive,
# failure limits, shutdown grace) is a named, configurable field of relay.limits.Limits. The names
# below are their defaults, for code that has no Limits at hand (the parsers' defaults, tests).
MAX_HEAD_BYTES: int = _DEFAULTS.http_max_head_bytes
MAX_HEADERS: int = _DEFAULTS.http_max_headers
KEEPALIVE_IDLE_TIMEOUT: float = _DEFAULTS.http_keepalive_timeout
CHANNEL_OPEN_TIMEOUT: float = _DEFAULTS.upstream_open_timeout
SHUTDOWN_GRACE: float = _DEFAULTS.shutdown_grace
SSH_LOGIN_TIMEOUT: float = _DEFAULTS.ssh_login_timeout
SSH_KEEPALIVE_INTERVAL: float = _DEFAULTS.ssh_keepalive_interval
SSH_KEEPALIVE_COUNT_MAX: int = _DEFAULTS.ssh_keepalive_count
AUTH_FAILURE_LIMIT: int = _DEFAULTS.auth_failure_limit
AUTH_FAILURE_WINDOW: float = _DEFAULTS.auth_failure_window

#: Offered alone: the client's preference picks the cipher, and stock OpenSSH prefers chacha20-poly1305,
#: which asyncssh runs at 0.4-0.6x the speed of AES-GCM (DESIGN §5). Every OpenSSH since 6.2 has AES-GCM.
SSH_ENCRYPTION_ALGS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
