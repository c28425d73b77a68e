"""The classic do-it-yourself stack's SSH half: Debian's OpenSSH ``sshd`` as a throwaway server on a
loopback port (its own config, host key and authorized_keys) and the stock ``ssh -R`` client.

Both ends are pinned to AES-GCM, the cipher the relay offers, so the comparison is of the software,
not of the cipher (OpenSSH would otherwise pick chacha20-poly1305)."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .processes import Child, free_port, spawn, wait_listening

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSH = shutil.which("ssh") or "ssh"
CIPHER = "aes128-gcm@openssh.com"
#: sshd refuses to start without its privilege-separation directory (Debian's unit creates it).
PRIVSEP_DIR = Path("/run/sshd")

_CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {dir}/host_key
PidFile none
AuthorizedKeysFile {dir}/authorized_keys
# The temp directory is not laid out as a home directory; ownership checks would refuse it.
StrictModes no
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowTcpForwarding remote
GatewayPorts no
X11Forwarding no
PrintMotd no
UseDNS no
MaxStartups 2000
MaxSessions 100
Ciphers {cipher}
LogLevel ERROR
"""


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@dataclass
class Sshd:
    port: int
    user: str
    key: Path  # the client's private key, authorised for ``user``
    workdir: Path
    child: Child

    def stop(self) -> None:
        self.child.stop()


async def start_sshd(workdir: Path, *, extra_config: str = "") -> Sshd:
    workdir.mkdir(parents=True, exist_ok=True)
    if not PRIVSEP_DIR.is_dir():
        if os.geteuid() != 0:
            raise RuntimeError(f"sshd needs {PRIVSEP_DIR}; create it (as root) or run the benchmark as root")
        PRIVSEP_DIR.mkdir(mode=0o755)
    keygen(workdir / "host_key")
    key = keygen(workdir / "client_key")
    (workdir / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    port = free_port()
    config = workdir / "sshd_config"
    config.write_text(_CONFIG.format(port=port, dir=workdir, cipher=CIPHER) + extra_config)
    # -D: stay in the foreground (stoppable), -e: log to stderr (our log file).
    child = spawn("sshd", [SSHD, "-D", "-e", "-f", str(config)], workdir)
    await wait_listening(child, port)
    return Sshd(port, getpass.getuser(), key, workdir, child)


def ssh_forward_argv(sshd: Sshd, forward: str, *, pty: bool, port: int | None = None) -> list[str]:
    """``ssh -R FORWARD`` to ``sshd`` (through ``port`` if given, e.g. a delaying proxy).

    Without a pty it is ``ssh -N``, as a tunnel is usually kept; with ``-tt`` a login shell idles on
    the other end, as when a person types the command in a terminal. The difference matters: OpenSSH
    sets TCP_NODELAY only for interactive (pty) sessions (DESIGN §5)."""
    return [
        SSH,
        "-F",
        "/dev/null",
        "-p",
        str(port or sshd.port),
        "-i",
        str(sshd.key),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        f"UserKnownHostsFile={sshd.workdir / 'known_hosts'}",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ExitOnForwardFailure=yes",
        "-o",
        f"Ciphers={CIPHER}",
        "-tt" if pty else "-N",
        "-R",
        forward,
        f"{sshd.user}@127.0.0.1",
    ]


def start_forward(
    sshd: Sshd, name: str, remote_port: int, target_port: int, *, pty: bool, via: int | None = None
) -> Child:
    """``ssh -R 127.0.0.1:REMOTE:127.0.0.1:TARGET``; stdin is a pipe held open, like a terminal."""
    argv = ssh_forward_argv(sshd, f"127.0.0.1:{remote_port}:127.0.0.1:{target_port}", pty=pty, port=via)
    return spawn(name, argv, sshd.workdir, stdin=subprocess.PIPE)


async def start_classic_forward(
    sshd: Sshd, name: str, target_port: int, *, pty: bool, via: int | None = None
) -> tuple[Child, int]:
    """A live forward: the ssh client and the port sshd listens on for it."""
    remote = free_port()
    child = start_forward(sshd, name, remote, target_port, pty=pty, via=via)
    await wait_listening(child, remote)
    return child, remote
