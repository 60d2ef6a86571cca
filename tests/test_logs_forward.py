"""Forwarding against real receivers: rsyslogd over TCP and TLS, a UDP socket, a journald-like socket.

Every entry ipcd stores arrives, in id order, with its structured data, across
a restart of the receiver and of ipcd (at-least-once: the duplicates are only
entries after the cursor the target had delivered); a target that cannot keep
up or is down never holds intake or another target.  Only loopback addresses
and the test's own sockets.
"""

from __future__ import annotations

import array
import os
import shutil
import socket
import sqlite3
import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import IS_ROOT, Ipcd, ipcctl, wait_for
from helpers_forward import parse_native
from helpers_logs import send
from receivers import GTLS_MODULE, HAVE_OPENSSL, HAVE_RSYSLOGD, Rsyslogd, UdpReceiver, free_port, make_certs

needs_rsyslogd = pytest.mark.skipif(not HAVE_RSYSLOGD, reason="needs rsyslogd (Debian package rsyslog)")
FAST = "ack_window_s = 0.3\nbackoff_max_s = 0.5\ntimeout_s = 5\n"


def target(name: str, address: str, extra: str = "", type: str = "syslog") -> str:
    return f'[[forward]]\nname = "{name}"\ntype = "{type}"\naddress = "{address}"\n{FAST}{extra}\n'


def send_logs(d: Ipcd, count: int, start: int = 1, tag: str = "fwdtest") -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(d.log_sock)
        for i in range(start, start + count):
            s.send(f"<13>Nov 30 10:00:00 {tag}[42]: message {i}".encode())


def fstatus(d: Ipcd, name: str) -> dict[str, Any]:
    return next(t for t in d.call("status")["forward"] if t["name"] == name)


def stored(d: Ipcd) -> int:
    return int(d.call("status")["logs"]["stored"])


def all_arrived(rs: Rsyslogd, n: int) -> Callable[[], bool]:
    return lambda: set(rs.ids()) >= set(range(1, n + 1))


def assert_in_order_at_least_once(ids: list[int], n: int, cursor_before: int) -> None:
    """Every id 1..n; first arrivals in id order; a repeat only of an id past `cursor_before`."""
    assert set(ids) == set(range(1, n + 1))
    first_seen = list(dict.fromkeys(ids))
    assert first_seen == sorted(first_seen)
    repeats = {i for i, times in Counter(ids).items() if times > 1}
    assert all(i > cursor_before for i in repeats), (cursor_before, sorted(repeats))


@pytest.fixture
def rsyslogd(short_tmp: Path) -> Iterator[Callable[..., Rsyslogd]]:
    if not HAVE_RSYSLOGD:
        pytest.skip("needs rsyslogd (Debian package rsyslog)")
    made: list[Rsyslogd] = []

    def make(name: str = "rs", **kw: Any) -> Rsyslogd:
        rs = Rsyslogd(short_tmp / name, **kw)
        made.append(rs)
        return rs

    yield make
    for rs in made:
        rs.stop()


def test_every_entry_arrives_in_order_with_its_structured_data(
    make_ipcd: Callable[..., Ipcd], rsyslogd: Callable[..., Rsyslogd]
) -> None:
    rs = rsyslogd().start()
    d = make_ipcd(target("central", f"tcp://127.0.0.1:{rs.port}")).start()
    wait_for(lambda: fstatus(d, "central")["state"] == "connected", 10, "the target to connect")
    send_logs(d, 300)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:  # RFC 5424 with structured data of its own
        s.sendto(b'<165>1 2026-11-27T10:00:00.5Z claimed app5 77 ID47 [ex@1 a="x\\"y\\]z"] with sd', d.log_sock)
    wait_for(all_arrived(rs, 301), 30, "301 entries at rsyslogd")
    ids = rs.ids()
    assert ids == list(range(1, 302))  # no outage: each exactly once, in order
    lines = rs.lines()
    pri, ts, host, app, procid, msgid, sd, msg = lines[0]
    assert (pri, app, procid, msgid, msg) == ("13", "fwdtest", "42", "-", "message 1")
    assert sd.startswith(f'[ipcd@32473 id="1" uid="{os.getuid()}" gid="{os.getgid()}" pid="{os.getpid()}" comm="')
    pri, ts, host, app, procid, msgid, sd, msg = lines[-1]
    assert (pri, ts, host, app, procid, msgid, msg) == (
        "165",
        "2026-11-27T10:00:00.500000+00:00",
        "claimed",
        "app5",
        "77",
        "ID47",
        "with sd",
    )
    assert sd.endswith('][ex@1 a="x\\"y\\]z"]') and sd.startswith('[ipcd@32473 id="301" ')
    st = wait_for(lambda: (t := fstatus(d, "central"))["lag"] == 0 and t, 10, "lag 0")
    assert st["cursor"] == 301 and st["sent"] == 301 and st["errors"] == 0 and st["state"] == "connected"
    out = ipcctl("--socket", d.sock, "status")
    assert "forward   central  syslog tcp://127.0.0.1:" in out.stdout and "connected, cursor 301, lag 0" in out.stdout


