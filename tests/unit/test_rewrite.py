"""Header rewriting between visitor and backend (DESIGN §3.3)."""

from __future__ import annotations

import ipaddress

import pytest

from relay.http1 import Headers, get_all, get_one
from relay.rewrite import (
    IPNetwork,
    client_address,
    cookie_value,
    downstream_headers,
    is_trusted,
    session_cookie,
    set_cookie_allowed,
    strip_relay_cookies,
    upstream_headers,
)

TRUSTED: tuple[IPNetwork, ...] = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))
RELAY_DOMAIN = "relay.example.com"

# -- cookies towards the backend -------------------------------------------------------------------


def test_strip_relay_cookies_removes_both_relay_cookie_names() -> None:
    value = "a=1; relay_session=SECRET; b=2; __Host-relay_session=SECRET2; c=3"
    assert strip_relay_cookies(value) == "a=1; b=2; c=3"


def test_strip_relay_cookies_keeps_other_pairs_byte_for_byte() -> None:
    pairs = [
        "_xsrf=2|abc|def=|123",
        'q="quoted value"',
        "jp=a=b=c",
        'username-localhost-8888="2|1:0|10:17"',
        "e=",
    ]
    value = "; ".join([pairs[0], "relay_session=x", *pairs[1:]])
    assert strip_relay_cookies(value) == "; ".join(pairs)
    assert strip_relay_cookies("; ".join(pairs)) == "; ".join(pairs)


def test_strip_relay_cookies_handles_spacing_and_lookalikes() -> None:
    assert strip_relay_cookies("  relay_session=x;a=1") == "a=1"
    assert strip_relay_cookies("relay_session =x; a=1") == "a=1"
    # Names are case-sensitive and only the exact relay names are removed.
    assert strip_relay_cookies("Relay_Session=1; relay_session2=2; my_relay_session=3") == (
        "Relay_Session=1; relay_session2=2; my_relay_session=3"
    )


def test_strip_relay_cookies_only_relay_cookies_gives_empty() -> None:
    assert strip_relay_cookies("relay_session=a; __Host-relay_session=b") == ""


def test_cookie_value_first_wins_across_headers() -> None:
    headers: Headers = [
        ("Accept", "*/*"),
        ("Cookie", "a=1; relay_session=first"),
        ("cookie", "relay_session=second"),
    ]
    assert cookie_value(headers, "relay_session") == "first"
    assert cookie_value(headers, "a") == "1"
    assert cookie_value(headers, "missing") is None


def test_cookie_value_is_exact_name_and_unquotes() -> None:
    headers: Headers = [("Cookie", 'xrelay_session=no; __Host-relay_session="quoted"; flag')]
    assert cookie_value(headers, "relay_session") is None
    assert cookie_value(headers, "__Host-relay_session") == "quoted"
    assert cookie_value(headers, "flag") is None


# -- request headers towards the backend -----------------------------------------------------------

VISITOR: Headers = [
    ("Host", "lab.relay.example.com"),
    ("Authorization", "token jupyter-secret"),
    ("X-Relay-Token", "rly_0123456789_secret"),
    ("Cookie", "relay_session=abc; _xsrf=x|y"),
    ("X-Forwarded-For", "6.6.6.6"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "evil.example"),
    ("Forwarded", "for=6.6.6.6;proto=https"),
    ("X-Real-IP", "6.6.6.6"),
    ("Accept", "text/html"),
]


def test_upstream_headers_from_untrusted_peer() -> None:
    out = upstream_headers(VISITOR, peer_ip="203.0.113.9", scheme="http", trusted=TRUSTED)
    assert out == [
        ("Host", "lab.relay.example.com"),
        ("Authorization", "token jupyter-secret"),
        ("Cookie", "_xsrf=x|y"),
        ("Accept", "text/html"),
        ("X-Forwarded-For", "203.0.113.9"),
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", "lab.relay.example.com"),
    ]


