"""The relay's wire vocabulary: every name, limit and timeout that crosses a socket.

Users, scripts and the client depend on these values (see DESIGN.md §3); change them only together
with the docs and the tests.
"""

from __future__ import annotations

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
RELAY_COOKIE_NAMES = frozenset({SESSION_COOKIE, SESSION_COOKIE_SECURE})

#: Every path the relay answers itself lives under this prefix, on any host it serves.
RELAY_PATH_PREFIX = "/_relay/"
LOGIN_PATH = "/_relay/login"
LOGOUT_PATH = "/_relay/logout"
SSO_PATH = "/_relay/sso"
HEALTH_PATH = "/_relay/health"
#: Caddy's on-demand TLS ``ask``: 200 only for hosts the relay serves (``?domain=HOST``).
TLS_ASK_PATH = "/_relay/tls-ask"

#: Session lifetime, seconds (a browser session is re-established through the login origin).
SESSION_TTL = 7 * 24 * 3600
#: Single-use SSO hand-off code lifetime, seconds.
SSO_CODE_TTL = 60

#: Limits of a request head, bytes / count (a head larger than this gets 431).
MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100
#: Largest body the relay reads itself (its own login form), bytes.
MAX_FORM_BYTES = 16 * 1024
#: Read size for streaming bodies, bytes (asyncssh's packet size is 32 KiB).
PUMP_CHUNK = 64 * 1024

#: Seconds to wait for a request head on an idle keep-alive connection before closing it.
KEEPALIVE_IDLE_TIMEOUT = 75.0
#: Seconds to wait for the tunnel to accept a channel before answering 502.
CHANNEL_OPEN_TIMEOUT = 15.0
#: Seconds SIGTERM waits for in-flight requests before closing them.
SHUTDOWN_GRACE = 30.0

#: SSH: seconds a client has to authenticate.
SSH_LOGIN_TIMEOUT = 20.0
#: SSH keepalive: a probe every 30 s, three unanswered → dead (noticed within ~90 s).
SSH_KEEPALIVE_INTERVAL = 30.0
SSH_KEEPALIVE_COUNT_MAX = 3
#: Offered alone: the client's preference picks the cipher, and stock OpenSSH prefers chacha20-poly1305,
#: which asyncssh runs at 0.4-0.6x the speed of AES-GCM (DESIGN §5). Every OpenSSH since 6.2 has AES-GCM.
SSH_ENCRYPTION_ALGS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")

#: Failed credentials per client address before 429 / SSH refusal, and the window, seconds.
AUTH_FAILURE_LIMIT = 10
AUTH_FAILURE_WINDOW = 60.0
