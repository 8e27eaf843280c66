"""Subscriptions (RFC 6121 §3, Appendix A) and presence (§4) through
mod_roster: both sides online, the contact offline (requests kept and
re-delivered at login), pre-approval, cancellation and unsubscription,
broadcast, probes at login, unavailable on clean and abrupt ends, directed
presence, priorities, remote contacts."""

import asyncio

import pytest

from rawxmpp import local, to_str
from test_roster import GROUP, ITEM, Q, Peer, cond_of, login

BODY = '{jabber:client}body'


def online(server, user, pw, resource=None, presence=True, extra=''):
    """Logged in, roster requested (so it gets pushes), available."""
    p = login(server, user, pw, resource)
    p.roster()
    if presence:
        p.presence(extra=extra)
        p.wait_presence(frm=p.jid)   # our own broadcast comes back (§4.2.2)
    return p


def is_sub(type_, frm):
    return lambda e: (local(e.tag) == 'presence' and e.get('type') == type_
                      and (e.get('from') or '').split('/')[0] == frm)


def subscribe(a, b, b_had=None, a_has=None):
    """a asks for b's presence, b approves; checks the pushes on both sides.
    b_had: b's subscription to a before ('none' or 'to')."""
    a.presence(to=b.bare, type_='subscribe')
    a.push(b.bare, ask='subscribe')
    b.wait(is_sub('subscribe', a.bare), 5, 'subscribe from %s' % a.bare)
    b.presence(to=a.bare, type_='subscribed')
    b.push(a.bare, subscription='both' if b_had == 'to' else 'from')
    a.wait(is_sub('subscribed', b.bare), 5, 'subscribed from %s' % b.bare)
    it = a.push(b.bare, subscription='both' if a_has == 'from' else 'to')
    assert it.get('ask') is None
    # b's server sends b's presence once a may see it (§3.1.5)
    a.wait_presence(frm=b.jid)


def friends(a, b):
    subscribe(a, b)
    subscribe(b, a, b_had='to', a_has='from')


@pytest.fixture
def pair(server):
    an, ap = server.new_user(prefix='pa')
    bn, bp = server.new_user(prefix='pb')
    a = online(server, an, ap, 'ra')
    b = online(server, bn, bp, 'rb')
    yield a, b, (an, ap), (bn, bp)
    a.close()
    b.close()


def test_subscription_both_online(server, pair):
    a, b, _, _ = pair
    a.presence(to=b.bare, type_='subscribe', extra='<status>add me</status>')
    it = a.push(b.bare, ask='subscribe', subscription='none')
    req = b.wait(is_sub('subscribe', a.bare))
    assert req.get('from') == a.bare          # stamped with the bare JID
    assert req.findtext('{jabber:client}status') == 'add me'
    b.no_push(0.3)                            # Pending In is not an item
    assert a.bare not in b.items()
    b.presence(to=a.bare, type_='subscribed')
    b.push(a.bare, subscription='from')
    a.wait(is_sub('subscribed', b.bare))
    a.push(b.bare, subscription='to')
    a.wait_presence(frm=b.jid)
    # and back
    subscribe(b, a, b_had='to', a_has='from')
    assert a.items()[b.bare].get('subscription') == 'both'
    assert b.items()[a.bare].get('subscription') == 'both'
    # a subsequent presence reaches the contact
    a.presence(extra='<show>away</show>')
    p = b.wait_presence(frm=a.jid)
    assert p.findtext('{jabber:client}show') == 'away'
    # subscribing again when already subscribed: b's server answers for b
    # (§3.1.3) and a's server ignores the answer (A.3.2): nothing changes
    a.presence(to=b.bare, type_='subscribe')
    b.none(is_sub('subscribe', a.bare), 0.3)
    a.no_push(0.2)
    assert a.items()[b.bare].get('subscription') == 'both'


