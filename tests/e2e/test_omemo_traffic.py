"""OMEMO traffic (XEP-0384, both namespaces) through offline storage,
the archive, carbons, several devices, CSI and push, with the XEP-0334
hints.

The server never reads OMEMO: these tests send realistic raw stanzas (the
legacy eu.siacs.conversations.axolotl and urn:xmpp:omemo:2 forms, key
exchange messages without a payload, empty heartbeats) and check that
every path hands the <encrypted/> element on exactly as it was sent.  The
real OMEMO stacks talking to each other are in the cross-stack tests."""

import time
import xml.etree.ElementTree as ET

import pytest

import rawxmpp
from conftest import db
from rawxmpp import local, stanza_error, to_str
from test_mam import query, ok
from test_push import App, enable as push_enable, go_offline, check_summary

NS_AXOLOTL = 'eu.siacs.conversations.axolotl'
NS_OMEMO2 = 'urn:xmpp:omemo:2'
NS_HINTS = 'urn:xmpp:hints'
NS_CARBONS = 'urn:xmpp:carbons:2'
NS_FORWARD = 'urn:xmpp:forward:0'
NS_CLIENT = 'jabber:client'
NS_CSI = 'urn:xmpp:csi:0'
NS_MAM2 = 'urn:xmpp:mam:2'

# Ciphertexts are opaque base64 to the server; these look like the real
# thing (sizes of a Conversations / python-omemo message).
KEY = 'MwohBcJzhALU5ZiBSn8RqMR6SJNe2TB3i9IGypFm/yhmZztlEAAYACIwScgGuN2u1xeY19JZA3DLoLWlyAj8LyTMRk1uO6IEcUkMoCmpR2H6e83SK62b0dj0Rj1u/AZoWNY='
PREKEY = 'Mwgo2ZrD5wESIQWn+cLnbFFk3bQlDSYOt7AvT5dx8zOsuZ8lDBJm8jNAlBohBRF7D06eO1JXgWJcQhvSc6E4mKzNaO3pQWkZUSgkFJuCIlMKIQXrN/AdaWZtF5JjbT4umWuk3pzrFo6GBO/3Z1FkjD5FHRAAGAAiIOdm3VCkFBUbD6Hc0sgIh+4kkrJNvHvD0k7ZgJx/VbIK'
IV = '8/pXK3Y8y8gKuxjS'
PAYLOAD = 'vAx0pl1Gk3E0BOP0ENnhMZFp2ieZUi9xMJe0kzHc6Yk='


def legacy(sid='1797815022', rids=('697255201',), payload=True, prekey=False):
    keys = ''.join("<key rid='%s'%s>%s</key>"
                   % (r, " prekey='true'" if prekey else '',
                      PREKEY if prekey else KEY) for r in rids)
    return ("<encrypted xmlns='%s'><header sid='%s'>%s<iv>%s</iv></header>%s"
            "</encrypted>" % (NS_AXOLOTL, sid, keys, IV,
                              '<payload>%s</payload>' % PAYLOAD if payload else ''))


def omemo2(to_bare, from_bare, sid='27183', payload=True, kex=False):
    kx = " kex='true'" if kex else ''
    return ("<encrypted xmlns='%s'><header sid='%s'>"
            "<keys jid='%s'><key rid='31415'%s>%s</key></keys>"
            "<keys jid='%s'><key rid='1337'>%s</key></keys>"
            "</header>%s</encrypted>"
            % (NS_OMEMO2, sid, to_bare, kx, PREKEY if kex else KEY, from_bare, KEY,
               '<payload>%s</payload>' % PAYLOAD if payload else ''))


STORE = "<store xmlns='%s'/>" % NS_HINTS
FALLBACK = ("<body>I sent you an OMEMO encrypted message but your client "
            "doesn't seem to support that.</body>")


