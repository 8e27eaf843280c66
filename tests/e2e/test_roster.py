"""Rosters (RFC 6121 §2): get/set/remove, groups and names, pushes to the
interested resources, versioning (§2.6), the item limit, the error cases
of §2.3-2.5, and the pigeonctl roster commands.  test_presence.py imports
the helpers below."""

import time
from xml.sax.saxutils import escape, quoteattr

import pytest

import rawxmpp
from rawxmpp import local, new_id, stanza_error, to_str

NS_ROSTER = 'jabber:iq:roster'
Q = '{%s}query' % NS_ROSTER
ITEM = '{%s}item' % NS_ROSTER
GROUP = '{%s}group' % NS_ROSTER


class Peer:
    """A raw client that keeps what it did not wait for (the raw client's
    recv_until drops the stanzas it skips; roster pushes and presence
    often arrive interleaved with the answer we wait for)."""

    def __init__(self, raw):
        self.raw = raw
        self.jid = raw.jid
        self.bare = raw.jid.split('/')[0]
        self.backlog = []

    def send(self, data):
        self.raw.send(data)

    def wait(self, pred, timeout=30.0, what='a stanza'):
        for i, el in enumerate(self.backlog):
            if pred(el):
                return self.backlog.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError('%s: timeout waiting for %s; have: %s' % (
                    self.jid, what, [to_str(e) for e in self.backlog]))
            try:
                el = self.raw.recv(remaining)
            except rawxmpp.XMPPTimeout:
                continue
            if pred(el):
                return el
            self.backlog.append(el)

    def none(self, pred, seconds=0.5, what='a stanza'):
        """Asserts that no stanza matching pred arrives within seconds."""
        deadline = time.monotonic() + seconds
        while True:
            for el in self.backlog:
                assert not pred(el), '%s: unexpected %s' % (self.jid, to_str(el))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                el = self.raw.recv(remaining)
            except rawxmpp.XMPPTimeout:
                return
            self.backlog.append(el)

    def iq(self, type_, payload, to=None, timeout=30.0):
        iq_id = new_id('iq')
        attrs = " type='%s' id='%s'" % (type_, iq_id)
        if to:
            attrs += ' to=%s' % quoteattr(to)
        self.send('<iq%s>%s</iq>' % (attrs, payload))
        return self.wait(lambda e: local(e.tag) == 'iq' and e.get('id') == iq_id
                         and e.get('type') in ('result', 'error'), timeout,
                         'the answer to iq %s' % iq_id)

    def ping(self):
        """A barrier: everything sent before was processed."""
        r = self.iq('get', "<ping xmlns='urn:xmpp:ping'/>", to='localhost')
        assert r.get('type') == 'result'

    # ---- roster ----
    def roster(self, ver=None):
        """Roster get; returns the iq result."""
        v = '' if ver is None else ' ver=%s' % quoteattr(ver)
        r = self.iq('get', "<query xmlns='%s'%s/>" % (NS_ROSTER, v))
        assert r.get('type') == 'result', to_str(r)
        return r

    def items(self):
        """{jid: item element} of a full roster get."""
        q = self.roster().find(Q)
        assert q is not None
        return {i.get('jid'): i for i in q.findall(ITEM)}

    def set_item(self, jid, name=None, groups=(), extra=''):
        attrs = ' jid=%s' % quoteattr(jid)
        if name is not None:
            attrs += ' name=%s' % quoteattr(name)
        gs = ''.join('<group>%s</group>' % escape(g) for g in groups)
        return self.iq('set', "<query xmlns='%s'><item%s>%s</item>%s</query>"
                       % (NS_ROSTER, attrs, gs, extra))

    def remove_item(self, jid):
        return self.iq('set', "<query xmlns='%s'><item jid=%s subscription='remove'/>"
                       "</query>" % (NS_ROSTER, quoteattr(jid)))

    def push(self, jid, timeout=30.0, **attrs):
        """Waits for a roster push about jid whose item has attrs; answers
        it (RFC 6121 §2.1.6) and returns the item."""
        def pred(el):
            if local(el.tag) != 'iq' or el.get('type') != 'set':
                return False
            q = el.find(Q)
            if q is None:
                return False
            it = q.find(ITEM)
            return it is not None and it.get('jid') == jid and all(
                it.get(k) == v for k, v in attrs.items())
        el = self.wait(pred, timeout, 'a roster push of %s %s' % (jid, attrs))
        assert el.get('from') in (None, self.bare), to_str(el)
        self.send("<iq type='result' id=%s/>" % quoteattr(el.get('id')))
        self.last_ver = el.find(Q).get('ver')
        return el.find(Q).find(ITEM)

    def push_ver(self, jid, **attrs):
        """The version carried by the next push of jid."""
        self.push(jid, **attrs)
        assert self.last_ver, 'a push without ver'
        return self.last_ver

    def no_push(self, seconds=0.5):
        self.none(lambda e: local(e.tag) == 'iq' and e.get('type') == 'set'
                  and e.find(Q) is not None, seconds, 'a roster push')

    # ---- presence ----
    def presence(self, to=None, type_=None, extra=''):
        attrs = ''
        if to:
            attrs += ' to=%s' % quoteattr(to)
        if type_:
            attrs += ' type=%s' % quoteattr(type_)
        self.send('<presence%s>%s</presence>' % (attrs, extra))

    def wait_presence(self, frm=None, type_=None, timeout=30.0):
        def pred(el):
            if local(el.tag) != 'presence' or el.get('type') != type_:
                return False
            return frm is None or el.get('from') == frm or (
                '/' not in frm and (el.get('from') or '').split('/')[0] == frm)
        return self.wait(pred, timeout, 'presence type=%s from %s' % (type_, frm))

    def no_presence(self, frm=None, type_=None, seconds=0.5):
        def pred(el):
            return (local(el.tag) == 'presence' and el.get('type') == type_ and
                    (frm is None or (el.get('from') or '').split('/')[0]
                     == frm.split('/')[0]))
        self.none(pred, seconds, 'presence')

    def close(self):
        try:
            self.send('</stream:stream>')
        except OSError:
            pass
        self.raw.close()