def test_a_restart_of_rsyslogd_mid_stream_loses_nothing(
    make_ipcd: Callable[..., Ipcd], rsyslogd: Callable[..., Rsyslogd]
) -> None:
    rs = rsyslogd().start()
    d = make_ipcd(target("central", f"tcp://127.0.0.1:{rs.port}")).start()
    n, sent = 600, threading.Event()

    def sender() -> None:  # a steady stream, rsyslogd restarted in the middle of it
        for start in range(1, n + 1, 20):
            send_logs(d, 20, start)
            sent.wait(0.02)  # pacing the stream, not waiting for a condition
        sent.set()

    t = threading.Thread(target=sender)
    t.start()
    try:
        wait_for(lambda: len(rs.ids()) >= 150, 30, "150 entries before the restart")
        cursor = fstatus(d, "central")["cursor"]
        rs.stop()
        wait_for(lambda: fstatus(d, "central")["state"] != "connected", 15, "ipcd to notice rsyslogd is gone")
        rs.start()
    finally:
        t.join()
    wait_for(all_arrived(rs, n), 60, f"{n} entries at rsyslogd", interval_s=0.2)
    assert_in_order_at_least_once(rs.ids(), n, cursor)
    st = wait_for(lambda: (x := fstatus(d, "central"))["lag"] == 0 and x, 10, "lag 0")
    assert st["errors"] >= 1 and st["last_error"]


def forward_db_cursor(d: Ipcd, name: str) -> int:
    with sqlite3.connect(d.state_dir / "forward.db") as db:
        return int(db.execute("SELECT last_id FROM cursors WHERE name = ?", (name,)).fetchone()[0])


def test_ipcd_restarts_resume_from_the_persisted_cursor(
    make_ipcd: Callable[..., Ipcd], rsyslogd: Callable[..., Rsyslogd]
) -> None:
    rs = rsyslogd().start()
    d = make_ipcd(target("central", f"tcp://127.0.0.1:{rs.port}")).start()
    send_logs(d, 100)
    wait_for(lambda: fstatus(d, "central")["cursor"] == 100, 20, "cursor 100")
    rs.stop()  # the target goes down: what comes now waits in the store
    send_logs(d, 50, 101)
    wait_for(lambda: stored(d) == 150, 10, "150 stored")
    assert d.stop() == 0
    cursor = forward_db_cursor(d, "central")
    assert cursor == 100
    rs.start()
    d.start()
    send_logs(d, 50, 151)
    wait_for(all_arrived(rs, 200), 30, "200 entries at rsyslogd")
    assert_in_order_at_least_once(rs.ids(), 200, cursor)
    assert rs.ids()[:100] == list(range(1, 101))


def test_a_target_that_does_not_read_never_holds_intake_or_another_target(
    make_ipcd: Callable[..., Ipcd], rsyslogd: Callable[..., Rsyslogd]
) -> None:
    rs = rsyslogd().start()
    with socket.socket() as hole:  # accepts, never reads
        hole.bind(("127.0.0.1", 0))
        hole.listen()
        config = target("hole", f"tcp://127.0.0.1:{hole.getsockname()[1]}") + target(
            "central", f"tcp://127.0.0.1:{rs.port}"
        )
        d = make_ipcd(config + "[log]\nrate_limit_burst = 0\n").start()
        conn, _ = hole.accept()
        try:
            filler = "x" * 900
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.connect(d.log_sock)
                for i in range(1, 20001):  # ~19 MB: far more than the kernel buffers of the hole
                    s.send(f"<13>Nov 30 10:00:00 fill[1]: {i} {filler}".encode())
            wait_for(lambda: stored(d) == 20000, 60, "20000 stored")
            wait_for(all_arrived(rs, 20000), 120, "20000 entries at rsyslogd", interval_s=0.2)
            assert fstatus(d, "hole")["lag"] > 0  # it holds only itself
        finally:
            conn.close()


