"""Stanza routing (RFC 6120 8 and 10, RFC 6121 8)."""

import pytest

import rawxmpp
from rawxmpp import local, stanza_error, to_str

BODY = '{jabber:client}body'


@pytest.fixture
def pair(server):
    """Two logged-in users, both available."""
    a_name, a_pw = server.new_user(prefix='alice')
    b_name, b_pw = server.new_user(prefix='bob')
    a = server.login(a_name, a_pw, resource='ra')
    b = server.login(b_name, b_pw, resource='rb')
    a.presence()
    b.presence()
    return a, b


def test_message_to_full_jid(pair):
    a, b = pair
    mid = a.message(b.jid, 'hello full', id_='full-1')
    m = b.recv_stanza('message')
    assert m.get('from') == a.jid
    assert m.get('to') == b.jid
    assert m.get('id') == mid
    assert m.get('type') == 'chat'
    assert m.findtext(BODY) == 'hello full'


def test_message_to_bare_jid(pair):
    a, b = pair
    bare = b.jid.split('/')[0]
    a.message(bare, 'hello bare')
    m = b.recv_stanza('message')
    assert m.get('from') == a.jid
    assert m.findtext(BODY) == 'hello bare'


def test_message_to_bare_jid_goes_to_highest_priority(server, pair):
    a, _ = pair
    name, pw = server.new_user(prefix='multi')
    hi = server.login(name, pw, resource='hi')
    lo = server.login(name, pw, resource='lo')
    neg = server.login(name, pw, resource='neg')
    hi.presence('<priority>5</priority>')
    lo.presence('<priority>1</priority>')
    neg.presence('<priority>-1</priority>')
    # barrier: make sure the presences were processed before the message
    for r in (hi, lo, neg):
        assert r.ping().get('type') == 'result'
    a.message('%s@localhost' % name, 'to the best', type_='chat')
    m = hi.recv_stanza('message')
    assert m.findtext(BODY) == 'to the best'
    assert m.get('from') == a.jid
    lo.expect_silence(0.5)
    neg.expect_silence(0.1)


def test_message_to_bare_jid_reaches_all_equal_priority_resources(server, pair):
    a, _ = pair
    name, pw = server.new_user(prefix='multi')
    r1 = server.login(name, pw, resource='one')
    r2 = server.login(name, pw, resource='two')
    for r in (r1, r2):
        r.presence()
        assert r.ping().get('type') == 'result'
    a.message('%s@localhost' % name, 'to both', type_='chat')
    for r in (r1, r2):
        m = r.recv_stanza('message')
        assert m.findtext(BODY) == 'to both'
        assert m.get('from') == a.jid


def test_message_between_slixmpp_clients(server):
    import slixutil
    a_name, a_pw = server.new_user(prefix='sa')
    b_name, b_pw = server.new_user(prefix='sb')

    async def scenario():
        a = await server.slix('%s@localhost/desk' % a_name, a_pw).start()
        b = await server.slix('%s@localhost/phone' % b_name, b_pw).start()
        assert str(a.boundjid) == '%s@localhost/desk' % a_name
        a.send_message(mto='%s@localhost/phone' % b_name, mbody='ping pong', mtype='chat')
        m = await b.next_message()
        assert m['body'] == 'ping pong'
        assert str(m['from']) == '%s@localhost/desk' % a_name
        b.send_message(mto='%s@localhost' % a_name, mbody='reply', mtype='chat')
        m = await a.next_message()
        assert m['body'] == 'reply'
        assert str(m['from']) == '%s@localhost/phone' % b_name
        await a.stop()
        await b.stop()
    slixutil.run(scenario)


