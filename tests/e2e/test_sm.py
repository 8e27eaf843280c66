"""Stream management (XEP-0198): acks both ways, resumption after a lost
connection and of a live session, hibernation timeout handing messages to
offline storage, durable-before-acknowledged across a kill -9, and the
server's XEP-0199 keepalive pings."""

import time

import pytest

import rawxmpp
from rawxmpp import local, to_str

NS_SM = 'urn:xmpp:sm:3'
BODY = '{jabber:client}body'


# ---- helpers -----------------------------------------------------------

def is_sm(el, name):
    return el.tag == '{%s}%s' % (NS_SM, name)


def enable(c, resume=True, max_=None):
    attrs = " resume='true'" if resume else ''
    if max_ is not None:
        attrs += " max='%d'" % max_
    c.send("<enable xmlns='%s'%s/>" % (NS_SM, attrs))
    el = c.recv_until(lambda e: is_sm(e, 'enabled') or is_sm(e, 'failed'),
                      what='<enabled/>')
    assert is_sm(el, 'enabled'), to_str(el)
    return el


def ack_request(c, timeout=None):
    """Sends <r/> and returns h of the answer (other elements are
    skipped)."""
    c.send("<r xmlns='%s'/>" % NS_SM)
    el = c.recv_until(lambda e: is_sm(e, 'a'), timeout, what='<a/>')
    return int(el.get('h'))


def recv_body(c, timeout=None):
    el = c.recv_until(lambda e: local(e.tag) == 'message'
                      and e.find(BODY) is not None, timeout,
                      what='a message with a body')
    return el.find(BODY).text


def drop(c):
    """Loses the connection without closing the stream."""
    c.close()


def resume(server, user, pw, previd, h):
    c = server.raw(name='%s-resumed' % user)
    c.login(user, pw, bind=False)
    c.send("<resume xmlns='%s' previd='%s' h='%d'/>" % (NS_SM, previd, h))
    el = c.recv_until(lambda e: is_sm(e, 'resumed') or is_sm(e, 'failed'),
                      what='<resumed/> or <failed/>')
    return c, el


def wait_log(server, text, timeout=10.0):
    deadline = time.monotonic() + timeout
    while text not in server.log_text():
        assert time.monotonic() < deadline, 'log never said %r' % text
        time.sleep(0.05)


def pair(server):
    a_name, a_pw = server.new_user(prefix='sma')
    b_name, b_pw = server.new_user(prefix='smb')
    a = server.login(a_name, a_pw, resource='phone')
    b = server.login(b_name, b_pw, resource='desk')
    return (a_name, a_pw, a), (b_name, b_pw, b)


# ---- negotiation and counting ---------------------------------------------

def test_feature_and_enable(server, user):
    c = server.raw()
    c.connect()
    c.open()
    c.starttls()
    c.open()
    ok, _ = c.auth_scram(*user)
    assert ok
    feats = c.open()
    assert feats.find('{%s}sm' % NS_SM) is not None, to_str(feats)
    # Before binding, <enable/> is refused (§3).
    c.send("<enable xmlns='%s'/>" % NS_SM)
    el = c.recv_until(lambda e: is_sm(e, 'failed'), what='<failed/>')
    assert el.find('{urn:ietf:params:xml:ns:xmpp-stanzas}unexpected-request') \
        is not None, to_str(el)
    c.bind('r1')
    el = enable(c, max_=60)
    assert el.get('resume') in ('true', '1')
    assert el.get('id')
    assert int(el.get('max')) == 60
    # A second <enable/> fails.
    c.send("<enable xmlns='%s'/>" % NS_SM)
    el = c.recv_until(lambda e: is_sm(e, 'failed'), what='<failed/>')
    assert el.find('{urn:ietf:params:xml:ns:xmpp-stanzas}unexpected-request') \
        is not None


def test_r_before_enable_fails(server, user):
    c = server.login(*user)
    c.send("<r xmlns='%s'/>" % NS_SM)
    el = c.recv_until(lambda e: is_sm(e, 'failed'), what='<failed/>')
    assert el is not None
    assert c.ping().get('type') == 'result'


def test_inbound_count(server, user):
    c = server.login(*user)
    enable(c, resume=False)
    assert ack_request(c) == 0
    for _ in range(3):
        assert c.ping().get('type') == 'result'
    c.send("<presence/>")
    assert ack_request(c) == 4


