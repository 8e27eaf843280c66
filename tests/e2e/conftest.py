"""End-to-end test harness for Pigeon: runs real pigeond processes.

Environment:
  PIGEON_BUILDDIR   where pigeond, pigeonctl and modules/.libs are (default:
                    the repository root this file lives in)
  PIGEON_SRCDIR     the source tree (schemas/); same default
  PIGEON_TEST_PGSQL libpq conninfo of a role that may CREATE DATABASE; unset:
                    the pgsql variants are skipped (fail with
                    PIGEON_REQUIRE_PGSQL=1)
  PIGEON_TEST_LOG_LEVEL  log level of the servers (default debug)
  PIGEON_TEST_TIMEOUT    per-test safety alarm in seconds (default 120)
"""

import fcntl
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import rawxmpp

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BUILDDIR = Path(os.environ.get('PIGEON_BUILDDIR') or REPO).resolve()
SRCDIR = Path(os.environ.get('PIGEON_SRCDIR') or REPO).resolve()
PIGEOND = BUILDDIR / 'pigeond'
PIGEONCTL = BUILDDIR / 'pigeonctl'
MODULE_PATH = BUILDDIR / 'modules' / '.libs'
SCHEMA_DIR = SRCDIR / 'schemas'
LOG_LEVEL = os.environ.get('PIGEON_TEST_LOG_LEVEL', 'debug')
TEST_TIMEOUT = int(os.environ.get('PIGEON_TEST_TIMEOUT', '120'))
PGSQL = os.environ.get('PIGEON_TEST_PGSQL')
REQUIRE_PGSQL = os.environ.get('PIGEON_REQUIRE_PGSQL') == '1'

HOSTS = ('localhost', 'example.test')
COMPONENT = 'bot.localhost'
COMPONENT_SECRET = 's3cret'
MAX_STANZA = 10000

SANITIZER_PATTERNS = ('AddressSanitizer', 'LeakSanitizer', 'runtime error:',
                      'UndefinedBehaviorSanitizer', 'ThreadSanitizer',
                      'MemorySanitizer')

_counter = itertools.count(1)
LIVE_SERVERS = []      # started and not yet stopped
ALL_SERVERS = []       # every server of the session (for failure reports)


def unique(prefix='u'):
    return '%s%d%s' % (prefix, next(_counter), secrets.token_hex(3))


# Ports below the kernel's ephemeral range (32768+): a port the kernel
# hands out for bind(0) can be handed out again to the next caller, or taken
# by an outgoing connection, before the server binds it.  Each port is
# claimed once per process, and across concurrent runs (the default and the
# sanitizer build may test at once) by an flock held until this process ends.
PORT_RANGE = (12000, 32000)
PORT_LOCK_DIR = Path(tempfile.gettempdir()) / 'pigeon-test-ports'
_claimed_ports = {}
_port_cursor = None


