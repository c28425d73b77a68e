"""DESIGN §4: imports flow one way. The HTTP front and the SSH side meet only in relay.tunnels, and
relay/ and client/ never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path, package: str) -> set[str]:
    """Absolute names of the modules ``path`` (in ``package``) imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base)
                module = f"{prefix}.{node.module}" if node.module else prefix
                found.add(module)
                found.update(f"{module}.{alias.name}" for alias in node.names)
            elif node.module:
                found.add(node.module)
    return found


def _package_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts if parts[-1] == "__init__" else parts[:-1]).removesuffix(".__init__")


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("relay/proxy", "relay.ssh"),
        ("relay/ssh", "relay.proxy"),
        ("relay", "client"),
        ("client", "relay"),
        ("ssh_tuning", "relay"),  # shared by both sides, so it may import neither
        ("ssh_tuning", "client"),
    ],
)
def test_no_import_crosses_the_seam(folder: str, forbidden: str) -> None:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, folder
    crossing = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        for name in _imports(path, _package_of(path))
        if name == forbidden or name.startswith(forbidden + ".")
    }
    assert not crossing, sorted(crossing)


def test_the_checker_sees_a_relative_import_across_the_seam(tmp_path: Path) -> None:
    # The rule above must be able to fail: a relative import resolved as it would be in relay/proxy.
    source = tmp_path / "x.py"
    source.write_text("from ..ssh.server import RelaySSHServer\n")
    assert "relay.ssh.server" in _imports(source, "relay.proxy")