def kinds(to_bare, from_bare):
    """name -> payload of the messages an OMEMO client sends: with and
    without fallback body, key exchanges (no payload) and heartbeats (an
    empty message), in both namespaces; some with the <store/> hint
    XEP-0384 recommends, some without (older clients)."""
    return {
        'legacy-fallback': FALLBACK + legacy() + STORE,
        'legacy-bare': legacy(),
        'legacy-kex': legacy(payload=False, prekey=True),
        'legacy-heartbeat': legacy(payload=False) + STORE,
        'v2': omemo2(to_bare, from_bare) + STORE,
        'v2-fallback': FALLBACK + omemo2(to_bare, from_bare),
        'v2-kex': omemo2(to_bare, from_bare, payload=False, kex=True),
        'v2-heartbeat': omemo2(to_bare, from_bare, payload=False),
    }


# ---- helpers -------------------------------------------------------------

def bare(jid):
    return jid.split('/')[0]


def canon(el):
    """A comparable form of an element: name, attributes, text, children
    (whitespace-only text ignored)."""
    return (el.tag, sorted(el.attrib.items()), (el.text or '').strip(),
            [canon(c) for c in el])


def encrypted_of(msg):
    for ns in (NS_AXOLOTL, NS_OMEMO2):
        e = msg.find('{%s}encrypted' % ns)
        if e is not None:
            return e
    return None


def same_encrypted(msg, payload):
    """msg carries the <encrypted/> element of payload, unchanged."""
    sent = ET.fromstring("<message xmlns='%s'>%s</message>" % (NS_CLIENT, payload))
    want, got = encrypted_of(sent), encrypted_of(msg)
    assert got is not None, to_str(msg)
    assert canon(got) == canon(want), (to_str(msg), payload)
    # a fallback body travels with it when there was one, and no other
    assert msg.findtext('{%s}body' % NS_CLIENT) == sent.findtext('{%s}body' % NS_CLIENT), \
        to_str(msg)


def send_raw(c, to, payload, type_='chat', id_=None):
    id_ = id_ or rawxmpp.new_id('om')
    t = " type='%s'" % type_ if type_ else ''
    c.send("<message to='%s' id='%s'%s>%s</message>" % (to, id_, t, payload))
    return id_


def online(srv, user, pw, res, carbons=False, priority=None):
    c = srv.login(user, pw, resource=res)
    c.name = c.jid
    if carbons:
        r = c.iq('set', "<enable xmlns='%s'/>" % NS_CARBONS)
        assert r.get('type') == 'result', to_str(r)
    c.presence('<priority>%d</priority>' % priority if priority is not None else '')
    rawxmpp.quiet(c, lambda el: local(el.tag) == 'presence')
    return c


def no_errors(c, seconds=0.5):
    """No message error reaches c before a ping answer and `seconds` more."""
    ping_id = rawxmpp.new_id('barrier')
    c.send("<iq type='get' id='%s' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
           % ping_id)
    deadline = None
    while True:
        try:
            el = c.recv(timeout=0.1 if deadline else None)
        except Exception:
            if deadline is not None and time.monotonic() > deadline:
                return
            continue
        if local(el.tag) == 'iq' and el.get('id') == ping_id:
            deadline = time.monotonic() + seconds
        assert not (local(el.tag) == 'message' and el.get('type') == 'error'), to_str(el)
        if deadline is not None and time.monotonic() > deadline:
            return


def message_with(c, id_):
    """The message c receives with id_, directly or as a carbon."""
    def pred(el):
        if local(el.tag) != 'message':
            return False
        if el.get('id') == id_:
            return True
        inner = forwarded(el)
        return inner is not None and inner.get('id') == id_
    el = c.recv_until(pred, what='message %s' % id_)
    inner = forwarded(el)
    return inner if inner is not None else el


def forwarded(el):
    for which in ('sent', 'received'):
        f = el.find('{%s}%s/{%s}forwarded/{%s}message'
                    % (NS_CARBONS, which, NS_FORWARD, NS_CLIENT))
        if f is not None:
            return f
    return None


def offline_rows(srv, user):
    assert user.isalnum()
    return int(db(srv, "SELECT count(*) FROM offline_messages WHERE host = "
                       "'localhost' AND username = '%s'" % user))


def archive_rows(srv, user):
    assert user.isalnum()
    return int(db(srv, "SELECT count(*) FROM mam_messages WHERE host = "
                       "'localhost' AND username = '%s'" % user))