def test_subscription_contact_offline(server):
    an, ap = server.new_user(prefix='oa')
    bn, bp = server.new_user(prefix='ob')
    a = online(server, an, ap, 'ra')
    b_bare = '%s@localhost' % bn
    a.presence(to=b_bare, type_='subscribe',
               extra="<status>hello</status><nick xmlns='http://jabber.org/"
               "protocol/nick'>Alice</nick>")
    a.push(b_bare, ask='subscribe')
    # b logs in: the request is delivered with its status and nick
    b = online(server, bn, bp, 'one')
    req = b.wait(is_sub('subscribe', a.bare), 5, 'the stored request')
    assert req.findtext('{jabber:client}status') == 'hello'
    assert req.findtext('{http://jabber.org/protocol/nick}nick') == 'Alice'
    b.close()
    # not answered: delivered again at the next login (§3.1.3)
    b = online(server, bn, bp, 'two')
    b.wait(is_sub('subscribe', a.bare), 5, 'the request again')
    # a goes offline; b approves: a's roster changes while a is away
    a.close()
    b.presence(to=a.bare, type_='subscribed')
    b.push(a.bare, subscription='from')
    b.ping()
    b.close()
    a = login(server, an, ap, 'back')
    it = a.items()[b_bare]
    assert it.get('subscription') == 'to' and it.get('ask') is None
    # answered: not delivered any more
    b = online(server, bn, bp, 'three')
    b.none(is_sub('subscribe', a.bare), 0.5)
    a.close()
    b.close()


def test_subscription_request_to_unknown_user(server):
    an, ap = server.new_user(prefix='ua')
    a = online(server, an, ap)
    a.presence(to='nobody-here@localhost', type_='subscribe')
    a.push('nobody-here@localhost', ask='subscribe')
    # §8.5.1: the server answers for the account that does not exist
    a.wait(is_sub('unsubscribed', 'nobody-here@localhost'))
    it = a.push('nobody-here@localhost', subscription='none')
    assert it.get('ask') is None
    a.close()


def test_pre_approval(server, pair):
    a, b, _, _ = pair
    # b pre-approves a before any request (§3.4)
    b.presence(to=a.bare, type_='subscribed')
    it = b.push(a.bare, approved='true', subscription='none')
    a.none(is_sub('subscribed', b.bare), 0.3)   # nothing routed
    a.presence(to=b.bare, type_='subscribe')
    a.push(b.bare, ask='subscribe')
    # approved at once, without asking b
    a.wait(is_sub('subscribed', b.bare))
    a.push(b.bare, subscription='to')
    a.wait_presence(frm=b.jid)
    it = b.push(a.bare, subscription='from')
    assert it.get('approved') is None
    b.none(is_sub('subscribe', a.bare), 0.3)


def test_unsubscribe_and_unsubscribed(server, pair):
    a, b, _, _ = pair
    friends(a, b)
    # a cancels its subscription to b (§3.3)
    a.presence(to=b.bare, type_='unsubscribe')
    a.push(b.bare, subscription='from')
    b.wait(is_sub('unsubscribe', a.bare))
    b.push(a.bare, subscription='to')
    # a no longer sees b: b's server says b is gone (§3.3.3)
    a.wait_presence(frm=b.jid, type_='unavailable')
    # b's presence no longer reaches a; a's still reaches b
    b.presence(extra='<show>xa</show>')
    a.no_presence(frm=b.bare, seconds=0.5)
    a.presence(extra='<show>chat</show>')
    b.wait_presence(frm=a.jid)
    # a cancels b's subscription to a (§3.2): b gets unavailable
    a.presence(to=b.bare, type_='unsubscribed')
    a.push(b.bare, subscription='none')
    b.wait(is_sub('unsubscribed', a.bare))
    b.push(a.bare, subscription='none')
    b.wait_presence(frm=a.jid, type_='unavailable')
    a.presence(extra='<show>dnd</show>')
    b.no_presence(frm=a.bare, seconds=0.5)
    # removing the item of a contact cancels both ways (§2.5.2)
    friends(a, b)
    r = a.remove_item(b.bare)
    assert r.get('type') == 'result'
    a.push(b.bare, subscription='remove')
    b.wait(is_sub('unsubscribe', a.bare))
    b.wait(is_sub('unsubscribed', a.bare))
    b.wait_presence(frm=a.jid, type_='unavailable')
    assert b.items()[a.bare].get('subscription') == 'none'


