"""mod_last: last activity (XEP-0012) and pigeonctl get_last."""

import calendar
import subprocess
import time

from conftest import PIGEOND, pigeon_env
from rawxmpp import NS_DISCO_INFO, local, stanza_error, to_str

NS_LAST = 'jabber:iq:last'
QUERY = "<query xmlns='%s'/>" % NS_LAST


# ---- helpers -----------------------------------------------------------

def last(c, to):
    return c.iq('get', QUERY, to=to)


def seconds_of(r):
    assert r.get('type') == 'result', to_str(r)
    q = r.find('{%s}query' % NS_LAST)
    assert q is not None, to_str(r)
    return int(q.get('seconds')), (q.text or '')


def subscribe_both(server, a, b):
    server.ctl('add_rosteritem', a, 'localhost', b, 'localhost', b, 'Friends', 'both', expect=0)
    server.ctl('add_rosteritem', b, 'localhost', a, 'localhost', a, 'Friends', 'both', expect=0)


def get_last(server, user, host='localhost', expect=0):
    return server.ctl('get_last', user, host, expect=expect).stdout


def wait_logged_out(server, user, timeout=10.0):
    """Until pigeonctl no longer sees user online (the logout is then
    written: the store runs the writes in order)."""
    deadline = time.monotonic() + timeout
    while True:
        out = get_last(server, user).rstrip('\n')
        if out != 'online':
            return out
        assert time.monotonic() < deadline, '%s still online' % user
        time.sleep(0.02)


def logout_with_status(server, user, pw, status):
    c = server.login(user, pw, resource='gone')
    c.presence()
    c.send("<presence type='unavailable'><status>%s</status></presence>" % status)
    c.send('</stream:stream>')
    c.close()
    return wait_logged_out(server, user)


# ---- server ------------------------------------------------------------

def test_server_uptime(server, user):
    name, pw = user
    c = server.login(name, pw)
    r = last(c, 'localhost')
    secs, text = seconds_of(r)
    assert r.get('from') == 'localhost', to_str(r)
    assert 0 <= secs < 3600, to_str(r)
    assert text == '', to_str(r)


def test_uptime_grows(make_server, driver):
    srv = make_server(driver)
    name, pw = srv.new_user()
    c = srv.login(name, pw)
    s1, _ = seconds_of(last(c, 'localhost'))
    time.sleep(1.2)
    s2, _ = seconds_of(last(c, 'localhost'))
    assert s2 >= s1 + 1, (s1, s2)


def test_disco_feature(server, user):
    name, pw = user
    c = server.login(name, pw)
    r = c.iq('get', "<query xmlns='%s'/>" % NS_DISCO_INFO, to='localhost')
    feats = [f.get('var') for f in r.iter('{%s}feature' % NS_DISCO_INFO)]
    assert NS_LAST in feats, feats


# ---- users -------------------------------------------------------------

def test_contact_sees_last_logout_and_status(server):
    a, apw = server.new_user(prefix='last')
    b, bpw = server.new_user(prefix='last')
    subscribe_both(server, a, b)
    out = logout_with_status(server, a, apw, 'Heading Home')
    when, status = out.split('\t')
    assert status == 'Heading Home', out
    stamp = calendar.timegm(time.strptime(when, '%Y-%m-%dT%H:%M:%SZ'))
    assert abs(stamp - time.time()) < 30, out
    cb = server.login(b, bpw)
    secs, text = seconds_of(last(cb, '%s@localhost' % a))
    assert 0 <= secs < 30, secs
    assert text == 'Heading Home'


def test_online_user_is_zero(server):
    a, apw = server.new_user(prefix='last')
    b, bpw = server.new_user(prefix='last')
    subscribe_both(server, a, b)
    logout_with_status(server, a, apw, 'earlier')
    ca = server.login(a, apw)
    ca.presence()
    cb = server.login(b, bpw)
    cb.ping()
    ca.ping()
    secs, text = seconds_of(last(cb, '%s@localhost' % a))
    assert secs == 0 and text == '', (secs, text)
    assert get_last(server, a).strip() == 'online'