def test_from_is_stamped_by_the_server(server, pair):
    a, b = pair
    spoofed = 'mallory@localhost/evil'
    a.message(b.jid, 'spoof attempt', frm=spoofed)
    try:
        m = b.recv_stanza('message', timeout=20)
    except rawxmpp.XMPPTimeout:
        # a server may instead close the offender's stream (invalid-from)
        assert a.expect_stream_error(timeout=20) == 'invalid-from'
        return
    assert m.get('from') == a.jid, 'spoofed from delivered: %s' % to_str(m)
    assert m.findtext(BODY) == 'spoof attempt'


def test_from_bare_jid_of_self_is_accepted(server, pair):
    a, b = pair
    a.message(b.jid, 'from bare', frm=a.jid.split('/')[0])
    m = b.recv_stanza('message')
    assert m.get('from') == a.jid


@pytest.mark.parametrize('mtype', ['chat', 'normal', None])
def test_message_to_unknown_local_user(server, user, mtype):
    name, pw = user
    c = server.login(name, pw)
    target = 'nosuchuser%s@localhost' % rawxmpp.new_id()[3:]
    mid = c.message(target, 'anyone?', type_=mtype)
    e = c.recv_stanza('message', id=mid)
    assert e.get('type') == 'error', to_str(e)
    assert e.get('from') == target, to_str(e)
    assert stanza_error(e) == ('cancel', 'service-unavailable'), to_str(e)


def test_iq_to_unknown_local_user(server, user):
    name, pw = user
    c = server.login(name, pw)
    target = 'nosuchuser%s@localhost' % rawxmpp.new_id()[3:]
    r = c.iq('get', "<query xmlns='jabber:iq:version'/>", to=target)
    assert r.get('type') == 'error'
    assert stanza_error(r)[1] == 'service-unavailable', to_str(r)


def test_message_to_unknown_user_groupchat_or_headline_dropped(server, user):
    name, pw = user
    c = server.login(name, pw)
    target = 'nosuchuser%s@localhost' % rawxmpp.new_id()[3:]
    c.message(target, 'h', type_='headline')
    # RFC 6121 8.5.1: headline (and groupchat) are silently ignored
    r = c.ping()
    assert r.get('type') == 'result'
    c.expect_silence(0.3)


@pytest.mark.parametrize('to', ['localhost', None], ids=['host', 'no-to'])
def test_iq_unknown_namespace_service_unavailable(server, user, to):
    name, pw = user
    c = server.login(name, pw)
    r = c.iq('get', "<query xmlns='urn:example:nope:0'/>", to=to)
    assert r.get('type') == 'error', to_str(r)
    etype, cond = stanza_error(r)
    assert cond == 'service-unavailable', to_str(r)
    assert etype == 'cancel', to_str(r)
    r = c.iq('set', "<query xmlns='urn:example:nope:0'/>", to=to)
    assert stanza_error(r)[1] == 'service-unavailable', to_str(r)


def test_iq_to_connected_full_jid_is_routed(pair):
    a, b = pair
    iq_id = rawxmpp.new_id('q')
    a.send("<iq type='get' id='%s' to='%s'><query xmlns='urn:example:x'/></iq>"
           % (iq_id, b.jid))
    got = b.recv_stanza('iq', id=iq_id)
    assert got.get('from') == a.jid
    b.send("<iq type='result' id='%s' to='%s'/>" % (iq_id, a.jid))
    res = a.recv_stanza('iq', id=iq_id)
    assert res.get('type') == 'result'
    assert res.get('from') == b.jid


