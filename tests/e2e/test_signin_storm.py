"""One user signing in without end (issue 11, item 5): sessions are capped per user with the oldest
replaced, hand-off codes per user are refused past their cap, nothing is made for a refused sign-in,
and another user's sessions and requests are untouched throughout."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from urllib.parse import quote

import aiohttp
import pytest

from relay.datadir import DB_FILE

from .conftest import Owned, unique_name
from .harness import Backend, RelayProcess, cookie_pair, fetch, limit_args, open_tunnel, start_relay

LIMITS = {"auth_max_sessions_per_user": "40", "sso_max_codes_per_user": "25", "auth_failure_limit": "5"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    workdir = tmp_path_factory.mktemp("signin-storm")
    workdir.chmod(0o700)
    proc = start_relay(workdir, extra=limit_args(LIMITS))
    yield proc
    proc.stop()


def _sessions(relay: RelayProcess, user: str) -> int:
    with contextlib.closing(sqlite3.connect(relay.data_dir / DB_FILE)) as db:
        query = "SELECT count(*) FROM sessions s JOIN users u ON u.id = s.user_id WHERE u.name = ?"
        return int(db.execute(query, (user,)).fetchone()[0])


async def test_a_sign_in_storm_is_bounded_and_leaves_other_users_alone(
    relay: RelayProcess, owned: Owned
) -> None:
    storm = unique_name("storm")
    storm_token = relay.add_user(storm)
    backend = Backend()
    await backend.start()
    own = await open_tunnel(relay, storm, f"{storm}:80:127.0.0.1:{backend.port}", token=storm_token)
    # The other user: signed in to its tunnel host before the storm.
    bob = await fetch(relay, owned.host, f"/?relay_token={owned.token}")
    bob_cookie = cookie_pair(bob.set_cookies[0])
    # The storm user's own tunnel, and a sign-in state: each such sign-in mints a code.
    next_url = quote(f"http://{storm}.localhost:{relay.http_port}/") + "&state=" + "s" * 24
    statuses: dict[int, int] = {}
    served: list[int] = []

    async def sign_in(session: aiohttp.ClientSession, with_next: bool) -> None:
        data = f"token={quote(storm_token)}" + (f"&next={next_url}" if with_next else "")
        async with session.post(
            f"{relay.base}/_relay/login",
            data=data,
            headers={"Host": "localhost", **FORM},
            allow_redirects=False,
        ) as resp:
            statuses[resp.status] = statuses.get(resp.status, 0) + 1

    async def bob_visits(session: aiohttp.ClientSession, done: asyncio.Event) -> None:
        while not done.is_set():
            async with session.get(
                f"{relay.base}/echo", headers={"Host": owned.host, "Cookie": bob_cookie}
            ) as resp:
                served.append(resp.status)

    done = asyncio.Event()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        visitor = asyncio.ensure_future(bob_visits(session, done))
        for n in range(0, 3000, 50):
            await asyncio.gather(*(sign_in(session, with_next=(n + i) % 10 == 0) for i in range(50)))
        done.set()
        await visitor
    # 2700 plain sign-ins (303) and 300 hand-offs: 25 codes, then 429 without a session.
    assert statuses == {303: 2700, 302: 25, 429: 275}, statuses
    assert _sessions(relay, storm) == 40  # the cap, oldest replaced
    assert _sessions(relay, owned.name) == 1
    assert served and set(served) == {200}  # bob was served throughout
    again = await fetch(relay, owned.host, "/echo", headers={"Cookie": bob_cookie})
    assert again.status == 200  # and his session survived the storm
    await own.close()
    await backend.stop()
