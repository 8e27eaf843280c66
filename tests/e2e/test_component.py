"""External components (XEP-0114)."""

import time

import rawxmpp
from conftest import COMPONENT, COMPONENT_SECRET
from rawxmpp import NS_COMPONENT, local, sha1_handshake, stanza_error, to_str


def component_login(server, secret=COMPONENT_SECRET, read_reply=True):
    """Connects and handshakes; returns (component, reply element).  A
    component connection of an earlier test may not be gone yet, so a
    <conflict/> is retried for a while."""
    for attempt in range(20):
        comp = server.component()
        comp.connect()
        header = comp.start_stream(COMPONENT, ns=NS_COMPONENT, version=None)
        sid = header.get('id')
        assert sid, 'component stream header without id: %s' % to_str(header)
        assert header.get('from') == COMPONENT, to_str(header)
        comp.send('<handshake>%s</handshake>' % sha1_handshake(sid, secret))
        if not read_reply:
            return comp, None
        try:
            return comp, comp.recv()
        except rawxmpp.StreamClosed as e:
            if e.condition != 'conflict' or attempt == 19:
                raise
            comp.close()
            time.sleep(0.2)


def test_component_exchanges_stanzas(server, user):
    name, pw = user
    comp, el = component_login(server)
    assert el.tag == '{%s}handshake' % NS_COMPONENT, to_str(el)
    assert not (el.text or '').strip()

    c = server.login(name, pw, resource='r')
    c.presence()
    # user -> component
    c.message('echo@%s' % COMPONENT, 'hello bot', id_='tobot')
    m = comp.recv_stanza('message', id='tobot')
    assert m.get('from') == c.jid, to_str(m)
    assert m.get('to') == 'echo@%s' % COMPONENT, to_str(m)
    assert m.findtext('{%s}body' % NS_COMPONENT) == 'hello bot'
    # component -> user (full JID)
    comp.send("<message from='echo@%s' to='%s' type='chat' id='frombot'>"
              "<body>hello human</body></message>" % (COMPONENT, c.jid))
    r = c.recv_stanza('message', id='frombot')
    assert r.get('from') == 'echo@%s' % COMPONENT
    assert r.findtext('{jabber:client}body') == 'hello human'
    # component -> user (bare JID, from the component domain itself)
    comp.send("<message from='%s' to='%s@localhost' type='chat' id='frombot2'>"
              "<body>bare</body></message>" % (COMPONENT, name))
    r = c.recv_stanza('message', id='frombot2')
    assert r.get('from') == COMPONENT
    # iq user -> component -> user
    c.send("<iq type='get' id='ciq' to='%s'><query xmlns='jabber:iq:version'/></iq>"
           % COMPONENT)
    q = comp.recv_stanza('iq', id='ciq')
    assert q.get('from') == c.jid
    comp.send("<iq type='result' id='ciq' from='%s' to='%s'><query "
              "xmlns='jabber:iq:version'><name>bot</name></query></iq>"
              % (COMPONENT, c.jid))
    res = c.recv_stanza('iq', id='ciq')
    assert res.get('type') == 'result' and res.get('from') == COMPONENT
    assert res.findtext('{jabber:iq:version}query/{jabber:iq:version}name') == 'bot'


def test_component_wrong_secret(server):
    comp, _ = component_login(server, secret='not-the-secret', read_reply=False)
    assert comp.expect_stream_error() == 'not-authorized'


def test_component_unknown_domain(server):
    comp = server.component()
    comp.connect()
    comp.start_stream('unknown.localhost', ns=NS_COMPONENT, version=None, read=False)
    cond = comp.expect_stream_error()
    assert cond in ('host-unknown', 'not-authorized'), cond


def test_component_cannot_spoof_other_domains(server, user):
    name, pw = user
    comp, _ = component_login(server)
    c = server.login(name, pw, resource='r')
    c.presence()
    comp.send("<message from='admin@localhost' to='%s' type='chat' id='spoof'>"
              "<body>i am admin</body></message>" % c.jid)
    # either a stream error for the component or a stanza error back; never
    # delivered with the forged address
    try:
        e = comp.recv(timeout=3)
        if local(e.tag) == 'message':
            assert e.get('type') == 'error', to_str(e)
    except rawxmpp.StreamClosed as exc:
        assert exc.condition in ('invalid-from', 'improper-addressing'), str(exc)
    except rawxmpp.XMPPTimeout:
        pass
    c.ping()
    try:
        c.expect_silence(0.3)
    except AssertionError as exc:
        assert 'i am admin' not in str(exc), 'forged message delivered: %s' % exc
        raise


def test_message_to_disconnected_component(server, user):
    name, pw = user
    comp, _ = component_login(server)
    start = server.log_size()
    comp.close()
    c = server.login(name, pw)
    # Until the server has noticed the closed component (and unrouted it).
    deadline = time.monotonic() + 30
    while 'component %s disconnected' % COMPONENT not in \
            server.log_text(start):
        assert time.monotonic() < deadline, 'the component never ended'
        time.sleep(0.05)
    mid = c.message('echo@%s' % COMPONENT, 'anyone?')
    e = c.recv_stanza('message', id=mid)
    assert e.get('type') == 'error', to_str(e)
    assert stanza_error(e)[1] in ('service-unavailable', 'remote-server-timeout',
                                  'remote-server-not-found'), to_str(e)