def test_retention_before_delivery_is_skipped_and_reported(
    make_ipcd: Callable[..., Ipcd], rsyslogd: Callable[..., Rsyslogd]
) -> None:
    port = free_port()
    store = "[store]\nmax_entries = 20\nretention_interval_s = 0.05\n"
    d = make_ipcd(target("central", f"tcp://127.0.0.1:{port}") + store).start()
    wait_for(lambda: fstatus(d, "central")["errors"] >= 1, 10, "a refused connection")
    send_logs(d, 100)
    wait_for(lambda: d.call("status")["store"]["entries"] <= 20 and stored(d) == 100, 20, "retention down to 20")
    rs = rsyslogd(port=port).start()
    st = wait_for(lambda: (x := fstatus(d, "central"))["lag"] == 0 and x, 30, "lag 0")
    ids = rs.ids()
    assert st["missed"] > 0 and ids == list(range(st["missed"] + 1, 101))
    assert "removed by retention before they could be forwarded" in d.stderr()


def test_reload_adds_changes_and_removes_targets_keeping_cursors(
    make_ipcd: Callable[..., Ipcd], rsyslogd: Callable[..., Rsyslogd]
) -> None:
    a, b = rsyslogd("a").start(), rsyslogd("b").start()
    d = make_ipcd(target("one", f"tcp://127.0.0.1:{a.port}")).start()
    send_logs(d, 10)
    wait_for(lambda: fstatus(d, "one")["cursor"] == 10, 20, "cursor 10")
    d.config.write_text(target("one", f"tcp://127.0.0.1:{b.port}") + target("two", f"tcp://127.0.0.1:{a.port}"))
    d.call("reload")
    assert [t["name"] for t in d.call("status")["forward"]] == ["one", "two"]
    send_logs(d, 10, 11)
    wait_for(lambda: b.ids() == list(range(11, 21)), 20, "one: 11-20 at b (its cursor kept)")
    wait_for(lambda: a.ids() == list(range(1, 21)), 20, "two: from the head on, at a")
    d.config.write_text(target("one", f"tcp://127.0.0.1:{b.port}"))
    d.call("reload")
    assert [t["name"] for t in d.call("status")["forward"]] == ["one"]


def test_a_target_that_is_down_backs_off_and_says_why(make_ipcd: Callable[..., Ipcd]) -> None:
    d = make_ipcd(target("down", f"tcp://127.0.0.1:{free_port()}")).start()
    send_logs(d, 5)
    st = wait_for(lambda: (x := fstatus(d, "down"))["errors"] >= 3 and x, 20, "three failed attempts")
    assert st["state"] in ("backing_off", "connecting") and "refused" in st["last_error"].lower()
    assert st["lag"] == 5 and stored(d) == 5  # intake goes on
    assert d.stderr().count("forward down (tcp://127.0.0.1:") == 1  # said once, not at every attempt
    out = ipcctl("--socket", d.sock, "doctor", env={"IPCD_CONFIG": str(d.config)})
    assert out.returncode == 1
    assert "problem  forward down: tcp://127.0.0.1:" in out.stdout and "Connection refused" in out.stdout


def test_a_receiver_that_never_answers_the_tls_handshake_times_out(make_ipcd: Callable[..., Ipcd]) -> None:
    with socket.socket() as mute:  # accepts, says nothing
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        address = f"tls://127.0.0.1:{mute.getsockname()[1]}"
        d = make_ipcd(target("mute", address).replace("timeout_s = 5", "timeout_s = 0.5")).start()
        st = wait_for(lambda: (x := fstatus(d, "mute"))["errors"] >= 1 and x, 10, "the handshake to time out")
        assert st["last_error"] == "timed out after 0.5 s (tls)"
        assert st["state"] in ("backing_off", "connecting")


