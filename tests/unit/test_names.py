"""Hostname rules (DESIGN §3.2): tunnel names, Host normalisation, ``-R`` bind addresses, name ownership."""

from __future__ import annotations

import pytest

from relay.errors import BadRequest, Forbidden, RelayError
from relay.names import (
    RESERVED_NAMES,
    BindTarget,
    alias_port_refusal,
    claim_refusal,
    jump_host,
    normalise_host,
    resolve_bind,
    validate_name,
)

# -- validate_name ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["a", "lab", "my-lab", "a1", "0", "9lives", "a-b-c", "x" * 63, "a-" + "b" * 60 + "z"]
)
def test_validate_name_accepts_one_lowercase_label(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "x" * 64,  # one over the DNS label limit
        "Lab",
        "LAB",
        "-lab",
        "lab-",
        "-",
        "la_b",
        "la b",
        "lab.example",
        "lab.",
        "é",
        "lab\n",
        "lab/",
    ],
)
def test_validate_name_rejects_malformed_labels_as_bad_request(name: str) -> None:
    with pytest.raises(BadRequest) as info:
        validate_name(name)
    assert info.value.status == 400


@pytest.mark.parametrize("name", ["xn--bcher-kva", "xn--a", "ab--cd"])
def test_validate_name_rejects_punycode_and_double_hyphen_at_position_three(name: str) -> None:
    with pytest.raises(BadRequest) as info:
        validate_name(name)
    assert not isinstance(info.value, Forbidden)


def test_validate_name_allows_double_hyphen_elsewhere() -> None:
    assert validate_name("a--b") == "a--b"
    assert validate_name("abc--d") == "abc--d"


@pytest.mark.parametrize("name", ["www", "admin", "api", "relay", "mail", "login", "localhost", "sso"])
def test_validate_name_refuses_reserved_names_as_forbidden(name: str) -> None:
    assert name in RESERVED_NAMES
    with pytest.raises(Forbidden) as info:
        validate_name(name)
    assert info.value.status == 403
    assert name in str(info.value)


def test_reserved_check_is_on_the_exact_label() -> None:
    # Names that merely contain a reserved word are ordinary names.
    assert validate_name("www2") == "www2"
    assert validate_name("my-api") == "my-api"


# -- normalise_host --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("example.com", "example.com"),
        ("Example.COM", "example.com"),
        ("example.com:8080", "example.com"),
        ("EXAMPLE.com:80", "example.com"),
        ("example.com.", "example.com"),
        ("example.com.:8443", "example.com"),
        ("  lab.localhost  ", "lab.localhost"),
        ("localhost", "localhost"),
        ("127.0.0.1:8080", "127.0.0.1"),
        ("[::1]", "[::1]"),
        ("[::1]:8080", "[::1]"),
        ("[2001:DB8::1]:443", "[2001:db8::1]"),
        ("[::ffff:127.0.0.1]", "[::ffff:127.0.0.1]"),
    ],
)
def test_normalise_host_lowercases_and_strips_port_and_trailing_dot(raw: str, expected: str) -> None:
    assert normalise_host(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "a b",
        "a:xyz",
        "a:",
        ":80",
        "a:123456",
        "..",
        ".",
        ".example.com",
        "exa..mple.com",
        "exa_mple.com",
        "-example.com",
        "example-.com",
        "ex/ample.com",
        "user@example.com",
        "example.com:80:80",
        "[::1",
        "[::1]x",
        "[::1]:",
        "[::1]:abc",
        "[]",
        "[zz::1]",
        "x" * 64 + ".com",
        ("a." * 127) + "ab",  # 256 characters
    ],
)
def test_normalise_host_rejects_garbage(raw: str) -> None:
    assert normalise_host(raw) is None


def test_normalise_host_rejects_non_ascii_digit_port() -> None:
    # A port is ASCII digits (RFC 3986 ``port = *DIGIT``). '²' passes str.isdigit() but is no port:
    # a Host that other parsers refuse must not be routed by the relay.
    assert normalise_host("example.com:\u00b2") is None
    assert normalise_host("example.com:1\u00b3") is None


def test_normalise_host_accepts_a_253_character_name() -> None:
    host = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    assert len(host) == 253
    assert normalise_host(host) == host
    assert normalise_host(host + "d") is None


# -- resolve_bind ----------------------------------------------------------------------------------

DOMAIN = "relay.example.com"


def _bind(address: str, *, default_name: str = "alice", domain: str = DOMAIN) -> BindTarget:
    return resolve_bind(address, default_name=default_name, domain=domain)


def test_resolve_bind_name_selects_subdomain() -> None:
    assert _bind("lab") == BindTarget(host="lab.relay.example.com", name="lab")


def test_resolve_bind_full_subdomain_selects_the_same_host() -> None:
    assert _bind("lab.relay.example.com") == BindTarget(host="lab.relay.example.com", name="lab")
    assert _bind("LAB.Relay.Example.com.") == BindTarget(host="lab.relay.example.com", name="lab")