def test_outbound_queue_and_ack(server):
    (an, ap, a), (bn, bp, b) = pair(server)
    enable(a, resume=False)
    b.message(a.jid, 'one')
    # The server asks for an ack after writing a stanza.
    got = []
    r = a.recv_until(lambda e: (got.append(e) or False) if local(e.tag) == 'message'
                     else is_sm(e, 'r'), what='<r/>')
    assert r is not None
    assert [g.find(BODY).text for g in got] == ['one']
    a.send("<a xmlns='%s' h='1'/>" % NS_SM)
    assert a.ping().get('type') == 'result'
    # Acknowledging more than was sent is a stream error (§4).
    a.send("<a xmlns='%s' h='50'/>" % NS_SM)
    assert a.expect_stream_error() == 'undefined-condition'


def test_each_r_gets_its_own_a(server):
    """XEP-0198 §4: every <r/> is answered, also several that arrive while
    stanzas are still on their way to storage: each waits for what came
    before it, then gets its own <a/>, in order."""
    an, ap = server.new_user(prefix='sma')
    bn, _ = server.new_user(prefix='smb')  # offline: its messages are stored
    a = server.login(an, ap, resource='r')
    enable(a, resume=False)
    msgs = lambda lo, hi: ''.join(
        "<message to='%s@localhost' type='chat' id='q%d'><body>q%d</body>"
        "</message>" % (bn, i, i) for i in range(lo, hi))
    r = "<r xmlns='%s'/>" % NS_SM
    a.send(msgs(0, 10) + r + msgs(10, 20) + r + r)
    hs = [int(a.recv_until(lambda e: is_sm(e, 'a'), timeout=20,
                           what='<a/> number %d' % (i + 1)).get('h'))
          for i in range(3)]
    assert hs[0] >= 10 and hs[1] >= 20 and hs == sorted(hs), hs
    assert hs[2] == 20, hs
    a.expect_silence(0.3)
    assert ack_request(a) == 20


def test_unacked_bytes_bound_ends_session_keeps_messages(make_server, driver):
    """A client that reads but never acknowledges cannot make the server
    keep more than limits.max_unacked_bytes for it: the session ends with
    resource-constraint (no hibernation, even though resumable) and what
    it never acknowledged goes to offline storage, in order, with the
    messages that came after."""
    srv = make_server(driver, extra_limits='  max_unacked_bytes: 131072\n')
    an, ap = srv.new_user(prefix='sma')
    bn, bp = srv.new_user(prefix='smb')
    a = srv.login(an, ap, resource='phone')
    a.presence()
    sm_id = enable(a).get('id')
    b = srv.login(bn, bp, resource='desk')
    n, pad = 60, 'y' * 4000  # about 240 KB in all
    b.send(''.join("<message to='%s' type='chat' id='u%d'><body>u%d %s</body>"
                   "</message>" % (a.jid, i, i, pad) for i in range(n)))
    assert b.ping(timeout=20).get('type') == 'result'
    got = 0
    with pytest.raises(rawxmpp.StreamClosed) as exc:
        while True:
            el = a.recv(timeout=20)
            if local(el.tag) == 'message':
                got += 1
    assert exc.value.condition == 'resource-constraint'
    assert got < n
    wait_log(srv, 'handed back')
    # Not hibernated: there is nothing to resume.
    c, el = resume(srv, an, ap, sm_id, 0)
    assert is_sm(el, 'failed'), to_str(el)
    c.bind('phone')
    c.presence()
    bodies = [recv_body(c, timeout=20).split(' ')[0] for _ in range(n)]
    assert bodies == ['u%d' % i for i in range(n)]
    c.expect_silence(0.3)


def test_unacked_bytes_bound_ends_hibernated_session(make_server, driver):
    """The same bound while the session hibernates: it ends without
    waiting for resume_timeout and the queue goes to offline storage, in
    order with what came later."""
    srv = make_server(driver, extra_limits='  max_unacked_bytes: 131072\n'
                      '  resume_timeout: 300\n')
    an, ap = srv.new_user(prefix='sma')
    bn, bp = srv.new_user(prefix='smb')
    a = srv.login(an, ap, resource='phone')
    a.presence()
    sm_id = enable(a).get('id')
    drop(a)
    wait_log(srv, 'hibernated')
    b = srv.login(bn, bp, resource='desk')
    n, pad = 60, 'y' * 4000
    b.send(''.join("<message to='%s' type='chat' id='h%d'><body>h%d %s</body>"
                   "</message>" % (a.jid, i, i, pad) for i in range(n)))
    assert b.ping(timeout=20).get('type') == 'result'
    wait_log(srv, 'too many unacknowledged bytes')
    wait_log(srv, 'hibernation over')
    c, el = resume(srv, an, ap, sm_id, 0)
    assert is_sm(el, 'failed'), to_str(el)
    c.bind('phone')
    c.presence()
    bodies = [recv_body(c, timeout=20).split(' ')[0] for _ in range(n)]
    assert bodies == ['h%d' % i for i in range(n)]
    c.expect_silence(0.3)


