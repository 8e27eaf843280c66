"""A real client turns OMEMO on against Pigeon: Profanity (Debian's build,
OMEMO enabled), driven through tmux.

Profanity logs in (STARTTLS with the test's self-signed certificate,
accepted with `tls trust`), runs `/omemo gen`, which publishes its bundle
at eu.siacs.conversations.axolotl.bundles:<device id> and its device list
at eu.siacs.conversations.axolotl.devicelist (legacy OMEMO, as Profanity
0.13 speaks it).  The test checks that Profanity reports no error, on
screen or in its debug log, and that another account reads the device
list and the bundle from Pigeon.  HOME and the XDG directories are
temporary; tmux runs on a private socket.  Skipped when profanity or tmux
is not installed.  The same check by hand: doc/pep.md.
"""

import asyncio
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import slixutil
from test_pep_clients import (AXOLOTL, AXOLOTL_BUNDLES, AXOLOTL_DEVICES,
                              STANZA_LIMIT, bare, client, items)

PROFANITY = shutil.which('profanity')
TMUX = shutil.which('tmux')

pytestmark = pytest.mark.skipif(
    PROFANITY is None or TMUX is None,
    reason='profanity or tmux is not installed (apt-get install profanity tmux)')


class Profanity:
    """One profanity process in a detached tmux session of its own."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.home = self.dir / 'home'
        self.home.mkdir(parents=True)
        self.sock = str(self.dir / 'tmux.sock')
        self.log = self.home / 'data' / 'profanity' / 'logs' / 'profanity.log'
        env = ('env -i PATH=/usr/bin:/bin TERM=xterm-256color LANG=C.UTF-8 '
               'HOME={h} XDG_CONFIG_HOME={h}/config XDG_DATA_HOME={h}/data '
               'XDG_CACHE_HOME={h}/cache XDG_RUNTIME_DIR={h}/run'
               .format(h=self.home))
        self.tmux('new-session', '-d', '-s', 'prof', '-x', '200', '-y', '60',
                  '%s %s -l DEBUG' % (env, PROFANITY))

    def tmux(self, *args):
        return subprocess.run([TMUX, '-S', self.sock] + list(args),
                              capture_output=True, text=True, timeout=10,
                              check=True).stdout

    def send(self, text):
        # -l: literal (a password or a command is not a key name)
        self.tmux('send-keys', '-t', 'prof', '-l', text)
        self.tmux('send-keys', '-t', 'prof', 'Enter')

    def screen(self):
        return self.tmux('capture-pane', '-p', '-J', '-t', 'prof',
                         '-S', '-500')

    def wait_for(self, pattern, timeout=20.0):
        """The first match of pattern on the screen, waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            m = re.search(pattern, text)
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError('profanity: %r not shown within %.0f s; '
                                     'screen:\n%s\nlog tail:\n%s' % (
                                         pattern, timeout, text,
                                         self.log_text()[-6000:]))
            time.sleep(0.2)

    def wait_log(self, pattern, timeout=20.0):
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.log_text()):
            if time.monotonic() > deadline:
                raise AssertionError('profanity: %r not logged within %.0f s:'
                                     '\n%s' % (pattern, timeout,
                                               self.log_text()[-6000:]))
            time.sleep(0.2)

    def log_text(self):
        try:
            return self.log.read_text(errors='replace')
        except FileNotFoundError:
            return ''

    def close(self):
        try:
            self.send('/quit')
            time.sleep(0.5)
        except Exception:
            pass
        subprocess.run([TMUX, '-S', self.sock, 'kill-server'],
                       capture_output=True, timeout=10)


@pytest.fixture
def profanity(make_server, driver):
    srv = make_server(driver, max_stanza_size=STANZA_LIMIT,
                      modules={'mod_pep': {}})
    prof = Profanity(srv.dir / 'prof')
    yield srv, prof
    prof.close()


# Lines Profanity shows (or logs at ERR) when a request fails; GLib's
# "CRITICAL" lines on stderr are Profanity's own and unrelated.
SCREEN_ERRORS = re.compile(r'(?i)error|failed|cannot|can\'t|not supported')
LOG_ERRORS = re.compile(r'^.*prof: ERR: .*$', re.M)


def test_profanity_turns_omemo_on(profanity):
    srv, prof = profanity
    user, pw = srv.new_user(prefix='prof')
    reader, rpw = srv.new_user(prefix='profr')
    prof.wait_for(r"Type '/help'")
    prof.send('/connect %s@localhost server 127.0.0.1 port %d tls trust'
              % (user, srv.c2s_port))
    prof.wait_for(r'Enter password')
    prof.send(pw)
    prof.wait_for(r'logged in successfully')
    # Profanity decides from the server's disco#info whether to send
    # publish-options; a user types after the login has settled.
    prof.wait_log(r'Received disco#info response from: localhost')
    prof.send('/omemo gen')
    dev = int(prof.wait_for(r'Your Device ID is (\d+)', 60).group(1))

    # Profanity publishes the bundle, then fetches and republishes the
    # device list with its id: wait until another account sees both.
    async def scenario():
        r = await client(srv, reader, rpw)
        deadline = time.monotonic() + 20
        why = None
        while True:
            try:
                devs = await items(r, bare(user), AXOLOTL_DEVICES)
                bundle = await items(r, bare(user), AXOLOTL_BUNDLES % dev)
            except Exception as e:          # not there yet
                devs, bundle, why = [], [], e
            ids = [d.get('id') for _, p in devs if p is not None
                   for d in p.findall('{%s}device' % AXOLOTL)]
            if str(dev) in ids and bundle:
                break
            if time.monotonic() > deadline:
                raise AssertionError('device list %r / bundle %r of %s not '
                                     'published (%s)' % (ids, bundle, dev, why))
            await asyncio.sleep(0.3)
        b = bundle[0][1]
        assert b.tag == '{%s}bundle' % AXOLOTL
        assert b.findtext('{%s}identityKey' % AXOLOTL)
        assert len(b.findall('{%s}prekeys/{%s}preKeyPublic'
                             % (AXOLOTL, AXOLOTL))) >= 20
        await r.stop()
    slixutil.run(scenario, timeout=40)

    # Give Profanity's last answers a moment, then: no error shown, none
    # logged.
    time.sleep(1.0)
    text = prof.screen()
    shown = text[text.index('Generating OMEMO'):]
    bad = [ln for ln in shown.splitlines() if SCREEN_ERRORS.search(ln)]
    assert not bad, 'profanity showed:\n%s' % shown
    log = prof.log_text()
    # The first /omemo gen of an account asks for its device list, which
    # does not exist yet: item-not-found, which Profanity logs at ERR but
    # handles by publishing its list, provided the error carries the
    # legacy code 404 (XEP-0086; without it Profanity never publishes).
    expected = [ln for ln in LOG_ERRORS.findall(log)
                if 'error: item-not-found' in ln or
                "can't get OMEMO device list" in ln]
    if expected:
        assert re.search(r'RECV: <iq [^>]*type="error"[^>]*><error [^>]*'
                         r'code="404"', log), 'item-not-found without code'
    logged = [ln for ln in LOG_ERRORS.findall(log) if ln not in expected]
    assert not logged, 'profanity logged errors:\n%s' % '\n'.join(logged)
    # publish-options were used (the server's disco#info lists them):
    # the device list is open to strangers, as OMEMO needs
    assert 'no PUBSUB feature announced' not in log
