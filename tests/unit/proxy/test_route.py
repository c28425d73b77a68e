"""What one request gets: a table of (request, credential, tunnel) → expected answer for
:meth:`relay.proxy.route.Router.route`, in memory over a real SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from relay.auth import FailureLimiter
from relay.config import PublicUrl
from relay.datadir import ensure_data_dir
from relay.http1 import parse_request_head
from relay.proxy.credentials import Credentials
from relay.proxy.portal import Portal
from relay.proxy.route import Answer, Forward, RelayHost, Router, SshWebSocket
from relay.sso import SsoCodes
from relay.store import Store
from relay.tunnels import Registry, Stream, Tunnel


@dataclass
class World:
    router: Router
    tokens: dict[str, str]  # user name → token
    tunnel: Tunnel  # lab.localhost, owned by alice


async def _never_opened() -> Stream:
    raise AssertionError("routing never opens a channel")


def _world(tmp_path: Path, public: PublicUrl) -> Iterator[World]:
    store = Store.open(ensure_data_dir(tmp_path / "data"))
    tokens = {}
    users = {}
    for name in ("alice", "bob"):
        users[name] = store.add_user(name)
        tokens[name] = store.create_token(name)[1]
    store.claim_name("lab", users["alice"].id)
    store.claim_name("away", users["alice"].id)
    registry = Registry()
    tunnel = Tunnel("lab.localhost", users["alice"].id, "alice", "127.0.0.1:1", _never_opened)
    registry.add(tunnel)
    credentials = Credentials(store=store, limiter=FailureLimiter(10, 60.0), public=public)
    portal = Portal(store=store, registry=registry, public=public, sso=SsoCodes(), credentials=credentials)
    router = Router(registry=registry, portal=portal, credentials=credentials, public=public, trust_proxy=())
    yield World(router, tokens, tunnel)
    store.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from _world(tmp_path, PublicUrl("http", "localhost", 8080))


@pytest.fixture
def secure_world(tmp_path: Path) -> Iterator[World]:
    yield from _world(tmp_path, PublicUrl("https", "localhost", None))


def _head(line: str, host: str, headers: dict[str, str]) -> bytes:
    fields = "".join(f"{k}: {v}\r\n" for k, v in {"Host": host, **headers}.items())
    return f"{line} HTTP/1.1\r\n{fields}\r\n".encode()


HTML = {"Accept": "text/html"}
JSON = {"Accept": "application/json"}
ALICE = {"X-Relay-Token": "{alice}"}
WS = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "MDEyMzQ1Njc4OWFiY2RlZg==",
}
BOB = {"X-Relay-Token": "{bob}"}

# (case, request line, host, headers with {alice}/{bob} for tokens, expected: status, "forward" or "relay")
CASES = [
    ("health at the relay's address", "GET /_relay/health", "127.0.0.1:8080", {}, 200),
    ("tls-ask for a stranger's host", "GET /_relay/tls-ask?domain=evil.test", "127.0.0.1", {}, 404),
    ("tls-ask for an owned name", "GET /_relay/tls-ask?domain=lab.localhost", "127.0.0.1", {}, 200),
    ("the relay's home page", "GET /", "localhost:8080", HTML, "relay"),
    ("a login form", "POST /_relay/login", "localhost:8080", {"Content-Length": "10"}, "relay"),
    ("a chunked login form", "POST /_relay/login", "localhost:8080", {"Transfer-Encoding": "chunked"}, 411),
    ("a huge login form", "POST /_relay/login", "localhost:8080", {"Content-Length": "99999"}, 413),
    ("SSH over WebSocket, no credential needed", "GET /_relay/ssh", "localhost:8080", WS, "ssh"),
    ("SSH over WebSocket, whatever credential", "GET /_relay/ssh", "localhost:8080", {**WS, **ALICE}, "ssh"),
    ("the SSH WebSocket path on a tunnel host", "GET /_relay/ssh", "lab.localhost:8080", WS, 404),
    ("the relay's client page", "GET /_relay/client", "localhost:8080", HTML, "relay"),
    ("no tunnel, name unowned", "GET /", "nobody.localhost:8080", HTML, 404),
    ("offline, a browser without credential", "GET /", "away.localhost:8080", HTML, 302),
    ("offline, a script without credential", "GET /", "away.localhost:8080", JSON, 401),
    ("offline, the owner", "GET /", "away.localhost:8080", {"X-Relay-Token": "{alice}"}, 502),
    ("offline, another user", "GET /", "away.localhost:8080", {"X-Relay-Token": "{bob}"}, 403),
    (
        "offline status, the owner",
        "GET /_relay/status",
        "away.localhost:8080",
        {"X-Relay-Token": "{alice}"},
        200,
    ),
    ("offline status, nobody", "GET /_relay/status", "away.localhost:8080", JSON, 401),
    ("live status, the owner", "GET /_relay/status", "lab.localhost:8080", ALICE, 200),
    (
        "live status, another user",
        "GET /_relay/status",
        "lab.localhost:8080",
        {"X-Relay-Token": "{bob}"},
        403,
    ),
    ("no tunnel, nested name", "GET /", "a.lab.localhost:8080", HTML, 404),
    ("a relay path on a tunnel host", "GET /_relay/other", "lab.localhost:8080", HTML, 404),
    ("a browser without credential", "GET /lab", "lab.localhost:8080", HTML, 302),
    ("a script without credential", "GET /api", "lab.localhost:8080", JSON, 401),
    ("a wrong token", "GET /api", "lab.localhost:8080", {"X-Relay-Token": "rly_nope"}, 401),
    ("the owner's token", "GET /api", "lab.localhost:8080", {"X-Relay-Token": "{alice}"}, "forward"),
    ("another user's token", "GET /api", "lab.localhost:8080", {"X-Relay-Token": "{bob}"}, 403),
    (
        "the owner, cross-origin POST",
        "POST /api",
        "lab.localhost:8080",
        {"X-Relay-Token": "{alice}", "Origin": "http://evil.test", "Content-Length": "0"},
        403,
    ),
    (
        "the owner, same-origin POST",
        "POST /api",
        "lab.localhost:8080",
        {"X-Relay-Token": "{alice}", "Origin": "http://lab.localhost:8080", "Content-Length": "0"},
        "forward",
    ),
    ("a token link", "GET /lab?relay_token={alice}", "lab.localhost:8080", HTML, 303),
    ("a token link, percent-encoded", "GET /lab?relay%5Ftoken={alice}", "lab.localhost:8080", HTML, 303),
    ("another user's token link", "GET /lab?relay_token={bob}", "lab.localhost:8080", HTML, 403),
    (
        "a token link on POST",
        "POST /lab?relay_token={alice}",
        "lab.localhost:8080",
        {"Content-Length": "0"},
        401,
    ),
]


@pytest.mark.parametrize(("case", "line", "host", "headers", "expected"), CASES, ids=[c[0] for c in CASES])
def test_route(
    world: World, case: str, line: str, host: str, headers: dict[str, str], expected: object
) -> None:
    fill = {k: v.format(**world.tokens) for k, v in headers.items()}
    head = parse_request_head(_head(line.format(**world.tokens), host, fill))
    got = world.router.route(head, scheme="http", peer_ip="127.0.0.1", client="127.0.0.1")
    if expected == "forward":
        assert isinstance(got, Forward) and got.tunnel is world.tunnel
    elif expected == "relay":
        assert isinstance(got, RelayHost)
    elif expected == "ssh":
        assert isinstance(got, SshWebSocket)
    else:
        assert isinstance(got, Answer), got
        assert got.reply.status == expected, (case, got.reply)


def test_a_wrong_token_is_noted_for_the_access_line(world: World) -> None:
    head = parse_request_head(_head("GET /", "lab.localhost:8080", {"X-Relay-Token": "rly_nope"}))
    got = world.router.route(head, scheme="http", peer_ip="127.0.0.1", client="127.0.0.1")
    assert isinstance(got, Answer) and got.note == "invalid X-Relay-Token"


def test_a_token_link_loses_its_token_in_the_redirect(world: World) -> None:
    token = world.tokens["alice"]
    head = parse_request_head(_head(f"GET /lab?a=1&relay_token={token}&b=2", "lab.localhost:8080", HTML))
    got = world.router.route(head, scheme="http", peer_ip="127.0.0.1", client="127.0.0.1")
    assert isinstance(got, Answer)
    headers = dict(got.reply.headers)
    assert headers["Location"] == "http://lab.localhost:8080/lab?a=1&b=2"
    assert token not in str(got.reply.headers)


@pytest.mark.parametrize(
    ("host", "status"),
    [("lab.localhost", 308), ("localhost", 308), ("nobody.example.test", 404)],
)
def test_plain_http_under_https_redirects_without_the_token(
    secure_world: World, host: str, status: int
) -> None:
    token = secure_world.tokens["alice"]
    head = parse_request_head(_head(f"GET /x?relay_token={token}", host, HTML))
    got = secure_world.router.route(head, scheme="http", peer_ip="127.0.0.1", client="127.0.0.1")
    assert isinstance(got, Answer) and got.reply.status == status
    if status == 308:
        assert dict(got.reply.headers)["Location"] == f"https://{host}/x"


def test_https_is_routed_to_the_tunnel(secure_world: World) -> None:
    token = secure_world.tokens["alice"]
    head = parse_request_head(_head("GET /", "lab.localhost", {"X-Relay-Token": token}))
    got = secure_world.router.route(head, scheme="https", peer_ip="127.0.0.1", client="127.0.0.1")
    assert isinstance(got, Forward)
