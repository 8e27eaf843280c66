"""Connection limits and authentication throttling (issue 19, items 2-3).

- At the file-descriptor limit the server pauses accepting instead of
  spinning on accept() and logs the refusals once per interval.
- limits.max_connections_per_ip and limits.max_connections refuse the
  connections over the limit at once, with a stream error.
- While an address or an account is throttled, every SASL answer (success
  too) and every component handshake answer is delayed, failures are
  counted per address and per account, and a success clears only the
  failures of its own account.

The whole 127.0.0.0/8 is local on Linux: clients bind 127.0.0.N as their
source address to look like different peers.
"""

import os
import resource
import socket
import time

import pytest

import rawxmpp
from conftest import COMPONENT, COMPONENT_SECRET
from rawxmpp import NS_COMPONENT, sha1_handshake

CLK_TCK = os.sysconf('SC_CLK_TCK')


def cpu_seconds(pid):
    """utime + stime of pid (/proc/<pid>/stat fields 14 and 15)."""
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def raw_from(srv, src, port=None, **kw):
    """A raw client connected from source address src (127.0.0.N)."""
    c = srv.raw(port=port or srv.c2s_plain_port, **kw)
    c.sock = socket.create_connection(('127.0.0.1', c.port), timeout=c.timeout,
                                      source_address=(src, 0))
    return c


def component_from(srv, src):
    c = srv.component()
    c.sock = socket.create_connection(('127.0.0.1', c.port), timeout=c.timeout,
                                      source_address=(src, 0))
    return c


def timed_scram(srv, src, user, password):
    """One SCRAM attempt on a fresh stream from src: (ok, seconds from the
    client's last message to the outcome)."""
    c = raw_from(srv, src)
    c.open()
    # Time only the answer to the proof, not the stream set-up.
    sent = []
    orig_send = c.send

    def send(data):
        sent.append(time.monotonic())
        orig_send(data)
    c.send = send
    ok, _ = c.auth_scram(user, password)
    elapsed = time.monotonic() - sent[-1]
    c.close()
    return ok, elapsed


def fail_times(srv, src, user, n):
    """n wrong passwords for user on one stream from src."""
    c = raw_from(srv, src)
    c.open()
    for _ in range(n):
        ok, _ = c.auth_scram(user, 'wrong-password')
        assert not ok
    c.close()


# ---- the file-descriptor limit ----------------------------------------

def test_fd_limit_pauses_accepting_without_spinning(make_server, driver):
    srv = make_server(driver)
    pid = srv.proc.pid
    # As `prlimit --nofile=64:64 --pid`: the server's own descriptors fit,
    # the connections below do not.
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (64, 64))
    start = srv.log_size()
    socks = []
    try:
        for _ in range(120):
            socks.append(socket.create_connection(
                ('127.0.0.1', srv.c2s_plain_port), timeout=10))
        # Let the server take what fits and hit the limit.
        deadline = time.monotonic() + 10
        while 'Too many open files' not in srv.log_text(start):
            assert time.monotonic() < deadline, \
                'no accept error logged:\n' + srv.log_tail(start)
            time.sleep(0.05)
        time.sleep(0.3)
        cpu0, t0, log0 = cpu_seconds(pid), time.monotonic(), srv.log_size()
        time.sleep(2.0)
        cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
        window = srv.log_text(log0)
        lines = window.count('Too many open files')
        assert cpu < 0.25, 'pigeond used %.0f%% CPU at the fd limit' % (
            cpu * 100)
        assert lines <= 3, '%d accept lines in 2 s at the fd limit:\n%s' % (
            lines, window[:3000])
        assert len(window) < 20000, 'log grew by %d bytes in 2 s' % len(window)
    finally:
        for s in socks:
            s.close()
    # The server accepts again once the clients are gone: the backlog
    # drains and a new client gets a stream.
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (64, 64))
    c = srv.raw(port=srv.c2s_plain_port, timeout=15)
    c.connect()
    feats = c.open()
    assert feats is not None
    c.close()
    text = srv.log_text(start)
    assert 'refused' in text, 'no count of refused accepts:\n' + \
        srv.log_tail(start)


# ---- connection limits ----------------------------------------------------

def test_per_ip_connection_limit(make_server, driver):
    srv = make_server(driver, extra_limits='  max_connections_per_ip: 3\n')
    held = []
    for _ in range(3):
        c = raw_from(srv, '127.0.0.2')
        c.open()
        held.append(c)
    over = raw_from(srv, '127.0.0.2')
    assert over.expect_stream_error() == 'policy-violation'
    # The component listener counts the same connections.
    comp = component_from(srv, '127.0.0.2')
    assert comp.expect_stream_error() == 'policy-violation'
    # Another address is not affected.
    other = raw_from(srv, '127.0.0.3')
    other.open()
    # A closed connection gives its place back.
    held.pop().close()
    deadline = time.monotonic() + 10
    while True:
        c = raw_from(srv, '127.0.0.2')
        try:
            c.open()
            break
        except rawxmpp.StreamClosed:
            assert time.monotonic() < deadline, 'the place was not given back'
            time.sleep(0.1)
    assert 'max_connections_per_ip' in srv.log_text()


def test_global_connection_limit(make_server, driver):
    srv = make_server(driver, extra_limits=('  max_connections: 4\n'
                                            '  max_connections_per_ip: 0\n'))
    held = []
    for i in range(4):
        c = raw_from(srv, '127.0.0.%d' % (10 + i))
        c.open()
        held.append(c)
    over = raw_from(srv, '127.0.0.20')
    assert over.expect_stream_error() == 'resource-constraint'
    held.pop().close()
    deadline = time.monotonic() + 10
    while True:
        c = raw_from(srv, '127.0.0.20')
        try:
            c.open()
            break
        except rawxmpp.StreamClosed:
            assert time.monotonic() < deadline, 'the place was not given back'
            time.sleep(0.1)
