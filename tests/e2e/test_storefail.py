"""Store failures (issue 19 items 7 and 8): the archive, delivery and the
stream management ack agree when the store fails in the middle of a
burst, and a short outage is ridden out (delay, not bounces).

The contract (doc/architecture.md, "Storage failures"): a message is
archived (the sender's and the recipient's copy) before it is delivered
and before the sender's ack covers it; if a copy cannot be written, the
message is bounced to the sender (wait, internal-server-error) and is in
no archive.

PostgreSQL: each test runs its own throw-away cluster (never the shared
server of the suite) and stops or restarts it mid-send.  SQLite: the
test hook PIGEON_TEST_STORE_FAIL names a file; while it exists every
statement of the SQLite driver fails as an I/O error would."""

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

import rawxmpp
from conftest import Server, db_rows, free_port, require_pgsql
from rawxmpp import local, to_str

NS_SM = 'urn:xmpp:sm:3'
BODY = '{jabber:client}body'
PG_BIN = Path('/usr/lib/postgresql/15/bin')
N = 400


# ---- a private PostgreSQL cluster ----------------------------------------

class PgCluster:
    """initdb + pg_ctl in a temporary directory, reachable only through its
    own socket directory.  Run as user postgres when the tests are root."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix='pgn-pgc-'))
        os.chmod(self.dir, 0o755)
        self.data = self.dir / 'data'
        self.port = free_port()
        self.log = self.dir / 'pg.log'
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.dir, 'postgres', 'postgres')
        self._run([str(PG_BIN / 'initdb'), '-D', str(self.data), '-U',
                   'postgres', '-A', 'trust', '--no-sync'])
        with open(self.data / 'postgresql.conf', 'a') as f:
            f.write("listen_addresses = ''\nunix_socket_directories = '%s'\n"
                    "port = %d\nfsync = off\n" % (self.dir, self.port))
        self.start()
        self.psql('postgres', 'CREATE DATABASE pigeon')

    def _run(self, argv, check=True, timeout=60):
        if self.as_root:
            argv = ['runuser', '-u', 'postgres', '--'] + argv
        r = subprocess.run(argv, capture_output=True, text=True,
                           timeout=timeout, cwd=str(self.dir))
        if check and r.returncode != 0:
            raise AssertionError('%s: %s%s' % (argv, r.stdout, r.stderr))
        return r

    def ctl(self, *args):
        return self._run([str(PG_BIN / 'pg_ctl'), '-D', str(self.data), '-l',
                          str(self.log), '-w'] + list(args))

    def start(self):
        self.ctl('start')

    def stop(self):
        self.ctl('stop', '-m', 'fast')

    def restart(self):
        self.ctl('restart', '-m', 'fast')

    @property
    def conninfo(self):
        return 'host=%s port=%d user=postgres dbname=pigeon' % (self.dir,
                                                                self.port)

    def psql(self, dbname, sql):
        r = subprocess.run(['psql', '-h', str(self.dir), '-p', str(self.port),
                            '-U', 'postgres', '-d', dbname, '-X', '-A', '-t',
                            '-q', '-F', '\x1f', '-R', '\x1e', '-v',
                            'ON_ERROR_STOP=1', '-c', sql],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        out = r.stdout[:-1] if r.stdout.endswith('\n') else r.stdout
        return [tuple(rec.split('\x1f')) for rec in out.split('\x1e')
                if out != '']

    def destroy(self):
        try:
            self._run([str(PG_BIN / 'pg_ctl'), '-D', str(self.data), 'stop',
                       '-m', 'immediate'], check=False)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class HoldServer(Server):
    """A pigeond with storage.outage_hold set."""

    def __init__(self, base, certs, hold, cluster=None, **kw):
        self.hold = hold
        self.cluster = cluster
        super().__init__(base, certs, 'sqlite', **kw)

    def storage_yaml(self):
        extra = '  outage_hold: %d\n' % self.hold
        if self.cluster is None:
            return super().storage_yaml() + extra
        # A private cluster, not the suite's shared server.
        return ('storage:\n  driver: pgsql\n  conninfo: "%s"\n%s'
                % (self.cluster.conninfo, extra))


def rows(server, sql):
    if server.cluster is not None:
        return server.cluster.psql('pigeon', sql)
    return db_rows(server, sql)


@pytest.fixture(params=['sqlite', 'pgsql'])
def store_server(request, basedir, certs):
    """(driver, make(hold)): make starts a server with outage_hold = hold
    seconds whose store can be made to fail and come back, and returns
    (server, fail, recover)."""
    made = []

    def make(hold_s, **kw):
        if request.param == 'pgsql':
            require_pgsql()
            if not PG_BIN.exists():
                pytest.skip('no %s' % PG_BIN)
            cluster = PgCluster()
            made.append(cluster)
            srv = HoldServer(basedir, certs, hold_s, cluster, **kw)
            made.append(srv)
            srv.start()
            return srv, cluster.stop, cluster.start
        flag = Path(tempfile.mkdtemp(prefix='pgn-sf-')) / 'fail'
        srv = HoldServer(basedir, certs, hold_s, **kw)
        made.append(srv)
        os.environ['PIGEON_TEST_STORE_FAIL'] = str(flag)
        try:
            srv.start()
        finally:
            del os.environ['PIGEON_TEST_STORE_FAIL']
        return srv, flag.touch, lambda: flag.unlink(missing_ok=True)

    yield request.param, make
    errors = []
    for obj in reversed(made):
        try:
            obj.destroy()
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, '\n'.join(errors)


# ---- the burst ---------------------------------------------------------------

def online(server, user, pw, res):
    c = server.login(user, pw, resource=res)
    c.name = c.jid
    c.timeout = 60
    c.presence()
    rawxmpp.quiet(c, lambda el: local(el.tag) == 'presence')
    return c


def enable_sm(c):
    c.send("<enable xmlns='%s'/>" % NS_SM)
    el = c.recv_until(lambda e: e.tag == '{%s}enabled' % NS_SM,
                      what='<enabled/>')
    return el


def burst(server, fail, recover, down_s, n=N, bob_online=True):
    """alice sends n messages to bob; after n/4 the store fails for down_s
    seconds.  Returns (bodies bob got, bodies bounced, alice's archive,
    bob's archive) once alice's acks cover every message.  With bob
    offline, what bob got is what is in his offline storage."""
    alice, apw = server.new_user(prefix='alice')
    bob, bpw = server.new_user(prefix='bob')
    a = online(server, alice, apw, 'ra')
    b = online(server, bob, bpw, 'rb') if bob_online else None
    enable_sm(a)
    to = '%s@localhost' % bob
    sent = threading.Event()

    def send():
        for i in range(n):
            a.message(to, 'm%d' % i, id_='id%d' % i)
            if i == n // 4:
                sent.set()
            time.sleep(0.004)

    t = threading.Thread(target=send)
    t.start()
    sent.wait(30)
    fail()
    time.sleep(down_s)
    recover()
    t.join()
    # Every message is handled (archived and delivered, or bounced) once
    # the ack covers it.
    a.send("<r xmlns='%s'/>" % NS_SM)
    bounced, h = set(), 0
    deadline = time.monotonic() + 90
    while h < n:
        assert time.monotonic() < deadline, 'acked %d of %d' % (h, n)
        el = a.recv(timeout=60)
        if el.tag == '{%s}a' % NS_SM:
            h = int(el.get('h'))
            if h < n:
                time.sleep(0.2)
                a.send("<r xmlns='%s'/>" % NS_SM)
        elif el.tag == '{%s}r' % NS_SM:
            continue
        elif local(el.tag) == 'message' and el.get('type') == 'error':
            bounced.add(el.find(BODY).text)
    got = []
    # Everything not bounced reaches bob (in order); wait for the rest.
    while b is not None and len(got) + len(bounced) < n:
        el = b.recv(timeout=60)
        if local(el.tag) == 'message' and el.find(BODY) is not None:
            got.append(el.find(BODY).text)
    if b is None:
        for (stanza,) in rows(server, "SELECT stanza FROM offline_messages "
                                      "WHERE username = '%s' ORDER BY id"
                                      % bob):
            got.append(re.search(r'<body>(m\d+)</body>', stanza).group(1))
    archives = {}
    for user, outgoing, stanza in rows(
            server, "SELECT username, outgoing, stanza FROM mam_messages"):
        m = re.search(r'<body>(m\d+)</body>', stanza)
        archives.setdefault((user, str(outgoing)), []).append(m.group(1))
    a_rows = archives.get((alice, '1'), [])
    b_rows = archives.get((bob, '0'), [])
    return got, bounced, a_rows, b_rows


def check_consistent(n, got, bounced, a_rows, b_rows):
    sent = {'m%d' % i for i in range(n)}
    assert len(got) == len(set(got)), 'duplicate deliveries'
    assert not (set(got) & bounced), 'delivered and bounced: %s' % sorted(
        set(got) & bounced)[:10]
    assert set(got) | bounced == sent, 'lost: %s' % sorted(
        sent - set(got) - bounced)[:10]
    assert got == sorted(got, key=lambda s: int(s[1:])), 'out of order'
    for name, archive in (('alice', a_rows), ('bob', b_rows)):
        assert len(archive) == len(set(archive)), \
            '%s archived some twice' % name
        missing = set(got) - set(archive)
        extra = set(archive) - set(got)
        assert not missing, '%d delivered but not in %s\'s archive: %s' % (
            len(missing), name, sorted(missing)[:10])
        assert not extra, '%d bounced but in %s\'s archive: %s' % (
            len(extra), name, sorted(extra)[:10])


def test_short_outage_is_delay_not_bounces(store_server):
    """The store is away for 3 s, less than outage_hold (20 s): nothing is
    bounced, everything is delivered and archived once, and the outage is
    logged once, with few reconnect attempts."""
    driver, make = store_server
    srv, fail, recover = make(20)
    start = srv.log_size()
    got, bounced, a_rows, b_rows = burst(srv, fail, recover, 3.0)
    check_consistent(N, got, bounced, a_rows, b_rows)
    assert not bounced, '%d bounced during a short outage' % len(bounced)
    log = srv.log_text(start)
    assert log.count('store %s: unavailable' % ('sqlite' if driver == 'sqlite'
                                                 else 'pgsql')) == 1, log[-5000:]
    assert re.search(r'available again after \d+\.\d s', log), log[-5000:]
    # Backoff: a handful of attempts for 3 s, not one per query.
    attempts = len(re.findall(r'reconnect|retry', log, re.I))
    assert attempts < 30, '%d reconnect lines' % attempts


def test_long_outage_bounces_are_in_no_archive(store_server):
    """The store is away for longer than outage_hold (1 s): some messages
    are bounced; none of those is in an archive, every delivered one is in
    both archives exactly once."""
    driver, make = store_server
    srv, fail, recover = make(1)
    got, bounced, a_rows, b_rows = burst(srv, fail, recover, 4.0)
    check_consistent(N, got, bounced, a_rows, b_rows)
    assert bounced, 'nothing bounced: the outage did not bite'


def test_restart_mid_send(store_server):
    """pg_ctl restart -m fast (SQLite: a failure of well under a second)
    in the middle of the burst: the archive, delivery and acks agree."""
    driver, make = store_server
    srv, fail, recover = make(20)
    if driver == 'pgsql':
        cluster = srv.cluster
        got, bounced, a_rows, b_rows = burst(srv, cluster.restart,
                                             lambda: None, 0.0)
    else:
        got, bounced, a_rows, b_rows = burst(srv, fail, recover, 0.3)
    check_consistent(N, got, bounced, a_rows, b_rows)
    assert not bounced


def test_offline_recipient_long_outage(store_server):
    """bob is offline: a message is stored for him and archived in one
    transaction, or bounced and in no archive, when the store fails for
    longer than outage_hold in the middle of the burst."""
    driver, make = store_server
    srv, fail, recover = make(1)
    got, bounced, a_rows, b_rows = burst(srv, fail, recover, 4.0,
                                         bob_online=False)
    check_consistent(N, got, bounced, a_rows, b_rows)
    assert bounced, 'nothing bounced: the outage did not bite'


def test_offline_quota_bounce_is_not_archived(store_server):
    """A message refused by a full offline quota is bounced and, like any
    bounced message, in no archive."""
    driver, make = store_server
    srv, fail, recover = make(20, modules={'mod_offline': {'quota': 3}})
    alice, apw = srv.new_user(prefix='alice')
    bob, _ = srv.new_user(prefix='bob')
    a = online(srv, alice, apw, 'ra')
    for i in range(5):
        a.message('%s@localhost' % bob, 'm%d' % i, id_='q%d' % i)
    errors = set()
    while len(errors) < 2:
        el = a.recv_until(lambda e: local(e.tag) == 'message'
                          and e.get('type') == 'error', what='a bounce')
        errors.add(el.find(BODY).text)
    assert errors == {'m3', 'm4'}
    a.ping()
    for user in (alice, bob):
        bodies = sorted(re.search(r'<body>(m\d+)</body>', st).group(1)
                        for (st,) in rows(srv, "SELECT stanza FROM mam_messages "
                                               "WHERE username = '%s'" % user))
        assert bodies == ['m0', 'm1', 'm2'], (user, bodies)


def chattr(flag, paths):
    return subprocess.run(['chattr', flag] + [str(p) for p in paths],
                          capture_output=True, text=True).returncode == 0


def test_sqlite_immutable_files(basedir, certs):
    """A real I/O failure instead of the test hook: the SQLite files made
    immutable (chattr +i, root on a file system that supports it) for
    longer than outage_hold, then writable again."""
    if os.geteuid() != 0 or shutil.which('chattr') is None:
        pytest.skip('chattr +i needs root')
    srv = HoldServer(basedir, certs, 1)
    srv.start()
    # Not the -shm file: SQLite maps it shared and writes through the
    # mapping, and ext4 answers a write fault on a mapped immutable file
    # with SIGBUS (ext4_page_mkwrite), which kills any process, not only
    # pigeond.  No real failure does that to the wal-index: a full disk
    # or an I/O error fails the writes to the database and the WAL, which
    # the two immutable files reproduce.
    files = [srv.db_path, Path(str(srv.db_path) + '-wal')]
    try:
        if not chattr('+i', files[:1]) or not chattr('-i', files[:1]):
            pytest.skip('chattr +i is not supported here')
        got, bounced, a_rows, b_rows = burst(
            srv, lambda: chattr('+i', files), lambda: chattr('-i', files),
            4.0)
        check_consistent(N, got, bounced, a_rows, b_rows)
        assert bounced, 'nothing bounced: the failure did not bite'
    finally:
        chattr('-i', files)
        srv.destroy()


def test_stop_during_outage(store_server):
    """SIGTERM while the store is down and messages wait for it: the
    server gives up waiting and exits cleanly, without waiting out the
    hold."""
    driver, make = store_server
    srv, fail, recover = make(60)
    alice, apw = srv.new_user(prefix='alice')
    bob, bpw = srv.new_user(prefix='bob')
    a = online(srv, alice, apw, 'ra')
    online(srv, bob, bpw, 'rb')
    fail()
    for i in range(20):
        a.message('%s@localhost' % bob, 'm%d' % i)
    time.sleep(0.5)
    t = time.monotonic()
    srv.stop(timeout=20)
    assert time.monotonic() - t < 10
    recover()


def flood_during_outage(store_server, n=2600, size=60000):
    """alice sends n messages of size bytes to bob while the store is
    away, until the archive refuses some with wait/resource-constraint,
    then the store comes back.  Returns (server, alice, bob, bodies bob
    got, bodies seen refused) once everything accepted has reached bob.
    The refusals carry the 60 KB payload back: alice may fall behind
    reading them (and be closed for unread output, mid-send even), so not
    every refusal need be seen.  Every wait is for a condition, not a
    time budget: the flood takes long on a loaded machine (CI runs two
    suites on two cores); the deadlines only end a test that is hung."""
    _, make = store_server
    server, fail, recover = make(100, max_stanza_size=size + 20000)
    alice, apw = server.new_user(prefix='alice')
    bob, bpw = server.new_user(prefix='bob')
    a = online(server, alice, apw, 'ra')
    b = online(server, bob, bpw, 'rb')
    to = '%s@localhost' % bob
    pad = "<x xmlns='urn:test:pad'>%s</x>" % ('p' * size)
    refused, other, got = set(), [], []
    routed, last = threading.Event(), threading.Event()

    def read_bounces():
        while True:
            try:
                el = a.recv(timeout=300)
            except Exception:
                return
            if local(el.tag) == 'iq' and el.get('id') == 'flood-end':
                routed.set()  # every message before it was routed
                continue
            if local(el.tag) != 'message' or el.get('type') != 'error':
                continue
            body = 'm' + el.get('id', 'id?')[2:]
            if el.find('{jabber:client}error/'
                       '{urn:ietf:params:xml:ns:xmpp-stanzas}'
                       'resource-constraint') is not None:
                refused.add(body)
            else:
                other.append(body)

    def read_deliveries():
        while True:
            try:
                el = b.recv(timeout=300)
            except Exception:
                return
            if local(el.tag) == 'message' and el.find(BODY) is not None:
                if el.find(BODY).text == 'last':
                    last.set()
                    return
                got.append(el.find(BODY).text)

    def refusing():
        return re.search(r'mod_mam \S+: .*refusing', server.log_text())

    for fn in (read_bounces, read_deliveries):
        threading.Thread(target=fn, daemon=True).start()
    fail()
    try:
        try:
            for i in range(n):
                a.message(to, 'm%d' % i, id_='id%d' % i, extra=pad)
            a.send("<iq type='get' id='flood-end' to='localhost'>"
                   "<ping xmlns='urn:xmpp:ping'/></iq>")
        except OSError:
            pass  # closed for unread refusals: the bound was reached
        # Until the server says it refuses, or it routed everything
        # without refusing (a bound that does not bite: the test fails).
        deadline = time.monotonic() + 300
        while not refusing() and not routed.is_set():
            assert time.monotonic() < deadline, 'the flood hung'
            time.sleep(0.1)
        assert refusing(), 'all %d routed, none refused' % n
        while not refused:
            assert time.monotonic() < deadline, 'no refusal reached alice'
            time.sleep(0.1)
    finally:
        recover()
    # The archive queue is in order: a message sent now reaches bob after
    # everything accepted before it (retried while the queue is full).
    c = online(server, alice, apw, 'rc')
    deadline = time.monotonic() + 300
    while not last.is_set():
        assert time.monotonic() < deadline, 'bob got %d, then nothing' % len(got)
        c.message(to, 'last', id_='last')
        while not last.is_set():
            try:
                el = c.recv(timeout=0.5)
            except rawxmpp.XMPPTimeout:
                continue
            if local(el.tag) == 'message' and el.get('type') == 'error':
                time.sleep(0.5)
                break
    assert not other, 'bounced otherwise: %s' % other[:5]
    assert len(got) + len(refused) <= n
    return server, alice, bob, list(got), set(refused)


def archived(server, user, outgoing):
    (count,), = rows(server, "SELECT count(*) FROM mam_messages WHERE "
                             "username = '%s' AND outgoing = %d"
                             % (user, outgoing))
    return int(count)


def test_archive_queue_bounded_in_bytes(store_server):
    """While the store is away, large messages to an online user wait in
    the archive's write queue.  Its bounds are in bytes too (64 MiB
    queued, 64 MiB held behind it), so a flood of 60 KB messages is
    refused with wait/resource-constraint long before the message counts
    (20000 + 100000) are reached, instead of holding gigabytes (without
    the byte bounds all 2600 are accepted and the test fails); once the
    store is back everything accepted is archived and delivered, exactly
    once, in batches small enough for the recipient's output buffer."""
    server, alice, bob, got, refused = flood_during_outage(store_server)
    # 64 + 64 MiB of 60 KB messages: about 2200 waited, the rest refused.
    assert 1500 < len(got) < 2400, len(got)
    assert len(got) == len(set(got)) and not (set(got) & refused)
    assert got == sorted(got, key=lambda s: int(s[1:])), 'out of order'
    # And the message that marked the end.
    assert archived(server, alice, 1) == len(got) + 1
    assert archived(server, bob, 0) == len(got) + 1



