"""relay-client's choice among the relay's addresses: the resolver's order, recent failures last."""

from __future__ import annotations

import socket

import pytest

from client.addresses import SHUN_FOR, AddressBook, AddrInfo, tcp_connect


def _info(address: str) -> AddrInfo:
    return (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, 2222))


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"


@pytest.mark.parametrize(
    ("failures", "then", "expected"),
    [
        ([], 0.0, [A, B, C]),  # nothing failed: the resolver's order
        ([(A, 0.0)], 1.0, [B, C, A]),  # the one that failed goes last
        ([(B, 0.0)], 1.0, [A, C, B]),
        ([(A, 0.0), (B, 5.0)], 6.0, [C, A, B]),  # of two that failed, the older failure first
        ([(A, 0.0), (B, 0.0), (C, 0.0)], 1.0, [A, B, C]),  # all failed at once: as resolved
        ([(A, 0.0)], SHUN_FOR + 0.1, [A, B, C]),  # a failure long ago is forgotten
        ([(A, 0.0), (A, 50.0)], SHUN_FOR + 1.0, [B, C, A]),  # ... counted from the latest
        ([("10.9.9.9", 0.0)], 1.0, [A, B, C]),  # an address the name no longer has: no effect
    ],
)
def test_recently_failed_addresses_go_last(
    failures: list[tuple[str, float]], then: float, expected: list[str]
) -> None:
    clock = _Clock()
    book, start = AddressBook(clock), clock.now
    for address, at in failures:
        clock.now = start + at
        book.failed(address)
    clock.now = start + then
    assert [info[4][0] for info in book.order([_info(A), _info(B), _info(C)])] == expected


async def test_an_address_that_refuses_is_marked_failed_and_one_that_answers_is_used() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = int(server.getsockname()[1])
        book = AddressBook()
        sock, count = await tcp_connect("127.0.0.1", port, 5, book)
        with sock:
            assert sock.getpeername() == ("127.0.0.1", port) and count == 1
    book = AddressBook()  # the server is closed now: nothing listens on its port
    with pytest.raises(ConnectionRefusedError):
        await tcp_connect("127.0.0.1", port, 5, book)
    assert [i[4][0] for i in book.order([_info("127.0.0.1"), _info(A)])] == [A, "127.0.0.1"]