def login(server, user, pw, resource=None, host='localhost'):
    return Peer(server.login(user, pw, resource=resource, host=host))


def error_condition(el):
    assert el.get('type') == 'error', 'expected an error: %s' % to_str(el)
    return stanza_error(el)


def cond_of(el):
    """The defined condition of an error reply (first child of <error/>)."""
    assert el.get('type') == 'error', 'expected an error: %s' % to_str(el)
    err = el.find('{jabber:client}error')
    for c in err:
        if local(c.tag) != 'text':
            return local(c.tag)
    return None


def text_of(el):
    err = el.find('{jabber:client}error')
    t = err.find('{%s}text' % rawxmpp.NS_STANZAS)
    return t.text if t is not None else None


# ---- tests ---------------------------------------------------------------

def test_roster_set_get_remove_with_groups_and_names(server):
    user, pw = server.new_user(prefix='ros')
    c = login(server, user, pw, 'r1')
    assert c.items() == {}
    r = c.set_item('friend@localhost', 'My Friend', ['Work', 'Pals'])
    assert r.get('type') == 'result', to_str(r)
    items = c.items()
    it = items['friend@localhost']
    assert it.get('name') == 'My Friend'
    assert it.get('subscription') == 'none'
    assert it.get('ask') is None
    assert sorted(g.text for g in it.findall(GROUP)) == ['Pals', 'Work']
    # update: new name, one group
    assert c.set_item('friend@localhost', 'Renamed', ['Solo']).get('type') == 'result'
    it = c.items()['friend@localhost']
    assert it.get('name') == 'Renamed'
    assert [g.text for g in it.findall(GROUP)] == ['Solo']
    # no name, no group
    assert c.set_item('other@example.test').get('type') == 'result'
    it = c.items()['other@example.test']
    assert it.get('name') is None and it.findall(GROUP) == []
    # a JID is prepared (case folded) and stored bare
    assert c.set_item('MiXeD@LocalHost', 'x').get('type') == 'result'
    assert 'mixed@localhost' in c.items()
    # kept across sessions (stored)
    c.close()
    c = login(server, user, pw, 'r2')
    items = c.items()
    assert set(items) == {'friend@localhost', 'other@example.test', 'mixed@localhost'}
    assert items['friend@localhost'].get('name') == 'Renamed'
    # remove
    r = c.remove_item('friend@localhost')
    assert r.get('type') == 'result', to_str(r)
    assert 'friend@localhost' not in c.items()
    # removing what is not there: item-not-found (§2.5.3)
    assert cond_of(c.remove_item('friend@localhost')) == 'item-not-found'
    c.close()
    c = login(server, user, pw, 'r3')
    assert set(c.items()) == {'other@example.test', 'mixed@localhost'}
    c.close()


