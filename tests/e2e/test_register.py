"""mod_register: in-band registration (XEP-0077).

Account creation before authentication (off by default; on with
allow_registration), its per-address rate limit and password rules, and,
for logged-in users, the form, password change and account removal."""

import time
from xml.sax.saxutils import escape

import pytest

import rawxmpp
from conftest import Server, unique
from rawxmpp import NS_DISCO_INFO, stanza_error, to_str

NS_REGISTER = 'jabber:iq:register'
NS_FEATURE = 'http://jabber.org/features/iq-register'
Q = '{%s}' % NS_REGISTER

ON = {'allow_registration': True, 'registration_interval': 0}


@pytest.fixture(scope='module')
def reg_server(basedir, certs, driver):
    """A server of this module with registration on and no rate limit."""
    srv = Server(basedir, certs, driver, name='reg-' + driver,
                 modules={'mod_register': ON})
    try:
        srv.start()
    except BaseException:
        srv.kill()
        raise
    yield srv
    srv.destroy()


# ---- helpers -------------------------------------------------------------

def preauth(srv, port=None, tls=True):
    """A stream ready for registration: after STARTTLS, before SASL.
    Returns (client, features)."""
    c = srv.raw(port=port, name=unique('anon'))
    c.connect()
    feats = c.open()
    if tls:
        c.starttls()
        feats = c.open()
    return c, feats


def form(user=None, password=None):
    inner = ''
    if user is not None:
        inner += '<username>%s</username>' % escape(user)
    if password is not None:
        inner += '<password>%s</password>' % escape(password)
    return "<query xmlns='%s'>%s</query>" % (NS_REGISTER, inner)


def register(srv, user, password, c=None):
    """Sends the registration on a fresh (or the given) stream; returns the
    answer."""
    if c is None:
        c, _ = preauth(srv)
    return c.iq('set', form(user, password))


def error_of(r):
    assert r.get('type') == 'error', 'expected an error: %s' % to_str(r)
    return stanza_error(r)


def error_text(r):
    t = r.find('{jabber:client}error/{%s}text' % rawxmpp.NS_STANZAS)
    return t.text if t is not None else ''


def users(srv, host='localhost'):
    out = srv.ctl('registered_users', host, expect=0).stdout
    return [l.strip() for l in out.splitlines() if l.strip()]


def can_login(srv, user, password):
    c = srv.raw(name=unique('try'))
    c.connect()
    c.open()
    c.starttls()
    c.open()
    ok, _ = c.auth_scram(user, password)
    c.close()
    return ok


def has_feature(feats):
    return feats.find('{%s}register' % NS_FEATURE) is not None


# ---- before authentication -------------------------------------------------

def test_feature_and_form_when_on(reg_server):
    c, feats = preauth(reg_server)
    assert has_feature(feats), 'no <register/> feature: %s' % to_str(feats)
    r = c.iq('get', form())
    assert r.get('type') == 'result', to_str(r)
    q = r.find(Q + 'query')
    assert q is not None, to_str(r)
    assert q.find(Q + 'username') is not None, to_str(r)
    assert q.find(Q + 'password') is not None, to_str(r)
    assert (q.findtext(Q + 'instructions') or '').strip(), to_str(r)
    assert q.find(Q + 'registered') is None, to_str(r)


def test_off_by_default(server):
    """The shared server loads mod_register with its defaults."""
    c, feats = preauth(server)
    assert not has_feature(feats), to_str(feats)
    r = c.iq('get', form())
    assert error_of(r)[1] == 'service-unavailable', to_str(r)
    name = unique('off')
    r = c.iq('set', form(name, 'long enough password'))
    assert error_of(r)[1] == 'service-unavailable', to_str(r)
    assert name not in users(server)
    # the stream is still usable: the client may log in
    c.close()


def test_register_then_login(reg_server):
    name = unique('new')
    pw = 'pässwörd-%s' % unique()
    c, _ = preauth(reg_server)
    r = register(reg_server, name, pw, c)
    assert r.get('type') == 'result', to_str(r)
    assert len(list(r)) == 0, to_str(r)
    # XEP-0077 §3.1.1: then authenticate on the same stream
    ok, el = c.auth_scram(name, pw)
    assert ok, to_str(el)
    c.close()
    assert name in users(reg_server)
    # and log in normally from a new connection
    c2 = reg_server.login(name, pw)
    assert c2.jid.startswith('%s@localhost/' % name), c2.jid
    assert not can_login(reg_server, name, pw + 'x')