def wait_count(fn, n, what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while fn() != n:
        assert time.monotonic() < deadline, '%s: %d, expected %d' % (what, fn(), n)
        time.sleep(0.05)


# ---- tests ---------------------------------------------------------------

def test_online_every_device_and_carbons(server):
    """Alice (two devices, carbons) to Bob (two devices, carbons): both of
    Bob's devices get every kind of OMEMO message, Alice's other device
    gets a sent carbon of each, all with the <encrypted/> unchanged."""
    alice, apw = server.new_user(prefix='oma')
    bob, bpw = server.new_user(prefix='omb')
    a1 = online(server, alice, apw, 'phone', carbons=True)
    a2 = online(server, alice, apw, 'laptop', carbons=True)
    b1 = online(server, bob, bpw, 'phone', carbons=True)
    b2 = online(server, bob, bpw, 'laptop', carbons=True)
    to = '%s@localhost' % bob
    for name, payload in kinds(to, bare(a1.jid)).items():
        id_ = send_raw(a1, to, payload)
        for c in (b1, b2, a2):
            same_encrypted(message_with(c, id_), payload)
    # to one full JID: the other device of Bob gets a received carbon
    for name, payload in kinds(to, bare(a1.jid)).items():
        id_ = send_raw(a1, b1.jid, payload)
        for c in (b1, b2, a2):
            same_encrypted(message_with(c, id_), payload)
    # a type-less (normal) message is treated the same (XEP-0280 §6)
    payload = legacy(payload=False, prekey=True)
    id_ = send_raw(a1, b1.jid, payload, type_=None)
    for c in (b1, b2, a2):
        same_encrypted(message_with(c, id_), payload)
    no_errors(a1)


def test_offline_every_kind_stored_and_delivered(server):
    """Bob offline: every OMEMO message, key exchanges and heartbeats
    included, is stored and delivered unchanged, in order, when he comes
    online."""
    alice, apw = server.new_user(prefix='oma')
    bob, bpw = server.new_user(prefix='omb')
    a = online(server, alice, apw, 'phone')
    to = '%s@localhost' % bob
    sent = [(send_raw(a, to, p), p) for p in kinds(to, bare(a.jid)).values()]
    no_errors(a)
    wait_count(lambda: offline_rows(server, bob), len(sent), 'offline rows')
    b = server.login(bob, bpw, resource='phone')
    b.presence()
    got = [b.recv_stanza('message') for _ in sent]
    assert [m.get('id') for m in got] == [i for i, _ in sent], [to_str(m) for m in got]
    for m, (_, payload) in zip(got, sent):
        same_encrypted(m, payload)
    wait_count(lambda: offline_rows(server, bob), 0, 'offline rows after delivery')


def test_archive_keeps_ciphertext(server):
    """MAM: both archives hold every kind, and a query returns the
    <encrypted/> element intact (sender's and recipient's archive)."""
    alice, apw = server.new_user(prefix='oma')
    bob, bpw = server.new_user(prefix='omb')
    a = online(server, alice, apw, 'phone')
    b = online(server, bob, bpw, 'phone')
    to = '%s@localhost' % bob
    sent = []
    for payload in kinds(to, bare(a.jid)).values():
        id_ = send_raw(a, to, payload)
        message_with(b, id_)
        sent.append((id_, payload))
    wait_count(lambda: archive_rows(server, bob), len(sent), 'bob archive')
    wait_count(lambda: archive_rows(server, alice), len(sent), 'alice archive')
    for c in (a, b):
        r = ok(query(c, max_=50))
        assert len(r.results) == len(sent), [to_str(x) for x in r.results]
        for i, (id_, payload) in enumerate(sent):
            m = r.forwarded(i)
            assert m.get('id') == id_, to_str(m)
            same_encrypted(m, payload)


def test_offline_messages_archived_too(server):
    """A key exchange to an offline user is in his archive (he reads it
    back from MAM on a new device) as well as in offline storage."""
    alice, apw = server.new_user(prefix='oma')
    bob, bpw = server.new_user(prefix='omb')
    a = online(server, alice, apw, 'phone')
    to = '%s@localhost' % bob
    payloads = [legacy(payload=False, prekey=True),
                omemo2(to, bare(a.jid), payload=False, kex=True)]
    ids = [send_raw(a, to, p) for p in payloads]
    no_errors(a)
    wait_count(lambda: offline_rows(server, bob), 2, 'offline rows')
    wait_count(lambda: archive_rows(server, bob), 2, 'bob archive')
    b = server.login(bob, bpw, resource='tablet')   # no presence: no delivery
    r = ok(query(b, max_=50))
    assert [r.forwarded(i).get('id') for i in range(2)] == ids
    for i, p in enumerate(payloads):
        same_encrypted(r.forwarded(i), p)


def test_hints(server):
    """XEP-0334 on encrypted messages: <no-store/> is not stored offline
    (bounced), <no-copy/> to a full JID is not carbon-copied."""
    alice, apw = server.new_user(prefix='oma')
    bob, bpw = server.new_user(prefix='omb')
    a = online(server, alice, apw, 'phone')
    to = '%s@localhost' % bob
    nostore = legacy() + "<no-store xmlns='%s'/>" % NS_HINTS
    id_nostore = send_raw(a, to, nostore)
    err = a.recv_until(lambda el: local(el.tag) == 'message' and el.get('id') == id_nostore,
                       what='the error for <no-store/>')
    assert stanza_error(err) == ('cancel', 'service-unavailable'), to_str(err)
    assert offline_rows(server, bob) == 0
    b = online(server, bob, bpw, 'phone', carbons=True)
    b2 = online(server, bob, bpw, 'laptop', carbons=True)
    nocopy = legacy() + "<no-copy xmlns='%s'/>" % NS_HINTS
    id_nocopy = send_raw(a, b.jid, nocopy)
    id_copy = send_raw(a, b.jid, legacy())
    same_encrypted(message_with(b, id_nocopy), nocopy)
    same_encrypted(message_with(b, id_copy), legacy())
    # b2 sees the carbon of the second only
    first = b2.recv_until(lambda el: local(el.tag) == 'message', what='a carbon')
    assert forwarded(first) is not None and forwarded(first).get('id') == id_copy, \
        to_str(first)


def test_hint_no_permanent_store_offline(server):
    """The stored <no-permanent-store/> message above reaches Bob."""
    alice, apw = server.new_user(prefix='oma')
    bob, bpw = server.new_user(prefix='omb')
    a = online(server, alice, apw, 'phone')
    to = '%s@localhost' % bob
    payload = legacy() + "<no-permanent-store xmlns='%s'/>" % NS_HINTS
    id_ = send_raw(a, to, payload)
    no_errors(a)
    wait_count(lambda: offline_rows(server, bob), 1, 'offline rows')
    b = server.login(bob, bpw, resource='phone')
    b.presence()
    m = b.recv_stanza('message')
    assert m.get('id') == id_, to_str(m)
    same_encrypted(m, payload)
    time.sleep(0.3)
    assert archive_rows(server, bob) == 0 and archive_rows(server, alice) == 0


def test_csi_encrypted_is_urgent(server):
    """An inactive client (XEP-0352) gets every OMEMO message at once, key
    exchanges and heartbeats too (doc/e2e.md: a session being built or
    repaired waits on them), while a receipt waits."""
    alice, apw = server.new_user(prefix='oma')
    bob, bpw = server.new_user(prefix='omb')
    a = online(server, alice, apw, 'phone')
    b = online(server, bob, bpw, 'phone')
    b.send("<inactive xmlns='%s'/>" % NS_CSI)
    to = b.jid
    receipt_id = send_raw(a, to, "<received xmlns='urn:xmpp:receipts' id='r1'/>")
    for payload in kinds(bare(to), bare(a.jid)).values():
        id_ = send_raw(a, to, payload)
        m = b.recv_until(lambda el: local(el.tag) == 'message', timeout=10,
                         what='an urgent message')
        if m.get('id') == receipt_id:
            # the held receipt is flushed first, in order, then ours
            m = b.recv_until(lambda el: local(el.tag) == 'message', timeout=10,
                             what='the OMEMO message')
        assert m.get('id') == id_, to_str(m)
        same_encrypted(m, payload)


@pytest.fixture
def push_srv(make_server, driver):
    srv = make_server(driver, modules={'mod_push': {'include_body': True,
                                                    'min_interval': 0}})
    app = App(srv)
    yield srv, app
    app.close()


def test_push_never_carries_the_fallback_body(push_srv):
    """include_body is on, yet no encrypted message's fallback body leaves
    the server; key exchanges wake the phone too (its OMEMO session is
    waiting), with nothing but count and sender."""
    srv, app = push_srv
    user, pw = srv.new_user(prefix='ompush')
    c = srv.login(user, pw, resource='phone')
    push_enable(c)
    go_offline(srv, c, user)
    sender, spw = srv.new_user(prefix='omsnd')
    s = online(srv, sender, spw, 'desk')
    to = '%s@localhost' % user
    for name, payload in kinds(to, bare(s.jid)).items():
        send_raw(s, to, payload)
        n = app.next()
        check_summary(n, 1, s.jid)
        assert 'OMEMO' not in n['xml'] and PAYLOAD not in n['xml'], (name, n['xml'])
        assert KEY not in n['xml'] and PREKEY not in n['xml'], (name, n['xml'])
    # a plain message still carries its body (the option is on)
    s.message(to, 'plain words')
    check_summary(app.next(), 1, s.jid, body='plain words')


def test_carbons_of_openpgp_normal_messages(server):
    """A type-less message carrying only an OpenPGP payload (XEP-0373 or
    XEP-0027) to one device of Bob is carbon-copied to his other device
    and to Alice's other device, like OMEMO."""
    alice, apw = server.new_user(prefix='oma')
    bob, bpw = server.new_user(prefix='omb')
    a1 = online(server, alice, apw, 'phone', carbons=True)
    a2 = online(server, alice, apw, 'laptop', carbons=True)
    b1 = online(server, bob, bpw, 'phone', carbons=True)
    b2 = online(server, bob, bpw, 'laptop', carbons=True)
    for payload in ("<openpgp xmlns='urn:xmpp:openpgp:0'>%s</openpgp>" % PAYLOAD,
                    "<x xmlns='jabber:x:encrypted'>%s</x>" % PAYLOAD):
        id_ = send_raw(a1, b1.jid, payload, type_=None)
        for c in (b1, b2, a2):
            m = message_with(c, id_)
            assert canon(m[0]) == canon(ET.fromstring(payload)), to_str(m)


NOPERM = "<no-permanent-store xmlns='%s'/>" % NS_HINTS
CHATSTATE = "<paused xmlns='http://jabber.org/protocol/chatstates'/>"


def test_order_kept_with_unarchived_messages(server):
    """RFC 6121 §8: one sender's messages arrive in the order sent, also
    when some are archived (held until their rows commit) and others are
    not (<no-permanent-store/>, a chat state): online, and into offline
    storage while the recipient's archive preferences are being read."""
    alice, apw = server.new_user(prefix='oma')
    bob, bpw = server.new_user(prefix='omb')
    a = online(server, alice, apw, 'phone')
    to = '%s@localhost' % bob
    seq = [legacy(), legacy() + NOPERM, legacy(payload=False, prekey=True),
           CHATSTATE, legacy() + NOPERM, legacy(), legacy() + NOPERM]
    # offline first (the first message makes mod_mam read bob's
    # preferences; the rest queue behind it)
    sent = [send_raw(a, to, p) for p in seq if p != CHATSTATE]
    no_errors(a)
    wait_count(lambda: offline_rows(server, bob), len(sent), 'offline rows')
    b = server.login(bob, bpw, resource='phone')
    b.presence()
    got = [b.recv_stanza('message').get('id') for _ in sent]
    assert got == sent, (got, sent)
    rawxmpp.quiet(b, lambda el: local(el.tag) == 'presence')
    # online: archived ones wait for their rows, the others behind them
    for _ in range(3):
        sent = [send_raw(a, b.jid, p) for p in seq]
        got = [b.recv_stanza('message').get('id') for _ in sent]
        assert got == sent, (got, sent)