def test_roster_push_to_interested_resources(server):
    user, pw = server.new_user(prefix='push')
    r1 = login(server, user, pw, 'one')
    r2 = login(server, user, pw, 'two')
    r3 = login(server, user, pw, 'three')   # never asks for the roster
    r1.roster()
    r2.roster()
    r3.ping()
    res = r1.set_item('pal@localhost', 'Pal', ['G'])
    assert res.get('type') == 'result'
    for r in (r1, r2):
        it = r.push('pal@localhost', subscription='none', name='Pal')
        assert [g.text for g in it.findall(GROUP)] == ['G']
        assert r.last_ver
    r3.no_push(0.5)
    r2.remove_item('pal@localhost')
    for r in (r1, r2):
        r.push('pal@localhost', subscription='remove')
    r3.no_push(0.3)
    for r in (r1, r2, r3):
        r.close()


def test_roster_set_errors(server):
    user, pw = server.new_user(prefix='rerr')
    other, opw = server.new_user(prefix='rerr')
    c = login(server, user, pw)
    c.roster()
    two = ("<query xmlns='%s'><item jid='a@localhost'/><item jid='b@localhost'/>"
           "</query>" % NS_ROSTER)
    assert cond_of(c.iq('set', two)) == 'bad-request'
    assert cond_of(c.iq('set', "<query xmlns='%s'/>" % NS_ROSTER)) == 'bad-request'
    assert cond_of(c.set_item('a@localhost', 'x', [''])) == 'not-acceptable'
    assert cond_of(c.set_item('a@localhost', 'x', ['g', 'g'])) == 'bad-request'
    assert cond_of(c.set_item('a@localhost', 'x' * 2000)) == 'not-acceptable'
    assert cond_of(c.set_item('a@localhost', 'x', ['g' * 2000])) == 'not-acceptable'
    assert cond_of(c.set_item('%s@localhost' % user, 'me')) == 'not-allowed'
    assert cond_of(c.set_item('bad@@jid')) == 'jid-malformed'
    assert cond_of(c.iq('set', "<query xmlns='%s'><item name='x'/></query>"
                        % NS_ROSTER)) == 'bad-request'
    # a roster get has no items
    assert cond_of(c.iq('get', "<query xmlns='%s'><item jid='a@localhost'/></query>"
                        % NS_ROSTER)) == 'bad-request'
    # nothing was added by the failures, and no push was sent
    assert c.items() == {}
    c.no_push(0.3)
    # someone else's roster: refused (§2.1.5)
    o = login(server, other, opw)
    r = o.iq('get', "<query xmlns='%s'/>" % NS_ROSTER, to='%s@localhost' % user)
    assert cond_of(r) in ('forbidden', 'service-unavailable')
    r = o.iq('set', "<query xmlns='%s'><item jid='evil@localhost'/></query>"
             % NS_ROSTER, to='%s@localhost' % user)
    assert cond_of(r) in ('forbidden', 'service-unavailable')
    assert c.items() == {}
    # 'subscription' other than remove is ignored (§2.1.2.5)
    assert c.set_item('sneaky@localhost', extra='').get('type') == 'result'
    r = c.iq('set', "<query xmlns='%s'><item jid='sneaky2@localhost' "
             "subscription='both' ask='subscribe'/></query>" % NS_ROSTER)
    assert r.get('type') == 'result'
    it = c.items()['sneaky2@localhost']
    assert it.get('subscription') == 'none' and it.get('ask') is None
    c.close()
    o.close()