@pytest.mark.skipif(GTLS_MODULE is None, reason="needs rsyslog's gtls driver (Debian package rsyslog-gnutls)")
@pytest.mark.skipif(not HAVE_OPENSSL, reason="needs openssl to make the test certificates")
def test_tls_to_rsyslog_gtls_and_certificate_checks(
    make_ipcd: Callable[..., Ipcd], rsyslogd: Callable[..., Rsyslogd], short_tmp: Path
) -> None:
    certs, other = make_certs(short_tmp / "pki"), make_certs(short_tmp / "pki", "other")
    rs = rsyslogd(tls=certs).start()
    address = f"tls://127.0.0.1:{rs.port}"
    config = (
        target("tls", address, f'ca_file = "{certs.ca}"\n')
        + target("wrongca", address, f'ca_file = "{other.ca}"\n')
        + target("wrongname", address, f'ca_file = "{certs.ca}"\nserver_name = "logs.example"\n')
        + target("byname", f"tls://localhost:{rs.port}", f'ca_file = "{certs.ca}"\n')
    )
    d = make_ipcd(config).start()
    send_logs(d, 50)
    wait_for(lambda: Counter(rs.ids()) >= Counter(dict.fromkeys(range(1, 51), 2)), 30, "50 entries twice (tls, byname)")
    assert rs.lines()[0][6].startswith('[ipcd@32473 id="1" ')
    bad = wait_for(lambda: (x := fstatus(d, "wrongca"))["errors"] >= 1 and x, 20, "wrongca to fail")
    assert "certificate verify failed" in bad["last_error"] and bad["cursor"] == 0
    bad = wait_for(lambda: (x := fstatus(d, "wrongname"))["errors"] >= 1 and x, 20, "wrongname to fail")
    assert "certificate verify failed" in bad["last_error"] and "logs.example" in bad["last_error"]
    out = ipcctl("--socket", d.sock, "doctor", env={"IPCD_CONFIG": str(d.config)})
    assert "ok       forward tls: tls://127.0.0.1:" in out.stdout
    assert "problem  forward wrongca:" in out.stdout and "certificate verify failed" in out.stdout
    assert out.returncode == 1


def test_udp_one_message_per_datagram(make_ipcd: Callable[..., Ipcd]) -> None:
    with UdpReceiver() as rx:
        d = make_ipcd(target("udp", f"udp://127.0.0.1:{rx.port}", 'priority = "warning"\n')).start()
        # err, notice, warning, info, crit: three pass the filter
        send(d, *[f"<{pri}>tag: priority {pri}".encode() for pri in (11, 13, 12, 14, 10)])
        got = rx.receive(3)
        assert [g.split(b" ", 1)[0] for g in got] == [b"<11>1", b"<12>1", b"<10>1"]  # no octet count over UDP
        assert all(b"[ipcd@32473 id=" in g and g.endswith(b" priority " + g[1:3]) for g in got)
        wait_for(lambda: fstatus(d, "udp")["cursor"] == 5, 10, "the cursor past the filtered entries")


def test_a_message_cut_at_max_message_bytes_is_counted(make_ipcd: Callable[..., Ipcd]) -> None:
    with UdpReceiver() as rx:
        d = make_ipcd(target("cut", f"udp://127.0.0.1:{rx.port}", "max_message_bytes = 2048\n")).start()
        send(d, b"<13>tag: " + b"x" * 3000, b"<13>tag: short")
        long, short = rx.receive(2)
        assert len(long) == 2048 and long.endswith(b"x" * 100) and short.endswith(b" short")
        wait_for(lambda: fstatus(d, "cut")["cursor"] == 2, 10, "both sent")
        assert fstatus(d, "cut")["cut"] == 1


def test_journald_protocol_with_a_memfd_for_a_big_entry(make_ipcd: Callable[..., Ipcd], short_tmp: Path) -> None:
    path = short_tmp / "journal.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as journal:
        journal.bind(str(path))
        journal.settimeout(10)
        config = target("j", f"unix://{path}", type="journald") + "[log]\nmax_datagram_bytes = 400000\n"
        d = make_ipcd(config).start()
        big = "y" * 300_000  # past the default socket send buffer: sd_journal_send's memfd path
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            s.connect(d.log_sock)
            s.send(b"<11>myident[9]: small one")
            s.send(f"<12>myident[9]: {big}".encode())
        first = parse_native(journal.recv(1 << 16))
        assert first["MESSAGE"] == "small one" and first["SYSLOG_IDENTIFIER"] == "myident"
        assert (first["PRIORITY"], first["SYSLOG_PID"], first["IPCD_ID"]) == ("3", "9", "1")
        assert first["IPCD_SENDER_PID"] == str(os.getpid()) and first["IPCD_SENDER_UID"] == str(os.getuid())
        fds = array.array("i")
        data, anc, _, _ = journal.recvmsg(16, socket.CMSG_SPACE(fds.itemsize))
        assert data == b"" and anc and anc[0][1] == socket.SCM_RIGHTS
        fds.frombytes(anc[0][2])
        with open(fds[0], "rb") as memfd:  # the file offset is the sender's: journald maps the file, as this reads it
            memfd.seek(0)
            raw = memfd.read()
        second = parse_native(raw)
        assert second["MESSAGE"] == big and second["IPCD_ID"] == "2"


