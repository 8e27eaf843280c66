"""mod_csi: client state indication (XEP-0352).

The receiving client is a raw client, so that the tests see exactly what
the server writes and in which order.  "Nothing arrived" is checked after
the sender's own ping came back (its stanzas have been routed by then):
a ping from the inactive client itself would flush its queue, as any iq
does."""

import time

import pytest

import rawxmpp
from rawxmpp import local, new_id, to_str

NS_CSI = 'urn:xmpp:csi:0'
NS_CHATSTATES = 'http://jabber.org/protocol/chatstates'
NS_RECEIPTS = 'urn:xmpp:receipts'
NS_MARKERS = 'urn:xmpp:chat-markers:0'
NS_OMEMO = 'eu.siacs.conversations.axolotl'
NS_JMI = 'urn:xmpp:jingle-message:0'
INACTIVE = "<inactive xmlns='%s'/>" % NS_CSI
ACTIVE = "<active xmlns='%s'/>" % NS_CSI


# ---- helpers -----------------------------------------------------------

def subscribe_both(server, a, b):
    """Mutual presence subscription, written by mod_roster's command."""
    server.ctl('add_rosteritem', a, 'localhost', b, 'localhost', b, 'F', 'both', expect=0)
    server.ctl('add_rosteritem', b, 'localhost', a, 'localhost', a, 'F', 'both', expect=0)


def until_pong(c):
    """Sends a ping; returns every element that arrived before its answer
    (the server answers in order, after anything it wrote to c before)."""
    iq_id = new_id('pong')
    c.send("<iq type='get' id='%s' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
           % iq_id)
    got = []
    while True:
        el = c.recv()
        if local(el.tag) == 'iq' and el.get('id') == iq_id:
            assert el.get('type') == 'result', to_str(el)
            return got
        got.append(el)


def synced(c):
    """c's earlier stanzas have all been routed."""
    until_pong(c)


def nothing_for(c, seconds=0.4):
    c.expect_silence(seconds, ignore=())


def pair(server):
    """alice (the client that goes inactive) and bob, subscribed to each
    other, both online with everything initial already received."""
    alice, apw = server.new_user(prefix='csia')
    bob, bpw = server.new_user(prefix='csib')
    subscribe_both(server, alice, bob)
    a = server.login(alice, apw, resource='phone')
    a.name = 'alice'
    a.presence()
    until_pong(a)
    b = server.login(bob, bpw, resource='r1')
    b.name = 'bob'
    b.presence()
    until_pong(b)
    # alice saw bob come online
    a.recv_until(lambda el: local(el.tag) == 'presence' and el.get('from') == b.jid,
                 what="bob's presence")
    until_pong(a)
    return (alice, apw, a), (bob, bpw, b)


def inactive(c):
    c.send(INACTIVE)
    synced(c)   # nonzas are processed in order: inactive from here on


def status_presence(c, status):
    c.send('<presence><status>%s</status></presence>' % status)


def receipt(to, rid=None):
    return ("<message to='%s' id='%s'><received xmlns='%s' id='%s'/></message>"
            % (to, new_id('rcpt'), NS_RECEIPTS, rid or new_id('x')))


def describe(el):
    """A short description of what a client received, for comparisons."""
    name = local(el.tag)
    if name == 'presence':
        return ('presence', el.get('from'), el.get('type'),
                el.findtext('{jabber:client}status'))
    if name == 'message':
        if el.find('{jabber:client}body') is not None:
            return ('body', el.get('from'), el.findtext('{jabber:client}body'))
        if el.find('{%s}received' % NS_RECEIPTS) is not None:
            return ('receipt', el.get('from'),
                    el.find('{%s}received' % NS_RECEIPTS).get('id'))
        if el.find('{%s}displayed' % NS_MARKERS) is not None:
            return ('marker', el.get('from'),
                    el.find('{%s}displayed' % NS_MARKERS).get('id'))
        for c in el:
            if c.tag.startswith('{%s}' % NS_CHATSTATES):
                return ('chatstate', el.get('from'), local(c.tag))
        return ('message', el.get('from'), to_str(el))
    return (name, el.get('from'), to_str(el))


