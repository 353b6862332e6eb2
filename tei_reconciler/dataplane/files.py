"""Where Envoy's private files live: the bootstrap and three Unix sockets.

`<runtime_dir>/envoy/` (mode 0700): `bootstrap.json` (0600), `admin.sock` (Envoy's admin
interface), `xds.sock` (the reconciler's control plane) and `router.sock` (the Python router
behind Envoy). Nothing there listens on a network port, and only the reconciler's user can
open the directory. A Unix socket path must fit in 107 bytes; when the runtime directory is
too deep for that, the sockets go to a directory of this user under the system's temporary
directory, named after the runtime directory, so the next reconciler finds them again.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path

import msgspec

from tei_reconciler.errors import DataPlaneError

MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes with its NUL; leave room


class EnvoyFiles(msgspec.Struct, frozen=True, kw_only=True):
    directory: str
    bootstrap: str
    admin_socket: str
    xds_socket: str
    router_socket: str


def _private_dir(path: Path) -> Path:
    """`path` as a directory only this user can enter (created, or checked and tightened)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise DataPlaneError(f"{path} is not a directory of this user")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def envoy_files(runtime_dir: Path) -> EnvoyFiles:
    home = _private_dir(runtime_dir.absolute() / "envoy")
    sockets = home
    if len(str(home / "router.sock")) > MAX_SOCKET_PATH:
        digest = hashlib.sha256(str(home).encode()).hexdigest()[:12]
        base = _private_dir(Path(tempfile.gettempdir()) / f"tei-reconciler-{os.getuid()}")
        sockets = _private_dir(base / digest)
    return EnvoyFiles(
        directory=str(home),
        bootstrap=str(home / "bootstrap.json"),
        admin_socket=str(sockets / "admin.sock"),
        xds_socket=str(sockets / "xds.sock"),
        router_socket=str(sockets / "router.sock"),
    )


def remove_stale_socket(path: str) -> None:
    """A socket left by a reconciler that is gone (ours to replace: the lock is held)."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