def test_upstream_headers_never_forward_the_relay_token_in_any_case() -> None:
    headers: Headers = [("Host", "a"), ("x-relay-TOKEN", "t1"), ("X-RELAY-TOKEN", "t2")]
    out = upstream_headers(headers, peer_ip="203.0.113.9", scheme="https", trusted=())
    assert get_all(out, "x-relay-token") == []
    assert not any("t1" in v or "t2" in v for _, v in out)


def test_upstream_headers_drop_cookie_header_left_empty() -> None:
    headers: Headers = [
        ("Host", "a"),
        ("Cookie", "relay_session=abc"),
        ("Cookie", "__Host-relay_session=d; k=v"),
    ]
    out = upstream_headers(headers, peer_ip="203.0.113.9", scheme="https", trusted=())
    assert get_all(out, "cookie") == ["k=v"]


def test_upstream_headers_leave_authorization_untouched() -> None:
    headers: Headers = [("Host", "a"), ("authorization", "Bearer  x.y.z "), ("Authorization", "token 2")]
    out = upstream_headers(headers, peer_ip="203.0.113.9", scheme="https", trusted=())
    assert [(k, v) for k, v in out if k.lower() == "authorization"] == headers[1:]


def test_upstream_headers_from_trusted_proxy_keep_its_forwarding_headers() -> None:
    out = upstream_headers(VISITOR, peer_ip="10.1.2.3", scheme="http", trusted=TRUSTED)
    assert get_all(out, "x-forwarded-for") == ["6.6.6.6, 10.1.2.3"]
    assert get_all(out, "x-forwarded-proto") == ["https"]
    assert get_all(out, "forwarded") == ["for=6.6.6.6;proto=https"]
    assert get_all(out, "x-real-ip") == ["6.6.6.6"]
    # Host is what the relay routed on, so X-Forwarded-Host always follows it.
    assert get_all(out, "x-forwarded-host") == ["lab.relay.example.com"]
    assert get_all(out, "x-relay-token") == []
    assert get_all(out, "cookie") == ["_xsrf=x|y"]


def test_upstream_headers_trusted_proxy_chain_over_several_headers() -> None:
    headers: Headers = [
        ("Host", "a"),
        ("X-Forwarded-For", "1.1.1.1, 2.2.2.2"),
        ("x-forwarded-for", "10.0.0.7"),
    ]
    out = upstream_headers(headers, peer_ip="fd00::1", scheme="https", trusted=TRUSTED)
    assert get_all(out, "x-forwarded-for") == ["1.1.1.1, 2.2.2.2, 10.0.0.7, fd00::1"]


def test_upstream_headers_trusted_proxy_cannot_set_odd_proto() -> None:
    headers: Headers = [("Host", "a"), ("X-Forwarded-Proto", "gopher")]
    out = upstream_headers(headers, peer_ip="10.0.0.1", scheme="https", trusted=TRUSTED)
    assert get_all(out, "x-forwarded-proto") == ["https"]


def test_upstream_headers_without_host() -> None:
    out = upstream_headers([("Accept", "*/*")], peer_ip="203.0.113.9", scheme="http", trusted=())
    assert get_one(out, "x-forwarded-host") is None
    assert get_one(out, "x-forwarded-for") == "203.0.113.9"


def test_is_trusted() -> None:
    assert is_trusted("10.255.0.1", TRUSTED)
    assert is_trusted("fd12::5", TRUSTED)
    assert not is_trusted("11.0.0.1", TRUSTED)
    assert not is_trusted("not-an-ip", TRUSTED)
    assert not is_trusted("10.0.0.1", ())


# -- client address --------------------------------------------------------------------------------


def test_client_address_untrusted_peer_ignores_xff() -> None:
    headers: Headers = [("X-Forwarded-For", "1.2.3.4")]
    assert client_address("203.0.113.9", headers, TRUSTED) == "203.0.113.9"


