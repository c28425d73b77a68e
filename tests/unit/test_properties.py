"""Property-based tests (hypothesis) for the parsers that routing and ownership depend on: Host
normalisation, tunnel names, ``-R`` bind addresses and request heads. Each property is a rule that must
hold for every input, not only the examples in test_names.py and test_http1.py."""

from __future__ import annotations

import contextlib
import re
import string

from hypothesis import assume, example, given
from hypothesis import strategies as st

from relay.errors import BadGateway, BadRequest, Forbidden, RelayError
from relay.http1 import parse_request_head, parse_response_head
from relay.names import RESERVED_NAMES, is_valid_hostname, normalise_host, resolve_bind, validate_name

LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
DOMAIN = "relay.example.com"

# Mostly host-shaped characters, plus the ones that have tricked parsers: case folds outside ASCII
# (U+212A KELVIN SIGN lowercases to "k", U+0130 to "i̇"), whitespace, separators and controls.
HOSTISH = st.text(
    alphabet=st.sampled_from(
        [
            *(string.ascii_letters + string.digits + "-.:[]_@/ \t"),
            *("\u212a", "\u0130", "\u017f", "\u00df", "\u00b2", "\u0661", "\x00", "\r", "\n", "\u3002"),
        ]
    ),
    max_size=80,
)
LABELS = st.from_regex(LABEL, fullmatch=True)
HOSTNAMES = st.lists(LABELS, min_size=1, max_size=5).map(".".join).filter(lambda h: len(h) <= 253)


# -- normalise_host --------------------------------------------------------------------------------


@given(HOSTISH)
@example("\u212aab.localhost")
@example("lab.localhost\u3002")
def test_normalised_host_is_plain_ascii_and_idempotent(raw: str) -> None:
    host = normalise_host(raw)
    if host is None:
        return
    assert host.isascii()
    assert host == host.lower() and host == host.strip()
    assert not host.endswith(".")
    assert is_valid_hostname(host) or re.fullmatch(r"\[[0-9a-f:.]+\]", host)
    assert normalise_host(host) == host


@given(HOSTISH)
def test_normalise_host_only_accepts_ascii_input(raw: str) -> None:
    # A non-ASCII Host that case-folds onto an ASCII name must not route to that name.
    if not raw.isascii():
        assert normalise_host(raw) is None


@given(HOSTNAMES, st.integers(min_value=0, max_value=65535), st.booleans(), st.booleans())
def test_normalise_host_ignores_case_port_and_trailing_dot(
    host: str, port: int, with_port: bool, trailing_dot: bool
) -> None:
    raw = host.upper() + ("." if trailing_dot else "") + (f":{port}" if with_port else "")
    assert normalise_host(raw) == host


@given(HOSTNAMES, st.integers(min_value=65536, max_value=10**6))
def test_normalise_host_refuses_out_of_range_ports(host: str, port: int) -> None:
    assert normalise_host(f"{host}:{port}") is None


# -- names and bind addresses ----------------------------------------------------------------------


@given(st.text(alphabet=string.ascii_lowercase + string.digits + "-_.A\u212a", max_size=70))
def test_validate_name_accepts_exactly_the_label_rule(name: str) -> None:
    expected_ok = (
        bool(LABEL.fullmatch(name)) and name[2:4] != "--" and not name.startswith("xn--")
    ) and name not in RESERVED_NAMES
    try:
        assert validate_name(name) == name
        ok = True
    except (BadRequest, Forbidden):
        ok = False
    assert ok == expected_ok


@given(LABELS)
def test_a_valid_name_binds_to_its_subdomain_in_every_spelling(name: str) -> None:
    assume(name not in RESERVED_NAMES and name[2:4] != "--")
    expected = f"{name}.{DOMAIN}"
    for spelling in (name, name.upper(), f"{name}.{DOMAIN}", f"{name}.{DOMAIN}.".upper()):
        target = resolve_bind(spelling, default_name="alice", domain=DOMAIN)
        assert (target.host, target.name) == (expected, name)


@given(HOSTISH)
@example("\u212aab")
@example("lab\u3002relay.example.com")
def test_resolve_bind_yields_only_valid_names_and_hosts(bind: str) -> None:
    try:
        target = resolve_bind(bind, default_name="alice", domain=DOMAIN)
    except (BadRequest, Forbidden):
        return
    assert target.host.isascii() and is_valid_hostname(target.host)
    if target.name is not None:
        assert LABEL.fullmatch(target.name) and target.name not in RESERVED_NAMES
        assert target.host == f"{target.name}.{DOMAIN}"
        # Whatever the client typed, it names an ASCII label it could have typed directly.
        assert bind.isascii()
    else:
        assert target.host != DOMAIN and not target.host.endswith("." + DOMAIN)


# -- request and response heads --------------------------------------------------------------------


@given(st.binary(max_size=300))
def test_request_parser_only_raises_relay_errors(junk: bytes) -> None:
    for head in (junk + b"\r\n\r\n", b"GET / HTTP/1.1\r\nHost: a\r\n" + junk + b"\r\n\r\n"):
        try:
            parsed = parse_request_head(head)
        except RelayError as exc:
            assert 400 <= exc.status < 600
            continue
        # Whatever was accepted routes on a normalised host and has an origin-form target.
        assert normalise_host(parsed.host) == parsed.host
        assert parsed.target.startswith("/") or parsed.target == "*"


@given(st.binary(max_size=300))
def test_response_parser_only_raises_bad_gateway(junk: bytes) -> None:
    for head in (junk + b"\r\n\r\n", b"HTTP/1.1 200 OK\r\n" + junk + b"\r\n\r\n"):
        # Anything but BadGateway escaping here fails the test.
        with contextlib.suppress(BadGateway):
            parse_response_head(head)


@given(HOSTNAMES, HOSTNAMES)
def test_absolute_form_must_name_the_host_header(target_host: str, header_host: str) -> None:
    head = f"GET http://{target_host}/x HTTP/1.1\r\nHost: {header_host}\r\n\r\n".encode()
    if target_host == header_host:
        assert parse_request_head(head).target == "/x"
    else:
        try:
            parse_request_head(head)
        except BadRequest:
            return
        raise AssertionError("absolute-form target with another host was accepted")


@given(HOSTISH)
def test_host_header_routes_exactly_as_normalise_host_says(raw: str) -> None:
    assume("\r" not in raw and "\n" not in raw)
    try:
        head = parse_request_head(f"GET / HTTP/1.1\r\nHost: {raw}\r\n\r\n".encode())
    except RelayError:
        return
    assert head.host == normalise_host(raw.encode("utf-8").decode("latin-1"))
    assert head.host is not None and head.host.isascii()
