"""HTTP/1.1 head parsing and serialising (RFC 9112), with the request-smuggling shapes refused."""

from __future__ import annotations

import pytest

from relay.errors import BadGateway, BadRequest, RelayError
from relay.http1 import (
    Fields,
    Framing,
    RequestHead,
    ResponseHead,
    connection_tokens,
    get_all,
    get_one,
    lowered_names,
    parse_request_head,
    parse_response_head,
    response_framing,
    serialise_request,
    serialise_response,
    simple_response,
)
from relay.protocol import MAX_HEADERS


def _req(*lines: str, request_line: str = "GET / HTTP/1.1") -> bytes:
    return ("\r\n".join([request_line, *lines]) + "\r\n\r\n").encode("latin-1")


def _resp(*lines: str, status_line: str = "HTTP/1.1 200 OK") -> ResponseHead:
    return parse_response_head(("\r\n".join([status_line, *lines]) + "\r\n\r\n").encode("latin-1"))


def _refused(head: bytes) -> RelayError:
    with pytest.raises(RelayError) as info:
        parse_request_head(head)
    return info.value


# -- good requests ---------------------------------------------------------------------------------


def test_parse_simple_get() -> None:
    head = parse_request_head(_req("Host: Lab.Localhost:8080", "Accept: text/html"))
    assert head.method == "GET"
    assert head.target == "/"
    assert head.version == (1, 1)
    assert head.host == "lab.localhost"
    assert head.raw_host == "Lab.Localhost:8080"
    assert head.headers == [("Host", "Lab.Localhost:8080"), ("Accept", "text/html")]
    assert head.framing is Framing.NONE
    assert head.length == 0


def test_parse_keeps_header_order_and_case_and_trims_value_whitespace() -> None:
    head = parse_request_head(_req("host: a", "X-Multi:  one  ", "x-multi:\ttwo", "X-Empty:"))
    assert head.headers == [("host", "a"), ("X-Multi", "one"), ("x-multi", "two"), ("X-Empty", "")]
    assert get_all(head.headers, "X-MULTI") == ["one", "two"]
    assert get_one(head.headers, "x-multi") == "one"
    assert get_one(head.headers, "missing") is None


def test_parse_post_with_content_length() -> None:
    head = parse_request_head(
        _req("Host: a", "Content-Length: 42", request_line="POST /submit?x=1&y=2 HTTP/1.1")
    )
    assert head.method == "POST"
    assert head.framing is Framing.LENGTH
    assert head.length == 42
    assert head.path == "/submit"
    assert head.query == "x=1&y=2"


def test_parse_content_length_zero_means_no_body() -> None:
    head = parse_request_head(_req("Host: a", "Content-Length: 0", request_line="POST / HTTP/1.1"))
    assert head.framing is Framing.NONE
    assert head.length == 0


def test_parse_chunked_request() -> None:
    head = parse_request_head(_req("Host: a", "Transfer-Encoding: Chunked", request_line="PUT /x HTTP/1.1"))
    assert head.framing is Framing.CHUNKED


@pytest.mark.parametrize(
    "values",
    [
        ["gzip, chunked"],  # another coding: the relay forwards bodies as they are
        ["chunked, chunked"],
        ["chunked", "chunked"],  # repeated across fields
        ["chunked\xa0"],  # NBSP: str.strip() would make it "chunked"
        ["\x85chunked"],  # NEL, likewise
        ["identity"],
        [""],
    ],
)
def test_transfer_encoding_must_be_exactly_one_chunked(values: list[str]) -> None:
    fields = [f"Transfer-Encoding: {v}" for v in values]
    with pytest.raises(BadRequest, match="Transfer-Encoding"):
        parse_request_head(_req("Host: a", *fields, request_line="PUT /x HTTP/1.1"))
    with pytest.raises(BadGateway, match="Transfer-Encoding"):
        response_framing(_resp(*fields), "GET")


@pytest.mark.parametrize("value", ["chunked ", "\tchunked", "chunked,", ", chunked"])
def test_transfer_encoding_allows_ows_and_empty_list_elements(value: str) -> None:
    assert response_framing(_resp(f"Transfer-Encoding: {value}"), "GET") == (Framing.CHUNKED, 0)


def test_transfer_encoding_in_an_http10_response_is_faulty_framing() -> None:
    with pytest.raises(BadGateway, match=r"HTTP/1\.0"):
        response_framing(_resp("Transfer-Encoding: chunked", status_line="HTTP/1.0 200 OK"), "GET")