def test_own_last(server):
    a, apw = server.new_user(prefix='last')
    logout_with_status(server, a, apw, 'bye now')
    # connected without presence: not available, the last logout stands
    c = server.login(a, apw)
    secs, text = seconds_of(last(c, '%s@localhost' % a))
    assert 0 <= secs < 30 and text == 'bye now', (secs, text)
    c.presence()
    secs, text = seconds_of(last(c, '%s@localhost' % a))
    assert secs == 0, secs


def test_stranger_is_forbidden(server):
    a, apw = server.new_user(prefix='last')
    s, spw = server.new_user(prefix='last')
    logout_with_status(server, a, apw, 'secret')
    cs = server.login(s, spw)
    r = last(cs, '%s@localhost' % a)
    assert stanza_error(r) == ('auth', 'forbidden'), to_str(r)
    ca = server.login(a, apw)
    ca.presence()
    ca.ping()
    r = last(cs, '%s@localhost' % a)
    assert stanza_error(r) == ('auth', 'forbidden'), to_str(r)


def test_subscription_to_only_is_forbidden(server):
    """Only the user's presence subscribers (from/both) may know."""
    a, apw = server.new_user(prefix='last')
    b, bpw = server.new_user(prefix='last')
    # a is subscribed to b's presence, not b to a's
    server.ctl('add_rosteritem', a, 'localhost', b, 'localhost', b, 'G', 'to', expect=0)
    server.ctl('add_rosteritem', b, 'localhost', a, 'localhost', a, 'G', 'from', expect=0)
    logout_with_status(server, a, apw, 'x')
    logout_with_status(server, b, bpw, 'y')
    ca = server.login(a, apw)
    cb = server.login(b, bpw)
    r = last(cb, '%s@localhost' % a)
    assert stanza_error(r) == ('auth', 'forbidden'), to_str(r)
    secs, text = seconds_of(last(ca, '%s@localhost' % b))
    assert text == 'y', to_str(text)


def test_unknown_user(server, user):
    name, pw = user
    c = server.login(name, pw)
    r = last(c, 'nobody-%s@localhost' % name)
    assert stanza_error(r) == ('cancel', 'service-unavailable'), to_str(r)


def test_never_logged_in(server):
    a, apw = server.new_user(prefix='last')
    b, bpw = server.new_user(prefix='last')
    subscribe_both(server, a, b)
    cb = server.login(b, bpw)
    r = last(cb, '%s@localhost' % a)
    assert stanza_error(r) == ('cancel', 'item-not-found'), to_str(r)
    assert get_last(server, a).strip() == 'never'


def test_abrupt_disconnect_is_recorded(server):
    a, apw = server.new_user(prefix='last')
    c = server.login(a, apw)
    c.presence('<status>working</status>')
    c.ping()
    c.close()  # no unavailable, no stream close
    out = wait_logged_out(server, a)
    assert out != 'never', out
    assert out.split('\t')[1] == 'working', out


def test_full_jid_query_goes_to_the_client(server):
    a, apw = server.new_user(prefix='last')
    b, bpw = server.new_user(prefix='last')
    subscribe_both(server, a, b)
    ca = server.login(a, apw, resource='desk')
    cb = server.login(b, bpw)
    ca.presence()
    cb.send("<iq type='get' id='idle1' to='%s'>%s</iq>" % (ca.jid, QUERY))
    got = ca.recv_until(lambda e: local(e.tag) == 'iq' and e.get('id') == 'idle1',
                        what='the idle query')
    assert got.get('from') == cb.jid, to_str(got)
    ca.send("<iq type='result' id='idle1' to='%s'><query xmlns='%s' seconds='123'/></iq>"
            % (cb.jid, NS_LAST))
    r = cb.recv_until(lambda e: local(e.tag) == 'iq' and e.get('id') == 'idle1',
                      what='the idle answer')
    assert seconds_of(r) == (123, ''), to_str(r)


