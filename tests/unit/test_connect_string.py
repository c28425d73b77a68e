"""The one-secret connect string: what parses, and a clear error naming the part that is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.config import ClientError, ConnectString, parse_connect_string
from client.connect import TunnelSpec
from client.settings import build_spec
from relay.onboarding import connect_string

TOKEN = "rly_0123456789_" + "s" * 43
FP = "SHA256:" + "A" * 43
HOST = "relay.example.com"


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        (
            f"relay://alice:{TOKEN}@relay.example.com:2222#{FP}",
            ConnectString("alice", TOKEN, "relay.example.com", 2222, FP),
        ),
        (
            f"relay://alice:{TOKEN}@relay.example.com",
            ConnectString("alice", TOKEN, "relay.example.com", 2222, None),
        ),
        (f"  relay://bob:{TOKEN}@[::1]:22#{FP}\\n", ConnectString("bob", TOKEN, "::1", 22, FP)),
    ],
)
def test_a_connect_string_parses(text: str, parsed: ConnectString) -> None:
    assert parse_connect_string(text.replace("\\n", "\n")) == parsed


@pytest.mark.parametrize(
    ("text", "names"),
    [
        (f"https://alice:{TOKEN}@relay.example.com", "starts with relay://"),
        ("relay://relay.example.com:2222", "USER:TOKEN@"),
        (f"relay://:{TOKEN}@relay.example.com", "user"),
        (f"relay://al ice:{TOKEN}@relay.example.com", "user"),
        ("relay://alice:@relay.example.com", "token"),
        ("relay://alice@relay.example.com", "token"),
        (f"relay://alice:{TOKEN}@relay.example.com:99999", "HOST:PORT"),
        (f"relay://alice:{TOKEN}@", "HOST:PORT"),
        (f"relay://alice:{TOKEN}@relay.example.com:2222#MD5:aa", "fingerprint"),
        (f"relay://alice:{TOKEN}@relay.example.com:2222#", "fingerprint"),
    ],
)
def test_a_malformed_connect_string_names_the_wrong_part(text: str, names: str) -> None:
    with pytest.raises(ClientError, match=names) as raised:
        parse_connect_string(text)
    assert TOKEN not in str(raised.value)  # the secret is never echoed


def test_the_relay_prints_what_the_client_parses() -> None:
    text = connect_string("alice", TOKEN, "relay.example.com", 2222, FP)
    assert parse_connect_string(text) == ConnectString("alice", TOKEN, "relay.example.com", 2222, FP)
    assert parse_connect_string(connect_string("a", TOKEN, "::1", 22, None)).host == "::1"


def _spec(directory: Path, *, relay: str | None = None, user: str | None = None) -> TunnelSpec:
    return build_spec(
        directory, relay=relay, token=None, user=user, name=None, domain=None, port=8000, lab=False,
        host_key=None, key=None,
    )  # fmt: skip


def test_the_connect_string_fills_what_flags_do_not_say(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_URL", f"relay://alice:{TOKEN}@relay.example.com:2200#{FP}")
    for name in ("RELAY_HOST", "RELAY_USER", "RELAY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    spec = _spec(tmp_path)
    got = (spec.relay_host, spec.relay_port, spec.user, spec.token, spec.host_key)
    assert got == ("relay.example.com", 2200, "alice", TOKEN, FP)
    assert _spec(tmp_path, user="bob").user == "bob"  # a flag wins over the string's part
    flag = _spec(tmp_path, relay=f"relay://carol:{TOKEN}@r.example:1#{FP}")
    assert (flag.user, flag.relay_host, flag.relay_port) == ("carol", "r.example", 1)