@pytest.mark.parametrize("target", ["/caf\xe9", "/\x80", "http://a/\xff"])
def test_non_ascii_request_targets_are_refused(target: str) -> None:
    with pytest.raises(BadRequest, match="request line"):
        parse_request_head(_req("Host: a", request_line=f"GET {target} HTTP/1.1"))


def test_parse_http10_request() -> None:
    head = parse_request_head(_req("Host: a", request_line="GET /old HTTP/1.0"))
    assert head.version == (1, 0)
    assert head.keep_alive is False


def test_parse_options_asterisk() -> None:
    head = parse_request_head(_req("Host: a", request_line="OPTIONS * HTTP/1.1"))
    assert head.target == "*"


def test_asterisk_target_only_for_options() -> None:
    assert isinstance(_refused(_req("Host: a", request_line="GET * HTTP/1.1")), BadRequest)


def test_path_and_query_properties() -> None:
    head = parse_request_head(_req("Host: a", request_line="GET /a/b?c=d?e&f HTTP/1.1"))
    assert head.path == "/a/b"
    assert head.query == "c=d?e&f"
    plain = parse_request_head(_req("Host: a", request_line="GET /a HTTP/1.1"))
    assert plain.path == "/a"
    assert plain.query == ""


@pytest.mark.parametrize(
    ("request_line", "connection", "expected"),
    [
        ("GET / HTTP/1.1", None, True),
        ("GET / HTTP/1.1", "close", False),
        ("GET / HTTP/1.1", "Keep-Alive, CLOSE", False),
        ("GET / HTTP/1.1", "keep-alive", True),
        ("GET / HTTP/1.0", None, False),
        ("GET / HTTP/1.0", "keep-alive", True),
        ("GET / HTTP/1.0", "Keep-Alive", True),
        ("GET / HTTP/1.0", "close", False),
    ],
)
def test_request_keep_alive(request_line: str, connection: str | None, expected: bool) -> None:
    lines = ["Host: a"] + ([f"Connection: {connection}"] if connection else [])
    assert parse_request_head(_req(*lines, request_line=request_line)).keep_alive is expected


def test_request_is_upgrade() -> None:
    ws = parse_request_head(_req("Host: a", "Connection: keep-alive, Upgrade", "Upgrade: websocket"))
    assert ws.is_upgrade is True
    assert connection_tokens(ws.headers) == {"keep-alive", "upgrade"}
    no_upgrade_header = parse_request_head(_req("Host: a", "Connection: Upgrade"))
    assert no_upgrade_header.is_upgrade is False
    no_connection_token = parse_request_head(_req("Host: a", "Upgrade: websocket"))
    assert no_connection_token.is_upgrade is False


def test_absolute_form_matching_host_is_rewritten_to_origin_form() -> None:
    head = parse_request_head(
        _req("Host: lab.localhost:8080", request_line="GET http://LAB.localhost:8080/p/q?x=1 HTTP/1.1")
    )
    assert head.target == "/p/q?x=1"
    assert head.host == "lab.localhost"
    bare = parse_request_head(_req("Host: lab.localhost", request_line="GET https://lab.localhost HTTP/1.1"))
    assert bare.target == "/"
    query_only = parse_request_head(
        _req("Host: lab.localhost", request_line="GET http://lab.localhost?a=b HTTP/1.1")
    )
    assert query_only.target == "/?a=b"


# -- refused requests ------------------------------------------------------------------------------


def test_refuses_content_length_with_transfer_encoding() -> None:
    err = _refused(
        _req("Host: a", "Content-Length: 5", "Transfer-Encoding: chunked", request_line="POST / HTTP/1.1")
    )
    assert isinstance(err, BadRequest)
    assert err.status == 400


@pytest.mark.parametrize("values", [("5", "5"), ("5", "6"), ("0", "0")])
def test_refuses_repeated_content_length_even_if_equal(values: tuple[str, str]) -> None:
    lines = ["Host: a", *(f"Content-Length: {v}" for v in values)]
    err = _refused(_req(*lines, request_line="POST / HTTP/1.1"))
    assert err.status == 400


@pytest.mark.parametrize("value", ["abc", "5, 5", "+5", "-1", "0x10", "1e3", "5 5", "1" * 19, "", "\u00b2"])
def test_refuses_non_numeric_content_length(value: str) -> None:
    err = _refused(_req("Host: a", f"Content-Length: {value}", request_line="POST / HTTP/1.1"))
    assert isinstance(err, BadRequest)
    assert err.status == 400


@pytest.mark.parametrize("fold", [" folded", "\tfolded"])
def test_refuses_obs_fold(fold: str) -> None:
    err = _refused(_req("Host: a", "X-Long: first", fold))
    assert err.status == 400
    assert "folding" in str(err)
    # A whitespace-led line right after the request line is refused too.
    assert _refused(_req(fold, "Host: a")).status == 400


