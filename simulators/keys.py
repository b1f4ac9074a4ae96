"""SSH keys for the simulators and for demat's client account: ed25519, created once, mode 0600.

Key material is never logged; only public key lines and fingerprints leave this module.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import asyncssh


def ensure_ed25519_key(path: str | Path, *, comment: str = "") -> str:
    """Create an OpenSSH ed25519 private key at `path` (+ `path.pub`) if absent.

    Returns the public key line ("ssh-ed25519 AAAA... comment").
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519", comment=comment or None)
        data = key.export_private_key("openssh")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        Path(f"{path}.pub").write_bytes(key.export_public_key("openssh"))
    return public_key_line(path)


def public_key_line(private_path: str | Path) -> str:
    """The public key line of a private key file (read from the key, not from a .pub that could lie)."""
    key = asyncssh.read_private_key(str(private_path))
    return key.export_public_key("openssh").decode("ascii").strip()


def fingerprint(public_line: str) -> str:
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


def write_authorized_keys(path: str | Path, public_lines: list[str]) -> None:
    """Replace an authorized_keys file atomically (the server rereads it at each login)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(line.strip() + "\n" for line in public_lines), encoding="ascii")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