def _port_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(('127.0.0.1', port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on, below 32768, never
    handed out twice (in this process or to a concurrent test run)."""
    global _port_cursor
    lo, hi = PORT_RANGE
    if _port_cursor is None:
        _port_cursor = lo + (os.getpid() * 7919) % (hi - lo)
    PORT_LOCK_DIR.mkdir(exist_ok=True)
    for _ in range(hi - lo):
        port = _port_cursor
        _port_cursor = lo + (_port_cursor + 1 - lo) % (hi - lo)
        if port in _claimed_ports:
            continue
        fd = os.open(str(PORT_LOCK_DIR / ('%d.lock' % port)),
                     os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        if not _port_free(port):
            os.close(fd)
            continue
        _claimed_ports[port] = fd
        return port
    raise RuntimeError('no free port in %d-%d' % PORT_RANGE)


def yq(value):
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(str(value))


def pigeon_env():
    env = dict(os.environ)
    env['PIGEON_MODULE_PATH'] = str(MODULE_PATH)
    env['PIGEON_SCHEMA_DIR'] = str(SCHEMA_DIR)
    env.setdefault('ASAN_OPTIONS', 'detect_leaks=1')
    env.setdefault('UBSAN_OPTIONS', 'print_stacktrace=1')
    return env


def sanitizer_report(text):
    for pat in SANITIZER_PATTERNS:
        if pat in text:
            return pat
    return None


# ---- PostgreSQL --------------------------------------------------------

def pg_available():
    return bool(PGSQL) and shutil.which('psql') is not None


def require_pgsql():
    if pg_available():
        return
    why = ('PIGEON_TEST_PGSQL is not set' if not PGSQL
           else 'psql is not installed')
    if REQUIRE_PGSQL:
        pytest.fail('PostgreSQL tests required (PIGEON_REQUIRE_PGSQL=1) but %s' % why,
                    pytrace=False)
    pytest.skip('PostgreSQL tests skipped: %s' % why)


def psql(sql):
    r = subprocess.run(['psql', PGSQL, '-v', 'ON_ERROR_STOP=1', '-X', '-q', '-c', sql],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError('psql %r failed: %s%s' % (sql, r.stdout, r.stderr))
    return r.stdout


def pg_conninfo_for(dbname):
    if re.match(r'postgres(ql)?://', PGSQL):
        from urllib.parse import urlsplit, urlunsplit
        u = urlsplit(PGSQL)
        return urlunsplit((u.scheme, u.netloc, '/' + dbname, u.query, u.fragment))
    # libpq: a later keyword overrides an earlier one
    return '%s dbname=%s' % (PGSQL, dbname)


def db_rows(server, sql):
    """The rows of sql on server's store (SQLite file or PostgreSQL
    database), as tuples of strings/ints as the driver gives them."""
    if server.driver == 'sqlite':
        import sqlite3
        conn = sqlite3.connect(str(server.db_path), timeout=10)
        try:
            with conn:
                return [tuple(r) for r in conn.execute(sql).fetchall()]
        finally:
            conn.close()
    # Unit and record separators that no value contains, so values may
    # hold newlines; psql ends the output with one newline.
    r = subprocess.run(['psql', pg_conninfo_for(server.pg_db), '-X', '-A',
                        '-t', '-q', '-F', '\x1f', '-R', '\x1e', '-v',
                        'ON_ERROR_STOP=1', '-c', sql],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    out = r.stdout[:-1] if r.stdout.endswith('\n') else r.stdout
    return [tuple(rec.split('\x1f')) for rec in out.split('\x1e')
            if out != '']


def db(server, sql):
    """The first column of the first row of sql on server's store, or
    None (a string on PostgreSQL)."""
    rows = db_rows(server, sql)
    return rows[0][0] if rows else None


def pg_create_db():
    name = 'pigeon_test_%d_%s' % (os.getpid(), unique('db'))
    psql('CREATE DATABASE %s' % name)
    return name


def pg_drop_db(name):
    try:
        psql('DROP DATABASE IF EXISTS %s WITH (FORCE)' % name)
    except AssertionError:
        psql('DROP DATABASE IF EXISTS %s' % name)


# ---- certificates ------------------------------------------------------

class Certs:
    def __init__(self, directory):
        self.dir = Path(directory)
        self.cert = self.dir / 'cert.pem'
        self.key = self.dir / 'key.pem'
        self.pem = self.dir / 'pigeon.pem'     # cert + key, for certfiles:
        subprocess.run(
            ['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-sha256', '-nodes',
             '-days', '30', '-subj', '/CN=localhost',
             '-addext', 'subjectAltName=DNS:localhost,DNS:example.test,DNS:*.localhost',
             '-keyout', str(self.key), '-out', str(self.cert)],
            check=True, capture_output=True, timeout=60)
        self.pem.write_bytes(self.cert.read_bytes() + self.key.read_bytes())
        os.chmod(self.pem, 0o600)

    @property
    def cafile(self):
        return str(self.cert)


# Every module of the tree, loaded on every test server unless a test
# says otherwise (Server(modules={'mod_x': None})).
DEFAULT_MODULES = {
    'mod_disco': {}, 'mod_ping': {}, 'mod_version': {}, 'mod_roster': {},
    'mod_offline': {}, 'mod_blocking': {}, 'mod_last': {}, 'mod_vcard': {},
    'mod_private': {}, 'mod_caps': {}, 'mod_register': {},
    'mod_carbons': {}, 'mod_mam': {}, 'mod_csi': {}, 'mod_push': {},
    'mod_pep': {},
}


# ---- the server --------------------------------------------------------

class Server:
    """One pigeond process with its own directory, ports, store and config."""

    def __init__(self, base, certs, driver='sqlite', *, name=None,
                 max_stanza_size=MAX_STANZA, auth_fail_delay_ms=0,
                 extra_yaml='', extra_limits='', modules=None):
        self.name = name or unique('srv')
        self.dir = Path(tempfile.mkdtemp(prefix=self.name + '-', dir=base))
        self.certs = certs
        self.driver = driver
        self.cafile = certs.cafile
        self.c2s_port = free_port()           # STARTTLS required
        self.c2s_plain_port = free_port()     # starttls_required: false
        self.tls_port = free_port()           # direct TLS (XEP-0368)
        self.component_port = free_port()
        self.config = self.dir / 'pigeon.yml'
        self.log = self.dir / 'pigeond.log'
        self.ctl_socket = self.dir / 'ctl.sock'
        self.db_path = self.dir / 'pigeon.db'
        self.pg_db = None
        self.proc = None
        self.exitcode = None
        self.ctl_log = []
        self._log_fh = None
        self.max_stanza_size = max_stanza_size
        self.auth_fail_delay_ms = auth_fail_delay_ms
        self.extra_yaml = extra_yaml
        self.extra_limits = extra_limits
        # Module name -> dict of options; None drops a default module.
        self.modules = dict(DEFAULT_MODULES)
        self.modules.update(modules or {})
        if driver == 'pgsql':
            self.pg_db = pg_create_db()
        self.write_config()
        ALL_SERVERS.append(self)

    # config --------------------------------------------------------------
    def storage_yaml(self):
        if self.driver == 'pgsql':
            return ('storage:\n  driver: pgsql\n  conninfo: %s\n'
                    % yq(pg_conninfo_for(self.pg_db)))
        return 'storage:\n  driver: sqlite\n  path: %s\n' % yq(self.db_path)

    def modules_yaml(self):
        out = 'modules:\n'
        for name, opts in self.modules.items():
            if opts is None:
                continue
            if not opts:
                out += '  %s: {}\n' % name
                continue
            out += '  %s:\n' % name
            for k, v in opts.items():
                if isinstance(v, bool):
                    v = 'true' if v else 'false'
                out += '    %s: %s\n' % (k, yq(str(v)))
        return out

    def config_text(self):
        return (
            '# generated by tests/e2e/conftest.py\n'
            'hosts:\n'
            + ''.join('  - %s\n' % yq(h) for h in HOSTS) +
            'listen:\n'
            '  - port: %d\n'
            '    ip: "127.0.0.1"\n'
            '    module: c2s\n'
            '    starttls_required: true\n'
            '  - port: %d\n'
            '    ip: "127.0.0.1"\n'
            '    module: c2s\n'
            '    starttls_required: false\n'
            '  - port: %d\n'
            '    ip: "127.0.0.1"\n'
            '    module: c2s_tls\n'
            '  - port: %d\n'
            '    ip: "127.0.0.1"\n'
            '    module: component\n'
            'certfiles:\n'
            '  - %s\n'
            % (self.c2s_port, self.c2s_plain_port, self.tls_port,
               self.component_port, yq(self.certs.pem))
            + self.storage_yaml() +
            'components:\n'
            '  - domain: %s\n'
            '    secret: %s\n'
            '%s'
            'limits:\n'
            '  max_stanza_size: %d\n'
            '  auth_fail_delay_ms: %d\n'
            '%s'
            'log:\n'
            '  level: %s\n'
            'ctl_socket: %s\n'
            % (yq(COMPONENT), yq(COMPONENT_SECRET), self.modules_yaml(),
               self.max_stanza_size,
               self.auth_fail_delay_ms,
               self.extra_limits or '  negotiation_timeout: 30\n',
               LOG_LEVEL, yq(self.ctl_socket))
            + self.extra_yaml)

    def write_config(self):
        self.config.write_text(self.config_text())

    # process -------------------------------------------------------------
    def start(self, timeout=10.0):
        if not os.access(PIGEOND, os.X_OK):
            pytest.fail('%s not found or not executable (build first; set '
                        'PIGEON_BUILDDIR)' % PIGEOND, pytrace=False)
        self._log_fh = open(self.log, 'ab')
        self.proc = subprocess.Popen([str(PIGEOND), '-c', str(self.config)],
                                     stdout=self._log_fh, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=str(self.dir),
                                     env=pigeon_env())
        self.exitcode = None
        LIVE_SERVERS.append(self)
        deadline = time.monotonic() + timeout
        ports = [self.c2s_port, self.c2s_plain_port, self.tls_port,
                 self.component_port]
        while ports:
            if self.proc.poll() is not None:
                self._reap()
                raise AssertionError('pigeond exited with %s during start-up:\n%s'
                                     % (self.exitcode, self.log_tail()))
            try:
                socket.create_connection(('127.0.0.1', ports[0]), timeout=0.5).close()
                ports.pop(0)
                continue
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError('pigeond did not accept on port %d within '
                                     '%.0f s:\n%s' % (ports[0], timeout, self.log_tail()))
            time.sleep(0.05)
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _reap(self):
        if self.proc is not None and self.exitcode is None:
            self.exitcode = self.proc.wait()
        if self in LIVE_SERVERS:
            LIVE_SERVERS.remove(self)
        if self._log_fh:
            self._log_fh.close()
            self._log_fh = None

    def kill(self):
        if self.running():
            self.proc.kill()
        if self.proc is not None:
            self._reap()

    def wait_exit(self, timeout=15.0):
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError('pigeond did not exit within %.0f s:\n%s'
                                 % (timeout, self.log_tail()))
        self._reap()
        return self.exitcode

    def stop(self, timeout=15.0):
        """SIGTERM; the server must exit 0 without sanitizer reports."""
        if self.proc is None:
            return
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
        code = self.wait_exit(timeout)
        self.check_log()
        assert code == 0, 'pigeond exited with %s after SIGTERM:\n%s' % (
            code, self.log_tail())

    def destroy(self):
        """Final cleanup (fixtures): stop, drop the database, remove files."""
        try:
            self.stop()
        finally:
            if self.pg_db:
                pg_drop_db(self.pg_db)
                self.pg_db = None

    # logs ----------------------------------------------------------------
    def log_text(self, start=0):
        try:
            with open(self.log, 'rb') as f:
                f.seek(start)
                return f.read().decode('utf-8', 'replace')
        except FileNotFoundError:
            return ''

    def log_size(self):
        try:
            return self.log.stat().st_size
        except FileNotFoundError:
            return 0

    def log_tail(self, start=0, limit=30000):
        text = self.log_text(start)
        if len(text) > limit:
            text = '[...]\n' + text[-limit:]
        return text

    def check_log(self, start=0):
        pat = sanitizer_report(self.log_text(start))
        assert pat is None, 'sanitizer report (%s) in the pigeond log:\n%s' % (
            pat, self.log_tail(start))

    def check_alive(self):
        if self.proc is not None and self.exitcode is None and not self.running():
            self._reap()
            raise AssertionError('pigeond died (exit %s):\n%s' % (
                self.exitcode, self.log_tail()))

    # pigeonctl -----------------------------------------------------------
    def ctl(self, *args, expect=None, timeout=30):
        if not os.access(PIGEONCTL, os.X_OK):
            pytest.fail('%s not found or not executable' % PIGEONCTL, pytrace=False)
        cmd = [str(PIGEONCTL), '-c', str(self.config)] + [str(a) for a in args]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                               env=pigeon_env(), cwd=str(self.dir),
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise AssertionError('pigeonctl %s hung for %d s' % (' '.join(args), timeout))
        self.ctl_log.append('$ pigeonctl %s\n-> exit %d\nstdout: %s\nstderr: %s'
                            % (' '.join(map(str, args)), r.returncode, r.stdout,
                               r.stderr))
        pat = sanitizer_report(r.stderr)
        assert pat is None, 'sanitizer report from pigeonctl:\n%s' % r.stderr
        if expect is not None:
            assert r.returncode == expect, (
                'pigeonctl %s: exit %d, expected %d\nstdout: %s\nstderr: %s'
                % (' '.join(map(str, args)), r.returncode, expect, r.stdout, r.stderr))
        return r

    def register(self, user, host, password):
        self.ctl('register', user, host, password, expect=0)

    def new_user(self, host='localhost', prefix='u'):
        user = unique(prefix)
        password = 'pw-' + secrets.token_hex(6)
        self.register(user, host, password)
        return user, password

    # clients -------------------------------------------------------------
    def raw(self, port=None, domain='localhost', **kw):
        return rawxmpp.RawClient(port or self.c2s_port, domain=domain,
                                 cafile=self.cafile, **kw)

    def login(self, user, password, host='localhost', resource=None, **kw):
        c = self.raw(domain=host, name='%s@%s' % (user, host))
        c.login(user, password, resource, **kw)
        return c

    def component(self, **kw):
        return rawxmpp.RawClient(self.component_port, domain=COMPONENT,
                                 cafile=self.cafile, ns=rawxmpp.NS_COMPONENT,
                                 name='component', **kw)

    def slix(self, jid, password, **kw):
        import slixutil
        port = self.tls_port if kw.get('direct_tls') else self.c2s_port
        return slixutil.Client(jid, password, self.cafile, port, **kw)


# ---- fixtures ------------------------------------------------------------

@pytest.fixture(scope='session')
def basedir():
    # short paths: the control socket path must fit in sun_path
    d = tempfile.mkdtemp(prefix='pgn-e2e-')
    yield d
    if os.environ.get('PIGEON_TEST_KEEP') != '1':
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope='session')
def certs(basedir):
    d = Path(basedir) / 'certs'
    d.mkdir()
    return Certs(d)


@pytest.fixture(scope='session', params=['sqlite', 'pgsql'])
def driver(request):
    if request.param == 'pgsql':
        require_pgsql()
    return request.param


@pytest.fixture(scope='session')
def server(basedir, certs, driver):
    """A long-running server per storage driver, shared by the protocol
    tests (each test uses fresh users)."""
    srv = Server(basedir, certs, driver, name='main-' + driver)
    try:
        srv.start()
    except BaseException:
        srv.kill()
        if srv.pg_db:
            pg_drop_db(srv.pg_db)
        raise
    yield srv
    srv.destroy()


@pytest.fixture
def make_server(basedir, certs):
    """Factory for servers private to one test (stopped at the end)."""
    made = []

    def make(driver='sqlite', start=True, **kw):
        if driver == 'pgsql':
            require_pgsql()
        srv = Server(basedir, certs, driver, **kw)
        made.append(srv)
        if start:
            srv.start()
        return srv
    yield make
    errors = []
    for srv in made:
        try:
            srv.destroy()
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, '\n'.join(errors)


@pytest.fixture
def user(server):
    """A fresh account on localhost: (user, password)."""
    return server.new_user()


def _timeout_handler(signum, frame):
    raise TimeoutError('test exceeded the %d s safety alarm' % TEST_TIMEOUT)


@pytest.fixture(autouse=True)
def _per_test(request):
    rawxmpp.ALL_CLIENTS.clear()
    request.node._pgn_log_offsets = {id(s): s.log_size() for s in ALL_SERVERS}
    request.node._pgn_ctl_offsets = {id(s): len(s.ctl_log) for s in ALL_SERVERS}
    old = signal.signal(signal.SIGALRM, _timeout_handler)
    signal.alarm(TEST_TIMEOUT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        for c in rawxmpp.ALL_CLIENTS:
            c.close()
    # the servers must survive every test, without sanitizer reports
    offsets = request.node._pgn_log_offsets
    for srv in list(LIVE_SERVERS):
        srv.check_alive()
        srv.check_log(offsets.get(id(srv), 0))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    offsets = getattr(item, '_pgn_log_offsets', {})
    for srv in ALL_SERVERS:
        start = offsets.get(id(srv), 0)
        if srv.log_size() > start:
            rep.sections.append(('pigeond log: %s (%s)' % (srv.name, srv.log),
                                 srv.log_tail(start)))
        ctl = srv.ctl_log[getattr(item, '_pgn_ctl_offsets', {}).get(id(srv), 0):]
        if ctl:
            rep.sections.append(('pigeonctl: %s' % srv.name, '\n'.join(ctl[-30:])))
    for c in rawxmpp.ALL_CLIENTS:
        rep.sections.append(('xmpp transcript: %s' % c.name,
                             '\n'.join(c.transcript[-200:])))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    # never leave servers behind (runs after the fixtures' teardown)
    for srv in list(LIVE_SERVERS):
        srv.kill()
    for srv in ALL_SERVERS:
        if srv.pg_db:
            try:
                pg_drop_db(srv.pg_db)
            except Exception:
                pass
