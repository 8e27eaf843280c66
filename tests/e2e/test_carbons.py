"""mod_carbons: message carbons (XEP-0280)."""

import pytest

import rawxmpp
from rawxmpp import NS_DISCO_INFO, NS_STANZAS, local, to_str

NS_CARBONS = 'urn:xmpp:carbons:2'
NS_FORWARD = 'urn:xmpp:forward:0'
NS_CLIENT = 'jabber:client'
BODY = '{jabber:client}body'
PRIVATE = "<private xmlns='%s'/>" % NS_CARBONS
NO_COPY = "<no-copy xmlns='urn:xmpp:hints'/>"


# ---- helpers -----------------------------------------------------------

@pytest.fixture
def srv(make_server, driver):
    return make_server(driver, modules={'mod_carbons': {}})


def bare(jid):
    return jid.split('/')[0]


def quiet(c, allow=lambda el: el.tag == '{jabber:client}presence'):
    """Nothing but what allow() accepts (presence by default) reached c."""
    rawxmpp.quiet(c, allow)


def online(srv, user, pw, res, priority=None, carbons=True):
    c = srv.login(user, pw, resource=res)
    c.name = c.jid
    if carbons:
        enable(c)
    c.presence('<priority>%d</priority>' % priority if priority is not None else '')
    quiet(c)
    return c


def enable(c, op='enable', to=None):
    r = c.iq('set', "<%s xmlns='%s'/>" % (op, NS_CARBONS), to=to)
    if to is None:
        assert r.get('type') == 'result', to_str(r)
    return r


def recv_message(c, id_):
    return c.recv_until(lambda e: local(e.tag) == 'message' and e.get('id') == id_,
                        what='message %s' % id_)


def recv_carbon(c, which):
    el = c.recv_until(lambda e: local(e.tag) == 'message'
                      and e.find('{%s}%s' % (NS_CARBONS, which)) is not None,
                      what='a <%s/> carbon' % which)
    fwd = el.find('{%s}%s/{%s}forwarded/{%s}message'
                  % (NS_CARBONS, which, NS_FORWARD, NS_CLIENT))
    assert fwd is not None, to_str(el)
    return el, fwd


def check_wrapper(el, c):
    # §6/§7: from the user's bare JID, to the copied resource.
    assert el.get('from') == bare(c.jid), to_str(el)
    assert el.get('to') == c.jid, to_str(el)
    assert el.get('type') == 'chat', to_str(el)


def no_message(c):
    quiet(c, allow=lambda el: local(el.tag) == 'presence')


def three(srv):
    """alice on two carbons-enabled resources, and bob."""
    alice, apw = srv.new_user(prefix='alice')
    bob, bpw = srv.new_user(prefix='bob')
    a1 = online(srv, alice, apw, 'one')
    a2 = online(srv, alice, apw, 'two')
    b = online(srv, bob, bpw, 'bob', carbons=False)
    return a1, a2, b


# ---- tests -------------------------------------------------------------

def test_enable_disable_and_disco(srv):
    alice, apw = srv.new_user(prefix='alice')
    bob, bpw = srv.new_user(prefix='bob')
    a = srv.login(alice, apw)
    b = srv.login(bob, bpw)
    r = a.iq('get', "<query xmlns='%s'/>" % NS_DISCO_INFO, to='localhost')
    feats = [f.get('var') for f in r.iter('{%s}feature' % NS_DISCO_INFO)]
    assert NS_CARBONS in feats, to_str(r)
    # §9.1: enabling or disabling twice is not an error.
    for op in ('enable', 'enable', 'disable', 'disable'):
        enable(a, op)
    # Somebody else's carbons are not ours to switch.
    r = enable(b, 'enable', to='%s@localhost' % alice)
    assert r.get('type') == 'error', to_str(r)
    assert r.find('{jabber:client}error/{%s}forbidden' % NS_STANZAS) is not None, to_str(r)


def test_sent_carbon(srv):
    a1, a2, b = three(srv)
    id_ = a1.message(b.jid, 'hello bob')
    el, fwd = recv_carbon(a2, 'sent')
    check_wrapper(el, a2)
    assert fwd.get('id') == id_ and fwd.get('to') == b.jid, to_str(el)
    assert fwd.get('from') == a1.jid, to_str(el)
    assert fwd.findtext(BODY) == 'hello bob', to_str(el)
    assert recv_message(b, id_).findtext(BODY) == 'hello bob'
    # §7: not to the sending resource; bob's side has no carbons.
    no_message(a1)
    no_message(b)
    # Type normal with a body is copied too (§6); without one it is not.
    id_ = a1.message(b.jid, 'normal', type_=None)
    el, fwd = recv_carbon(a2, 'sent')
    assert fwd.get('id') == id_ and el.get('type') is None, to_str(el)
    a1.send("<message to='%s' id='nb'><x xmlns='urn:example'/></message>" % b.jid)
    recv_message(b, 'nb')
    no_message(a2)