def test_deny_pending_request(server, pair):
    a, b, _, _ = pair
    a.presence(to=b.bare, type_='subscribe')
    a.push(b.bare, ask='subscribe')
    b.wait(is_sub('subscribe', a.bare))
    b.presence(to=a.bare, type_='unsubscribed')
    a.wait(is_sub('unsubscribed', b.bare))
    it = a.push(b.bare, subscription='none')
    assert it.get('ask') is None
    b.ping()
    assert a.bare not in b.items()


def test_presence_at_login_probes_and_broadcast(server, pair):
    a, b, (an, ap), _ = pair
    friends(a, b)
    b.presence(extra='<status>at work</status>')
    a.wait_presence(frm=b.jid)
    a2 = login(server, an, ap, 'second')
    a2.roster()
    a2.presence(extra='<priority>3</priority>')
    # the contact and a's other resource see a2 come online
    p = b.wait_presence(frm=a2.jid)
    assert p.findtext('{jabber:client}priority') == '3'
    a.wait_presence(frm=a2.jid)
    a2.wait_presence(frm=a2.jid)
    # a2 learns b's current presence (probe) and a's other resource
    p = a2.wait_presence(frm=b.jid)
    assert p.findtext('{jabber:client}status') == 'at work'
    a2.wait_presence(frm=a.jid)
    a2.close()


def test_probe_from_stranger_not_answered(server, pair):
    a, b, _, _ = pair
    b.presence(to=a.bare, type_='probe')
    b.none(lambda e: local(e.tag) == 'presence' and
           (e.get('from') or '').startswith(a.bare), 0.5)
    # a subscriber's probe is answered
    subscribe(b, a)
    b.presence(to=a.bare, type_='probe')
    b.wait_presence(frm=a.jid)


def test_unavailable_on_clean_logout(server, pair):
    a, b, (an, ap), _ = pair
    friends(a, b)
    a2 = online(server, an, ap, 'leaving')
    b.wait_presence(frm=a2.jid)
    a.wait_presence(frm=a2.jid)
    a2.close()
    b.wait_presence(frm=a2.jid, type_='unavailable')
    a.wait_presence(frm=a2.jid, type_='unavailable')


def test_unavailable_on_abrupt_disconnect(server, pair):
    a, b, (an, ap), _ = pair
    friends(a, b)
    a2 = online(server, an, ap, 'crashing')
    b.wait_presence(frm=a2.jid)
    a2.raw.sock.close()       # no </stream:stream>: the TCP socket dies
    b.wait_presence(frm=a2.jid, type_='unavailable', timeout=10)
    a.wait_presence(frm=a2.jid, type_='unavailable', timeout=10)


def test_unavailable_presence_explicit(server, pair):
    a, b, _, _ = pair
    friends(a, b)
    a.presence(type_='unavailable', extra='<status>gone fishing</status>')
    p = b.wait_presence(frm=a.jid, type_='unavailable')
    assert p.findtext('{jabber:client}status') == 'gone fishing'
    # back: a new initial presence probes again
    a.presence()
    b.wait_presence(frm=a.jid)
    a.wait_presence(frm=b.jid)


def test_directed_presence(server, pair):
    a, b, _, _ = pair
    cn, cp = server.new_user(prefix='pc')
    c = online(server, cn, cp, 'rc')
    # no subscription between a and c
    a.presence(to=c.jid, extra='<status>psst</status>')
    p = c.wait_presence(frm=a.jid)
    assert p.findtext('{jabber:client}status') == 'psst'
    # a's later broadcasts do not go to c (§4.6)
    a.presence(extra='<show>away</show>')
    c.no_presence(frm=a.bare, seconds=0.4)
    # b got a directed presence too, then a directed unavailable
    a.presence(to=b.jid)
    b.wait_presence(frm=a.jid)
    a.presence(to=b.jid, type_='unavailable')
    b.wait_presence(frm=a.jid, type_='unavailable')
    # a's session ends abruptly: c learns it, b (already told) does not
    a.raw.sock.close()
    c.wait_presence(frm=a.jid, type_='unavailable', timeout=10)
    b.no_presence(frm=a.bare, type_='unavailable', seconds=0.5)
    c.close()


def test_invalid_presence_type(server, pair):
    a, b, _, _ = pair
    a.presence(to=b.jid, type_='bogus')
    err = a.wait(lambda e: local(e.tag) == 'presence' and e.get('type') == 'error')
    assert cond_of(err) == 'bad-request'
    b.no_presence(frm=a.bare, type_='bogus', seconds=0.3)


