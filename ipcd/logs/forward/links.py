"""The connections to forwarding targets, all non-blocking, for one poll loop.

`StreamLink` is TCP or TLS (RFC 5425, stdlib `ssl`: the `ca_file`, or the
system's CAs, and the host name checked): it connects and shakes hands
without blocking (`progress` on each poll event) and says how many bytes
the peer's TCP has acknowledged (`acked`, from TCP_INFO), which is what the
at-least-once window is measured on.  `DatagramLink` is UDP or a unix
datagram socket (journald): each message is one datagram, and the kernel
taking it is all the delivery there is.  A link that fails raises OSError
(ssl.SSLError is one); the target decides what happens next.
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import ssl
import struct
import termios

from ipcd.config import ForwardConfig, split_address

TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", 18)  # linux/tcp.h
TCP_INFO_BYTES_ACKED = 120  # offsetof(struct tcp_info, tcpi_bytes_acked), Linux >= 4.1
SIOCOUTQ = getattr(termios, "TIOCOUTQ", 0x5411)  # tcp(7): unsent and unacknowledged bytes
POLL_IN = select.POLLIN
POLL_OUT = select.POLLOUT


def tls_context(cfg: ForwardConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cfg.ca_file or None)  # CERT_REQUIRED, check_hostname
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 5425 §4.2 asks for 1.2 or later (RFC 9662)
    return ctx


class StreamLink:
    """TCP, or TLS over TCP: connect, handshake, write, and how much was acknowledged."""

    datagram = False

    def __init__(self, cfg: ForwardConfig, addr: tuple[int, tuple[object, ...]], context: ssl.SSLContext | None):
        family, sockaddr = addr
        self.cfg = cfg
        self.context = context
        self.sock: socket.socket | ssl.SSLSocket = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        # Data the peer has not acknowledged for timeout_s breaks the connection (tcp(7)).
        self.sock.setsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT, int(cfg.timeout_s * 1000))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.phase = "tcp"
        self.want = POLL_OUT
        err = self.sock.connect_ex(sockaddr)
        if err not in (0, 115):  # EINPROGRESS
            raise OSError(err, f"connect: {os.strerror(err)}")

    @property
    def up(self) -> bool:
        return self.phase == "up"

    def fileno(self) -> int:
        return self.sock.fileno()

    def progress(self) -> None:
        """Move the connect and the TLS handshake on; `up` once both are done."""
        if self.phase == "tcp":
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise ConnectionError(err, f"connect: {os.strerror(err)}")
            if self.context is None:
                self.phase, self.want = "up", POLL_IN
                return
            _, host, _ = split_address(self.cfg.address)
            self.sock = self.context.wrap_socket(
                self.sock, server_hostname=self.cfg.server_name or host, do_handshake_on_connect=False
            )
            self.phase = "tls"
        if self.phase == "tls":
            assert isinstance(self.sock, ssl.SSLSocket)
            try:
                self.sock.do_handshake()
            except ssl.SSLWantReadError:
                self.want = POLL_IN
                return
            except ssl.SSLWantWriteError:
                self.want = POLL_OUT
                return
            self.phase, self.want = "up", POLL_IN

    def check_input(self) -> None:
        """The peer sends nothing; EOF or an error here means the connection is gone."""
        try:
            data = self.sock.recv(4096)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        if not data:
            raise ConnectionError("the peer closed the connection")

    def write(self, data: memoryview) -> int:
        """Bytes taken (0 when the kernel's buffer is full)."""
        try:
            return self.sock.send(data)
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return 0

    def queued_mark(self) -> int:
        """The stream offset (in TCP bytes) that everything written so far ends at."""
        # acked + unacknowledged is the end of what was written, read as one snapshot: an ack that
        # lands between the two reads would count its bytes twice, and hold the cursor forever.
        acked = self.acked()
        while True:
            outq = _outq(self.sock)
            again = self.acked()
            if again == acked:
                return acked + outq
            acked = again

    def acked(self) -> int:
        """Bytes the peer's TCP has acknowledged on this connection (tcpi_bytes_acked)."""
        info = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_BYTES_ACKED + 8)
        return int(struct.unpack_from("Q", info, TCP_INFO_BYTES_ACKED)[0])

    def close(self) -> None:
        self.sock.close()


class DatagramLink:
    """UDP (RFC 5426) or a unix datagram socket (journald): one message per datagram."""

    datagram = True
    up = True
    want = 0

    def __init__(self, family: int, sockaddr: object) -> None:
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        try:
            self.sock.connect(sockaddr)  # type: ignore[arg-type]
        except BaseException:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def progress(self) -> None:
        pass

    def check_input(self) -> None:
        try:
            self.sock.recv(4096)  # an ICMP error shows here as ECONNREFUSED
        except BlockingIOError:
            pass

    def close(self) -> None:
        self.sock.close()


def _outq(sock: socket.socket) -> int:
    buf = fcntl.ioctl(sock.fileno(), SIOCOUTQ, b"\0\0\0\0")
    return int(struct.unpack("i", buf)[0])
