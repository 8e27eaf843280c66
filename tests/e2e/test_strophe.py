"""Interoperability with libstrophe, a second real client library.

The client is tests/e2e/strophe_client.c (a check program: `make check`, or
`make tests/e2e/strophe_client` in the build directory).  It prints one
event per line (CONNECTED, SENT, RECEIVED, PONG, DONE) and exits 0 only when
everything asked of it happened.  Every test runs on both storage drivers
through the `server` fixture.
"""

import asyncio
import os
import queue
import subprocess
import threading
import time

import pytest

import slixutil
from conftest import BUILDDIR, sanitizer_report

STROPHE = BUILDDIR / 'tests' / 'e2e' / 'strophe_client'
BODY = '{jabber:client}body'
# non-ASCII and XML metacharacters: both libraries must escape and unescape
TEXT = 'h\u00e9llo <strophe> & "pigeon"'


@pytest.fixture
def strophe_bin():
    if not os.access(STROPHE, os.X_OK):
        pytest.skip('%s is not built (run `make check`, or `make '
                    'tests/e2e/strophe_client` in the build directory; needs '
                    'libstrophe-dev)' % STROPHE)
    return STROPHE


class Strophe:
    """One strophe_client process; its output is read by threads so that a
    test can wait for a line (e.g. CONNECTED) with a timeout."""

    def __init__(self, binary, server, jid, password, *args, tls='cafile',
                 timeout=10):
        cmd = [str(binary), '--jid', jid, '--password', password,
               '--host', '127.0.0.1', '--port', str(server.c2s_port),
               '--timeout', str(timeout)]
        cmd += ['--cafile', server.cafile] if tls == 'cafile' else ['--tls-trust']
        cmd += [str(a) for a in args]
        self.cmd = cmd
        self.timeout = timeout
        self.stdout = []
        self.stderr = []
        self._lines = queue.Queue()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, encoding='utf-8', errors='replace')
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout,
                                                      self._lines), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr,
                                                      None), daemon=True)]
        for t in self._threads:
            t.start()

    @staticmethod
    def _pump(pipe, sink, q):
        for line in pipe:
            line = line.rstrip('\n')
            sink.append(line)
            if q is not None:
                q.put(line)
        if q is not None:
            q.put(None)

    def report(self):
        return ('$ %s\nexit: %s\nstdout:\n  %s\nstderr:\n  %s'
                % (' '.join(self.cmd), self.proc.returncode,
                   '\n  '.join(self.stdout), '\n  '.join(self.stderr)))

    def wait_line(self, prefix, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                line = None
                remaining = 0
            if line is not None and line.startswith(prefix):
                return line
            if line is None:
                if remaining > 0:      # EOF: the client has exited
                    self.finish()
                raise AssertionError('strophe_client: no %r line within %.0f s\n%s'
                                     % (prefix, timeout, self.report()))

    def finish(self):
        """Waits for the exit; returns the exit status."""
        try:
            self.proc.wait(self.timeout + 10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError('strophe_client hung past its own timeout\n%s'
                                 % self.report())
        for t in self._threads:
            t.join(5)
        pat = sanitizer_report('\n'.join(self.stderr))
        assert pat is None, 'sanitizer report (%s) from strophe_client\n%s' % (
            pat, self.report())
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def expect_success(self):
        rc = self.finish()
        assert rc == 0, 'strophe_client failed\n%s' % self.report()
        assert self.stdout and self.stdout[-1] == 'DONE', self.report()
        return self.stdout


@pytest.fixture
def strophe(strophe_bin, server):
    """Factory: strophe(jid, password, *args) starts a client on `server`."""
    started = []

    def start(jid, password, *args, **kw):
        s = Strophe(strophe_bin, server, jid, password, *args, **kw)
        started.append(s)
        return s
    yield start
    for s in started:
        s.kill()


def received_lines(out):
    return [line for line in out if line.startswith('RECEIVED ')]


@pytest.mark.parametrize('tls', ['cafile', 'trust'])
def test_strophe_login_starttls(server, user, strophe, tls):
    """libstrophe negotiates STARTTLS (mandatory: the listener requires it
    and so does the client), authenticates, binds the resource it asked
    for and sends initial presence."""
    name, password = user
    s = strophe('%s@localhost/strophe' % name, password, tls=tls)
    out = s.expect_success()
    assert 'CONNECTED %s@localhost/strophe' % name in out, s.report()


def test_raw_to_strophe_message(server, user, strophe):
    name, password = user
    jid = '%s@localhost/strophe' % name
    s = strophe(jid, password, '--expect-body', TEXT)
    s.wait_line('CONNECTED ')
    sender_name, sender_pw = server.new_user(prefix='sender')
    sender = server.login(sender_name, sender_pw, resource='raw')
    sender.presence()
    sender.message(jid, TEXT)
    out = s.expect_success()
    assert received_lines(out) == ['RECEIVED from=%s body=%s'
                                   % (sender.jid, TEXT)], s.report()


def test_strophe_to_raw_message(server, user, strophe):
    name, password = user
    rcpt_name, rcpt_pw = server.new_user(prefix='rcpt')
    rcpt = server.login(rcpt_name, rcpt_pw, resource='raw')
    rcpt.presence()
    assert rcpt.ping().get('type') == 'result'   # presence processed
    s = strophe('%s@localhost/strophe' % name, password,
                '--send-to', rcpt.jid, '--body', TEXT)
    out = s.expect_success()
    assert 'SENT to=%s' % rcpt.jid in out, s.report()
    m = rcpt.recv_stanza('message')
    assert m.get('from') == '%s@localhost/strophe' % name
    assert m.get('type') == 'chat'
    assert m.findtext(BODY) == TEXT


def test_strophe_slixmpp_round_trip(server, user, strophe):
    """libstrophe and slixmpp talk to each other through Pigeon: strophe
    sends to the slixmpp user's bare JID, slixmpp answers to the full JID
    the message came from."""
    name, password = user
    jid = '%s@localhost/strophe' % name
    slix_name, slix_pw = server.new_user(prefix='slix')
    reply = 'pong \u2713 ' + TEXT

    async def scenario():
        c = server.slix('%s@localhost/slix' % slix_name, slix_pw)
        await c.start()
        # the slixmpp session is available before the strophe client starts
        s = strophe(jid, password, '--send-to', '%s@localhost' % slix_name,
                    '--body', TEXT, '--expect-body', reply)
        msg = await c.next_message(timeout=10)
        assert str(msg['from']) == jid, s.report()
        assert msg['body'] == TEXT
        c.send_message(mto=msg['from'], mbody=reply, mtype='chat')
        rc = await asyncio.get_running_loop().run_in_executor(None, s.finish)
        assert rc == 0, 'strophe_client failed\n%s' % s.report()
        await c.stop()
        return s

    s = slixutil.run(scenario, timeout=40)
    assert received_lines(s.stdout) == [
        'RECEIVED from=%s@localhost/slix body=%s' % (slix_name, reply)], s.report()
    assert s.stdout[-1] == 'DONE', s.report()


def test_strophe_ping_server(server, user, strophe):
    """XEP-0199: an iq ping to the server's domain gets a result."""
    name, password = user
    s = strophe('%s@localhost/strophe' % name, password, '--ping', 'localhost')
    out = s.expect_success()
    assert 'PONG localhost' in out, s.report()


def test_strophe_wrong_password(server, user, strophe):
    name, password = user
    s = strophe('%s@localhost/strophe' % name, password + '-wrong')
    rc = s.finish()
    assert rc != 0, 'login with a wrong password succeeded\n%s' % s.report()
    assert rc != 2, 'timeout instead of an authentication failure\n%s' % s.report()
    assert not any(line.startswith('CONNECTED') for line in s.stdout), s.report()
    assert any(line.startswith('ERROR could not log in') for line in s.stderr), \
        s.report()
    # the server is fine afterwards: the right password still works
    ok = strophe('%s@localhost/strophe' % name, password)
    ok.expect_success()