# ---- pigeonctl ---------------------------------------------------------

def test_get_last_command(server):
    a, apw = server.new_user(prefix='last')
    assert get_last(server, a).strip() == 'never'
    c = server.login(a, apw)
    assert get_last(server, a).strip() == 'online'
    c.close()
    out = wait_logged_out(server, a)
    when, status = out.rstrip('\n').split('\t')
    assert status == '', out
    time.strptime(when, '%Y-%m-%dT%H:%M:%SZ')
    r = server.ctl('get_last', 'nobody-' + a, 'localhost', expect=1)
    assert 'no such user' in r.stderr + r.stdout


def test_explicit_unavailable_is_recorded(server):
    """XEP-0012 §3: a user who sent unavailable presence and stays
    connected is offline for their contacts: the last activity is the
    time of that presence, with its status, not 'never' (or an older
    logout) until the stream ends."""
    a, apw = server.new_user(prefix='last')
    b, bpw = server.new_user(prefix='last')
    subscribe_both(server, a, b)
    ca = server.login(a, apw, resource='stays')
    ca.presence()
    cb = server.login(b, bpw)
    ca.ping()
    secs, _ = seconds_of(last(cb, '%s@localhost' % a))
    assert secs == 0
    ca.send("<presence type='unavailable'><status>out for lunch</status>"
            "</presence>")
    ca.ping()
    secs, text = seconds_of(last(cb, '%s@localhost' % a))
    assert 0 <= secs < 30 and text == 'out for lunch', (secs, text)
    # available again: online
    ca.presence()
    ca.ping()
    secs, _ = seconds_of(last(cb, '%s@localhost' % a))
    assert secs == 0
    # a stream that only stays connected after its unavailable does not
    # move the time forward when it ends
    ca.send("<presence type='unavailable'><status>later</status></presence>")
    ca.ping()
    time.sleep(1.2)
    ca.send('</stream:stream>')
    ca.close()
    out = wait_logged_out(server, a)
    when, status = out.split('\t')
    assert status == 'later', out
    secs, text = seconds_of(last(cb, '%s@localhost' % a))
    assert secs >= 1 and text == 'later', (secs, text)


# ---- services between modules ------------------------------------------

def test_needs_mod_roster(make_server, driver):
    """mod_last asks mod_roster who may know: without it the host does
    not start, and says why."""
    srv = make_server(driver, start=False, modules={'mod_roster': None})
    r = subprocess.run([str(PIGEOND), '-c', str(srv.config)],
                       capture_output=True, text=True, timeout=30,
                       env=pigeon_env(), stdin=subprocess.DEVNULL)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert 'module mod_last needs mod_roster, which host' in out, out
    # `pigeond -t` says so too, without starting anything.
    r = subprocess.run([str(PIGEOND), '-t', '-c', str(srv.config)],
                       capture_output=True, text=True, timeout=30,
                       env=pigeon_env(), stdin=subprocess.DEVNULL)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert 'module mod_last needs mod_roster, which host localhost' in out, out


def test_roster_configured_after_last(make_server, driver):
    """Dependencies load first whatever the configured order."""
    srv = make_server(driver, start=False)
    srv.modules.pop('mod_roster')
    srv.modules['mod_roster'] = {}
    srv.write_config()
    srv.start()
    a, apw = srv.new_user(prefix='last')
    b, bpw = srv.new_user(prefix='last')
    subscribe_both(srv, a, b)
    logout_with_status(srv, a, apw, 'ordered')
    cb = srv.login(b, bpw)
    secs, text = seconds_of(last(cb, '%s@localhost' % a))
    assert text == 'ordered', (secs, text)