def test_the_cursor_waits_out_the_ack_window(make_ipcd: Callable[..., Ipcd], rsyslogd: Callable[..., Rsyslogd]) -> None:
    rs = rsyslogd().start()
    d = make_ipcd(
        target("central", f"tcp://127.0.0.1:{rs.port}").replace("ack_window_s = 0.3", "ack_window_s = 2")
    ).start()
    send_logs(d, 10)
    wait_for(all_arrived(rs, 10), 10, "10 entries at rsyslogd")
    st = fstatus(d, "central")
    assert (st["sent"], st["cursor"], st["lag"]) == (10, 0, 10)  # received and acknowledged, not yet past the window
    wait_for(lambda: fstatus(d, "central")["cursor"] == 10, 15, "the cursor past the window")
    assert (d.state_dir / "forward.db").stat().st_mode & 0o777 == 0o600


def test_doctor_probes_targets_itself_when_ipcd_is_down(short_tmp: Path) -> None:
    with socket.socket() as up:
        up.bind(("127.0.0.1", 0))
        up.listen()
        conf = short_tmp / "ipcd.toml"
        conf.write_text(
            target("up", f"tcp://127.0.0.1:{up.getsockname()[1]}") + target("down", f"tcp://127.0.0.1:{free_port()}")
        )
        out = ipcctl("--socket", str(short_tmp / "none.sock"), "doctor", env={"IPCD_CONFIG": str(conf)})
    assert out.returncode == 3  # unreachable daemon
    assert "ok       forward up: tcp://127.0.0.1:" in out.stdout and "TCP connect ok (from here)" in out.stdout
    assert "problem  forward down: tcp://127.0.0.1:" in out.stdout and "refused" in out.stdout.lower()


def test_kill_9_of_ipcd_mid_stream_loses_nothing(
    make_ipcd: Callable[..., Ipcd], rsyslogd: Callable[..., Rsyslogd]
) -> None:
    rs = rsyslogd().start()
    d = make_ipcd(target("central", f"tcp://127.0.0.1:{rs.port}") + "[log]\nrate_limit_burst = 0\n").start()
    n = 30000
    rs.stop()  # down while the backlog is stored; up again to take it, and ipcd is killed meanwhile
    send_logs(d, n)
    wait_for(lambda: stored(d) == n, 30, f"{n} stored")
    log_pid = d.call("status")["log_process"]["pid"]
    rs.start()

    def lines() -> int:
        try:
            return rs.out.read_bytes().count(b"\n")
        except FileNotFoundError:
            return 0

    wait_for(lambda: lines() >= 2000, 30, "forwarding under way")
    d.kill()  # SIGKILL: no last save of the cursor
    wait_for(lambda: not os.path.exists(f"/proc/{log_pid}"), 30, "the log process to end")
    cursor = forward_db_cursor(d, "central")
    assert cursor < n
    d.start()
    wait_for(all_arrived(rs, n), 60, f"{n} entries at rsyslogd", interval_s=0.2)
    assert_in_order_at_least_once(rs.ids(), n, cursor)


@pytest.mark.skipif(
    not IS_ROOT or shutil.which("unshare") is None, reason="needs root and unshare: a private /etc/hosts"
)
def test_a_name_with_several_addresses_is_tried_address_by_address(
    make_ipcd: Callable[..., Ipcd], rsyslogd: Callable[..., Rsyslogd], short_tmp: Path
) -> None:
    """ipcd-multi is ::1 (nobody listens there) and 127.0.0.1 (rsyslogd), in a /etc/hosts of ipcd's own."""
    rs = rsyslogd().start()
    hosts = short_tmp / "hosts"
    hosts.write_text("::1 ipcd-multi\n127.0.0.1 ipcd-multi\n")
    d = make_ipcd(target("multi", f"tcp://ipcd-multi:{rs.port}"))
    with open(d.stderr_path, "ab") as err:
        script = 'mount --bind "$0" /etc/hosts && exec "$@"'
        d.proc = subprocess.Popen(
            ["unshare", "-m", "sh", "-c", script, str(hosts), *d.argv()], stdout=err, stderr=err, env=d.env
        )
    d.wait_ready()
    send_logs(d, 5)
    wait_for(all_arrived(rs, 5), 20, "5 entries at rsyslogd through the second address")
    assert fstatus(d, "multi")["errors"] == 0  # one attempt, two addresses: no failure to report