@pytest.mark.parametrize("address", ["", "localhost", "0.0.0.0", "LOCALHOST", " localhost "])
def test_resolve_bind_default_addresses_select_the_users_default_name(address: str) -> None:
    assert _bind(address, default_name="bob") == BindTarget(host="bob.relay.example.com", name="bob")


def test_resolve_bind_default_address_when_domain_is_localhost() -> None:
    assert _bind("localhost", default_name="bob", domain="localhost") == BindTarget(
        host="bob.localhost", name="bob"
    )
    assert _bind("lab.localhost", domain="localhost") == BindTarget(host="lab.localhost", name="lab")


def test_resolve_bind_other_full_hostname_is_a_custom_domain() -> None:
    assert _bind("lab.example.org") == BindTarget(host="lab.example.org", name=None)
    assert _bind("Lab.Example.org.") == BindTarget(host="lab.example.org", name=None)


def test_resolve_bind_refuses_the_relay_domain_itself() -> None:
    with pytest.raises(Forbidden) as info:
        _bind(DOMAIN)
    assert info.value.status == 403
    with pytest.raises(Forbidden):
        _bind(DOMAIN.upper() + ".")


def test_resolve_bind_refuses_a_suffix_lookalike_as_subdomain() -> None:
    # "evilrelay.example.com" does not end with ".relay.example.com": it is a custom domain, never "evil".
    target = _bind("evilrelay.example.com")
    assert target == BindTarget(host="evilrelay.example.com", name=None)


def test_resolve_bind_multi_label_subdomain_of_relay_domain_is_not_cut_down() -> None:
    # "a.b.relay.example.com" names a host under the relay's domain. It must be refused or kept whole;
    # cutting the domain off and treating the rest ("a.b") as a custom domain selects an unrelated host.
    try:
        target = _bind("a.b.relay.example.com")
    except RelayError:
        return
    assert target.host == "a.b.relay.example.com"


@pytest.mark.parametrize("address", ["www", "admin.relay.example.com", "api"])
def test_resolve_bind_refuses_reserved_names(address: str) -> None:
    with pytest.raises(Forbidden):
        _bind(address)


@pytest.mark.parametrize(
    "address", ["xn--bcher-kva", "-lab", "la_b", "a" * 64, "exa_mple.org", "a..b", "a b"]
)
def test_resolve_bind_refuses_invalid_names_as_bad_request(address: str) -> None:
    with pytest.raises(BadRequest):
        _bind(address)


def test_resolve_bind_reserved_default_name_is_refused() -> None:
    with pytest.raises(Forbidden):
        _bind("", default_name="admin")


# -- claim_refusal ---------------------------------------------------------------------------------


def test_claim_refusal_allows_unowned_name() -> None:
    assert claim_refusal("lab", claimant_id=1, owner_id=None) is None


def test_claim_refusal_allows_the_owner_to_reclaim() -> None:
    assert claim_refusal("lab", claimant_id=7, owner_id=7) is None


def test_claim_refusal_refuses_another_user_without_naming_the_owner() -> None:
    refusal = claim_refusal("lab", claimant_id=1, owner_id=4242)
    assert refusal is not None
    assert "lab" in refusal
    assert "another user" in refusal
    assert "4242" not in refusal


# -- TCP aliases: which ports make one, and which direct-tcpip destinations can name one -----------


@pytest.mark.parametrize(
    ("port", "lowest", "highest", "refused"),
    [
        (22, 1, 65535, None),
        (5432, 1, 65535, None),
        (1, 1, 65535, None),
        (65535, 1, 65535, None),
        (80, 1, 65535, "makes an HTTP tunnel"),
        (443, 1, 65535, "makes an HTTP tunnel"),
        (0, 1, 65535, "needs its port"),
        (21, 22, 30000, "ports 22-30000"),
        (30001, 22, 30000, "ports 22-30000"),
    ],
)
def test_alias_port_refusal(port: int, lowest: int, highest: int, refused: str | None) -> None:
    why = alias_port_refusal(port, lowest=lowest, highest=highest)
    assert (why is None) if refused is None else (why is not None and refused in why)


@pytest.mark.parametrize(
    ("destination", "host"),
    [
        ("lab", "lab.relay.test"),
        ("LAB", "lab.relay.test"),
        ("lab.relay.test", "lab.relay.test"),
        ("lab.relay.test.", "lab.relay.test"),
        ("notebooks.example.com", "notebooks.example.com"),
        # never an alias, so refused with no connection attempted:
        ("relay.test", None),  # the relay itself
        ("localhost", None),
        ("localhost.", None),
        ("127.0.0.1", None),
        ("127.1", None),
        ("2130706433", None),
        ("::1", None),
        ("[::1]", None),
        ("fe80::1%eth0", None),
        ("169.254.169.254", None),
        ("0.0.0.0", None),
        ("", None),
        ("*", None),
        ("a.b.relay.test", None),  # two labels under the domain
        ("la b", None),
        ("läb", None),
        ("-lab", None),
        ("x" * 300, None),
    ],
)
def test_jump_host(destination: str, host: str | None) -> None:
    assert jump_host(destination, domain="relay.test") == host
