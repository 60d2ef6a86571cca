"""Read many datagrams, with their senders' credentials, in one system call.

Python's socket module has recvmsg but not recvmmsg(2).  One recvmsg per
datagram, with its ancillary data turned into Python objects, costs the log
reader more than parsing the message does; recvmmsg through ctypes reads a
whole burst per call (the GIL released meanwhile) into buffers set up once.
`Receiver` uses it where libc has it and falls back to recvmsg_into
elsewhere; both give the same tuples: (data, truncated, pid, uid, gid).

Layouts are the x86-64/aarch64 LP64 ones (socket.h): struct msghdr is 56
bytes, struct mmsghdr 64, a cmsghdr 16 followed by struct ucred (3 ints).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct

Datagram = tuple[bytes, bool, int, int, int]

_UCRED = struct.Struct("3i")
_CMSG_SPACE = socket.CMSG_SPACE(_UCRED.size)  # 32 on LP64
_FLAGS = socket.MSG_DONTWAIT | socket.MSG_TRUNC
_MMSG = 64  # sizeof(struct mmsghdr)
_LEN_AT = 56  # offsetof(struct mmsghdr, msg_len)
_CTLLEN_AT = 40  # offsetof(struct msghdr, msg_controllen)
_CMSG_DATA = 16  # CMSG_DATA offset from the cmsghdr
_MAX_BUFFER = 16 * 1024 * 1024  # all slots together
_HDR = struct.Struct(f"{_CTLLEN_AT}xN{_LEN_AT - _CTLLEN_AT - 8}xI4x")  # (msg_controllen, msg_len) of an mmsghdr
_CRED = struct.Struct(f"{_CMSG_DATA}x3i{_CMSG_SPACE - _CMSG_DATA - 12}x")  # the ucred of a control slot


def _libc_recvmmsg() -> object | None:
    if struct.calcsize("P") != 8 or os.uname().sysname != "Linux":
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).recvmmsg
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn


_recvmmsg = _libc_recvmmsg()


class Receiver:
    """Reads up to `vlen` queued datagrams of at most `cap` bytes, without blocking."""

    def __init__(self, sock: socket.socket, cap: int, vlen: int = 64, use_mmsg: bool = True) -> None:
        self.sock = sock
        self.cap = cap
        self.vlen = max(1, min(vlen, _MAX_BUFFER // cap))
        self.mmsg = use_mmsg and _recvmmsg is not None
        if self.mmsg:
            self._setup_mmsg()
        else:
            self._buf = bytearray(cap)

    def _setup_mmsg(self) -> None:
        n, cap = self.vlen, self.cap
        self._data = ctypes.create_string_buffer(n * cap)
        self._ctrl = ctypes.create_string_buffer(n * _CMSG_SPACE)
        self._iov = ctypes.create_string_buffer(n * 16)
        self._vec = ctypes.create_string_buffer(n * _MMSG)
        data, ctrl, iov = (ctypes.addressof(b) for b in (self._data, self._ctrl, self._iov))
        for i in range(n):
            struct.pack_into("PN", self._iov, i * 16, data + i * cap, cap)
            # msg_name, msg_namelen, msg_iov, msg_iovlen, msg_control, msg_controllen, msg_flags
            struct.pack_into(
                "PI4xPNPNi4x", self._vec, i * _MMSG, 0, 0, iov + i * 16, 1, ctrl + i * _CMSG_SPACE, _CMSG_SPACE, 0
            )
        self._template = self._vec.raw  # the kernel rewrites msg_controllen and msg_flags
        self._dview = memoryview(self._data).cast("B")
        self._vview = memoryview(self._vec).cast("B")
        self._cview = memoryview(self._ctrl).cast("B")

    def close(self) -> None:
        if self.mmsg:
            for v in (self._dview, self._vview, self._cview):
                v.release()

    def read(self) -> list[Datagram]:
        """What is queued, up to `vlen`."""
        return self._read_mmsg() if self.mmsg else self._read_each()

    def _read_mmsg(self) -> list[Datagram]:
        k = _recvmmsg(self.sock.fileno(), self._vec, self.vlen, _FLAGS, None)  # type: ignore[operator]
        if k <= 0:
            err = ctypes.get_errno()
            if k == 0 or err in (errno.EAGAIN, errno.EINTR):
                return []
            raise OSError(err, os.strerror(err))
        dv, cap = self._dview, self.cap
        out: list[Datagram] = []
        append = out.append
        off = 0
        # One pass over the headers and one over the credentials, in C.
        for (ctllen, n), (pid, uid, gid) in zip(
            _HDR.iter_unpack(self._vview[: k * _MMSG]), _CRED.iter_unpack(self._cview[: k * _CMSG_SPACE]), strict=False
        ):
            if ctllen < _CMSG_DATA + _UCRED.size:
                pid = uid = gid = -1
            # n is the real length: MSG_TRUNC (recv(2)).
            append((bytes(dv[off : off + (n if n < cap else cap)]), n > cap, pid, uid, gid))
            off += cap
        ctypes.memmove(self._vec, self._template, k * _MMSG)
        return out

    def _read_each(self) -> list[Datagram]:
        buf, cap = self._buf, self.cap
        out: list[Datagram] = []
        with memoryview(buf) as view:
            for _ in range(self.vlen):
                try:
                    n, anc, _flags, _addr = self.sock.recvmsg_into([buf], _CMSG_SPACE, _FLAGS)
                except (BlockingIOError, InterruptedError):
                    break
                pid = uid = gid = -1
                for level, kind, cdata in anc:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                        pid, uid, gid = _UCRED.unpack(cdata[: _UCRED.size])
                out.append((bytes(view[: min(n, cap)]), n > cap, pid, uid, gid))
        return out
