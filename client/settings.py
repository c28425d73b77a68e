"""Turn flags, environment, Colab secrets and the saved profile into one :class:`TunnelSpec`."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from .config import ClientError, load_profile, one_secret, parse_relay, resolve, wss_url
from .connect import TunnelSpec

TRANSPORTS = ("auto", "ssh", "wss")


def build_spec(
    directory: Path,
    *,
    relay: str | None,
    token: str | None,
    user: str | None,
    name: str | None,
    domain: str | None,
    port: int | None,
    lab: bool,
    host_key: str | None,
    key: Path | None,
    tcp: str | None = None,
    transport: str | None = None,
    wss: str | None = None,
) -> TunnelSpec:
    remote_port = 80
    transport_value = resolve(transport, "RELAY_TRANSPORT", None) or "auto"
    if transport_value not in TRANSPORTS:
        raise ClientError(f"invalid --transport {transport_value!r}: use auto, ssh or wss")
    wss_value = resolve(wss, "RELAY_WSS", None)
    if wss_value:
        wss_value = wss_url(wss_value)
    if tcp is not None:
        if lab or port is not None or name or domain:
            raise ClientError(
                "--tcp NAME:PORT:LOCALPORT names its own alias: no --lab, --port, --name or --domain"
            )
        name, remote_port, port = parse_tcp(tcp)
    if lab and port is not None:
        raise ClientError("use either --lab or --port, not both")
    if not lab and port is None:
        raise ClientError(
            "say what to publish: --lab (starts JupyterLab), --port PORT, or --tcp NAME:PORT:LOCALPORT"
        )
    if port is not None and not 0 < port < 65536:
        raise ClientError(f"invalid --port {port}")
    if name and domain:
        raise ClientError("use either --name or --domain, not both")
    profile = load_profile(directory)
    # One secret: --relay relay://..., or RELAY_URL (environment or Colab secret); the other flags
    # still win over the parts it carries.
    one = one_secret(relay)
    if one is not None:
        relay, user, token = f"{one.host}:{one.port}", user or one.user, token or one.token
        host_key = host_key or one.fingerprint
    relay_value = resolve(relay, "RELAY_HOST", profile.relay)
    if relay_value and relay_value.startswith(("wss://", "ws://")):
        # --relay wss://HOST: SSH over WebSocket only; the host key is pinned under HOST:2222.
        wss_value, transport_value = wss_url(relay_value), "wss"
        relay_value = urlsplit(wss_value).hostname or ""
    if not relay_value:
        raise ClientError(
            "no relay given: set RELAY_URL to the connect string `relay user add` printed, pass --relay "
            "HOST[:PORT] (or RELAY_HOST), or run `relay-client login` once"
        )
    user_value = resolve(user, "RELAY_USER", profile.user)
    if not user_value:
        raise ClientError("no user given: pass --user, set RELAY_USER, or run `relay-client login` once")
    token_value = resolve(token, "RELAY_TOKEN", profile.token)
    if not token_value and key is None:
        raise ClientError("no credential: pass --token (or set RELAY_TOKEN) or --key PRIVATE_KEY")
    if key is not None and not key.is_file():
        raise ClientError(f"--key {key}: no such file")
    if host_key is not None and not host_key.startswith("SHA256:"):
        raise ClientError("--host-key takes a fingerprint like SHA256:..., as `relay serve` prints it")
    addresses = [parse_relay(one) for one in relay_value.split(",") if one.strip()]
    if not addresses:
        raise ClientError(f"invalid relay address {relay_value!r}: expected HOST[:PORT][,HOST2[:PORT]...]")
    (host, ssh_port), others = addresses[0], tuple(addresses[1:])
    return TunnelSpec(
        relay_host=host,
        relay_port=ssh_port,
        others=others,
        user=user_value,
        local_port=port or 0,
        token=token_value,
        key_path=key,
        name=name,
        domain=domain,
        host_key=host_key,
        remote_port=remote_port,
        transport=transport_value,
        wss=wss_value or None,
    )


def parse_tcp(text: str) -> tuple[str, int, int]:
    """``--tcp NAME:PORT:LOCALPORT`` (e.g. ``box:22:22``: the runtime's sshd as the alias box:22)."""
    parts = text.split(":")
    if len(parts) != 3 or not parts[0] or not all(p.isdigit() for p in parts[1:]):
        raise ClientError(f"--tcp {text!r}: use NAME:PORT:LOCALPORT, e.g. box:22:22")
    remote, local = int(parts[1]), int(parts[2])
    if remote in (0, 80, 443) or not 0 < remote < 65536:
        raise ClientError(f"--tcp {text!r}: PORT must be 1-65535 and not 80 or 443 (those make HTTP tunnels)")
    if not 0 < local < 65536:
        raise ClientError(f"--tcp {text!r}: invalid LOCALPORT {local}")
    return parts[0], remote, local