def test_priority_and_bare_message_delivery(server, pair):
    a, b, (an, ap), (bn, bp) = pair
    friends(a, b)
    hi = online(server, bn, bp, 'hi', extra='<priority>5</priority>')
    neg = online(server, bn, bp, 'neg', extra='<priority>-1</priority>')
    for r in (hi, neg):
        r.ping()
    a.raw.message(b.bare, 'to the best')
    m = hi.wait(lambda e: local(e.tag) == 'message')
    assert m.findtext(BODY) == 'to the best'
    b.none(lambda e: local(e.tag) == 'message', 0.3)
    neg.none(lambda e: local(e.tag) == 'message', 0.1)
    # full JID still reaches a negative-priority resource
    a.raw.message(neg.jid, 'direct')
    m = neg.wait(lambda e: local(e.tag) == 'message')
    assert m.findtext(BODY) == 'direct'
    hi.close()
    neg.close()


def test_remote_contact(server):
    an, ap = server.new_user(prefix='rem')
    a = online(server, an, ap)
    assert a.set_item('far@remote.invalid', 'Far', ['Away']).get('type') == 'result'
    a.push('far@remote.invalid', subscription='none')
    a.presence(to='far@remote.invalid', type_='subscribe')
    a.push('far@remote.invalid', ask='subscribe')
    a.ping()
    server.check_alive()
    a.close()
    a = online(server, an, ap, 'again')
    it = a.items()['far@remote.invalid']
    assert it.get('ask') == 'subscribe' and it.get('name') == 'Far'
    assert [g.text for g in it.findall(GROUP)] == ['Away']
    # removal with a pending request to a remote domain
    assert a.remove_item('far@remote.invalid').get('type') == 'result'
    a.ping()
    server.check_alive()
    a.close()


def test_slixmpp_subscription_and_presence(server):
    import slixutil
    an, ap = server.new_user(prefix='sla')
    bn, bp = server.new_user(prefix='slb')

    async def scenario():
        a = server.slix('%s@localhost/sa' % an, ap)
        b = server.slix('%s@localhost/sb' % bn, bp)
        await a.start()
        await b.start()
        await a.get_roster()
        await b.get_roster()
        loop = asyncio.get_event_loop()
        b_online = loop.create_future()
        b_offline = loop.create_future()

        def on_avail(p):
            if p['from'].bare == b.boundjid.bare and not b_online.done():
                b_online.set_result(p)

        def on_unavail(p):
            if p['from'].bare == b.boundjid.bare and not b_offline.done():
                b_offline.set_result(p)
        a.add_event_handler('got_online', on_avail)
        a.add_event_handler('presence_unavailable', on_unavail)
        # slixmpp authorizes and subscribes back automatically
        a.send_presence(pto=b.boundjid.bare, ptype='subscribe')
        await asyncio.wait_for(b_online, 10)
        # Each side learns from its own roster push, in no set order.
        for _ in range(100):
            if a.client_roster[b.boundjid.bare]['subscription'] == 'both' \
                    and b.client_roster[a.boundjid.bare]['subscription'] \
                    == 'both':
                break
            await asyncio.sleep(0.05)
        assert a.client_roster[b.boundjid.bare]['subscription'] == 'both'
        assert b.client_roster[a.boundjid.bare]['subscription'] == 'both'
        b.abort()
        await asyncio.wait_for(b_offline, 10)
        await a.stop()

    slixutil.run(scenario, timeout=40)


# ---- issue 19: stored requests, probes, own unavailable ----------------

