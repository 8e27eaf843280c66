"""Smoke test of the load generator bench/pigeon-load (issue 5).

Each scenario runs tiny against a Pigeon test server and the tool's JSON
output is checked for sense (sessions logged in = asked, messages
delivered = sent, no errors).  Timings are not checked: that is the
benchmarks' job (doc/performance.md), not the test suite's.
"""

import json
import os
import subprocess
import sys

import pytest

import rawxmpp
from conftest import BUILDDIR, Server, free_port

LOAD = BUILDDIR / 'bench' / 'pigeon-load'
PASSWORD = 'load-smoke-pw'
# Account numbers per test, so that no test logs in another's accounts
# (the offline recipients must never be online).
IDLE = (1, 20)          # first, count
CHAT = (21, 10)
LOGIN = (31, 10)
OFFLINE_SENDERS = (41, 2)
OFFLINE_RCPTS = (43, 5)
PEP = (48, 6)           # the owner, then its contacts
PEPSET = (54, 5)
ACCOUNTS = 58


def run_load(server, scenario, *args, port=None, expect=0, tmp=None,
             timeout=90):
    """Runs pigeon-load; returns its JSON report."""
    if not os.access(LOAD, os.X_OK):
        pytest.fail('%s is not built (make bench/pigeon-load)' % LOAD,
                    pytrace=False)
    out = os.path.join(str(server.dir), 'load-%s-%s.json'
                       % (scenario, os.urandom(3).hex()))
    cmd = [str(LOAD), '-s', scenario, '-p', str(port or server.c2s_port),
           '--password', PASSWORD, '--timeout', '20', '--json', out]
    cmd += [str(a) for a in args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == expect, (
        'pigeon-load %s: exit %d, expected %d\nstdout:\n%s\nstderr:\n%s'
        % (' '.join(cmd[1:]), r.returncode, expect, r.stdout, r.stderr))
    with open(out) as f:
        report = json.load(f)
    report['_stdout'] = r.stdout
    report['_stderr'] = r.stderr
    return report


@pytest.fixture(scope='module')
def load_server(basedir, certs):
    """A SQLite server with in-band registration open (no rate limit),
    whose accounts load1..load58 the tool itself registers."""
    srv = Server(basedir, certs, 'sqlite', name='load',
                 modules={'mod_register': {'allow_registration': True,
                                           'registration_interval': 0}})
    srv.start()
    try:
        rep = run_load(srv, 'register', '-n', ACCOUNTS, '--concurrency', 8)
        assert rep['accounts'] == ACCOUNTS, rep
        assert rep['registered'] + rep['existed'] == ACCOUNTS, rep
        assert rep['failed'] == 0 and rep['failures'] == {}, rep
    except BaseException:
        srv.kill()
        raise
    yield srv
    srv.destroy()


def test_idle(load_server):
    first, n = IDLE
    rep = run_load(load_server, 'idle', '-n', n, '--first', first,
                   '--server-pid', load_server.proc.pid, '--settle', 0.2,
                   '--concurrency', 10, '--rate', 200)
    assert rep['scenario'] == 'idle'
    assert rep['sessions'] == n and rep['logged_in'] == n, rep
    assert rep['failed'] == 0 and rep['dropped'] == 0, rep
    assert rep['failures'] == {} and rep['exit_code'] == 0, rep
    assert rep['mechanism'] == 'SCRAM-SHA-256', rep
    # The figures exist; their size is the benchmark's business (this
    # server is not fresh, so the difference may even be negative).
    assert rep['rss_before_kib'] > 0 and rep['rss_after_kib'] > 0, rep
    assert 'rss_per_session_kib' in rep
    assert 'KiB/session' in rep['_stdout']


@pytest.mark.parametrize('rate', [200, 0], ids=['fixed-rate', 'flat-out'])
def test_chat(load_server, rate):
    first, n = CHAT
    rep = run_load(load_server, 'chat', '--pairs', n // 2, '--first', first,
                   '--msg-rate', rate, '--duration', 1, '--window', 4,
                   '--server-ctl', load_server.ctl_socket)
    assert rep['pairs'] == n // 2 and rep['failed'] == 0, rep
    assert rep['sent'] > 0, rep
    assert rep['delivered'] == rep['sent'] and rep['lost'] == 0, rep
    assert rep['msg_errors'] == 0 and rep['error_conditions'] == {}, rep
    assert rep['samples'] > 0 and rep['delivered_per_s'] > 0, rep
    assert 0 < rep['lat_p50_us'] <= rep['lat_p99_us'] <= rep['lat_max_us'], rep
    # The server's own figures (pigeonctl latency), cleared as the
    # measured phase began: only part of the messages, none of the
    # warm-up window sent before it.
    assert 0 < rep['srv_queued_count'] <= rep['delivered'], rep
    assert 0 < rep['srv_flushed_count'] <= rep['srv_queued_count'], rep
    for h in ('queued', 'flushed'):
        assert (0 <= rep['srv_%s_p50_us' % h] <= rep['srv_%s_p99_us' % h]
                <= rep['srv_%s_p999_us' % h] <= rep['srv_%s_max_us' % h]), rep
    assert 'srv p99 us' in rep['_stdout'], rep['_stdout']
    if rate:
        # about rate * duration: the tool paces itself
        assert rep['sent'] <= rate * 1.5 + 10, rep
        assert 0 <= rep['send_lag_p50_us'] <= rep['send_lag_p99_us'], rep


def test_login_direct_tls_verified(load_server):
    """Login on the direct-TLS port, verifying the certificate."""
    first, users = LOGIN
    rep = run_load(load_server, 'login', '-n', 30, '--users', users,
                   '--first', first, '--concurrency', 5, '--direct-tls',
                   '--cafile', load_server.cafile,
                   port=load_server.tls_port)
    assert rep['tls'] == 'direct', rep
    assert rep['logins'] == 30 and rep['failed'] == 0, rep
    assert rep['logins_per_s'] > 0, rep
    assert 0 < rep['login_p50_ms'] <= rep['login_p99_ms'], rep


@pytest.mark.parametrize('mech', ['SCRAM-SHA-1', 'PLAIN'])
def test_login_other_mechanisms(load_server, mech):
    first, users = LOGIN
    rep = run_load(load_server, 'login', '-n', 5, '--users', 5,
                   '--first', first, '--mech', mech)
    assert rep['mechanism'] == mech and rep['logins'] == 5, rep


def offline_placeholder(server):
    """True when the server's mod_offline does not store (no msgoffline
    in disco#info): bounces are then what it should do."""
    c = server.login('load%d' % OFFLINE_SENDERS[0], PASSWORD)
    r = c.iq('get', "<query xmlns='%s'/>" % rawxmpp.NS_DISCO_INFO,
             to='localhost')
    feats = [f.get('var')
             for f in r.iter('{%s}feature' % rawxmpp.NS_DISCO_INFO)]
    c.close()
    return 'msgoffline' not in feats


def test_offline(load_server, tmp_path):
    first, senders = OFFLINE_SENDERS
    rfirst, rcpts = OFFLINE_RCPTS
    assert rfirst == first + senders   # how the tool numbers recipients
    count = tmp_path / 'count.py'
    count.write_text(
        'import sqlite3, sys\n'
        'db = sqlite3.connect(sys.argv[1], timeout=10)\n'
        'print(db.execute("SELECT count(*) FROM offline_messages")'
        '.fetchone()[0])\n')
    verify = '%s %s %s' % (sys.executable, count, load_server.db_path)
    rep = run_load(load_server, 'offline', '-n', 50, '--senders', senders,
                   '--users', rcpts, '--first', first, '--verify-cmd',
                   verify, '--drain', 0.5)
    assert rep['senders'] == senders and rep['failed'] == 0, rep
    assert rep['sent'] == 50 and rep['exit_code'] == 0, rep
    if rep['errors'] and offline_placeholder(load_server):
        # mod_offline not there yet: every message bounced, none lost
        assert rep['errors'] == 50, rep
        assert set(rep['error_conditions']) == {'service-unavailable'}, rep
        return
    assert rep['errors'] == 0 and rep['error_conditions'] == {}, rep
    assert rep['stored'] == 50, rep
    assert rep['sent_per_s'] > 0, rep


def test_failures_are_counted(load_server):
    """Wrong password and a closed port: exit 1, failures by kind."""
    first, n = LOGIN
    cmd = [str(LOAD), '-s', 'idle', '-n', 3, '--first', first,
           '-p', load_server.c2s_port, '--password', 'wrong-' + PASSWORD]
    r = subprocess.run([str(a) for a in cmd], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1, r
    assert 'auth=3' in r.stderr and 'not-authorized' in r.stderr, r.stderr

    port = free_port()
    r = subprocess.run([str(LOAD), '-s', 'login', '-n', '2', '-p', str(port)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r
    assert 'refused=' in r.stderr, r.stderr

    r = subprocess.run([str(LOAD), '-s', 'nosuch'], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2, r


def test_pep(load_server):
    """pep: every contact interested, every notification counted."""
    srv = load_server
    first, n = PEP
    owner = 'load%d' % first
    for i in range(first + 1, first + n):
        for a, b in ((owner, 'load%d' % i), ('load%d' % i, owner)):
            srv.ctl('add_rosteritem', a, 'localhost', b, 'localhost', '', '',
                    'both', expect=0)
    rep = run_load(srv, 'pep', '-n', 20, '--contacts', n - 1, '--first', first,
                   '--window', 2, '--settle', 0.5, '--server-pid',
                   srv.proc.pid)
    assert rep['scenario'] == 'pep'
    assert rep['interested'] == n - 1 and rep['published'] == 20, rep
    assert rep['notifications'] == 20 * (n - 1), rep
    assert rep['notifications_lost'] == 0 and rep['publish_errors'] == 0, rep
    assert rep['server_cpu_us_per_publish'] >= 0, rep  # clock ticks: may be 0


def test_pepset(load_server):
    """pepset: each account's 7 items stored (--verify-cmd counts them)."""
    srv = load_server
    first, n = PEPSET
    count = ("%s -c \"import sqlite3; print(sqlite3.connect('%s').execute("
             "'SELECT count(*) FROM pubsub_item').fetchone()[0])\""
             % (sys.executable, srv.db_path))
    rep = run_load(srv, 'pepset', '-n', n, '--first', first, '--concurrency',
                   3, '--verify-cmd', count)
    assert rep['accounts'] == n and rep['published'] == 7 * n, rep
    assert rep['publish_errors'] == 0 and rep['failed'] == 0, rep
    assert rep['store_bytes_per_account'] == 7, rep
    out = srv.ctl('get_pubsub_nodes', 'load%d' % first, 'localhost',
                  expect=0).stdout
    nodes = sorted(line.split('\t')[0] for line in out.splitlines())
    assert len(nodes) == 5 and 'urn:xmpp:bookmarks:1' in nodes, out