def test_iq_result_and_error_never_bounced(server, user):
    name, pw = user
    c = server.login(name, pw)
    nobody = 'nosuchuser%s@localhost' % rawxmpp.new_id()[3:]
    c.send("<iq type='result' id='r1' to='localhost'/>")
    c.send("<iq type='result' id='r2' to='%s'/>" % nobody)
    c.send("<iq type='error' id='r3' to='localhost'><error type='cancel'>"
           "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
    c.send("<iq type='error' id='r4' to='%s/res'><error type='cancel'>"
           "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
           % nobody)
    c.send("<iq type='result' id='r5' to='nobody@remote.invalid'/>")
    # the ping answer is the barrier: nothing may come before it
    ping_id = 'barrier'
    c.send("<iq type='get' id='%s' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
           % ping_id)
    first = c.recv_until(lambda e: local(e.tag) != 'presence')
    assert first.get('id') == ping_id, 'bounced: %s' % to_str(first)
    c.expect_silence(0.3)


def test_message_error_to_unknown_user_not_bounced(server, user):
    name, pw = user
    c = server.login(name, pw)
    nobody = 'nosuchuser%s@localhost' % rawxmpp.new_id()[3:]
    c.send("<message type='error' id='e1' to='%s'><error type='cancel'>"
           "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
           "</message>" % nobody)
    r = c.ping()
    assert r.get('type') == 'result'
    c.expect_silence(0.3)


@pytest.mark.parametrize('kind', ['message', 'iq'])
def test_remote_domain_not_found(server, user, kind):
    name, pw = user
    c = server.login(name, pw)
    target = 'someone@remote.invalid'
    if kind == 'message':
        mid = c.message(target, 'far away')
        e = c.recv_stanza('message', id=mid)
    else:
        e = c.iq('get', "<ping xmlns='urn:xmpp:ping'/>", to=target)
    assert e.get('type') == 'error', to_str(e)
    assert stanza_error(e)[1] == 'remote-server-not-found', to_str(e)


def test_malformed_to_jid(server, user):
    name, pw = user
    c = server.login(name, pw)
    mid = c.message('a@b@c', 'bad jid')
    try:
        e = c.recv_stanza('message', id=mid, timeout=5)
    except rawxmpp.StreamClosed as exc:
        # RFC 6120 allows either a stanza error or an improper-addressing /
        # jid-malformed stream error
        assert exc.condition in ('jid-malformed', 'improper-addressing'), str(exc)
        return
    assert stanza_error(e)[1] == 'jid-malformed', to_str(e)


def test_presence_to_unknown_user_silently_dropped(server, user):
    name, pw = user
    c = server.login(name, pw)
    c.send("<presence to='nosuchuser%s@localhost'/>"
           % rawxmpp.new_id()[3:])
    assert c.ping().get('type') == 'result'
    c.expect_silence(0.3, ignore=())


def test_service_domain_is_reachable(make_server, driver):
    """A domain a module owns (the route table; the test-only module
    mod_test_service) gets every stanza to it: an iq is answered, a
    message echoed; a domain whose module passes bounces, and other
    domains are still remote.  The host lists its own services only."""
    srv = make_server(driver, modules={'mod_test_service': {}})
    name, pw = srv.new_user(prefix='svc')
    c = srv.login(name, pw, resource='r')
    r = c.iq('get', "<query xmlns='urn:pigeon:test:services'/>",
             to='service.localhost')
    assert r.get('type') == 'result', to_str(r)
    assert r.get('from') == 'service.localhost', to_str(r)
    items = sorted(i.get('jid')
                   for i in r.iter('{urn:pigeon:test:services}item'))
    assert items == ['pass.localhost', 'service.localhost'], to_str(r)
    mid = c.message('echo@service.localhost', 'marco')
    m = c.recv_stanza('message', id=mid)
    assert m.get('type') == 'chat', to_str(m)
    assert m.get('from') == 'echo@service.localhost', to_str(m)
    assert m.findtext(BODY) == 'marco', to_str(m)
    e = c.iq('get', "<ping xmlns='urn:xmpp:ping'/>", to='pass.localhost')
    assert stanza_error(e)[1] == 'service-unavailable', to_str(e)
    mid = c.message('room@pass.localhost', 'anyone?')
    e = c.recv_stanza('message', id=mid)
    assert stanza_error(e)[1] == 'service-unavailable', to_str(e)
    e = c.iq('get', "<ping xmlns='urn:xmpp:ping'/>", to='other.localhost')
    assert stanza_error(e)[1] == 'remote-server-not-found', to_str(e)