def test_refuses_bare_lf_line_endings() -> None:
    assert _refused(b"GET / HTTP/1.1\nHost: a\r\n\r\n").status == 400
    assert _refused(b"GET / HTTP/1.1\r\nHost: a\r\nX: b\n\r\n\r\n").status == 400
    assert _refused(b"GET / HTTP/1.1\nHost: a\n\n").status == 400


def test_refuses_bare_cr() -> None:
    assert _refused(b"GET / HTTP/1.1\rHost: a\r\n\r\n").status == 400
    assert _refused(b"GET / HTTP/1.1\r\nHost: a\rX-Smuggle: 1\r\n\r\n").status == 400


def test_refuses_incomplete_head() -> None:
    assert _refused(b"GET / HTTP/1.1\r\nHost: a\r\n").status == 400


@pytest.mark.parametrize(
    "line", ["Host : a", "Host\t: a", "X Header: v", "NoColon", ": value", 'Bad"Name: v']
)
def test_refuses_malformed_header_names(line: str) -> None:
    head = _req(line) if line.startswith("Host") else _req("Host: a", line)
    assert isinstance(_refused(head), BadRequest)


def test_refuses_space_before_colon_in_content_length() -> None:
    err = _refused(_req("Host: a", "Content-Length : 5", request_line="POST / HTTP/1.1"))
    assert err.status == 400


def test_refuses_control_characters_in_values() -> None:
    assert _refused(_req("Host: a", "X: a\x00b")).status == 400
    assert _refused(_req("Host: a", "X: a\x1bb")).status == 400


def test_refuses_missing_host() -> None:
    assert _refused(_req("Accept: */*")).status == 400
    assert _refused(_req(request_line="GET / HTTP/1.0")).status == 400


def test_refuses_two_host_headers() -> None:
    assert _refused(_req("Host: a", "Host: a")).status == 400
    assert _refused(_req("Host: a", "host: b")).status == 400


@pytest.mark.parametrize("host", ["a b", "", "exa_mple.com", "a:xyz", "a:\u00b2"])
def test_refuses_invalid_host(host: str) -> None:
    assert _refused(_req(f"Host: {host}")).status == 400


@pytest.mark.parametrize(
    "target",
    [
        "http://evil.example/",
        "http://lab.localhost.evil.example/",
        "https://other.localhost/x",
        "http://user@lab.localhost/",
        "http://lab.localhost@evil.example/",
    ],
)
def test_refuses_absolute_form_with_other_host(target: str) -> None:
    err = _refused(_req("Host: lab.localhost", request_line=f"GET {target} HTTP/1.1"))
    assert isinstance(err, BadRequest)
    assert err.status == 400


@pytest.mark.parametrize("target", ["ftp://lab.localhost/", "lab.localhost/", "x"])
def test_refuses_other_target_forms(target: str) -> None:
    assert _refused(_req("Host: lab.localhost", request_line=f"GET {target} HTTP/1.1")).status == 400


@pytest.mark.parametrize(
    "request_line", ["GET / HTTP/2.0", "GET / HTTP/1.2", "GET / HTTP/0.9", "GET / HTTP/3.0"]
)
def test_refuses_other_http_versions_with_505(request_line: str) -> None:
    assert _refused(_req("Host: a", request_line=request_line)).status == 505


@pytest.mark.parametrize(
    "request_line",
    ["GET /", "GET / HTTP/1.1 extra", "GET  / HTTP/1.1", "GET / http/1.1", "G(T / HTTP/1.1", ""],
)
def test_refuses_malformed_request_lines(request_line: str) -> None:
    assert isinstance(_refused(_req("Host: a", request_line=request_line)), BadRequest)


def test_refuses_connect_with_405() -> None:
    assert _refused(_req("Host: a:443", request_line="CONNECT a:443 HTTP/1.1")).status == 405


def test_refuses_too_many_headers_with_431() -> None:
    at_limit = ["Host: a", *(f"X-{i}: v" for i in range(MAX_HEADERS - 1))]
    assert len(parse_request_head(_req(*at_limit)).headers) == MAX_HEADERS
    err = _refused(_req(*at_limit, "X-One-More: v"))
    assert err.status == 431


@pytest.mark.parametrize("te", ["gzip", "chunked, gzip", "chunked, identity", "xchunked", "", ","])
def test_refuses_transfer_encoding_not_ending_in_chunked(te: str) -> None:
    err = _refused(_req("Host: a", f"Transfer-Encoding: {te}", request_line="POST / HTTP/1.1"))
    assert err.status == 400


