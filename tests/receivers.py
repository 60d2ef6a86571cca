"""Real receivers for forwarding tests: rsyslogd on a loopback port, a UDP socket, test certificates.

`Rsyslogd` runs Debian's rsyslogd in the foreground (`-n -f CONF -i PIDFILE`)
with a config of its own: `imtcp` on 127.0.0.1 (plain, or TLS with the
`gtls` driver), and `omfile` with a template that keeps every RFC 5424 field,
the structured data intact.  It never loads `imuxsock`, so it never touches
/dev/log.  `certs` makes a CA and a server certificate for 127.0.0.1 and
localhost with `openssl`.  Only loopback addresses.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from conftest import wait_for

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
HAVE_RSYSLOGD = os.access(RSYSLOGD, os.X_OK)
GTLS_MODULE = next(iter(Path("/usr/lib").glob("*/rsyslog/lmnsd_gtls.so")), None)
HAVE_OPENSSL = shutil.which("openssl") is not None
SEP = "|#|"  # between the fields of a line rsyslogd writes
_ID = re.compile(r'\[ipcd@32473 id="(\d+)"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path


def make_certs(d: Path, name: str = "ca") -> Certs:
    """A CA, and a server certificate it signed for localhost and 127.0.0.1."""
    d.mkdir(parents=True, exist_ok=True)

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.pem",
        "-days",
        "2",
        "-subj",
        f"/CN=ipcd test {name}",
    )
    ssl("req", *ec, "-keyout", f"{name}-server.key", "-out", f"{name}-server.csr", "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=critical,CA:FALSE\n"
    )
    ssl(
        "x509",
        "-req",
        "-in",
        f"{name}-server.csr",
        "-CA",
        f"{name}.pem",
        "-CAkey",
        f"{name}.key",
        "-CAcreateserial",
        "-out",
        f"{name}-server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    )
    return Certs(d / f"{name}.pem", d / f"{name}-server.pem", d / f"{name}-server.key")


class Rsyslogd:
    """rsyslogd listening on 127.0.0.1:`port`, writing what it receives to `out`."""

    def __init__(self, root: Path, port: int | None = None, tls: Certs | None = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.tls = tls
        self.out = root / "received.log"
        self.conf = root / "rsyslog.conf"
        self.stderr = root / "rsyslogd.stderr"
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        fields = SEP.join(["%pri%", "%timereported:::date-rfc3339%", "%hostname%", "%app-name%", "%procid%"])
        fields += SEP + SEP.join(["%msgid%", "%structured-data%", "%msg%"])
        glob = f'workDirectory="{self.root}"'
        imtcp = 'module(load="imtcp")'
        if self.tls is not None:
            glob += (
                f' DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{self.tls.ca}"'
                f' DefaultNetstreamDriverCertFile="{self.tls.cert}" DefaultNetstreamDriverKeyFile="{self.tls.key}"'
            )
            imtcp = 'module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")'
        return (
            f"global({glob})\n{imtcp}\n"
            f'input(type="imtcp" port="{self.port}" address="127.0.0.1" ruleset="fwd")\n'
            f'template(name="fields" type="string" string="{fields}\\n")\n'
            f'ruleset(name="fwd") {{ action(type="omfile" file="{self.out}" template="fields") }}\n'
        )

    def start(self) -> Rsyslogd:
        self.conf.write_text(self.config())
        with open(self.stderr, "ab") as err:
            self.proc = subprocess.Popen(
                [RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(self.root / "rsyslogd.pid")],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
            )
        wait_for(self._listening, 20, f"rsyslogd to listen on 127.0.0.1:{self.port}")
        return self

    def _listening(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"rsyslogd exited with {self.proc.returncode}: {self.stderr.read_text()}")
        # /proc/net/tcp, not a probe connection: a probe would be a session of its own in rsyslogd.
        with open("/proc/net/tcp") as f:
            rows = [line.split() for line in f.readlines()[1:]]
        return any(r[1].endswith(f":{self.port:04X}") and r[3] == "0A" for r in rows)  # 0A: TCP_LISTEN

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def lines(self) -> list[list[str]]:
        try:
            text = self.out.read_text(errors="replace")
        except FileNotFoundError:
            return []
        text = text[: text.rfind("\n") + 1]  # rsyslogd may be writing the last line right now
        return [line.split(SEP, 7) for line in text.splitlines() if line]

    def ids(self) -> list[int]:
        """The ipcd ids of what arrived, in the order it arrived."""
        return [int(m.group(1)) for line in self.lines() if (m := _ID.match(line[6]))]


class UdpReceiver:
    """A plain UDP socket on 127.0.0.1."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.sock.settimeout(10)

    def receive(self, n: int) -> list[bytes]:
        return [self.sock.recv(65536) for _ in range(n)]

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> UdpReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
