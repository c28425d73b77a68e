"""Custom-domain rules: what may be claimed, what proves a claim, who may bind it, which hosts may get
a certificate, where SNI certificates live, and the store's claim bookkeeping."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import parse_networks
from relay.dnscheck import parse_dns_server
from relay.domains import (
    CHALLENGE_PREFIX,
    certificate_allowed,
    challenge_name,
    challenge_refusal,
    new_challenge,
    records_to_create,
    sni_cert_paths,
    validate_domain,
)
from relay.errors import BadRequest, Conflict, Forbidden, NotFound
from relay.names import domain_bind_refusal
from relay.rewrite import request_scheme
from relay.store import Store

RELAY = "relay.example.com"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("app.example.org", "app.example.org"),
        ("App.Example.ORG.", "app.example.org"),
        ("  jupyter.my-lab.dev ", "jupyter.my-lab.dev"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),  # an IDN domain is someone's real domain
    ],
)
def test_valid_custom_domains_are_normalised(raw: str, expected: str) -> None:
    assert validate_domain(raw, relay_domain=RELAY) == expected


@pytest.mark.parametrize(
    "raw",
    ["", "localhost", "example", "a..b", "-a.example", "a_b.example", "a.example:443", "1.2.3.4",
     "[::1]", "a/b.example", "a.example/../x", "x" * 64 + ".example", "a.example\x00.org", "*.example.org"],
)  # fmt: skip
def test_invalid_custom_domains_are_refused(raw: str) -> None:
    with pytest.raises(BadRequest):
        validate_domain(raw, relay_domain=RELAY)


def test_the_relay_host_and_its_subdomains_are_not_custom_domains() -> None:
    with pytest.raises(Forbidden):
        validate_domain(RELAY, relay_domain=RELAY)
    with pytest.raises(BadRequest, match="tunnel name"):
        validate_domain("alice." + RELAY, relay_domain=RELAY)
    with pytest.raises(BadRequest):
        validate_domain("a.b." + RELAY, relay_domain=RELAY)


def test_challenges_are_random_and_recognisable() -> None:
    first, second = new_challenge(), new_challenge()
    assert first != second
    assert first.startswith(CHALLENGE_PREFIX) and len(first) == len(CHALLENGE_PREFIX) + 32
    assert challenge_name("app.example.org") == "_relay-challenge.app.example.org"


def test_challenge_matches_only_the_exact_value() -> None:
    value = new_challenge()
    assert challenge_refusal("a.example", value, [value]) is None
    assert challenge_refusal("a.example", value, ["other", f" {value} "]) is None
    missing = challenge_refusal("a.example", value, [])
    assert missing is not None and "no TXT record" in missing and value in missing
    wrong = challenge_refusal("a.example", value, [value + "x", value[:-1]])
    assert wrong is not None and "holds" in wrong
    assert challenge_refusal("a.example", value, [value.upper()]) is not None


def test_records_to_create_point_at_the_relay_and_carry_the_proof() -> None:
    records = records_to_create("app.example.org", "relay-verify=abc", relay_domain=RELAY)
    assert [r.as_json() for r in records] == [
        {"type": "CNAME", "name": "app.example.org", "value": RELAY},
        {"type": "TXT", "name": "_relay-challenge.app.example.org", "value": "relay-verify=abc"},
    ]


def test_only_the_verifying_user_may_bind_a_domain() -> None:
    assert domain_bind_refusal("a.example", claimant_id=1, owner_id=1) is None
    unverified = domain_bind_refusal("a.example", claimant_id=1, owner_id=None)
    assert unverified is not None and "domain add a.example" in unverified
    other = domain_bind_refusal("a.example", claimant_id=1, owner_id=2)
    assert other is not None and "another user" in other


def _allowed(host: str) -> bool:
    return certificate_allowed(
        host,
        relay_domain=RELAY,
        name_owned=lambda name: name in {"alice", "bob"},
        domain_verified=lambda domain: domain == "lab.example.org",
    )


@pytest.mark.parametrize("host", [RELAY, "alice." + RELAY, "BOB." + RELAY + ".", "lab.example.org"])
def test_certificates_for_served_hosts(host: str) -> None:
    assert _allowed(host)


@pytest.mark.parametrize(
    "host",
    ["carol." + RELAY, "x.alice." + RELAY, "example.org", "other.example.org", "lab.example.org:443",
     "127.0.0.1", "", "evil.com", "alice." + RELAY + ".evil.com", "lab.example.org/x", "*." + RELAY],
)  # fmt: skip
def test_no_certificates_for_anything_else(host: str) -> None:
    assert not _allowed(host)


def test_sni_paths_stay_inside_the_directory(tmp_path: Path) -> None:
    paths = sni_cert_paths("Lab.Example.org.", tmp_path)
    assert paths == (
        tmp_path / "lab.example.org" / "fullchain.pem",
        tmp_path / "lab.example.org" / "privkey.pem",
    )
    for hostile in [
        "..",
        "../etc",
        "a/../../b",
        "/etc/passwd",
        "a\x00b.example",
        "localhost",
        "",
        "a b.example",
    ]:
        assert sni_cert_paths(hostile, tmp_path) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [("127.0.0.1:5353", ("127.0.0.1", 5353)), ("127.0.0.1", ("127.0.0.1", 53)), ("[::1]:53", ("::1", 53)),
     ("::1", ("::1", 53))],
)  # fmt: skip
def test_dns_server_addresses(value: str, expected: tuple[str, int]) -> None:
    assert parse_dns_server(value) == expected


@pytest.mark.parametrize(
    "value", ["dns.example:53", "127.0.0.1:0", "127.0.0.1:99999", "127.0.0.1:x", "[::1]x"]
)
def test_bad_dns_server_addresses(value: str) -> None:
    with pytest.raises(BadRequest):
        parse_dns_server(value)


def test_forwarded_proto_is_believed_only_from_a_trusted_proxy() -> None:
    trusted = parse_networks(["127.0.0.1/32"])
    headers = [("X-Forwarded-Proto", "https")]
    assert request_scheme("http", "127.0.0.1", headers, trusted) == "https"
    assert request_scheme("http", "10.1.2.3", headers, trusted) == "http"
    assert request_scheme("http", "127.0.0.1", [("X-Forwarded-Proto", "gopher")], trusted) == "http"
    assert request_scheme("https", "10.1.2.3", [("X-Forwarded-Proto", "http")], trusted) == "https"


# -- the store's claims -----------------------------------------------------------------------------


@pytest.fixture
def store(store: Store) -> Store:
    """The conftest's store, on each engine, with two users."""
    store.add_user("alice")
    store.add_user("bob")
    return store


