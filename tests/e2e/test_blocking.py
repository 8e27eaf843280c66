"""mod_blocking: simple communications blocking (XEP-0191)."""

import time
from xml.sax.saxutils import quoteattr

import rawxmpp
from rawxmpp import NS_DISCO_INFO, NS_STANZAS, local, stanza_error, to_str

NS_BLOCKING = 'urn:xmpp:blocking'
NS_BLOCKING_ERRORS = 'urn:xmpp:blocking:errors'
NS_LAST = 'jabber:iq:last'
BODY = '{jabber:client}body'


# ---- helpers -----------------------------------------------------------

def items_xml(jids):
    return ''.join('<item jid=%s/>' % quoteattr(j) for j in jids)


def get_blocklist(c):
    r = c.iq('get', "<blocklist xmlns='%s'/>" % NS_BLOCKING)
    assert r.get('type') == 'result', to_str(r)
    bl = r.find('{%s}blocklist' % NS_BLOCKING)
    assert bl is not None, to_str(r)
    return sorted(i.get('jid') for i in bl.findall('{%s}item' % NS_BLOCKING))


def block(c, *jids, ok=True):
    r = c.iq('set', "<block xmlns='%s'>%s</block>" % (NS_BLOCKING, items_xml(jids)))
    if ok:
        assert r.get('type') == 'result', to_str(r)
    return r


def unblock(c, *jids, ok=True):
    r = c.iq('set', "<unblock xmlns='%s'>%s</unblock>" % (NS_BLOCKING, items_xml(jids)))
    if ok:
        assert r.get('type') == 'result', to_str(r)
    return r


def barrier(c):
    """Everything c sent before has been routed (a session's stanzas are
    processed in order).  Skips whatever arrives meanwhile."""
    assert c.ping().get('type') == 'result'


def quiet(c, allow=lambda el: False):
    """Nothing but what allow() accepts reached c before a ping answer."""
    rawxmpp.quiet(c, allow)


def own_presence(c):
    return lambda el: local(el.tag) == 'presence' and el.get('from') == c.jid


def is_push(el, op):
    return (local(el.tag) == 'iq' and el.get('type') == 'set'
            and el.find('{%s}%s' % (NS_BLOCKING, op)) is not None)


def push_items(el, op):
    return sorted(i.get('jid') for i in
                  el.find('{%s}%s' % (NS_BLOCKING, op)).findall('{%s}item' % NS_BLOCKING))


def recv_push(c, op):
    el = c.recv_until(lambda e: is_push(e, op), what='a blocking %s push' % op)
    assert el.get('to') == c.jid, to_str(el)
    assert el.get('from') in (None, c.jid.split('/')[0]), to_str(el)
    # acknowledge it, as a client does (RFC 6120 8.2.3)
    c.send("<iq type='result' id=%s/>" % quoteattr(el.get('id')))
    return el


def is_message_from(el, jid):
    return local(el.tag) == 'message' and (el.get('from') or '').startswith(jid)


def login_pair(server, presence=True):
    a, apw = server.new_user(prefix='blk')
    b, bpw = server.new_user(prefix='blk')
    ca = server.login(a, apw, resource='ra')
    cb = server.login(b, bpw, resource='rb')
    if presence:
        ca.presence()
        cb.presence()
    return (a, apw, ca), (b, bpw, cb)


def subscribe_both(server, a, b, host_a='localhost', host_b='localhost'):
    """Mutual presence subscription, written by mod_roster's command."""
    server.ctl('add_rosteritem', a, host_a, b, host_b, b, 'Friends', 'both', expect=0)
    server.ctl('add_rosteritem', b, host_b, a, host_a, a, 'Friends', 'both', expect=0)


def wait_offline(server, bare, timeout=10.0):
    """Until the server has ended every session of bare."""
    deadline = time.monotonic() + timeout
    while True:
        out = server.ctl('connected_users', expect=0).stdout.split()
        if not any(j.startswith(bare + '/') for j in out):
            return
        assert time.monotonic() < deadline, '%s still connected: %s' % (bare, out)
        time.sleep(0.02)


def presence_from(c, jid, type_=None, timeout=None):
    def pred(el):
        return (local(el.tag) == 'presence' and el.get('from') == jid
                and el.get('type') == type_)
    return c.recv_until(pred, timeout, what='presence type=%s from %s' % (type_, jid))


# ---- the list ----------------------------------------------------------

def test_disco_feature(server, user):
    name, pw = user
    c = server.login(name, pw)
    r = c.iq('get', "<query xmlns='%s'/>" % NS_DISCO_INFO, to='localhost')
    feats = [f.get('var') for f in r.iter('{%s}feature' % NS_DISCO_INFO)]
    assert NS_BLOCKING in feats, feats


