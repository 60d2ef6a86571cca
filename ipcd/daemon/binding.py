"""Socket files that appear with their final mode, and the checks before binding.

`bind_unix` creates a socket file with its mode and group set before it
becomes visible (bind in a private directory, chmod, listen, rename into
place), so there is no moment when the path is open wider than configured
or exists without a listener.  `probe` tells a live socket from a stale
one; `Bound` remembers which file ipcd made, so that only that one is ever
unlinked.  What to bind and when is `daemon`'s business.

The kernel keeps the name a socket was bound with: `ss -x` and a peer's
getpeername() show the private directory's path, not the final one.
Clients connect by path and never see the difference.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import tempfile
from dataclasses import dataclass

from ipcd.errors import StartupError

SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 for the NUL (unix(7))


# -- binding -----------------------------------------------------------------


@dataclass
class Bound:
    """A socket file ipcd created; `daemon` unlinks it only if it is still ours."""

    path: str
    dev: int
    ino: int

    def unlink_if_ours(self) -> bool:
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == (self.dev, self.ino):
                os.unlink(self.path)
                return True
        except FileNotFoundError:
            pass
        return False


def check_path_length(path: str) -> None:
    n = len(os.fsencode(path))
    if n > SUN_PATH_MAX:
        raise StartupError(
            f"socket path {path!r} is {n} bytes; AF_UNIX allows at most {SUN_PATH_MAX} (unix(7)): "
            "choose a shorter --runtime-dir",
            errno.ENAMETOOLONG,
        )


def probe(path: str, kind: int) -> str:
    """What sits at `path`: "absent", "stale", "live", or "other" (not a socket)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "absent"
    if not stat.S_ISSOCK(st.st_mode):
        return "other"
    s = socket.socket(socket.AF_UNIX, kind | socket.SOCK_CLOEXEC)
    try:
        s.settimeout(2.0)
        s.connect(path)
        return "live"
    except ConnectionRefusedError:
        return "stale"
    except FileNotFoundError:
        return "absent"
    except OSError as e:
        if e.errno == errno.EPROTOTYPE:  # a socket of the other type: not ours, in use or not
            return "other"
        raise StartupError(f"cannot probe {path}: {e.strerror}", e.errno or errno.EIO) from None
    finally:
        s.close()


def bind_unix(sock: socket.socket, path: str, mode: int, gid: int = -1, backlog: int | None = None) -> Bound:
    """Bind `sock` so that `path` appears with `mode` and group `gid` at once.

    The socket is bound inside a fresh 0700 directory beside `path`, given
    its mode and group there, made to listen (stream sockets: the path never
    exists without a listener), then renamed over `path`: rename(2) is
    atomic and replaces a stale file in the same step.
    """
    check_path_length(path)
    tmpdir = tempfile.mkdtemp(prefix=".bind-", dir=os.path.dirname(path) or ".")
    dfd = os.open(tmpdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        staged = os.path.join(tmpdir, "s")
        if len(os.fsencode(staged)) > SUN_PATH_MAX:
            staged = f"/proc/self/fd/{dfd}/s"  # the same directory, by a shorter name
        sock.bind(staged)
        if backlog is not None:
            sock.listen(backlog)
        if gid != -1:
            os.chown("s", -1, gid, dir_fd=dfd)
        os.chmod("s", mode, dir_fd=dfd)
        os.rename("s", path, src_dir_fd=dfd)
    finally:
        try:
            os.unlink("s", dir_fd=dfd)
        except OSError:
            pass
        os.close(dfd)
        os.rmdir(tmpdir)
    st = os.lstat(path)
    return Bound(path, st.st_dev, st.st_ino)
