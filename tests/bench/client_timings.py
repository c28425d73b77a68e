"""Client timings, printed as a Markdown table: time from ``relay-client connect --port P`` to the URL
printed, and time for the client to be back after a relay restart. Loopback only.

    python -m tests.bench.client_timings [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from client.connect import STABLE_AFTER
from tests.e2e.harness import client_argv, client_env, start_relay


def _start_client(
    ssh_port: int, home: Path, user: str, token: str, name: str, port: int
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        client_argv(ssh_port, ["--user", user, "--token", token, "--name", name, "--port", str(port)]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=client_env(home),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.chmod(work, 0o700)
        relay = start_relay(work)
        token = relay.add_user("bench")
        to_url = []
        for i in range(args.rounds):
            started = time.monotonic()
            client = _start_client(relay.ssh_port, work, "bench", token, f"t{i}", relay.http_port)
            assert client.stdout is not None
            url = client.stdout.readline().strip()
            to_url.append(time.monotonic() - started)
            assert url == relay.url(f"t{i}"), url
            client.terminate()
            client.wait()
        client = _start_client(relay.ssh_port, work, "bench", token, "back", relay.http_port)
        assert client.stdout is not None and client.stderr is not None
        client.stdout.readline()
        back = []
        for _ in range(args.rounds):
            # A link that stayed up STABLE_AFTER seconds resets the client's backoff, as in real use.
            time.sleep(STABLE_AFTER + 1)
            stopped = time.monotonic()
            relay.stop(signal.SIGTERM)
            relay = start_relay(work, http_port=relay.http_port, ssh_port=relay.ssh_port)
            while "back:" not in client.stderr.readline():
                pass
            back.append(time.monotonic() - stopped)
        client.terminate()
        client.wait()
        relay.stop()

    def row(label: str, values: list[float]) -> str:
        return (
            f"| {label} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} "
            f"| {len(values)} |"
        )

    print(f"cores: {os.cpu_count()}, python {sys.version.split()[0]}\n")
    print("| measurement (seconds) | median | min | max | rounds |")
    print("|---|---|---|---|---|")
    print(row("`relay-client connect --port P` → URL printed (includes Python start-up)", to_url))
    print(row("relay SIGTERM → restarted → client `back:` (includes relay start-up)", back))


if __name__ == "__main__":
    main()