def test_register_prepares_username(reg_server):
    name = unique('Mixed')
    r = register(reg_server, name, 'a fine password')
    assert r.get('type') == 'result', to_str(r)
    assert name.lower() in users(reg_server)
    assert name not in users(reg_server)
    assert can_login(reg_server, name.lower(), 'a fine password')


def test_register_conflict(reg_server):
    name, _ = reg_server.new_user(prefix='taken')
    r = register(reg_server, name, 'another password')
    assert error_of(r) == ('cancel', 'conflict'), to_str(r)
    # the same name in other case is the same account (Nodeprep)
    r = register(reg_server, name.upper(), 'another password')
    assert error_of(r) == ('cancel', 'conflict'), to_str(r)
    # the original password still works
    assert not can_login(reg_server, name, 'another password')


@pytest.mark.parametrize('bad', ['with@at', 'slash/name', 'sp ace',
                                 pytest.param('x' * 1100, id='too-long')])
def test_register_bad_username(reg_server, bad):
    r = register(reg_server, bad, 'good password')
    assert error_of(r)[1] == 'jid-malformed', to_str(r)


def test_register_missing_fields(reg_server):
    c, _ = preauth(reg_server)
    name = unique('miss')
    for payload in (form(name, None), form(None, 'good password'),
                    form(name, ''), form('', 'good password')):
        r = c.iq('set', payload)
        assert error_of(r) == ('modify', 'not-acceptable'), to_str(r)
    assert name not in users(reg_server)


def test_register_short_password(reg_server):
    c, _ = preauth(reg_server)
    name = unique('short')
    r = c.iq('set', form(name, 'short'))
    assert error_of(r) == ('modify', 'not-acceptable'), to_str(r)
    assert '8' in error_text(r), 'the text should say the minimum: %s' % to_str(r)
    # characters count, not bytes: 7 two-byte characters are too few
    r = c.iq('set', form(name, '\u00e9' * 7))
    assert error_of(r)[1] == 'not-acceptable', to_str(r)
    assert name not in users(reg_server)
    r = c.iq('set', form(name, '\u00e9' * 8))
    assert r.get('type') == 'result', to_str(r)
    assert can_login(reg_server, name, '\u00e9' * 8)


def test_one_account_per_stream(reg_server):
    c, _ = preauth(reg_server)
    first, second = unique('one'), unique('two')
    assert register(reg_server, first, 'good password', c).get('type') == 'result'
    r = register(reg_server, second, 'good password', c)
    assert error_of(r)[1] == 'not-acceptable', to_str(r)
    assert second not in users(reg_server)


def test_remove_before_auth_refused(reg_server):
    c, _ = preauth(reg_server)
    r = c.iq('set', "<query xmlns='%s'><remove/></query>" % NS_REGISTER)
    assert r.get('type') == 'error', to_str(r)


def test_registration_needs_tls_when_required(reg_server):
    """On the STARTTLS-required listener nothing is registered in clear."""
    c, _ = preauth(reg_server, tls=False)
    name = unique('clear')
    c.send("<iq type='set' id='r1'>%s</iq>" % form(name, 'good password'))
    assert c.expect_stream_error() == 'policy-violation'
    assert name not in users(reg_server)


def test_client_gone_before_answer(reg_server):
    """The answer finds no session: nothing breaks, the account exists."""
    c, _ = preauth(reg_server)
    name = unique('gone')
    c.send("<iq type='set' id='r1'>%s</iq>" % form(name, 'good password'))
    c.close()
    deadline = time.monotonic() + 10
    while name not in users(reg_server):
        assert time.monotonic() < deadline, 'account never created'
        time.sleep(0.1)
    assert can_login(reg_server, name, 'good password')


def test_rate_limit(make_server, driver):
    srv = make_server(driver, modules={'mod_register': {
        'allow_registration': True, 'registration_interval': 3600}})
    taken, _ = srv.new_user(prefix='taken')
    # a refused registration does not use up the address's allowance
    r = register(srv, taken, 'good password')
    assert error_of(r)[1] == 'conflict', to_str(r)
    first, second = unique('first'), unique('second')
    r = register(srv, first, 'good password')
    assert r.get('type') == 'result', to_str(r)
    # a second account from 127.0.0.1 within the interval: refused
    r = register(srv, second, 'good password')
    assert error_of(r) == ('wait', 'resource-constraint'), to_str(r)
    assert users(srv).count(first) == 1
    assert second not in users(srv)
    # logged-in users are not limited: password change still works
    c = srv.login(first, 'good password')
    r = c.iq('set', form(first, 'a newer password'))
    assert r.get('type') == 'result', to_str(r)