def test_client_address_trusted_proxy_uses_rightmost_untrusted_entry() -> None:
    headers: Headers = [("X-Forwarded-For", "6.6.6.6, 1.2.3.4, 10.0.0.5"), ("X-Forwarded-For", "10.0.0.6")]
    assert client_address("10.0.0.1", headers, TRUSTED) == "1.2.3.4"


def test_client_address_trusted_proxy_without_xff_is_the_peer() -> None:
    assert client_address("10.0.0.1", [], TRUSTED) == "10.0.0.1"
    assert client_address("10.0.0.1", [("X-Forwarded-For", "10.0.0.2, ")], TRUSTED) == "10.0.0.1"


# -- Set-Cookie from the backend -------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "relay_session=x; Path=/",
        "__Host-relay_session=x; Path=/; Secure",
        "__Secure-relay_session=x; Secure",
        "__Secure-__Host-relay_session=x",
        "__Host-__Secure-relay_session=x",
        " relay_session=x",
        "relay_session",
    ],
)
def test_set_cookie_with_relay_cookie_name_is_refused(value: str) -> None:
    assert set_cookie_allowed(value, RELAY_DOMAIN) is False


@pytest.mark.parametrize(
    "domain",
    [
        "relay.example.com",
        ".relay.example.com",
        "RELAY.Example.COM",
        ".Relay.Example.Com",
        "example.com",
        ".example.com",
        "com",
        "relay.example.com.",
        "  relay.example.com ",
    ],
)
def test_set_cookie_with_domain_on_relay_domain_or_parent_is_refused(domain: str) -> None:
    assert set_cookie_allowed(f"sid=1; Path=/; Domain={domain}; HttpOnly", RELAY_DOMAIN) is False
    assert set_cookie_allowed(f"sid=1; domain={domain}", RELAY_DOMAIN) is False
    assert set_cookie_allowed(f"sid=1; DOMAIN = {domain}", RELAY_DOMAIN) is False


def test_set_cookie_any_bad_domain_attribute_is_refused() -> None:
    assert (
        set_cookie_allowed("sid=1; Domain=lab.relay.example.com; Domain=example.com", RELAY_DOMAIN) is False
    )


@pytest.mark.parametrize(
    "value",
    [
        "sid=1; Path=/; HttpOnly",
        "_xsrf=2|abc; Path=/; SameSite=Lax",
        "sid=1; Domain=lab.relay.example.com",
        "sid=1; Domain=.lab.relay.example.com",
        "sid=1; Domain=notrelay.example.com",
        "sid=1; Domain=elay.example.com",
        "sid=1; Domain=",
        "my_relay_session=1",
        "__Host-sid=1; Path=/; Secure",
    ],
)
def test_set_cookie_unrelated_or_tunnel_host_is_allowed(value: str) -> None:
    assert set_cookie_allowed(value, RELAY_DOMAIN) is True


def test_downstream_headers_drop_only_refused_set_cookies() -> None:
    headers: Headers = [
        ("Content-Type", "text/html"),
        ("Set-Cookie", "ok=1; Path=/"),
        ("set-cookie", "relay_session=evil"),
        ("Set-Cookie", "wide=1; Domain=.example.com"),
        ("Set-Cookie", "mine=1; Domain=lab.relay.example.com"),
        ("X-Other", "relay_session=not-a-cookie-header"),
    ]
    assert downstream_headers(headers, RELAY_DOMAIN) == [
        ("Content-Type", "text/html"),
        ("Set-Cookie", "ok=1; Path=/"),
        ("Set-Cookie", "mine=1; Domain=lab.relay.example.com"),
        ("X-Other", "relay_session=not-a-cookie-header"),
    ]


def _names(headers: Headers) -> list[str]:
    return [k.lower() for k, _ in headers]


