"""Visitor auth decisions, redirect targets and the failure limiter (DESIGN §3.3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.auth import (
    AccessRequest,
    FailureLimiter,
    Verdict,
    decide,
    guest_may_visit,
    may_visit,
    origin_of,
    origin_ok,
    safe_local_path,
    safe_next,
    wants_html,
)
from relay.config import PublicUrl
from relay.datadir import ensure_data_dir
from relay.proxy.credentials import Credentials
from relay.proxy.portal import Portal
from relay.sso import SsoCodes
from relay.store import Store
from relay.tunnels import Registry

TUNNEL = "https://lab.relay.example.com"
OWNER = 1
OTHER = 2
HTML = "text/html,application/xhtml+xml,*/*;q=0.8"


def _req(
    method: str = "GET",
    *,
    user_id: int | None = OWNER,
    origin: str | None = None,
    accept: str = "",
    is_upgrade: bool = False,
) -> AccessRequest:
    return AccessRequest(
        method=method,
        is_upgrade=is_upgrade,
        origin=origin,
        accept=accept,
        tunnel_origin=TUNNEL,
        user_id=user_id,
    )


# -- decide ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"])
def test_owner_is_allowed(method: str) -> None:
    assert decide(_req(method), owner_id=OWNER) is Verdict.ALLOW


def test_other_user_is_forbidden() -> None:
    assert decide(_req(user_id=OTHER), owner_id=OWNER) is Verdict.FORBIDDEN
    assert decide(_req("POST", user_id=OTHER, accept=HTML), owner_id=OWNER) is Verdict.FORBIDDEN


def test_shared_user_is_allowed() -> None:
    assert decide(_req(user_id=OTHER), owner_id=OWNER, shared_with=frozenset({OTHER})) is Verdict.ALLOW
    assert decide(_req(user_id=3), owner_id=OWNER, shared_with=frozenset({OTHER})) is Verdict.FORBIDDEN


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_browser_navigation_without_credential_goes_to_login(method: str) -> None:
    assert decide(_req(method, user_id=None, accept=HTML), owner_id=OWNER) is Verdict.LOGIN
    assert decide(_req(method, user_id=None, accept="TEXT/HTML"), owner_id=OWNER) is Verdict.LOGIN


@pytest.mark.parametrize("accept", ["", "application/json", "*/*", "image/png"])
def test_non_html_without_credential_is_unauthorized(accept: str) -> None:
    assert decide(_req(user_id=None, accept=accept), owner_id=OWNER) is Verdict.UNAUTHORIZED


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_non_navigation_methods_without_credential_are_unauthorized_even_for_html(method: str) -> None:
    assert decide(_req(method, user_id=None, accept=HTML), owner_id=OWNER) is Verdict.UNAUTHORIZED


def test_cross_origin_websocket_upgrade_is_bad_origin_even_for_owner() -> None:
    req = _req(is_upgrade=True, origin="https://evil.relay.example.com")
    assert decide(req, owner_id=OWNER) is Verdict.BAD_ORIGIN
    assert decide(_req(is_upgrade=True, origin="null"), owner_id=OWNER) is Verdict.BAD_ORIGIN
    # Another scheme or port is another origin.
    assert (
        decide(_req(is_upgrade=True, origin="http://lab.relay.example.com"), owner_id=OWNER)
        is Verdict.BAD_ORIGIN
    )
    assert (
        decide(_req(is_upgrade=True, origin="https://lab.relay.example.com:8443"), owner_id=OWNER)
        is Verdict.BAD_ORIGIN
    )


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_cross_origin_unsafe_method_is_bad_origin(method: str) -> None:
    req = _req(method, origin="https://other.relay.example.com")
    assert decide(req, owner_id=OWNER) is Verdict.BAD_ORIGIN


def test_cross_origin_safe_method_is_not_an_origin_problem() -> None:
    assert decide(_req("GET", origin="https://evil.example"), owner_id=OWNER) is Verdict.ALLOW


def test_same_origin_upgrade_and_post_are_allowed() -> None:
    assert decide(_req(is_upgrade=True, origin=TUNNEL), owner_id=OWNER) is Verdict.ALLOW
    assert decide(_req(is_upgrade=True, origin=TUNNEL.upper() + "/"), owner_id=OWNER) is Verdict.ALLOW
    assert decide(_req("POST", origin=TUNNEL), owner_id=OWNER) is Verdict.ALLOW


def test_missing_origin_is_allowed() -> None:
    assert decide(_req("POST", origin=None), owner_id=OWNER) is Verdict.ALLOW
    assert decide(_req(is_upgrade=True, origin=None), owner_id=OWNER) is Verdict.ALLOW


def test_missing_origin_still_needs_a_credential() -> None:
    assert decide(_req(is_upgrade=True, origin=None, user_id=None), owner_id=OWNER) is Verdict.UNAUTHORIZED


def test_public_tunnel_allows_anyone_but_still_checks_origin() -> None:
    assert decide(_req(user_id=None), owner_id=OWNER, public=True) is Verdict.ALLOW
    assert decide(_req("POST", user_id=OTHER), owner_id=OWNER, public=True) is Verdict.ALLOW
    cross = _req("POST", user_id=None, origin="https://evil.example")
    assert decide(cross, owner_id=OWNER, public=True) is Verdict.BAD_ORIGIN


def test_helpers() -> None:
    assert may_visit(1, owner_id=1)
    assert not may_visit(2, owner_id=1)
    assert may_visit(2, owner_id=1, shared_with=frozenset({2}))
    assert wants_html("text/html")
    assert not wants_html("application/json")
    assert origin_ok(method="GET", is_upgrade=False, origin="https://x", tunnel_origin=TUNNEL)
    assert not origin_ok(method="GET", is_upgrade=True, origin="https://x", tunnel_origin=TUNNEL)
    assert origin_of("https", "a.example", 443) == "https://a.example"
    assert origin_of("https", "a.example", None) == "https://a.example"
    assert origin_of("http", "a.example", 80) == "http://a.example"
    assert origin_of("http", "a.example", 8080) == "http://a.example:8080"
    assert origin_of("https", "a.example", 80) == "https://a.example:80"


# -- safe_next -------------------------------------------------------------------------------------

SERVED = frozenset({"lab.localhost", "other.localhost"})


def _next(url: str, *, scheme: str = "http", port: int | None = 8080) -> str | None:
    return safe_next(
        url, scheme=scheme, port=port, relay_domain="localhost", is_served_host=SERVED.__contains__
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://lab.localhost:8080/",
        "http://lab.localhost:8080",
        "http://other.localhost:8080/lab/tree?x=1#frag",
        "http://LAB.localhost:8080/Path",
    ],
)
def test_safe_next_accepts_tunnel_hosts_on_same_scheme_and_port(url: str) -> None:
    assert _next(url) == url


def test_safe_next_default_port() -> None:
    assert _next("https://lab.localhost/", scheme="https", port=None) == "https://lab.localhost/"
    assert _next("https://lab.localhost/", scheme="https", port=443) == "https://lab.localhost/"
    assert _next("https://lab.localhost:8443/", scheme="https", port=None) is None


@pytest.mark.parametrize(
    "url",
    [
        "",
        "http://evil.com:8080/",
        "http://localhost:8080/",  # the relay host itself
        "http://LOCALHOST:8080/_relay/login",
        "http://unknown.localhost:8080/",
        "https://lab.localhost:8080/",  # other scheme
        "http://lab.localhost/",  # other port
        "http://lab.localhost:9090/",
        "http://evil.com@lab.localhost:8080/",
        "http://lab.localhost:8080@evil.com/",
        "http://lab.localhost:8080\\@evil.com/",
        "http://lab.localhost:8080/\\evil",
        "http:\\\\evil.com",
        "//lab.localhost:8080/",
        "/relative/path",
        "javascript:alert(1)",
        "JavaScript://lab.localhost:8080/%0aalert(1)",
        "data:text/html,<script>alert(1)</script>",
        "http://lab.localhost:8080/" + "a" * 5000,
        "http://lab localhost:8080/",
        "http://[::1]:8080/",
    ],
)
def test_safe_next_refuses(url: str) -> None:
    assert _next(url) is None


@pytest.mark.parametrize(
    "url", ["http://lab.localhost:99999/", "http://lab.localhost:\u00b2/", "http://lab.localhost:0/"]
)
def test_safe_next_refuses_invalid_ports_without_raising(url: str) -> None:
    # A visitor controls ``next``: an out-of-range or non-ASCII port must be refused, not crash.
    assert _next(url) is None


@pytest.fixture
def portal(tmp_path: Path):
    store = Store.open(ensure_data_dir(tmp_path / "data"))
    limiter = FailureLimiter(10, 60.0)
    public = PublicUrl("http", "localhost", 8080)
    yield Portal(
        store=store,
        registry=Registry(),
        public=public,
        sso=SsoCodes(),
        credentials=Credentials(store=store, limiter=limiter, public=public),
    )
    store.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://evil-localhost:8080/",
        "http://a.localhost.evil.com:8080/",
        "http://evillocalhost:8080/",
        "http://a.b.localhost:8080/",
        "http://localhost:8080/",
        "http://.localhost:8080/",
    ],
)
def test_safe_next_with_the_relays_own_host_rule_refuses_suffix_tricks(portal: Portal, url: str) -> None:
    got = safe_next(
        url, scheme="http", port=8080, relay_domain="localhost", is_served_host=portal.is_served_host
    )
    assert got is None


def test_safe_next_with_the_relays_own_host_rule_accepts_a_tunnel(portal: Portal) -> None:
    url = "http://lab.localhost:8080/lab"
    assert (
        safe_next(
            url, scheme="http", port=8080, relay_domain="localhost", is_served_host=portal.is_served_host
        )
        == url
    )


# -- safe_local_path -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/lab", "/lab/tree?x=1", "/a//b"])
def test_safe_local_path_accepts_absolute_paths(path: str) -> None:
    assert safe_local_path(path) == path


@pytest.mark.parametrize(
    "path",
    ["//evil.com", "//evil.com/x", "http://x", "\\\\x", "/\\evil.com", "", "lab", "/a\nb", "/a\x00", "/a\tb"],
)
def test_safe_local_path_refuses_other_targets(path: str) -> None:
    assert safe_local_path(path) == "/"


# -- FailureLimiter --------------------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_limiter_allows_until_limit_then_refuses() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(3, 60.0, clock=clock)
    assert limiter.retry_after("1.2.3.4") == 0
    limiter.fail("1.2.3.4")
    limiter.fail("1.2.3.4")
    assert limiter.retry_after("1.2.3.4") == 0
    limiter.fail("1.2.3.4")
    assert limiter.retry_after("1.2.3.4") == 60


def test_limiter_window_slides() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(3, 60.0, clock=clock)
    for step in (0.0, 10.0, 20.0):
        clock.now = 1000.0 + step
        limiter.fail("c")
    assert limiter.retry_after("c") == 40  # until the first failure (t=0) is 60 s old
    clock.now = 1000.0 + 59.5
    assert limiter.retry_after("c") == 1
    clock.now = 1000.0 + 60.0
    assert limiter.retry_after("c") == 0
    limiter.fail("c")  # back at the limit: now waits for the t=10 failure to age out
    assert limiter.retry_after("c") == 10


def test_limiter_expires_after_window() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(2, 30.0, clock=clock)
    limiter.fail("c")
    limiter.fail("c")
    assert limiter.retry_after("c") > 0
    clock.now += 30.0
    assert limiter.retry_after("c") == 0
    limiter.fail("c")
    assert limiter.retry_after("c") == 0  # only one recent failure


def test_limiter_is_per_client() -> None:
    limiter = FailureLimiter(1, 60.0, clock=FakeClock())
    limiter.fail("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") > 0
    assert limiter.retry_after("10.0.0.2") == 0


def test_limiter_evicts_oldest_clients_beyond_max() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(1, 60.0, max_clients=2, clock=clock)
    limiter.fail("a")
    clock.now += 1
    limiter.fail("b")
    clock.now += 1
    limiter.fail("a")  # refreshes a: b is now the oldest
    clock.now += 1
    limiter.fail("c")
    assert limiter.retry_after("b") == 0
    assert limiter.retry_after("a") > 0
    assert limiter.retry_after("c") > 0


# -- who may visit: the whole table --------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_id", "shared", "guest", "public", "accept", "verdict"),
    [
        (OWNER, frozenset(), False, False, "", Verdict.ALLOW),  # the owner
        (OTHER, frozenset({OTHER}), False, False, "", Verdict.ALLOW),  # a user it is shared with
        (OTHER, frozenset({3}), False, False, "", Verdict.FORBIDDEN),  # shared with someone else
        (None, frozenset(), True, False, "", Verdict.ALLOW),  # a link's guest
        (OTHER, frozenset(), True, False, "", Verdict.ALLOW),  # a signed-in user holding a guest session
        (None, frozenset(), False, True, "", Verdict.ALLOW),  # public
        (None, frozenset(), False, False, HTML, Verdict.LOGIN),  # nobody, in a browser
        (None, frozenset(), False, False, "", Verdict.UNAUTHORIZED),  # nobody, a script
    ],
)
def test_who_may_visit(
    user_id: int | None, shared: frozenset[int], guest: bool, public: bool, accept: str, verdict: Verdict
) -> None:
    req = AccessRequest(
        method="GET", is_upgrade=False, origin=None, accept=accept, tunnel_origin=TUNNEL,
        user_id=user_id, guest=guest,
    )  # fmt: skip
    assert decide(req, owner_id=OWNER, shared_with=shared, public=public) is verdict


def test_a_guest_still_meets_the_origin_rule() -> None:
    req = AccessRequest(
        method="GET", is_upgrade=True, origin="http://evil.localhost", accept="", tunnel_origin=TUNNEL,
        user_id=None, guest=True,
    )  # fmt: skip
    assert decide(req, owner_id=OWNER) is Verdict.BAD_ORIGIN


@pytest.mark.parametrize(
    ("guest_host", "expires_at", "host", "now", "allowed"),
    [
        ("lab.x", 100.0, "lab.x", 99.0, True),
        ("lab.x", 100.0, "lab.x", 100.0, False),  # the link's end is the session's end
        ("lab.x", 100.0, "other.x", 50.0, False),  # worth nothing on another host
        (None, 100.0, "lab.x", 50.0, False),  # no guest session
    ],
)
def test_guest_may_visit(
    guest_host: str | None, expires_at: float, host: str, now: float, allowed: bool
) -> None:
    assert guest_may_visit(guest_host=guest_host, expires_at=expires_at, host=host, now=now) is allowed