def _features_after_auth(server, user, pw):
    c = server.raw(name=user)
    c.connect()
    pre = c.open()
    c.starttls()
    pre_tls = c.open()
    ok, el = c.auth_scram(user, pw)
    assert ok, to_str(el)
    feats = c.open()
    return c, pre, pre_tls, feats


def test_roster_versioning(server):
    user, pw = server.new_user(prefix='ver')
    raw, pre, pre_tls, feats = _features_after_auth(server, user, pw)
    # advertised only after authentication
    assert feats.find('{urn:xmpp:features:rosterver}ver') is not None, to_str(feats)
    assert feats.find('{urn:xmpp:features:pre-approval}sub') is not None
    assert pre.find('{urn:xmpp:features:rosterver}ver') is None
    assert pre_tls.find('{urn:xmpp:features:rosterver}ver') is None
    raw.bind('v1')
    c = Peer(raw)
    r = c.roster(ver='')
    q = r.find(Q)
    assert q is not None and q.get('ver') is not None
    v0 = q.get('ver')
    c.set_item('a@localhost', 'A')
    va = c.push_ver('a@localhost')
    c.set_item('b@localhost', 'B')
    vb = c.push_ver('b@localhost')
    c.set_item('c@localhost', 'C')
    vc = c.push_ver('c@localhost')
    assert len({v0, va, vb, vc}) == 4
    full = c.roster(ver='').find(Q)
    assert full.get('ver') == vc
    assert {i.get('jid') for i in full.findall(ITEM)} == {
        'a@localhost', 'b@localhost', 'c@localhost'}
    c.close()

    # up to date: an empty result and no push
    c = login(server, user, pw, 'v2')
    r = c.roster(ver=vc)
    assert r.find(Q) is None, to_str(r)
    c.no_push(0.5)
    # changes made meanwhile by another resource
    c.set_item('b@localhost', 'B2')
    c.push('b@localhost', name='B2')
    c.remove_item('c@localhost')
    c.push('c@localhost', subscription='remove')
    c.set_item('d@localhost', 'D')
    vd = c.push_ver('d@localhost')
    c.close()

    # a client that knew version va gets only the changes after it, in
    # order: b renamed, c removed, d added; a is not pushed again
    c = login(server, user, pw, 'v3')
    r = c.roster(ver=va)
    assert r.find(Q) is None, to_str(r)
    got = []
    for _ in range(3):
        el = c.wait(lambda e: local(e.tag) == 'iq' and e.get('type') == 'set'
                    and e.find(Q) is not None, 5, 'a push')
        it = el.find(Q).find(ITEM)
        got.append((it.get('jid'), it.get('subscription'), it.get('name')))
        c.send("<iq type='result' id=%s/>" % quoteattr(el.get('id')))
    assert got == [('b@localhost', 'none', 'B2'), ('c@localhost', 'remove', None),
                   ('d@localhost', 'none', 'D')]
    c.no_push(0.5)
    # an unknown version: the whole roster with the current version
    q = c.roster(ver='bogus').find(Q)
    assert q is not None and q.get('ver') == vd
    assert {i.get('jid') for i in q.findall(ITEM)} == {
        'a@localhost', 'b@localhost', 'd@localhost'}
    q = c.roster(ver='999999').find(Q)
    assert q is not None and q.get('ver') == vd
    c.close()


