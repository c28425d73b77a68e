"""The relay's own TLS: a default certificate (a wildcard for the relay domain) plus per-domain
certificates for custom domains, picked by the SNI name of each handshake from ``--tls-dir``
(``TLS_DIR/HOST/fullchain.pem`` + ``privkey.pem``, certbot's layout).

Per-domain files are read at the handshake that first needs them and again whenever they change on
disk, so a renewed certificate is served without a restart.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from .domains import sni_cert_paths
from .errors import RelayError

log = logging.getLogger(__name__)


def _context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.load_cert_chain(cert, key)
    return ctx


class CertificateSet:
    """The SSLContext the HTTPS listener uses, with SNI selection over a certificate directory."""

    def __init__(self, cert: Path, key: Path, tls_dir: Path | None = None) -> None:
        try:
            self.default = _context(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise RelayError(f"cannot load --tls-cert {cert} / --tls-key {key}: {exc}") from exc
        if tls_dir is not None and not tls_dir.is_dir():
            raise RelayError(f"--tls-dir {tls_dir} is not a directory")
        self.tls_dir = tls_dir
        # host → (mtimes of cert and key, context): reloaded when either file changes.
        self._cache: dict[str, tuple[tuple[float, float], ssl.SSLContext]] = {}
        if tls_dir is not None:
            self.default.sni_callback = self._pick

    def context_for(self, server_name: str | None) -> ssl.SSLContext:
        """The context for an SNI name: its own certificate if the directory has one, else the default."""
        if server_name is None or self.tls_dir is None:
            return self.default
        paths = sni_cert_paths(server_name, self.tls_dir)
        if paths is None:
            return self.default
        cert, key = paths
        try:
            stamp = (cert.stat().st_mtime, key.stat().st_mtime)
        except OSError:
            return self.default  # no certificate of its own: the wildcard may still cover it
        host = cert.parent.name
        cached = self._cache.get(host)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            ctx = _context(cert, key)
        except (OSError, ssl.SSLError) as exc:
            log.warning("cannot load the certificate for %s from %s: %s", host, cert.parent, exc)
            return self.default
        self._cache[host] = (stamp, ctx)
        return ctx

    def _pick(self, sock: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        chosen = self.context_for(server_name)
        if chosen is not self.default:
            sock.context = chosen
