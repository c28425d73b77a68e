"""deploy/ checked by the tools that understand each file, and their wiring checked against each other.

- Caddyfile: ``caddy validate`` and ``caddy adapt`` (Caddy's own parser), for both ways it is used:
  compose (upstream ``relay:8080``) and systemd (the drop-in's ``RELAY_UPSTREAM``).
- relay.service and the Caddy drop-in: ``systemd-analyze verify`` and ``security --offline``.
- compose.yaml: ``docker-compose config`` (Debian's docker-compose, where installed) and the wiring:
  the ask URL and upstream name the relay service, the trusted proxy is Caddy's network, data in volumes.
- Dockerfile: non-root, data volume, ports; its HEALTHCHECK command runs against a real relay.
- The relay command lines in compose.yaml and relay.service start a real relay.
- Backups as docs/deploy.md describes them restore to a relay with the same host key and users.

No Docker daemon runs here, so the image itself is not built: see docs/deploy.md, "What the tests cover".
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request
from configparser import ConfigParser
from pathlib import Path
from typing import Any

import pytest
import yaml

from relay.protocol import HEALTH_PATH
from tests.e2e.harness import RelayProcess, ssh_exec, start_relay

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
CADDYFILE = DEPLOY / "Caddyfile"
TLS_ASK_PATH = "/_relay/tls-ask"
# What `relay serve` listens on unless told otherwise (relay/cli.py); Caddy must dial the same.
RELAY_HTTP_PORT = 8080
RELAY_SSH_PORT = 2222

needs_caddy = pytest.mark.skipif(shutil.which("caddy") is None, reason="caddy is not installed")
needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    tmp_path.chmod(0o700)
    return tmp_path


# -- small readers ----------------------------------------------------------------------------------


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, as both systemd's EnvironmentFile= and compose's .env read this simple form."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = dockerfile()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def unit(path: Path) -> ConfigParser:
    parser = ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


def clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    """No RELAY_*/CADDY_* from the caller's shell; Caddy's storage and config in a temp dir."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp),
        "XDG_DATA_HOME": str(tmp / "data"),
        "XDG_CONFIG_HOME": str(tmp / "config"),
        **extra,
    }


def relay_exe() -> str:
    """The console script of this checkout's install (pyproject's [project.scripts] relay)."""
    return str(Path(sys.executable).with_name("relay"))


def start_with_args(workdir: Path, args: list[str], overrides: dict[str, str]) -> RelayProcess:
    """A real relay from a deployment's ``relay serve ...`` arguments, with test ports and data dir.

    The deployment's own values of the overridden options are checked against ``overrides``' keys
    by the caller; they are replaced here because the harness picks free loopback ports."""
    assert args[0] == "serve", args
    rest = args[1:]
    kept: list[str] = []
    i = 0
    while i < len(rest):
        if rest[i] in overrides:
            i += 2
            continue
        kept.append(rest[i])
        i += 1
    return start_relay(workdir, extra=kept)


def health_status(relay: RelayProcess, domain: str) -> int:
    """The relay's health page on its own host, over plain HTTP as a front proxy would ask.

    Answered only once ``relay serve`` is in its main loop, so a SIGTERM after it is handled."""
    request = urllib.request.Request(f"{relay.base}{HEALTH_PATH}", headers={"Host": domain})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return int(resp.status)


def option(args: list[str], name: str) -> str:
    values = [args[i + 1] for i, a in enumerate(args) if a == name]
    assert len(values) == 1, f"{name} given {len(values)} times in {args}"
    return values[0]


# -- Caddyfile --------------------------------------------------------------------------------------