def test_plain_listener_allows_registration(reg_server):
    """starttls_required: false is the admin's explicit choice."""
    c, feats = preauth(reg_server, port=reg_server.c2s_plain_port, tls=False)
    assert has_feature(feats), to_str(feats)
    name = unique('plain')
    r = register(reg_server, name, 'good password', c)
    assert r.get('type') == 'result', to_str(r)


# ---- after authentication --------------------------------------------------

def test_disco_feature(server, user):
    name, pw = user
    c = server.login(name, pw)
    r = c.iq('get', "<query xmlns='%s'/>" % NS_DISCO_INFO, to='localhost')
    feats = [f.get('var') for f in r.iter('{%s}feature' % NS_DISCO_INFO)]
    assert NS_REGISTER in feats, feats


@pytest.mark.parametrize('to', [None, 'localhost'])
def test_logged_in_form(server, user, to):
    name, pw = user
    c = server.login(name, pw)
    r = c.iq('get', form(), to=to)
    assert r.get('type') == 'result', to_str(r)
    q = r.find(Q + 'query')
    assert q is not None and q.find(Q + 'registered') is not None, to_str(r)
    assert q.findtext(Q + 'username') == name, to_str(r)
    assert not (q.findtext(Q + 'password') or ''), 'password leaked: %s' % to_str(r)


def test_no_feature_after_auth(reg_server):
    name, pw = reg_server.new_user()
    c = reg_server.raw()
    c.login(name, pw, bind=False)
    assert not has_feature(c.features), to_str(c.features)


@pytest.mark.parametrize('to', [None, 'localhost'])
def test_change_password(server, to):
    """Works while registration is off (the shared server)."""
    name, old = server.new_user(prefix='chpw')
    new = 'new password %s' % unique()
    c = server.login(name, old)
    r = c.iq('set', form(name, new), to=to)
    assert r.get('type') == 'result', to_str(r)
    assert can_login(server, name, new)
    assert not can_login(server, name, old)
    # the session that asked is still fine
    assert c.ping().get('type') == 'result'


def test_change_password_errors(server, user):
    name, pw = user
    other, other_pw = server.new_user(prefix='other')
    c = server.login(name, pw)
    r = c.iq('set', form(other, 'good new password'))
    assert error_of(r)[1] == 'not-allowed', to_str(r)
    assert can_login(server, other, other_pw)
    r = c.iq('set', form(name, 'short'))
    assert error_of(r)[1] == 'not-acceptable', to_str(r)
    r = c.iq('set', form(name, ''))
    assert error_of(r)[1] == 'bad-request', to_str(r)
    r = c.iq('set', form(name, None))
    assert error_of(r)[1] == 'bad-request', to_str(r)
    # errors do not echo the request (XEP-0077 §3.3)
    assert r.find(Q + 'query') is None, to_str(r)
    # someone else's bare JID is not the place to ask
    r = c.iq('set', form(other, 'good new password'),
             to='%s@localhost' % other)
    assert r.get('type') == 'error', to_str(r)
    assert can_login(server, other, other_pw)
    assert can_login(server, name, pw)


def test_remove_account(server):
    name, pw = server.new_user(prefix='bye')
    a = server.login(name, pw, resource='a')
    b = server.login(name, pw, resource='b')
    iq_id = 'unreg1'
    a.send("<iq type='set' id='%s'><query xmlns='%s'><remove/></query></iq>"
           % (iq_id, NS_REGISTER))
    # §3.2: the result first, then the stream error, on every session
    r = a.recv_stanza('iq', id=iq_id)
    assert r.get('type') == 'result', to_str(r)
    assert a.expect_stream_error() == 'not-authorized'
    assert b.expect_stream_error() == 'not-authorized'
    assert name not in users(server)
    assert not can_login(server, name, pw)


def test_remove_with_other_children_is_bad_request(server, user):
    name, pw = user
    c = server.login(name, pw)
    r = c.iq('set', "<query xmlns='%s'><remove/><username>%s</username>"
             "</query>" % (NS_REGISTER, name))
    assert error_of(r)[1] == 'bad-request', to_str(r)
    assert name in users(server)


def test_slixmpp_change_password(server):
    """A client library's requests (slixmpp's XEP-0077 plugin)."""
    import slixutil
    name, pw = server.new_user(prefix='slix')
    new = 'slix new password'

    async def scenario():
        cl = server.slix('%s@localhost' % name, pw)
        cl.register_plugin('xep_0077')
        await cl.start()
        res = await cl['xep_0077'].change_password(new, jid='localhost',
                                                   timeout=10)
        assert res['type'] == 'result', res
        await cl.stop()
    slixutil.run(scenario)
    assert can_login(server, name, new)
    assert not can_login(server, name, pw)