def test_refuses_chunked_split_over_headers_when_last_is_not_chunked() -> None:
    lines = ["Host: a", "Transfer-Encoding: chunked", "Transfer-Encoding: identity"]
    assert _refused(_req(*lines, request_line="POST / HTTP/1.1")).status == 400


def test_refuses_chunked_in_http10() -> None:
    err = _refused(_req("Host: a", "Transfer-Encoding: chunked", request_line="POST / HTTP/1.0"))
    assert isinstance(err, BadRequest)
    assert err.status == 400


# -- responses -------------------------------------------------------------------------------------


def test_parse_response_head() -> None:
    resp = _resp("Content-Type: text/plain", "Content-Length: 3", status_line="HTTP/1.0 404 Not Found")
    assert resp.version == (1, 0)
    assert resp.status == 404
    assert resp.reason == "Not Found"
    assert resp.headers == [("Content-Type", "text/plain"), ("Content-Length", "3")]


def test_parse_response_without_reason() -> None:
    assert _resp(status_line="HTTP/1.1 200").reason == ""
    assert _resp(status_line="HTTP/1.1 200 ").reason == ""


def test_response_keep_alive() -> None:
    assert _resp().keep_alive is True
    assert _resp("Connection: close").keep_alive is False
    assert _resp(status_line="HTTP/1.0 200 OK").keep_alive is False
    assert _resp("Connection: keep-alive", status_line="HTTP/1.0 200 OK").keep_alive is True


@pytest.mark.parametrize(
    "status_line",
    [
        "HTTP/2 200 OK",
        "HTTP/1.1 20 OK",
        "HTTP/1.1 099 X",
        "HTTP/1.1 abc OK",
        "HTTP/1.1  200 OK",
        "200 OK",
        "ICY 200 OK",
    ],
)
def test_malformed_status_line_is_bad_gateway(status_line: str) -> None:
    with pytest.raises(BadGateway) as info:
        _resp(status_line=status_line)
    assert info.value.status == 502


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX : a\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n",
    ],
)
def test_malformed_response_head_is_bad_gateway(head: bytes) -> None:
    with pytest.raises(BadGateway):
        parse_response_head(head)


def test_too_many_response_headers_is_bad_gateway() -> None:
    with pytest.raises(BadGateway) as info:
        _resp(*(f"X-{i}: v" for i in range(MAX_HEADERS + 1)))
    assert info.value.status == 502


def test_response_framing_head_request_has_no_body() -> None:
    resp = _resp("Content-Length: 100")
    assert response_framing(resp, "HEAD") == (Framing.NONE, 0)
    assert response_framing(_resp("Transfer-Encoding: chunked"), "HEAD") == (Framing.NONE, 0)


@pytest.mark.parametrize(
    "status_line",
    [
        "HTTP/1.1 204 No Content",
        "HTTP/1.1 304 Not Modified",
        "HTTP/1.1 100 Continue",
        "HTTP/1.1 101 Switching Protocols",
        "HTTP/1.1 103 Early Hints",
    ],
)
def test_response_framing_bodiless_statuses(status_line: str) -> None:
    resp = _resp("Content-Length: 10", status_line=status_line)
    assert response_framing(resp, "GET") == (Framing.NONE, 0)


def test_response_framing_chunked() -> None:
    assert response_framing(_resp("Transfer-Encoding: chunked"), "GET") == (Framing.CHUNKED, 0)


def test_response_framing_content_length() -> None:
    assert response_framing(_resp("Content-Length: 1234"), "POST") == (Framing.LENGTH, 1234)
    assert response_framing(_resp("Content-Length: 0"), "GET") == (Framing.NONE, 0)


def test_response_framing_without_length_reads_until_close() -> None:
    assert response_framing(_resp("Content-Type: text/plain"), "GET") == (Framing.CLOSE, 0)


def test_response_framing_cl_with_te_is_bad_gateway() -> None:
    resp = _resp("Content-Length: 5", "Transfer-Encoding: chunked")
    with pytest.raises(BadGateway) as info:
        response_framing(resp, "GET")
    assert info.value.status == 502


@pytest.mark.parametrize(
    "lines",
    [
        ("Content-Length: 5", "Content-Length: 5"),
        ("Content-Length: five",),
        ("Content-Length: \u00b2",),
        ("Transfer-Encoding: gzip",),
    ],
)
def test_response_framing_bad_lengths_are_bad_gateway(lines: tuple[str, ...]) -> None:
    with pytest.raises(BadGateway):
        response_framing(_resp(*lines), "GET")