def test_blocklist_get_block_unblock_unblock_all(server, user):
    name, pw = user
    c = server.login(name, pw)
    assert get_blocklist(c) == []
    block(c, 'Romeo@Montague.example', 'evil.example', 'iago@shakespeare.example/Res')
    # stored in prepared form (nodeprep lower-cases the localpart)
    expect = ['evil.example', 'iago@shakespeare.example/Res', 'romeo@montague.example']
    assert get_blocklist(c) == expect
    # blocking again is harmless, nothing is duplicated
    block(c, 'evil.example')
    assert get_blocklist(c) == expect
    unblock(c, 'evil.example')
    assert get_blocklist(c) == ['iago@shakespeare.example/Res', 'romeo@montague.example']
    # unblocking what is not blocked succeeds too
    unblock(c, 'nobody@nowhere.example')
    # the list is stored: a new session reads it back
    c.close()
    c = server.login(name, pw, resource='again')
    assert get_blocklist(c) == ['iago@shakespeare.example/Res', 'romeo@montague.example']
    r = c.iq('set', "<unblock xmlns='%s'/>" % NS_BLOCKING)
    assert r.get('type') == 'result', to_str(r)
    assert get_blocklist(c) == []
    c.close()
    c = server.login(name, pw, resource='third')
    assert get_blocklist(c) == []


def test_block_errors(server, user):
    name, pw = user
    c = server.login(name, pw)
    r = block(c, ok=False)  # no item
    assert r.get('type') == 'error' and stanza_error(r)[1] == 'bad-request', to_str(r)
    r = c.iq('set', "<block xmlns='%s'><item/></block>" % NS_BLOCKING)
    assert r.get('type') == 'error' and stanza_error(r)[1] == 'bad-request', to_str(r)
    for bad in ('@localhost', 'user@', 'a@b/', ''):
        r = block(c, bad, ok=False)
        assert r.get('type') == 'error', to_str(r)
        assert stanza_error(r)[1] == 'jid-malformed', (bad, to_str(r))
        r = unblock(c, bad, ok=False)
        assert stanza_error(r)[1] == 'jid-malformed', (bad, to_str(r))
    # a malformed item rejects the whole request
    r = block(c, 'fine@example.org', '@bad', ok=False)
    assert stanza_error(r)[1] == 'jid-malformed', to_str(r)
    assert get_blocklist(c) == []


def test_other_users_blocklist_is_not_served(server):
    (a, _, ca), (b, _, cb) = login_pair(server, presence=False)
    block(ca, 'x@example.org')
    for payload in ("<blocklist xmlns='%s'/>" % NS_BLOCKING,):
        r = cb.iq('get', payload, to='%s@localhost' % a)
        assert r.get('type') == 'error', to_str(r)
        assert stanza_error(r)[1] == 'service-unavailable', to_str(r)
    r = cb.iq('set', "<unblock xmlns='%s'/>" % NS_BLOCKING, to='%s@localhost' % a)
    assert stanza_error(r)[1] == 'service-unavailable', to_str(r)
    assert get_blocklist(ca) == ['x@example.org']


def test_max_items(make_server, driver):
    srv = make_server(driver, modules={'mod_blocking': {'max_items': 2}})
    name, pw = srv.new_user()
    c = srv.login(name, pw)
    r = block(c, 'a@example.org', 'b@example.org', 'c@example.org', ok=False)
    assert r.get('type') == 'error' and stanza_error(r)[1] == 'policy-violation', to_str(r)
    assert get_blocklist(c) == []
    block(c, 'a@example.org', 'b@example.org')
    block(c, 'a@example.org')  # nothing new: fine
    r = block(c, 'c@example.org', ok=False)
    assert stanza_error(r)[1] == 'policy-violation', to_str(r)
    assert get_blocklist(c) == ['a@example.org', 'b@example.org']


def test_pushes_to_resources_that_asked(server, user):
    name, pw = user
    c1 = server.login(name, pw, resource='one')
    c2 = server.login(name, pw, resource='two')
    c3 = server.login(name, pw, resource='three')  # never asks for the list
    get_blocklist(c1)
    get_blocklist(c2)
    block(c1, 'romeo@montague.example', 'evil.example')
    for c in (c1, c2):
        el = recv_push(c, 'block')
        assert push_items(el, 'block') == ['evil.example', 'romeo@montague.example'], to_str(el)
    unblock(c2, 'evil.example')
    for c in (c1, c2):
        el = recv_push(c, 'unblock')
        assert push_items(el, 'unblock') == ['evil.example'], to_str(el)
    r = c1.iq('set', "<unblock xmlns='%s'/>" % NS_BLOCKING)
    assert r.get('type') == 'result', to_str(r)
    for c in (c1, c2):
        el = recv_push(c, 'unblock')
        assert push_items(el, 'unblock') == [], to_str(el)
    quiet(c3)