def test_claims_are_per_user_until_one_is_verified(store: Store) -> None:
    a = store.add_domain("lab.example.org", "alice", "relay-verify=a")
    b = store.add_domain("lab.example.org", "bob", "relay-verify=b")
    assert not a.verified and not b.verified
    assert store.add_domain("lab.example.org", "alice", "relay-verify=new").challenge == "relay-verify=a"
    assert store.verified_domain_owner("lab.example.org") is None
    store.mark_domain_verified("lab.example.org", b.user_id)
    assert store.verified_domain_owner("lab.example.org") == b.user_id
    # Bob proved it: Alice's pending claim is void, and she cannot claim it again.
    assert [c.user for c in store.list_domains(domain="lab.example.org")] == ["bob"]
    with pytest.raises(Conflict):
        store.add_domain("lab.example.org", "alice", "relay-verify=c")


def test_removing_claims(store: Store) -> None:
    store.add_domain("lab.example.org", "alice", "relay-verify=a")
    with pytest.raises(NotFound):
        store.remove_domain("lab.example.org", "bob")
    assert store.remove_domain("lab.example.org", "alice") == 1
    with pytest.raises(NotFound):
        store.remove_domain("lab.example.org")


def test_a_removed_user_loses_their_domains(store: Store) -> None:
    claim = store.add_domain("lab.example.org", "alice", "relay-verify=a")
    store.mark_domain_verified("lab.example.org", claim.user_id)
    store.remove_user("alice")
    assert store.verified_domain_owner("lab.example.org") is None


def test_the_relay_domain_is_recorded_for_admin_commands(store: Store) -> None:
    assert store.relay_domain() == "localhost"
    store.record_relay_domain(RELAY)
    assert store.relay_domain() == RELAY