def test_unacked_bytes_bound_per_account(make_server, driver):
    """The bound also holds for the sum over an account's sessions."""
    srv = make_server(driver, extra_limits='  max_unacked_bytes: 1048576\n'
                      '  max_unacked_bytes_per_account: 131072\n')
    an, ap = srv.new_user(prefix='sma')
    bn, bp = srv.new_user(prefix='smb')
    a1 = srv.login(an, ap, resource='one')
    a2 = srv.login(an, ap, resource='two')
    enable(a1, resume=False)
    enable(a2, resume=False)
    b = srv.login(bn, bp, resource='desk')
    pad = 'y' * 4000
    burst = lambda to, k: b.send(''.join(
        "<message to='%s' type='chat'><body>%s</body></message>" % (to, pad)
        for _ in range(k)))
    burst(a1.jid, 20)  # ~80 KB for one, under both bounds
    assert b.ping(timeout=20).get('type') == 'result'
    burst(a2.jid, 20)  # the account passes 128 KB with the second
    assert b.ping(timeout=20).get('type') == 'result'
    assert a2.expect_stream_error(timeout=20) == 'resource-constraint'
    assert a1.ping().get('type') == 'result'


def test_bad_h_is_rejected(server, user):
    c = server.login(*user)
    enable(c, resume=False)
    c.send("<a xmlns='%s' h='minus one'/>" % NS_SM)
    assert c.expect_stream_error() == 'bad-format'


# ---- resumption -------------------------------------------------------------

def test_resume_after_lost_connection(server):
    (an, ap, a), (bn, bp, b) = pair(server)
    a.presence()
    sm_id = enable(a).get('id')
    b.message(a.jid, 'm1')
    b.message(a.jid, 'm2')
    assert recv_body(a) == 'm1'
    assert recv_body(a) == 'm2'
    a.send("<a xmlns='%s' h='1'/>" % NS_SM)  # only m1 confirmed
    assert a.ping().get('type') == 'result'
    drop(a)
    wait_log(server, 'hibernated')
    # While it hibernates, the session is still there for the router.
    b.message(a.jid, 'm3')
    assert b.ping().get('type') == 'result'
    c, el = resume(server, an, ap, sm_id, 1)
    assert is_sm(el, 'resumed'), to_str(el)
    assert el.get('previd') == sm_id
    # Our side handled: enable came after bind, then <presence/>? No:
    # presence was before enable; after it: <a/>, one ping.
    assert int(el.get('h')) == 1
    assert recv_body(c) == 'm2'
    assert recv_body(c) == 'm3'
    assert c.ping().get('type') == 'result'
    # Same full JID, same session.
    b.message(a.jid, 'm4')
    assert recv_body(c) == 'm4'
    rawxmpp.quiet(b)


def test_resume_of_live_session_replaces_old_connection(server):
    (an, ap, a), (bn, bp, b) = pair(server)
    sm_id = enable(a).get('id')
    b.message(a.jid, 'x1')
    assert recv_body(a) == 'x1'
    c, el = resume(server, an, ap, sm_id, 0)
    assert is_sm(el, 'resumed'), to_str(el)
    assert recv_body(c) == 'x1'  # not acknowledged: sent again
    assert a.expect_stream_error() == 'conflict'
    b.message(a.jid, 'x2')
    assert recv_body(c) == 'x2'


def test_resume_failures(server):
    (an, ap, a), (bn, bp, b) = pair(server)
    sm_id = enable(a).get('id')
    # Unknown id.
    c, el = resume(server, an, ap, 'f' * 32, 0)
    assert is_sm(el, 'failed')
    assert el.find('{urn:ietf:params:xml:ns:xmpp-stanzas}item-not-found') \
        is not None
    # Someone else's session.
    c2, el = resume(server, bn, bp, sm_id, 0)
    assert is_sm(el, 'failed'), to_str(el)
    assert el.find('{urn:ietf:params:xml:ns:xmpp-stanzas}item-not-found') \
        is not None
    # The failed stream can still bind normally.
    c2.bind('after-failure')
    assert c2.ping().get('type') == 'result'
    # h beyond what was sent.
    c3, el = resume(server, an, ap, sm_id, 7)
    assert is_sm(el, 'failed'), to_str(el)
    assert el.find('{%s}handled-count-too-high' % NS_SM) is not None
    # The original is untouched.
    assert a.ping().get('type') == 'result'