# ---- inbound -----------------------------------------------------------

def test_blocked_contact_message_and_iq_refused(server):
    (a, _, ca), (b, _, cb) = login_pair(server)
    a_full, a_bare = ca.jid, '%s@localhost' % a
    block(ca, '%s@localhost' % b)
    for to in (a_bare, a_full):
        mid = cb.message(to, 'hello?')
        err = cb.recv_stanza('message', id=mid)
        assert err.get('type') == 'error', to_str(err)
        assert stanza_error(err) == ('cancel', 'service-unavailable'), to_str(err)
    r = cb.iq('get', "<query xmlns='jabber:iq:version'/>", to=a_full)
    assert r.get('type') == 'error', to_str(r)
    assert stanza_error(r) == ('cancel', 'service-unavailable'), to_str(r)
    # presence from the blocked contact is dropped without an error
    cb.send("<presence to=%s/>" % quoteattr(a_full))
    cb.send("<presence to=%s type='subscribe'/>" % quoteattr(a_bare))
    # an error from the blocked contact is not answered (no loop)
    cb.send("<message to=%s type='error' id='e1'><error type='cancel'>"
            "<item-not-found xmlns='%s'/></error></message>" % (quoteattr(a_full), NS_STANZAS))
    quiet(cb, own_presence(cb))
    # a got nothing at all from b
    quiet(ca)


def test_blocked_contact_message_not_stored_offline(server):
    (a, apw, ca), (b, _, cb) = login_pair(server)
    c_name, c_pw = server.new_user(prefix='blk')
    cc = server.login(c_name, c_pw)
    a_bare = '%s@localhost' % a
    block(ca, '%s@localhost' % b)
    ca.close()
    wait_offline(server, a_bare)
    # the list of an offline user is read from the store
    mid = cb.message(a_bare, 'blocked one', type_='chat')
    err = cb.recv_stanza('message', id=mid)
    assert stanza_error(err) == ('cancel', 'service-unavailable'), to_str(err)
    # control: a message from somebody else is kept for a
    cc.message(a_bare, 'from a friend', type_='chat')
    barrier(cc)
    ca = server.login(a, apw, resource='back')
    ca.presence()
    got = ca.recv_until(lambda e: local(e.tag) == 'message', what='the offline message')
    assert got.findtext(BODY) == 'from a friend', to_str(got)
    quiet(ca, lambda el: local(el.tag) == 'presence')


def test_domain_and_full_jid_matching(server):
    a, apw = server.new_user(prefix='blk')
    b, bpw = server.new_user(prefix='blk')
    x, xpw = server.new_user('example.test', prefix='blk')
    ca = server.login(a, apw, resource='ra')
    cb1 = server.login(b, bpw, resource='one')
    cb2 = server.login(b, bpw, resource='two')
    cx = server.login(x, xpw, 'example.test')
    for c in (ca, cb1, cb2, cx):
        c.presence()
    a_full = ca.jid
    block(ca, 'example.test', '%s@localhost/one' % b)
    # example.test is blocked as a whole
    mid = cx.message(a_full, 'hi')
    assert stanza_error(cx.recv_stanza('message', id=mid))[1] == 'service-unavailable'
    # only b's resource "one" is blocked
    mid = cb1.message(a_full, 'from one')
    assert stanza_error(cb1.recv_stanza('message', id=mid))[1] == 'service-unavailable'
    cb2.message(a_full, 'from two')
    got = ca.recv_until(lambda e: local(e.tag) == 'message', what='the message from two')
    assert got.findtext(BODY) == 'from two', to_str(got)
    assert got.get('from') == cb2.jid, to_str(got)


# ---- outbound ----------------------------------------------------------

def test_messaging_a_blocked_contact_is_refused(server):
    (a, _, ca), (b, _, cb) = login_pair(server)
    b_bare = '%s@localhost' % b
    block(ca, b_bare)
    for to in (b_bare, cb.jid):
        mid = ca.message(to, 'you there?')
        err = ca.recv_stanza('message', id=mid)
        assert err.get('type') == 'error', to_str(err)
        assert stanza_error(err) == ('cancel', 'not-acceptable'), to_str(err)
        e = err.find('{jabber:client}error')
        assert e.find('{%s}blocked' % NS_BLOCKING_ERRORS) is not None, to_str(err)
    r = ca.iq('get', "<ping xmlns='urn:xmpp:ping'/>", to=cb.jid)
    assert stanza_error(r) == ('cancel', 'not-acceptable'), to_str(r)
    assert r.find('{jabber:client}error/{%s}blocked' % NS_BLOCKING_ERRORS) is not None, to_str(r)
    # directed presence is dropped silently
    ca.send("<presence to=%s/>" % quoteattr(cb.jid))
    quiet(ca, own_presence(ca))
    # b saw a go offline when blocked (3.3), then nothing
    quiet(cb, lambda el: own_presence(cb)(el) or (
        el.get('from') == ca.jid and el.get('type') == 'unavailable'))
    # after unblocking, messages flow again both ways
    unblock(ca, b_bare)
    ca.message(cb.jid, 'back again')
    got = cb.recv_until(lambda e: local(e.tag) == 'message', what='the message')
    assert got.findtext(BODY) == 'back again', to_str(got)
    cb.message(ca.jid, 'welcome back')
    got = ca.recv_until(lambda e: local(e.tag) == 'message', what='the message')
    assert got.findtext(BODY) == 'welcome back', to_str(got)