def caddy_adapt(tmp: Path, **env: str) -> dict[str, Any]:
    result = subprocess.run(
        ["caddy", "adapt", "--adapter", "caddyfile", "--config", str(CADDYFILE)],
        env=clean_env(tmp, **env),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert isinstance(doc, dict)
    return doc


def tls_settings(doc: dict[str, Any]) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """(ask URL, issuers, the single automation policy) of an adapted config."""
    automation = doc["apps"]["tls"]["automation"]
    [policy] = automation["policies"]
    return automation["on_demand"]["ask"], policy["issuers"], policy


def upstream(doc: dict[str, Any]) -> str:
    [server] = doc["apps"]["http"]["servers"].values()
    [route] = server["routes"]
    [handler] = route["handle"]
    assert handler["handler"] == "reverse_proxy"
    [target] = handler["upstreams"]
    return str(target["dial"])


@needs_caddy
def test_caddyfile_validates_and_gates_on_demand_tls_with_the_ask_endpoint(workdir: Path) -> None:
    result = subprocess.run(
        ["caddy", "validate", "--adapter", "caddyfile", "--config", str(CADDYFILE)],
        env=clean_env(workdir),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "Valid configuration" in result.stdout + result.stderr

    doc = caddy_adapt(workdir)
    ask, issuers, policy = tls_settings(doc)
    # Compose defaults: the relay is the service `relay` on its default HTTP port.
    assert ask == f"http://relay:{RELAY_HTTP_PORT}{TLS_ASK_PATH}"
    assert upstream(doc) == f"relay:{RELAY_HTTP_PORT}"
    assert policy["on_demand"] is True
    # One CA only (no silent fallback to another), and no OCSP requests.
    assert issuers == [{"ca": "https://acme-v02.api.letsencrypt.org/directory", "module": "acme"}]
    assert doc["apps"]["tls"]["disable_ocsp_stapling"] is True
    [server] = doc["apps"]["http"]["servers"].values()
    assert server["listen"] == ["0.0.0.0:443"]
    assert server["protocols"] == ["h1", "h2"]
    assert doc["apps"]["http"]["http_port"] == 80
    assert doc["admin"]["listen"] == "localhost:2019"  # inside Caddy's container or host only


@needs_caddy
def test_caddyfile_takes_the_systemd_drop_in_upstream(workdir: Path) -> None:
    dropin = unit(DEPLOY / "caddy-relay.conf")
    key, _, value = dropin["Service"]["Environment"].partition("=")
    assert key == "RELAY_UPSTREAM"
    doc = caddy_adapt(workdir, **{key: value})
    ask, _, _ = tls_settings(doc)
    assert upstream(doc) == value == f"127.0.0.1:{RELAY_HTTP_PORT}"
    assert ask == f"http://{value}{TLS_ASK_PATH}"
    # The relay under systemd listens where Caddy dials, and trusts exactly Caddy's address.
    args = shlex.split(unit(DEPLOY / "relay.service")["Service"]["ExecStart"])
    assert option(args, "--http-port") == value.rsplit(":", 1)[1]
    assert option(args, "--trust-proxy") == value.rsplit(":", 1)[0] + "/32"


# -- systemd ----------------------------------------------------------------------------------------


def installed_unit(workdir: Path) -> Path:
    """relay.service with ExecStart's binary pointed at this checkout's relay (verify checks it exists)."""
    text = (DEPLOY / "relay.service").read_text()
    assert "/opt/relay/bin/relay serve" in text
    path = workdir / "relay.service"
    path.write_text(text.replace("/opt/relay/bin/relay", relay_exe()))
    return path


@needs_systemd_analyze
def test_relay_unit_passes_systemd_analyze_verify(workdir: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(installed_unit(workdir))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Unknown keys and bad values are only warnings (exit 0): any output at all is a failure.
    assert result.returncode == 0 and result.stderr == "", result.stderr


@needs_systemd_analyze
def test_relay_unit_is_hardened(workdir: Path) -> None:
    # systemd's own exposure score, 0 (locked down) to 10; 2.0 or less is "OK" with margin.
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=20", str(installed_unit(workdir))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    service = unit(DEPLOY / "relay.service")["Service"]
    assert service["User"] == "relay" and service["CapabilityBoundingSet"] == ""
    assert service["Environment"] == "RELAY_DATA_DIR=/var/lib/relay"
    assert service["StateDirectory"] == "relay" and service["StateDirectoryMode"] == "0700"
    # The relay drains for 30 s on SIGTERM (docs/quickstart.md); systemd must wait longer.
    assert int(service["TimeoutStopSec"].removesuffix("s")) > 35


@needs_systemd_analyze
def test_caddy_drop_in_passes_systemd_analyze_verify(workdir: Path) -> None:
    debian_unit = Path("/lib/systemd/system/caddy.service")
    if not debian_unit.exists():
        pytest.skip("Debian's caddy.service is not installed")
    shutil.copy(debian_unit, workdir / "caddy.service")
    (workdir / "caddy.service.d").mkdir()
    shutil.copy(DEPLOY / "caddy-relay.conf", workdir / "caddy.service.d" / "relay.conf")
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(workdir / "caddy.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify reads drop-ins next to the unit: a bad key in relay.conf would be reported here.
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "/etc/caddy/Caddyfile" in debian_unit.read_text()


def test_relay_unit_command_starts_a_relay(workdir: Path) -> None:
    service = unit(DEPLOY / "relay.service")["Service"]
    assert service["EnvironmentFile"] == "/etc/relay/relay.env"
    env = env_file(DEPLOY / "relay.env.example")
    # systemd expands ${VAR} in ExecStart= from the EnvironmentFile.
    command = re.sub(r"\$\{(\w+)\}", lambda m: env[m[1]], service["ExecStart"])
    args = shlex.split(command)
    assert args[0] == "/opt/relay/bin/relay"
    assert option(args[1:], "--ssh-port") == str(RELAY_SSH_PORT)
    relay = start_with_args(workdir, args[1:], {"--http-port": "", "--ssh-port": ""})
    try:
        assert "public URL https://relay.example.com" in relay.output[0]
        assert health_status(relay, "relay.example.com") == 200
    finally:
        assert relay.stop() == 0


# -- compose ----------------------------------------------------------------------------------------


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?message}, for when docker-compose is missing."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m[1], m[2] or "", m[3] or ""
        if env.get(name):
            return env[name]
        if op == ":?":
            raise AssertionError(f"compose.yaml requires {name}: {arg}")
        return arg if op == ":-" else ""

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, text)


def resolved_compose(compose_file: Path, env_example: Path) -> dict[str, Any]:
    """``compose_file`` resolved with ``env_example``, by docker-compose when it is installed."""
    if shutil.which("docker-compose"):
        result = subprocess.run(
            ["docker-compose", "--env-file", str(env_example), "-f", str(compose_file), "config"],
            env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/")},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        doc = yaml.safe_load(result.stdout)
    else:
        doc = yaml.safe_load(interpolate(compose_file.read_text(), env_file(env_example)))
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """compose.yaml resolved with deploy/relay.env.example."""
    return resolved_compose(DEPLOY / "compose.yaml", DEPLOY / "relay.env.example")


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
def test_compose_file_is_valid_and_needs_a_domain(workdir: Path) -> None:
    # Without RELAY_DOMAIN docker-compose refuses to render the file, naming the variable.
    result = subprocess.run(
        ["docker-compose", "--project-directory", str(workdir), "-f", str(DEPLOY / "compose.yaml"), "config"],
        env={"PATH": os.environ["PATH"], "HOME": str(workdir)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "set RELAY_DOMAIN in deploy/.env" in result.stderr


def ports(service: dict[str, Any]) -> set[tuple[int, int]]:
    """(published, target) pairs, from either the short or docker-compose's long syntax."""
    out = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.add((int(port["published"]), int(port["target"])))
        else:
            published, target = str(port).rsplit(":", 1)
            out.add((int(published.rsplit(":", 1)[-1]), int(target)))
    return out


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path → source, for the short volume syntax."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        out[target] = source
    return out


@needs_caddy
def test_compose_wires_caddy_to_the_relay(compose: dict[str, Any], workdir: Path) -> None:
    services = compose["services"]
    relay, caddy = services["relay"], services["caddy"]
    adapted = caddy_adapt(workdir)  # the defaults are what compose runs with (no env for Caddy)
    ask, _, _ = tls_settings(adapted)
    host, port = upstream(adapted).rsplit(":", 1)
    # Caddy dials the relay service by name on the port the relay listens on and the image exposes.
    assert host in services and services[host] is relay
    assert int(port) == RELAY_HTTP_PORT
    assert "--http-port" not in relay["command"]
    assert f"EXPOSE {RELAY_HTTP_PORT} {RELAY_SSH_PORT}" in [f"{w} {a}" for w, a in final_stage()]
    assert ask == f"http://{host}:{port}{TLS_ASK_PATH}"
    # The Caddyfile mounted is this one, read-only, where the caddy image reads it.
    assert str(DEPLOY / "Caddyfile") in mounts(caddy)["/etc/caddy/Caddyfile"] or (
        mounts(caddy)["/etc/caddy/Caddyfile"] == "./Caddyfile"
    )
    assert caddy["image"].startswith("caddy:2")
    assert caddy["depends_on"]["relay"]["condition"] == "service_healthy"
    # Visitors reach Caddy only; the relay publishes SSH, never its plain HTTP port.
    assert {(80, 80), (443, 443)} <= ports(caddy)
    assert ports(relay) == {(RELAY_SSH_PORT, RELAY_SSH_PORT)}
    # The relay believes X-Forwarded-* only from the network Caddy reaches it on.
    [subnet] = [c["subnet"] for c in compose["networks"]["relay"]["ipam"]["config"]]
    assert option(relay["command"], "--trust-proxy") == subnet
    assert set(relay["networks"]) == set(caddy["networks"]) == {"relay"}


def test_compose_keeps_state_in_named_volumes(compose: dict[str, Any]) -> None:
    services, volumes = compose["services"], compose["volumes"]
    relay_mounts, caddy_mounts = mounts(services["relay"]), mounts(services["caddy"])
    assert relay_mounts["/data"] in volumes
    assert caddy_mounts["/data"] in volumes and caddy_mounts["/config"] in volumes
    # The image's data dir is the mounted one.
    assert "RELAY_DATA_DIR=/data" in dict(final_stage())["ENV"].replace("\\", "").split()
    assert ("VOLUME", "/data") in final_stage()


def test_compose_relay_is_locked_down_and_healthchecked(compose: dict[str, Any]) -> None:
    relay = compose["services"]["relay"]
    assert relay["read_only"] is True and relay["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in relay["security_opt"]
    domain = option(relay["command"], "--domain")
    assert option(relay["command"], "--public-url") == f"https://{domain}"


def test_compose_relay_command_starts_a_relay(compose: dict[str, Any], workdir: Path) -> None:
    # The image's ENTRYPOINT is `relay`; compose's command is its arguments.
    assert ("ENTRYPOINT", '["relay"]') in final_stage()
    command = list(compose["services"]["relay"]["command"])
    relay = start_with_args(workdir, command, {})
    try:
        assert "public URL https://relay.example.com" in relay.output[0]
        assert health_status(relay, option(command, "--domain")) == 200
    finally:
        assert relay.stop() == 0


# -- Dockerfile -------------------------------------------------------------------------------------


def test_dockerfile_runs_as_a_non_root_user_from_slim_python() -> None:
    stage = final_stage()
    assert stage[0] == ("FROM", "python:3.12-slim")
    users = [arg for word, arg in stage if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert [w for w, _ in stage].index("USER") < [w for w, _ in stage].index("ENTRYPOINT")


def test_dockerignore_sends_only_the_package_sources() -> None:
    lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    assert lines[0] == "*"  # everything is excluded unless listed below
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    sources = []
    for word, arg in dockerfile():
        if word == "COPY" and not arg.startswith("--from"):
            sources += arg.split()[:-1]
    assert sources and {s.rstrip("/") for s in sources} <= allowed
    for source in sources:
        assert (REPO / source).exists()
    assert not allowed & {".git", ".venv", "data", "tests", "deploy"}


def healthcheck_argv(port: int) -> list[str]:
    [arg] = [arg for word, arg in final_stage() if word == "HEALTHCHECK"]
    argv = json.loads(arg.split("CMD", 1)[1])
    assert argv[0] == "python" and f"'http://127.0.0.1:{RELAY_HTTP_PORT}{HEALTH_PATH}'" in argv[2]
    # The relay in the container listens on 8080; this one on a free port, with this Python.
    return [sys.executable, *argv[1:-1], argv[-1].replace(f":{RELAY_HTTP_PORT}/", f":{port}/")]


def test_dockerfile_healthcheck_passes_on_a_running_relay_only(workdir: Path) -> None:
    relay = start_relay(workdir, extra=["--domain", "relay.example.com"])
    try:
        argv = healthcheck_argv(relay.http_port)
        assert subprocess.run(argv, capture_output=True, timeout=30).returncode == 0
    finally:
        relay.stop()
    down = subprocess.run(argv, capture_output=True, timeout=30)
    assert down.returncode != 0


# -- backups (docs/deploy.md, "Backups") ------------------------------------------------------------


async def assert_restored(workdir: Path, restored: Path, fingerprint: str, token: str) -> None:
    """A relay on the restored data dir has the same host key, and alice's token still logs in."""
    (workdir / "after").mkdir(mode=0o700)
    relay = start_relay(workdir / "after", data_dir=restored)
    try:
        assert relay.fingerprint == fingerprint
        assert relay.admin_token == ""  # not a first start: the admin user came back too
        code, out, err = await ssh_exec(relay, "alice", ["tunnels", "--json"], token=token)
        assert code == 0, err
        json.loads(out)  # the relay's own answer, not a shell's
    finally:
        relay.stop()


@pytest.mark.skipif(shutil.which("sqlite3") is None, reason="the sqlite3 command is not installed")
async def test_online_backup_with_sqlite3_restores(workdir: Path) -> None:
    relay = start_relay(workdir)
    backup = workdir / "backup"
    backup.mkdir(mode=0o700)
    try:
        token = relay.add_user("alice")
        # The documented commands, while the relay runs: a consistent copy of the database (WAL
        # included), then the host key, whose loss would make every client refuse the relay.
        # umask 077: the relay refuses a database file that others can read.
        data, dest = relay.data_dir, backup
        script = (
            f'umask 077; sqlite3 {data}/relay.db ".backup {dest}/relay.db"'
            f" && cp -p {data}/ssh_host_ed25519_key {dest}/"
        )
        subprocess.run(["sh", "-c", script], check=True)
    finally:
        relay.stop()
    await assert_restored(workdir, backup, relay.fingerprint, token)


async def test_stop_and_copy_backup_restores(workdir: Path) -> None:
    relay = start_relay(workdir)
    try:
        token = relay.add_user("alice")
    finally:
        relay.stop()
    # The documented commands: the relay stopped, the whole data dir as a tar stream, restored.
    archive = workdir / "relay-data.tar.gz"
    with archive.open("wb") as out:
        subprocess.run(["tar", "czf", "-", "-C", str(relay.data_dir), "."], stdout=out, check=True)
    restored = workdir / "restored"
    restored.mkdir(mode=0o700)
    with archive.open("rb") as src:
        subprocess.run(["tar", "xzpf", "-", "-C", str(restored)], stdin=src, check=True)
    await assert_restored(workdir, restored, relay.fingerprint, token)


@needs_systemd_analyze
def test_port_22_drop_in_changes_only_the_ssh_port(workdir: Path) -> None:
    main = installed_unit(workdir)
    (workdir / "relay.service.d").mkdir()
    dropin_text = (DEPLOY / "relay-ssh-port-22.conf").read_text()
    (workdir / "relay.service.d" / "ssh-port-22.conf").write_text(
        dropin_text.replace("/opt/relay/bin/relay", relay_exe())
    )
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(main)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    # The drop-in's command is the unit's, but for the SSH port: nothing else drifts apart.
    [_, command] = [v for k, v in _lines(dropin_text) if k == "ExecStart"]
    base = unit(DEPLOY / "relay.service")["Service"]["ExecStart"]
    assert command == base.replace(f"--ssh-port {RELAY_SSH_PORT}", "--ssh-port 22") != base


def _lines(text: str) -> list[tuple[str, str]]:
    """KEY=VALUE lines of a unit file, repeated keys kept (ConfigParser would keep only the last)."""
    out = []
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.append((key.strip(), value.strip()))
    return out


def test_deploy_guide_uses_the_files_and_commands_tested_here() -> None:
    """docs/deploy.md and the tests above must not drift apart: the guide's paths and commands are
    the ones these tests run."""
    guide = (REPO / "docs" / "deploy.md").read_text()
    service = unit(DEPLOY / "relay.service")["Service"]
    expected = [
        "cp relay.env.example .env",  # compose reads .env next to compose.yaml
        f"relay.env.example {service['EnvironmentFile']}",  # the unit's EnvironmentFile
        "/etc/systemd/system/caddy.service.d/relay.conf",
        "/etc/systemd/system/relay.service.d/ssh-port-22.conf",
        "/etc/caddy/Caddyfile",  # where Debian's caddy.service reads it
        'umask 077; sqlite3 /var/lib/relay/relay.db ".backup',  # test_online_backup_with_sqlite3_restores
        "cp -p /var/lib/relay/ssh_host_ed25519_key",
        "--entrypoint tar relay czf - -C /data .",  # test_stop_and_copy_backup_restores
        "--entrypoint tar relay xzpf - -C /data",
        "relay domain add lab.example.org --user alice",  # test_acme.py: the custom domain
        "relay domain verify lab.example.org",
        "-R lab.example.org:80:localhost:8888",
        "_relay-challenge.lab.example.org",
    ]
    missing = [text for text in expected if text not in guide]
    assert not missing, missing
    assert service["Environment"].split("=", 1)[1] == "/var/lib/relay"


def _exported_metric_names() -> set[str]:
    """Every sample name the relay's collector exports (over an empty relay)."""
    from relay.metrics import HostTotals, Meter, RelayCollector
    from relay.tunnels import Registry

    collector = RelayCollector(
        Meter(), HostTotals(Registry(), max_hosts=10), ssh_connections=lambda: 0, websockets=lambda: 0,
        served=lambda host: True,
    )  # fmt: skip
    names = set()
    for family in collector.collect():
        names.add(family.name)
        names.update({f"{family.name}_total", f"{family.name}_bucket", f"{family.name}_count"})
    return names


def test_the_grafana_dashboard_queries_only_metrics_the_relay_exports() -> None:
    dashboard = json.loads((DEPLOY / "monitoring" / "grafana-dashboard.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\brelay_[a-z_]+", target["expr"])
    }
    assert queried and queried <= _exported_metric_names(), queried - _exported_metric_names()


def test_the_prometheus_example_scrapes_the_documented_metrics_address() -> None:
    config = yaml.safe_load((DEPLOY / "monitoring" / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:9464"]
    guide = (REPO / "docs" / "deploy.md").read_text()
    assert "--metrics-bind 127.0.0.1:9464" in guide and "deploy/monitoring/grafana-dashboard.json" in guide


# -- the cluster example (deploy/cluster/) ------------------------------------------------------------

CLUSTER = DEPLOY / "cluster"


@pytest.fixture(scope="module")
def cluster_compose() -> dict[str, Any]:
    """deploy/cluster/compose.yaml resolved with its env example."""
    return resolved_compose(CLUSTER / "compose.yaml", CLUSTER / "cluster.env.example")


def test_the_cluster_example_runs_two_nodes_on_one_store(cluster_compose: dict[str, Any]) -> None:
    services = cluster_compose["services"]
    nodes = {name: services[name] for name in ("relay1", "relay2")}
    stores = {str(s["environment"]["RELAY_STORE"]) for s in nodes.values()}
    assert (
        len(stores) == 1
        and next(iter(stores)).startswith("postgresql://relay:")
        and "@postgres/relay" in next(iter(stores))
    )  # one store, its password from .env
    assert sorted(option(s["command"], "--node") for s in nodes.values()) == ["relay1", "relay2"]
    for service in nodes.values():
        address = option(service["command"], "--cluster-address")
        # Each node's link is at its own fixed address on the cluster network, which is not published.
        assert address.rsplit(":", 1)[0] == service["networks"]["cluster"]["ipv4_address"]
        assert all(target != 7700 for _, target in ports(service))
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        caddy_ip = services["caddy"]["networks"]["cluster"]["ipv4_address"]
        assert option(service["command"], "--trust-proxy") == f"{caddy_ip}/32"
    assert {target for s in nodes.values() for _, target in ports(s)} == {RELAY_SSH_PORT}
    assert len({published for s in nodes.values() for published, _ in ports(s)}) == 2


@needs_caddy
def test_the_cluster_caddyfile_balances_across_both_nodes(workdir: Path) -> None:
    result = subprocess.run(
        ["caddy", "adapt", "--adapter", "caddyfile", "--config", str(CLUSTER / "Caddyfile")],
        env=clean_env(workdir),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert '"dial":"relay1:8080"' in text and '"dial":"relay2:8080"' in text
    assert '"uri":"/_relay/health"' in text and "round_robin" in text