def wait_offline(server, bare, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        out = server.ctl('connected_users', expect=0).stdout.split()
        if not any(j.startswith(bare + '/') for j in out):
            return
        assert time.monotonic() < deadline, '%s still connected: %s' % (bare, out)
        time.sleep(0.02)


# ---- tests -------------------------------------------------------------

def test_feature_advertised_after_authentication(server, user):
    name, pw = user
    c = server.raw()
    c.connect()
    c.open()
    c.starttls()
    before = c.open()
    assert before.find('{%s}csi' % NS_CSI) is None, to_str(before)
    ok, el = c.auth_scram(name, pw)
    assert ok, to_str(el)
    after = c.open()
    assert after.find('{%s}csi' % NS_CSI) is not None, to_str(after)
    c.bind('r')
    # the nonzas are accepted without an answer, and the stream goes on
    c.send(INACTIVE)
    c.send(ACTIVE)
    assert until_pong(c) == []


def test_presence_held_newest_per_sender_on_active(server):
    (alice, apw, a), (bob, bpw, b) = pair(server)
    b2 = server.login(bob, bpw, resource='r2')
    b2.name = 'bob2'
    b2.presence()
    synced(b2)
    a.recv_until(lambda el: local(el.tag) == 'presence' and el.get('from') == b2.jid,
                 what="bob's second resource")
    inactive(a)
    status_presence(b, 'one')
    status_presence(b2, 'other')
    status_presence(b, 'two')
    status_presence(b, 'three')
    synced(b)
    synced(b2)
    nothing_for(a)
    a.send(ACTIVE)
    got = [describe(el) for el in until_pong(a)]
    # the newest of each full JID, in the order of the last update
    assert got == [('presence', b2.jid, None, 'other'),
                   ('presence', b.jid, None, 'three')], got
    # active again: presence goes straight through
    status_presence(b, 'four')
    synced(b)
    el = a.recv_stanza('presence', **{'from': b.jid})
    assert el.findtext('{jabber:client}status') == 'four', to_str(el)


def test_unavailable_supersedes_queued_presence(server):
    (alice, apw, a), (bob, bpw, b) = pair(server)
    inactive(a)
    status_presence(b, 'busy')
    synced(b)
    b.send('</stream:stream>')
    wait_offline(server, '%s@localhost' % bob)
    nothing_for(a)
    a.send(ACTIVE)
    got = [describe(el) for el in until_pong(a)]
    assert got == [('presence', b.jid, 'unavailable', None)], got


def test_chat_states_dropped(server):
    (alice, apw, a), (bob, bpw, b) = pair(server)
    inactive(a)
    b.send("<message to='%s' type='chat' id='cs1'><composing xmlns='%s'/></message>"
           % (a.jid, NS_CHATSTATES))
    b.send("<message to='%s' type='chat' id='cs2'><paused xmlns='%s'/>"
           "<thread>t1</thread></message>" % (a.jid, NS_CHATSTATES))
    synced(b)
    nothing_for(a)
    a.send(ACTIVE)
    assert until_pong(a) == []
    # active: chat states are delivered
    b.send("<message to='%s' type='chat' id='cs3'><composing xmlns='%s'/></message>"
           % (a.jid, NS_CHATSTATES))
    el = a.recv_stanza('message', id='cs3')
    assert describe(el) == ('chatstate', b.jid, 'composing')


def test_body_message_at_once_after_queued(server):
    (alice, apw, a), (bob, bpw, b) = pair(server)
    inactive(a)
    status_presence(b, 'away')
    b.send(receipt(a.jid, 'r-1'))
    b.send("<message to='%s' type='chat' id='cs'><composing xmlns='%s'/></message>"
           % (a.jid, NS_CHATSTATES))
    synced(b)
    nothing_for(a)
    # a message with a body goes at once, after what was queued
    b.message(a.jid, 'wake up', id_='urgent1')
    got = [describe(a.recv()) for _ in range(3)]
    assert got == [('presence', b.jid, None, 'away'),
                   ('receipt', b.jid, 'r-1'),
                   ('body', b.jid, 'wake up')], got
    # still inactive: the next presence is held again
    status_presence(b, 'back')
    synced(b)
    nothing_for(a)
    a.send(ACTIVE)
    got = [describe(el) for el in until_pong(a)]
    assert got == [('presence', b.jid, None, 'back')], got


@pytest.mark.parametrize('payload', [
    "<encrypted xmlns='%s'><header sid='1'/></encrypted>" % NS_OMEMO,
    "<propose xmlns='%s' id='call1'><description xmlns='urn:xmpp:jingle:apps:rtp:1' "
    "media='audio'/></propose>" % NS_JMI,
], ids=['omemo', 'call'])
def test_encrypted_and_calls_are_urgent(server, payload):
    (alice, apw, a), (bob, bpw, b) = pair(server)
    inactive(a)
    status_presence(b, 'x')
    synced(b)
    nothing_for(a)
    b.send("<message to='%s' type='chat' id='urg'>%s</message>" % (a.jid, payload))
    first, second = a.recv(), a.recv()
    assert describe(first) == ('presence', b.jid, None, 'x'), to_str(first)
    assert local(second.tag) == 'message' and second.get('id') == 'urg', to_str(second)


def test_iq_and_subscription_request_are_urgent(server):
    (alice, apw, a), (bob, bpw, b) = pair(server)
    carol, cpw = server.new_user(prefix='csic')
    c = server.login(carol, cpw, resource='c')
    inactive(a)
    status_presence(b, 'queued')
    synced(b)
    nothing_for(a)
    # a subscription request is urgent
    c.send("<presence to='%s@localhost' type='subscribe'/>" % alice)
    synced(c)
    first = a.recv()
    assert describe(first) == ('presence', b.jid, None, 'queued'), to_str(first)
    sub = a.recv()
    assert local(sub.tag) == 'presence' and sub.get('type') == 'subscribe', to_str(sub)
    # an iq to the client is urgent too (after what is queued)
    status_presence(b, 'again')
    synced(b)
    nothing_for(a)
    b.send("<iq type='get' id='ver1' to='%s'><query xmlns='jabber:iq:version'/></iq>"
           % a.jid)
    first = a.recv()
    assert describe(first) == ('presence', b.jid, None, 'again'), to_str(first)
    q = a.recv()
    assert local(q.tag) == 'iq' and q.get('id') == 'ver1', to_str(q)


def test_receipts_and_markers_held_then_flushed_in_order(server):
    (alice, apw, a), (bob, bpw, b) = pair(server)
    inactive(a)
    b.send(receipt(a.jid, 'r-1'))
    b.send("<message to='%s' id='mk'><displayed xmlns='%s' id='m-1'/></message>"
           % (a.jid, NS_MARKERS))
    b.send(receipt(a.jid, 'r-2'))
    synced(b)
    nothing_for(a)
    a.send(ACTIVE)
    got = [describe(el) for el in until_pong(a)]
    assert got == [('receipt', b.jid, 'r-1'), ('marker', b.jid, 'm-1'),
                   ('receipt', b.jid, 'r-2')], got


def test_max_queue_flushes(make_server, driver):
    srv = make_server(driver, modules={'mod_csi': {'max_queue': 3}})
    (alice, apw, a), (bob, bpw, b) = pair(srv)
    inactive(a)
    b.send(receipt(a.jid, 'q-1'))
    status_presence(b, 'p')
    synced(b)
    nothing_for(a)
    # the third queued stanza reaches the limit: everything goes
    b.send(receipt(a.jid, 'q-2'))
    got = [describe(a.recv()) for _ in range(3)]
    assert got == [('receipt', b.jid, 'q-1'), ('presence', b.jid, None, 'p'),
                   ('receipt', b.jid, 'q-2')], got
    # and the queue starts again
    b.send(receipt(a.jid, 'q-3'))
    synced(b)
    nothing_for(a)
    a.send(ACTIVE)
    assert [describe(el) for el in until_pong(a)] == [('receipt', b.jid, 'q-3')]


def test_queued_messages_not_lost_when_session_ends(server):
    (alice, apw, a), (bob, bpw, b) = pair(server)
    inactive(a)
    b.send(receipt(a.jid, 'kept-1'))
    status_presence(b, 'dropped')
    b.send(receipt(a.jid, 'kept-2'))
    synced(b)
    nothing_for(a)
    a.close()
    wait_offline(server, '%s@localhost' % alice)
    # the held receipts went to offline storage; the presence did not
    a2 = server.login(alice, apw, resource='again')
    a2.presence()
    got = [describe(a2.recv_stanza('message')) for _ in range(2)]
    assert got == [('receipt', b.jid, 'kept-1'), ('receipt', b.jid, 'kept-2')], got
    assert [describe(el) for el in until_pong(a2)
            if local(el.tag) == 'message'] == []


NS_SM = 'urn:xmpp:sm:3'


def test_state_kept_across_stream_resumption(server):
    """The CSI state belongs to the session, which a resumed stream
    continues (XEP-0198 §5): still inactive after resuming, and what was
    held while the session hibernated comes on <active/>."""
    (alice, apw, a), (bob, bpw, b) = pair(server)
    a.send("<enable xmlns='%s' resume='true'/>" % NS_SM)
    enabled = a.recv_until(lambda e: e.tag == '{%s}enabled' % NS_SM, what='<enabled/>')
    inactive(a)
    a.close()   # the connection is lost, the stream is not closed
    deadline = time.monotonic() + 10
    while '%s hibernated' % a.jid not in server.log_text():
        assert time.monotonic() < deadline, 'the session did not hibernate'
        time.sleep(0.05)
    status_presence(b, 'while away')
    synced(b)
    r = server.raw(name='alice-resumed')
    r.login(alice, apw, bind=False)
    r.send("<resume xmlns='%s' previd='%s' h='0'/>" % (NS_SM, enabled.get('id')))
    el = r.recv_until(lambda e: e.tag in ('{%s}resumed' % NS_SM, '{%s}failed' % NS_SM),
                      what='<resumed/>')
    assert el.tag == '{%s}resumed' % NS_SM, to_str(el)
    # what the client had not acknowledged is sent again; the held
    # presence is not among it: the session is still inactive
    replayed = []
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        try:
            replayed.append(r.recv(max(0.01, deadline - time.monotonic())))
        except rawxmpp.XMPPTimeout:
            break
    assert ('presence', b.jid, None, 'while away') not in \
        [describe(x) for x in replayed], [to_str(x) for x in replayed]
    r.send(ACTIVE)
    got = [describe(x) for x in until_pong(r) if local(x.tag) != 'r']
    assert got == [('presence', b.jid, None, 'while away')], got