def test_hibernation_timeout_goes_offline(make_server, driver):
    srv = make_server(driver, extra_limits='  resume_timeout: 2\n')
    an, ap = srv.new_user(prefix='sma')
    bn, bp = srv.new_user(prefix='smb')
    a = srv.login(an, ap, resource='phone')
    a.presence()
    sm_id = enable(a, max_=2).get('id')
    b = srv.login(bn, bp, resource='desk')
    b.message(a.jid, 'delivered but never acked')
    assert recv_body(a) == 'delivered but never acked'
    drop(a)
    wait_log(srv, 'hibernated')
    b.message(a.jid, 'while away')
    # An iq request waiting in the queue is answered with an error when
    # the session ends (nobody else can answer it).
    b.send("<iq type='get' id='v1' to='%s'><query xmlns='jabber:iq:version'/>"
           "</iq>" % a.jid)
    assert b.ping().get('type') == 'result'
    wait_log(srv, 'hibernation over')
    err = b.recv_stanza('iq', id='v1')
    assert err.get('type') == 'error', to_str(err)
    assert rawxmpp.stanza_error(err)[1] == 'recipient-unavailable'
    wait_log(srv, 'handed back')
    # Too late to resume.
    c, el = resume(srv, an, ap, sm_id, 0)
    assert is_sm(el, 'failed'), to_str(el)
    # Both messages wait in offline storage for the next login.
    c.bind('phone')
    c.presence()
    got = [recv_body(c), recv_body(c)]
    assert got == ['delivered but never acked', 'while away']


def test_clean_close_with_unacked_goes_offline(server):
    (an, ap, a), (bn, bp, b) = pair(server)
    a.presence()
    enable(a, resume=False)
    b.message(a.jid, 'unconfirmed')
    assert recv_body(a) == 'unconfirmed'
    a.send('</stream:stream>')
    time.sleep(0.2)
    a.close()
    wait_log(server, 'handed back')
    c = server.login(an, ap, resource='phone2')
    c.presence()
    assert recv_body(c) == 'unconfirmed'


def test_acked_messages_survive_kill(make_server, driver):
    """Durable before acknowledged: every message the server acked is
    still delivered after a kill -9 right after the ack."""
    srv = make_server(driver)
    an, ap = srv.new_user(prefix='sma')
    bn, bp = srv.new_user(prefix='smb')
    a = srv.login(an, ap, resource='phone')
    enable(a, resume=False)
    n = 40
    a.send(''.join("<message to='%s@localhost' type='chat' id='k%d'>"
                   "<body>k%d</body></message>" % (bn, i, i)
                   for i in range(n)))
    assert ack_request(a, timeout=20) == n
    srv.kill()
    srv.start()
    b = srv.login(bn, bp, resource='r')
    b.presence()
    got = [recv_body(b) for _ in range(n)]
    assert got == ['k%d' % i for i in range(n)]


# ---- keepalive pings (XEP-0199) --------------------------------------------

def test_server_pings_idle_client(make_server, driver):
    srv = make_server(driver,
                      extra_limits='  ping_interval: 1\n  ping_timeout: 2\n')
    un, up = srv.new_user()
    alive = srv.login(un, up, resource='alive')
    dead = srv.login(un, up, resource='dead')
    # alive answers; dead reads but never answers.  alive is served all
    # along (its pings keep coming while dead's timeout runs): a loaded
    # machine delays dead's end, which must not end alive instead.
    def is_ping(e):
        return (local(e.tag) == 'iq' and e.get('type') == 'get'
                and e.find('{urn:xmpp:ping}ping') is not None)

    answered, condition = 0, None
    deadline = time.monotonic() + 60
    while condition is None or answered < 2:
        assert time.monotonic() < deadline, \
            'answered %d pings, dead ended: %r' % (answered, condition)
        try:
            el = alive.recv(timeout=0.1)
        except rawxmpp.XMPPTimeout:
            el = None
        if el is not None and is_ping(el):
            assert el.get('to') == alive.jid
            alive.send("<iq type='result' id='%s' to='localhost'/>"
                       % el.get('id'))
            answered += 1
        if condition is None:
            try:
                dead.recv(timeout=0.1)
            except rawxmpp.XMPPTimeout:
                pass
            except rawxmpp.StreamClosed as e:
                condition = e.condition
                assert condition == 'connection-timeout', condition
    assert alive.ping().get('type') == 'result'


def test_unanswered_ping_hibernates_sm_session(make_server, driver):
    srv = make_server(driver,
                      extra_limits='  ping_interval: 1\n  ping_timeout: 1\n')
    un, up = srv.new_user()
    a = srv.login(un, up, resource='r')
    sm_id = enable(a).get('id')
    wait_log(srv, 'hibernated')
    # The connection is gone (closed by the server), the session is not.
    c, el = resume(srv, un, up, sm_id, 0)
    assert is_sm(el, 'resumed'), to_str(el)