def test_roster_item_limit(make_server, driver):
    srv = make_server(driver, modules={'mod_roster': {'max_items': 3}})
    user, pw = srv.new_user(prefix='lim')
    c = login(srv, user, pw)
    c.roster()
    for i in range(3):
        assert c.set_item('c%d@localhost' % i).get('type') == 'result'
    r = c.set_item('c3@localhost')
    assert cond_of(r) in ('not-allowed', 'resource-constraint')
    assert 'roster' in (text_of(r) or '') and '3' in text_of(r)
    # updating an existing item still works
    assert c.set_item('c1@localhost', 'one').get('type') == 'result'
    # a subscription request that would add an item fails clearly too
    c.presence(to='c4@localhost', type_='subscribe')
    err = c.wait(lambda e: local(e.tag) == 'presence' and e.get('type') == 'error',
                 5, 'a presence error')
    assert cond_of(err) in ('not-allowed', 'resource-constraint')
    assert set(c.items()) == {'c0@localhost', 'c1@localhost', 'c2@localhost'}
    # room again after a removal
    assert c.remove_item('c0@localhost').get('type') == 'result'
    assert c.set_item('c3@localhost').get('type') == 'result'
    # pigeonctl obeys the limit
    r = srv.ctl('add_rosteritem', user, 'localhost', 'c9', 'localhost', 'N', 'G',
                'both', expect=1)
    assert 'full' in (r.stdout + r.stderr)
    c.close()


def test_pigeonctl_roster_commands(server):
    user, pw = server.new_user(prefix='ctl')
    offline, opw = server.new_user(prefix='ctloff')
    c = login(server, user, pw)
    c.roster()
    server.ctl('add_rosteritem', user, 'localhost', 'zed', 'example.test',
               'Zed', 'Friends', 'both', expect=0)
    it = c.push('zed@example.test', subscription='both', name='Zed')
    assert [g.text for g in it.findall(GROUP)] == ['Friends']
    server.ctl('add_rosteritem', user, 'localhost', 'amy', 'localhost',
               'Amy', 'Work', 'to', expect=0)
    c.push('amy@localhost', subscription='to')
    r = server.ctl('get_roster', user, 'localhost', expect=0)
    assert r.stdout.splitlines() == [
        'amy@localhost\tAmy\tto\tWork',
        'zed@example.test\tZed\tboth\tFriends',
    ]
    server.ctl('delete_rosteritem', user, 'localhost', 'amy', 'localhost', expect=0)
    c.push('amy@localhost', subscription='remove')
    assert set(c.items()) == {'zed@example.test'}
    r = server.ctl('get_roster', user, 'localhost', expect=0)
    assert r.stdout.splitlines() == ['zed@example.test\tZed\tboth\tFriends']
    # an offline user: stored, seen at the next login
    server.ctl('add_rosteritem', offline, 'localhost', user, 'localhost',
               'Buddy', 'Pals', 'from', expect=0)
    r = server.ctl('get_roster', offline, 'localhost', expect=0)
    assert r.stdout.splitlines() == ['%s@localhost\tBuddy\tfrom\tPals' % user]
    o = login(server, offline, opw)
    it = o.items()['%s@localhost' % user]
    assert it.get('subscription') == 'from' and it.get('name') == 'Buddy'
    o.close()
    # errors
    r = server.ctl('get_roster', 'nosuchuser', 'localhost', expect=1)
    assert r.stderr.strip()
    server.ctl('add_rosteritem', 'nosuchuser', 'localhost', 'a', 'localhost',
               'N', 'G', 'none', expect=1)
    server.ctl('add_rosteritem', user, 'localhost', 'a', 'localhost',
               'N', 'G', 'sideways', expect=2)
    server.ctl('delete_rosteritem', user, 'localhost', 'nobody', 'localhost',
               expect=1)
    c.close()