def test_held_messages_keep_order_when_recipient_leaves(store_server):
    """Messages to an online user wait in the archive's write queue while
    the store is away; the user goes offline meanwhile.  What alice sends
    after that must not reach offline storage before them: it waits
    behind them (RFC 6121 section 8: one sender's messages keep their
    order)."""
    _, make = store_server
    server, fail, recover = make(60)
    alice, apw = server.new_user(prefix='alice')
    bob, bpw = server.new_user(prefix='bob')
    a = online(server, alice, apw, 'ra')
    b = online(server, bob, bpw, 'rb')
    to = '%s@localhost' % bob
    fail()
    try:
        for i in range(5):
            a.message(to, 'm%d' % i, id_='id%d' % i)
        # Routed (held for the archive) once the ping after them is.
        assert a.ping(timeout=30).get('type') == 'result'
        b.send('</stream:stream>')
        b.close()
        deadline = time.monotonic() + 30
        while '%s/rb ended' % to not in server.log_text():
            assert time.monotonic() < deadline, 'bob never left'
            time.sleep(0.05)
        for i in range(5, 10):
            a.message(to, 'm%d' % i, id_='id%d' % i)
        assert a.ping(timeout=30).get('type') == 'result'
    finally:
        recover()
    deadline = time.monotonic() + 60
    while True:
        stored = [re.search(r'<body>(m\d+)</body>', s).group(1)
                  for (s,) in rows(server, "SELECT stanza FROM "
                                   "offline_messages WHERE username = '%s' "
                                   "ORDER BY id" % bob)]
        if len(stored) >= 10:
            break
        assert time.monotonic() < deadline, 'stored only %s' % stored
        time.sleep(0.2)
    assert stored == ['m%d' % i for i in range(10)]