# ---- presence ----------------------------------------------------------

def test_block_sends_unavailable_and_unblock_restores(server):
    a, apw = server.new_user(prefix='blk')
    b, bpw = server.new_user(prefix='blk')
    subscribe_both(server, a, b)
    a_bare, b_bare = '%s@localhost' % a, '%s@localhost' % b
    ca = server.login(a, apw, resource='ra')
    cb = server.login(b, bpw, resource='rb')
    ca.presence()
    cb.presence()
    presence_from(ca, cb.jid)
    presence_from(cb, ca.jid)
    barrier(ca)
    barrier(cb)
    block(ca, b_bare)
    # XEP-0191 3.3: b sees a go offline
    presence_from(cb, ca.jid, 'unavailable')
    # from now on b sees no presence of a, and a none of b
    ca.presence("<show>away</show>")
    quiet(ca, own_presence(ca))
    cb.presence("<show>dnd</show>")
    quiet(cb, own_presence(cb))
    quiet(ca)
    # XEP-0191 3.4: unblocking restores presence both ways
    unblock(ca, b_bare)
    p = presence_from(cb, ca.jid)
    assert p.findtext('{jabber:client}show') == 'away', to_str(p)
    p = presence_from(ca, cb.jid)
    assert p.findtext('{jabber:client}show') == 'dnd', to_str(p)


def test_no_unavailable_after_logout_to_blocked_contact(server):
    """The end-of-session unavailable goes through the outbound filter."""
    a, apw = server.new_user(prefix='blk')
    b, bpw = server.new_user(prefix='blk')
    subscribe_both(server, a, b)
    cb = server.login(b, bpw, resource='rb')
    cb.presence()
    presence_from(cb, cb.jid)  # its own presence comes back
    ca = server.login(a, apw, resource='ra')
    get_blocklist(ca)
    block(ca, '%s@localhost' % b)
    ca.presence()
    quiet(ca, lambda el: own_presence(ca)(el) or is_push(el, 'block'))
    ca.close()
    wait_offline(server, '%s@localhost' % a)
    # b never saw a available, nor unavailable
    quiet(cb)


def test_blocked_contact_cannot_read_last_activity(server):
    a, apw = server.new_user(prefix='blk')
    b, bpw = server.new_user(prefix='blk')
    subscribe_both(server, a, b)
    ca = server.login(a, apw)
    cb = server.login(b, bpw)
    ca.presence()
    q = "<query xmlns='%s'/>" % NS_LAST
    r = cb.iq('get', q, to='%s@localhost' % a)
    assert r.get('type') == 'result', to_str(r)
    block(ca, '%s@localhost' % b)
    r = cb.iq('get', q, to='%s@localhost' % a)
    assert stanza_error(r) == ('cancel', 'service-unavailable'), to_str(r)
    # also while a is offline (the list comes from the store)
    ca.close()
    wait_offline(server, '%s@localhost' % a)
    r = cb.iq('get', q, to='%s@localhost' % a)
    assert stanza_error(r) == ('cancel', 'service-unavailable'), to_str(r)


def test_slixmpp_blocking_plugin(server):
    import slixutil
    name, pw = server.new_user(prefix='slix')
    jid = '%s@localhost' % name

    async def scenario():
        c = server.slix(jid, pw)
        c.register_plugin('xep_0191')
        await c.start()
        await c['xep_0191'].block(['spam@example.org', 'junk.example'])
        items = await c['xep_0191'].get_blocked()
        got = sorted(str(j) for j in items['blocklist']['items'])
        await c['xep_0191'].unblock(['junk.example'])
        items2 = await c['xep_0191'].get_blocked()
        got2 = sorted(str(j) for j in items2['blocklist']['items'])
        await c.stop()
        return got, got2

    got, got2 = slixutil.run(scenario)
    assert got == ['junk.example', 'spam@example.org'], got
    assert got2 == ['spam@example.org'], got2