def test_received_carbon(srv):
    a1, a2, b = three(srv)
    # To a full JID: the other resource gets a <received/> copy.
    id_ = b.message(a1.jid, 'for one')
    assert recv_message(a1, id_).findtext(BODY) == 'for one'
    el, fwd = recv_carbon(a2, 'received')
    check_wrapper(el, a2)
    assert fwd.get('id') == id_ and fwd.get('to') == a1.jid, to_str(el)
    assert fwd.get('from') == b.jid, to_str(el)
    no_message(a1)
    # To the bare JID with equal priorities: both get the original only.
    id_ = b.message(bare(a1.jid), 'for both')
    recv_message(a1, id_)
    recv_message(a2, id_)
    no_message(a1)
    no_message(a2)
    # A resource of negative priority does not get the original (RFC 6121
    # §8.5.2.1.1): it gets a copy.
    a2.presence('<priority>-1</priority>')
    quiet(a2)
    quiet(a1)
    id_ = b.message(bare(a1.jid), 'bare again')
    recv_message(a1, id_)
    el, fwd = recv_carbon(a2, 'received')
    assert fwd.get('id') == id_, to_str(el)
    no_message(a1)


def test_private_and_no_copy_are_not_copied(srv):
    a1, a2, b = three(srv)
    id_ = a1.message(b.jid, 'secret', extra=PRIVATE)
    el = recv_message(b, id_)
    # §8: bob's server (the same one) strips <private/>.
    assert el.find('{%s}private' % NS_CARBONS) is None, to_str(el)
    id2 = a1.message(b.jid, 'hint', extra=NO_COPY)
    recv_message(b, id2)
    id3 = b.message(a1.jid, 'private reply', extra=PRIVATE)
    el = recv_message(a1, id3)
    assert el.find('{%s}private' % NS_CARBONS) is None, to_str(el)
    b.message(a1.jid, 'hint reply', extra=NO_COPY)
    for t in ('headline', 'groupchat'):
        b.message(a1.jid, t, type_=t)
    no_message(b)
    no_message(a2)


def test_disabled_resource_gets_nothing(srv):
    a1, a2, b = three(srv)
    enable(a2, 'disable')
    id_in = b.message(a1.jid, 'in')
    id_out = a1.message(b.jid, 'out')
    recv_message(a1, id_in)
    recv_message(b, id_out)
    no_message(a1)
    no_message(a2)
    # Enabled again, it gets copies again.
    enable(a2)
    id_ = b.message(a1.jid, 'again')
    el, fwd = recv_carbon(a2, 'received')
    assert fwd.get('id') == id_, to_str(el)


def test_forged_carbon_is_refused(srv):
    a1, a2, b = three(srv)
    forged = ("<message to='%s' id='forged' type='chat'>"
              "<received xmlns='%s'><forwarded xmlns='%s'>"
              "<message xmlns='jabber:client' from='%s' to='%s' type='chat'>"
              "<body>fake</body></message></forwarded></received></message>")
    # To bob, and to alice's own bare JID (where it would come from the
    # account's bare JID if the server let it through).
    for to in (b.jid, bare(a1.jid)):
        a1.send(forged % (to, NS_CARBONS, NS_FORWARD, b.jid, a2.jid))
        el = recv_message(a1, 'forged')
        assert el.get('type') == 'error', to_str(el)
        assert el.find('{jabber:client}error/{%s}not-acceptable' % NS_STANZAS) \
            is not None, to_str(el)
        # The error does not carry the forged payload back.
        assert el.find('{%s}received' % NS_CARBONS) is None, to_str(el)
    no_message(b)
    no_message(a2)
    no_message(a1)


def test_message_to_own_resource(srv):
    a1, a2, b = three(srv)
    # The other resource gets the message itself; the sender no copy.
    id_ = a1.message(a2.jid, 'note to self')
    assert recv_message(a2, id_).findtext(BODY) == 'note to self'
    no_message(a1)
    no_message(a2)