def test_stored_request_keeps_extended_content(server):
    """RFC 6121 §3.1.3: a request stored for an offline contact is kept
    whole and delivered as it came, extensions included (XEP-0379
    <preauth/>, any other payload), not rebuilt from status and nick."""
    an, ap = server.new_user(prefix='xa')
    bn, bp = server.new_user(prefix='xb')
    a = online(server, an, ap, 'ra')
    b_bare = '%s@localhost' % bn
    a.presence(to=b_bare, type_='subscribe',
               extra="<status>hi</status><preauth xmlns='urn:xmpp:pars:0' "
               "token='tok-3f9a'/><x xmlns='urn:example:extra'>"
               "<y a='1'>deep &amp; text</y></x>")
    a.push(b_bare, ask='subscribe')
    a.ping()
    for resource in ('one', 'two'):   # from the store, at every login
        b = online(server, bn, bp, resource)
        req = b.wait(is_sub('subscribe', a.bare), 5, 'the stored request')
        assert req.get('from') == a.bare and req.get('to') in (b.bare, b.jid)
        assert req.findtext('{jabber:client}status') == 'hi'
        pa = req.find('{urn:xmpp:pars:0}preauth')
        assert pa is not None and pa.get('token') == 'tok-3f9a', to_str(req)
        y = req.find('{urn:example:extra}x/{urn:example:extra}y')
        assert y is not None and y.get('a') == '1', to_str(req)
        assert y.text == 'deep & text'
        b.close()
    a.close()


def test_own_unavailable_reaches_every_resource(server, pair):
    """RFC 6121 §4.5.2: the unavailable notification goes to all of the
    user's available resources as well as to the resource that sent it."""
    a, b, (an, ap), _ = pair
    a2 = online(server, an, ap, 'second')
    a.wait_presence(frm=a2.jid)
    a.presence(type_='unavailable', extra='<status>off</status>')
    p = a2.wait_presence(frm=a.jid, type_='unavailable')
    assert p.findtext('{jabber:client}status') == 'off'
    p = a.wait_presence(frm=a.jid, type_='unavailable')
    assert p.findtext('{jabber:client}status') == 'off'
    a2.close()


def is_unsubscribed_from(bare):
    return is_sub('unsubscribed', bare)


@pytest.mark.parametrize('contact_state', ['offline', 'online', 'no-account'])
def test_probe_without_subscription_is_unsubscribed(server, contact_state):
    """RFC 6121 §4.3.2: a probe from a JID that is not subscribed (the
    contact's item has neither from nor both), or to an account that does
    not exist, is answered with unsubscribed; the prober's server then
    cancels the ghost subscription (§3.2.3)."""
    an, ap = server.new_user(prefix='pg')
    if contact_state == 'no-account':
        cn = 'ghost-%s' % an
    else:
        cn, cp = server.new_user(prefix='pc')
    c_bare = '%s@localhost' % cn
    if contact_state == 'online':
        c = online(server, cn, cp, 'rc')
    # a thinks it is subscribed to c; c never approved (no item at all)
    server.ctl('add_rosteritem', an, 'localhost', cn, 'localhost', 'C', 'G',
               'to', expect=0)
    a = online(server, an, ap, 'ra')   # initial presence probes c
    a.wait(is_unsubscribed_from(c_bare), 5, 'unsubscribed from %s' % c_bare)
    it = a.push(c_bare, subscription='none')
    assert it.get('ask') is None
    assert a.items()[c_bare].get('subscription') == 'none'
    if contact_state == 'online':
        # c's roster is untouched; c saw nothing of it
        assert a.bare not in c.items()
        c.close()
    a.close()


def test_probe_with_pending_request_not_cancelled(server, pair):
    """A probe from who has asked for a subscription still pending
    (Pending In at the contact) is not answered with unsubscribed: that
    would cancel the request at the prober's server."""
    a, b, _, _ = pair
    a.presence(to=b.bare, type_='subscribe')
    a.push(b.bare, ask='subscribe')
    b.wait(is_sub('subscribe', a.bare))
    a.presence(to=b.bare, type_='probe')
    a.none(is_unsubscribed_from(b.bare), 0.5)
    assert a.items()[b.bare].get('ask') == 'subscribe'


def test_probe_of_offline_subscribed_contact_keeps_subscription(server):
    """The other side of §4.3.2: a real subscription to a contact who is
    offline gets no unsubscribed (nothing, as allowed), and stays."""
    an, ap = server.new_user(prefix='sa')
    cn, cp = server.new_user(prefix='sc')
    a = online(server, an, ap, 'ra')
    c = online(server, cn, cp, 'rc')
    subscribe(a, c)
    a.close()
    c.close()
    c_bare = '%s@localhost' % cn
    a = online(server, an, ap, 'again')    # probes offline c
    a.none(is_unsubscribed_from(c_bare), 0.7)
    assert a.items()[c_bare].get('subscription') == 'to'
    a.close()