@pytest.mark.parametrize(
    ("fields", "gone", "kept"),
    [
        ([("Connection", "keep-alive"), ("Keep-Alive", "timeout=5")], ["keep-alive"], []),
        ([("Connection", "close, X-Secret"), ("X-Secret", "1")], ["x-secret"], []),
        ([("TE", "trailers"), ("Proxy-Connection", "keep-alive")], ["te", "proxy-connection"], []),
        ([("Upgrade", "h2c")], ["upgrade"], []),  # Upgrade without Connection: Upgrade
        # Connection may not remove what frames the body or routes the request:
        (
            [("Connection", "Content-Length, Host, Transfer-Encoding"), ("Content-Length", "3")],
            [],
            ["content-length", "host"],
        ),
    ],
)
def test_hop_by_hop_request_fields_are_removed(
    fields: list[tuple[str, str]], gone: list[str], kept: list[str]
) -> None:
    headers: Headers = [("Host", "lab.relay.example.com"), *fields, ("Accept", "*/*")]
    names = _names(upstream_headers(headers, peer_ip="203.0.113.9", scheme="https", trusted=()))
    assert "connection" not in names and not set(gone) & set(names)
    assert set(kept) <= set(names) and "accept" in names


def test_a_websocket_upgrade_keeps_exactly_connection_upgrade_and_upgrade() -> None:
    headers: Headers = [
        ("Host", "lab.relay.example.com"),
        ("Connection", "keep-alive, Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Key", "k"),
    ]
    out = upstream_headers(headers, peer_ip="203.0.113.9", scheme="https", trusted=())
    assert ("Upgrade", "websocket") in out and ("Connection", "Upgrade") in out
    assert _names(out).count("connection") == 1 and "sec-websocket-key" in _names(out)
    back = downstream_headers(
        [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", "a")],
        RELAY_DOMAIN,
        upgrade=True,
    )
    assert back == [("Upgrade", "websocket"), ("Sec-WebSocket-Accept", "a"), ("Connection", "Upgrade")]


def test_hop_by_hop_and_site_wide_response_fields_are_removed() -> None:
    headers: Headers = [
        ("Content-Length", "2"),
        ("Connection", "keep-alive, X-Hop, Content-Length"),
        ("Keep-Alive", "timeout=5"),
        ("X-Hop", "1"),
        ("Upgrade", "h2c"),
        ("Clear-Site-Data", '"cookies", "storage"'),  # would sign the visitor out of every tunnel
        ("Trailer", "X-Checksum"),  # end-to-end: kept
    ]
    assert downstream_headers(headers, RELAY_DOMAIN) == [("Content-Length", "2"), ("Trailer", "X-Checksum")]


# -- the relay's session cookie --------------------------------------------------------------------


def _attributes(cookie: str) -> tuple[str, dict[str, str]]:
    first, *rest = [p.strip() for p in cookie.split(";")]
    attrs = {}
    for part in rest:
        key, _, value = part.partition("=")
        attrs[key.lower()] = value
    return first, attrs


def test_session_cookie_insecure() -> None:
    pair, attrs = _attributes(session_cookie("relay_session", "abc-_123", secure=False, max_age=600))
    assert pair == "relay_session=abc-_123"
    assert attrs["path"] == "/"
    assert "httponly" in attrs
    assert attrs["samesite"] == "Lax"
    assert attrs["max-age"] == "600"
    assert "secure" not in attrs
    assert "domain" not in attrs


def test_session_cookie_secure() -> None:
    pair, attrs = _attributes(session_cookie("__Host-relay_session", "v", secure=True, max_age=60))
    assert pair == "__Host-relay_session=v"
    assert "secure" in attrs
    assert "httponly" in attrs
    assert attrs["samesite"] == "Lax"
    assert attrs["path"] == "/"
    assert "domain" not in attrs


def test_session_cookie_is_readable_back_by_cookie_value() -> None:
    cookie = session_cookie("relay_session", "sid123", secure=False, max_age=60)
    pair = cookie.split(";")[0]
    assert cookie_value([("Cookie", f"other=1; {pair}")], "relay_session") == "sid123"