# -- serialising -----------------------------------------------------------------------------------


def test_serialise_request_round_trip() -> None:
    head = parse_request_head(
        _req(
            "Host: lab.localhost",
            "Content-Length: 3",
            "X-A: 1",
            request_line="POST http://lab.localhost/p?q=1 HTTP/1.1",
        )
    )
    out_headers = [("Host", "lab.localhost"), ("Content-Length", "3"), ("X-Forwarded-For", "1.2.3.4")]
    wire = serialise_request(head, out_headers)
    assert wire == (
        b"POST /p?q=1 HTTP/1.1\r\n"
        b"Host: lab.localhost\r\nContent-Length: 3\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n"
    )
    again = parse_request_head(wire)
    assert (again.method, again.target, again.version) == ("POST", "/p?q=1", (1, 1))
    assert again.headers == out_headers
    assert (again.framing, again.length) == (Framing.LENGTH, 3)


def test_serialise_request_keeps_latin1_bytes() -> None:
    head = parse_request_head(b"GET / HTTP/1.1\r\nHost: a\r\nX-Name: caf\xe9\r\n\r\n")
    wire = serialise_request(head, head.headers)
    assert b"X-Name: caf\xe9\r\n" in wire
    assert parse_request_head(wire).headers == head.headers


def test_serialise_response_round_trip() -> None:
    resp = ResponseHead((1, 1), 201, "Created", [])
    headers = [("Location", "/x"), ("Content-Length", "0")]
    wire = serialise_response(resp, headers)
    assert wire.startswith(b"HTTP/1.1 201 Created\r\n")
    again = parse_response_head(wire)
    assert (again.version, again.status, again.reason, again.headers) == ((1, 1), 201, "Created", headers)


def test_serialise_response_without_reason_still_parses() -> None:
    wire = serialise_response(ResponseHead((1, 0), 200, "", []), [("X", "y")])
    again = parse_response_head(wire)
    assert (again.version, again.status, again.reason) == ((1, 0), 200, "")


@pytest.mark.parametrize("keep_alive", [True, False])
def test_simple_response_round_trip(keep_alive: bool) -> None:
    body = b'{"error": "nope"}'
    wire = simple_response(
        404, "Not Found", [("Content-Type", "application/json")], body, keep_alive=keep_alive
    )
    head_bytes, sep, rest = wire.partition(b"\r\n\r\n")
    assert sep
    resp = parse_response_head(head_bytes + sep)
    assert resp.status == 404
    assert resp.reason == "Not Found"
    assert get_one(resp.headers, "content-type") == "application/json"
    assert response_framing(resp, "GET") == (Framing.LENGTH, len(body))
    assert rest == body
    assert resp.keep_alive is keep_alive
    assert ("Connection", "close") in resp.headers or keep_alive


def test_simple_response_empty_body() -> None:
    wire = simple_response(204, "No Content", [], b"")
    resp = parse_response_head(wire)
    assert get_one(resp.headers, "content-length") == "0"
    assert response_framing(resp, "GET") == (Framing.NONE, 0)


def test_request_head_is_a_plain_dataclass() -> None:
    head = RequestHead("GET", "/x?y", (1, 1), [("Host", "a")], "a", "a", Framing.NONE, 0)
    assert serialise_request(head, head.headers) == b"GET /x?y HTTP/1.1\r\nHost: a\r\n\r\n"


def test_parsed_fields_are_indexed_by_name() -> None:
    head = parse_request_head(b"GET /p?q=1 HTTP/1.1\r\nHost: a\r\nX-A:  1 \r\nx-a: 2\r\nCookie: c\r\n\r\n")
    assert isinstance(head.headers, Fields) and head.headers.repeated
    assert head.headers == [("Host", "a"), ("X-A", "1"), ("x-a", "2"), ("Cookie", "c")]
    assert get_all(head.headers, "X-a") == ["1", "2"] and get_all(head.headers, "cookie") == ["c"]
    assert get_all(head.headers, "origin") == []
    assert (head.path, head.query, head.keep_alive, head.is_upgrade) == ("/p", "q=1", True, False)


def test_field_lookups_agree_with_a_plain_list() -> None:
    pairs = [("Host", "a"), ("Set-Cookie", "1"), ("set-cookie", "2"), ("Accept", "x")]
    for fields in (Fields(pairs), Fields(pairs[:1] + pairs[3:])):
        plain = list(fields)
        for name in ("host", "SET-COOKIE", "accept", "missing"):
            assert get_all(fields, name) == get_all(plain, name)
        assert lowered_names(fields) == lowered_names(plain)
