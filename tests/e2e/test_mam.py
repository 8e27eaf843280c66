"""mod_mam: message archive (XEP-0313 mam:2 and mam:1), XEP-0359 stanza
ids, XEP-0441 preferences, XEP-0059 paging, retention."""

import datetime
import time
from xml.sax.saxutils import escape, quoteattr

import pytest

import rawxmpp
from conftest import db, db_rows
from rawxmpp import NS_DISCO_INFO, local, stanza_error, to_str

NS_MAM2 = 'urn:xmpp:mam:2'
NS_MAM1 = 'urn:xmpp:mam:1'
NS_SID = 'urn:xmpp:sid:0'
NS_RSM = 'http://jabber.org/protocol/rsm'
NS_FORWARD = 'urn:xmpp:forward:0'
NS_DELAY = 'urn:xmpp:delay'
NS_XDATA = 'jabber:x:data'
NS_CLIENT = 'jabber:client'
NS_ROSTER = 'jabber:iq:roster'
BODY = '{jabber:client}body'
CHAT_STATE = "<composing xmlns='http://jabber.org/protocol/chatstates'/>"
RECEIPT = "<received xmlns='urn:xmpp:receipts' id='%s'/>"
MARKER = "<displayed xmlns='urn:xmpp:chat-markers:0' id='%s'/>"
OMEMO = ("<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'>"
         "<iv>AAAA</iv></header><payload>BBBB</payload></encrypted>")


# ---- helpers -----------------------------------------------------------

def bare(jid):
    return jid.split('/')[0]




def rows_of(server, user):
    assert user.isalnum()
    return int(db(server, "SELECT count(*) FROM mam_messages WHERE host = "
                          "'localhost' AND username = '%s'" % user))


def wait_rows(server, user, n, timeout=10.0):
    """Until user's archive has n rows (the store writes after the
    message went on); then checks that no more come."""
    deadline = time.monotonic() + timeout
    while rows_of(server, user) < n:
        assert time.monotonic() < deadline, (user, rows_of(server, user), n)
        time.sleep(0.05)
    time.sleep(0.2)
    assert rows_of(server, user) == n


def online(server, user, pw, res='r'):
    c = server.login(user, pw, resource=res)
    c.name = c.jid
    c.presence()
    rawxmpp.quiet(c, lambda el: local(el.tag) == 'presence')
    return c


def pair(server):
    """alice and bob, both online: (a, b)."""
    alice, apw = server.new_user(prefix='alice')
    bob, bpw = server.new_user(prefix='bob')
    return online(server, alice, apw, 'ra'), online(server, bob, bpw, 'rb')


def recv_msg(c, id_):
    return c.recv_until(lambda e: local(e.tag) == 'message' and e.get('id') == id_,
                        what='message %s' % id_)


def stanza_ids(m):
    return [(s.get('by'), s.get('id')) for s in m.findall('{%s}stanza-id' % NS_SID)]


def send(a, b, body, extra='', type_='chat'):
    """a sends a message to b, which receives it; returns b's copy."""
    id_ = a.message(b.jid, body, type_=type_, extra=extra)
    return recv_msg(b, id_)


class Result:
    def __init__(self, ns, results, iq):
        self.ns = ns
        self.iq = iq
        self.results = results

    @property
    def error(self):
        return stanza_error(self.iq)[1] if self.iq.get('type') == 'error' else None

    @property
    def fin(self):
        fin = self.iq.find('{%s}fin' % self.ns)
        assert fin is not None, to_str(self.iq)
        return fin

    def rsm(self, name):
        return self.fin.find('{%s}set/{%s}%s' % (NS_RSM, NS_RSM, name))

    @property
    def count(self):
        return int(self.rsm('count').text)

    @property
    def first(self):
        el = self.rsm('first')
        return el.text if el is not None else None

    @property
    def first_index(self):
        el = self.rsm('first')
        return el.get('index') if el is not None else None

    @property
    def last(self):
        el = self.rsm('last')
        return el.text if el is not None else None

    @property
    def complete(self):
        return self.fin.get('complete') == 'true'

    @property
    def ids(self):
        return [r.get('id') for r in self.results]

    def forwarded(self, i):
        return self.results[i].find('{%s}forwarded/{%s}message' % (NS_FORWARD, NS_CLIENT))

    def stamp(self, i):
        return self.results[i].find('{%s}forwarded/{%s}delay' % (NS_FORWARD, NS_DELAY)).get('stamp')

    @property
    def bodies(self):
        return [self.forwarded(i).findtext(BODY) for i in range(len(self.results))]


def form(ns, fields):
    out = ("<x xmlns='%s' type='submit'><field var='FORM_TYPE' type='hidden'>"
           "<value>%s</value></field>" % (NS_XDATA, ns))
    for var, vals in fields.items():
        if isinstance(vals, str):
            vals = [vals]
        out += '<field var=%s>%s</field>' % (
            quoteattr(var), ''.join('<value>%s</value>' % escape(v) for v in vals))
    return out + '</x>'


def query(c, fields=None, max_=None, after=None, before=None, flip=False,
          ns=NS_MAM2, to=None, payload=None):
    """Runs a query; returns a Result with the result messages that came
    for it (in order) and the iq answer."""
    qid = rawxmpp.new_id('qid')
    iq_id = rawxmpp.new_id('mam')
    body = form(ns, fields) if fields else ''
    if max_ is not None or after is not None or before is not None:
        body += "<set xmlns='%s'>" % NS_RSM
        if max_ is not None:
            body += '<max>%d</max>' % max_
        if after is not None:
            body += '<after>%s</after>' % escape(after)
        if before is not None:
            body += '<before>%s</before>' % escape(before)
        body += '</set>'
    if flip:
        body += "<flip-page/>"
    if payload is not None:
        body = payload
    c.send("<iq type='set' id='%s'%s><query xmlns='%s' queryid='%s'>%s</query></iq>"
           % (iq_id, ' to=%s' % quoteattr(to) if to else '', ns, qid, body))
    results = []
    while True:
        el = c.recv()
        if local(el.tag) == 'iq' and el.get('id') == iq_id:
            return Result(ns, results, el)
        res = el.find('{%s}result' % ns)
        if local(el.tag) == 'message' and res is not None:
            # §4.2: from the archive (the user's bare JID), to the querier.
            assert res.get('queryid') == qid, to_str(el)
            assert el.get('from') == bare(c.jid) and el.get('to') == c.jid, to_str(el)
            results.append(res)


def ok(r):
    assert r.iq.get('type') == 'result', to_str(r.iq)
    return r


def error_of(r):
    assert r.iq.get('type') == 'error', to_str(r.iq)
    return r.error


def archived_ids(c, **kw):
    r = ok(query(c, max_=250, **kw))
    assert r.complete
    return r.ids


def set_prefs(c, default, always=(), never=(), ns=NS_MAM2):
    jids = lambda l: ''.join('<jid>%s</jid>' % j for j in l)
    r = c.iq('set', "<prefs xmlns='%s' default='%s'><always>%s</always><never>%s</never>"
             "</prefs>" % (ns, default, jids(always), jids(never)))
    assert r.get('type') == 'result', to_str(r)
    return r


# ---- tests -------------------------------------------------------------

def test_both_directions_and_stanza_id(server):
    a, b = pair(server)
    # A stanza-id claiming to be from bob's archive is a forgery
    # (XEP-0359 §4); one by somebody else is left alone.
    forged = ("<stanza-id xmlns='%s' by='%s' id='forged'/>"
              "<stanza-id xmlns='%s' by='other.example' id='theirs'/>"
              "<origin-id xmlns='%s' id='orig-1'/>" % (NS_SID, bare(b.jid), NS_SID, NS_SID))
    m = send(a, b, 'hello bob', extra=forged)
    sids = stanza_ids(m)
    ours = [i for by, i in sids if by == bare(b.jid)]
    assert len(ours) == 1 and ours[0] != 'forged', to_str(m)
    assert ('other.example', 'theirs') in sids, to_str(m)
    # The recipient's archive: the id matches, the message is whole.
    r = ok(query(b))
    assert r.ids == ours and r.count == 1 and r.complete, to_str(r.iq)
    fwd = r.forwarded(0)
    assert fwd.findtext(BODY) == 'hello bob' and fwd.get('from') == a.jid, to_str(fwd)
    assert fwd.find('{%s}origin-id' % NS_SID).get('id') == 'orig-1'
    assert r.first == r.last == ours[0]
    # The sender's archive: the outgoing message under its own id; the
    # sender got no stanza-id (nothing echoed it).
    r = ok(query(a))
    assert r.count == 1 and len(r.ids) == 1 and r.ids[0] != ours[0], to_str(r.iq)
    assert r.forwarded(0).get('to') == b.jid and r.bodies == ['hello bob']
    stamp = r.stamp(0)
    assert datetime.datetime.strptime(stamp, '%Y-%m-%dT%H:%M:%S.%fZ')
    # A reply goes the other way round.
    m = send(b, a, 'hi alice')
    ids_a = [i for by, i in stanza_ids(m) if by == bare(a.jid)]
    assert len(ids_a) == 1
    assert ok(query(a)).ids[1] == ids_a[0]
    assert ok(query(b)).bodies == ['hello bob', 'hi alice']


def test_offline_message_archived_with_stanza_id(server):
    alice, apw = server.new_user(prefix='alice')
    bob, bpw = server.new_user(prefix='bob')
    a = online(server, alice, apw, 'ra')
    id_ = a.message('%s@localhost' % bob, 'while you were away')
    rawxmpp.quiet(a)
    b = server.login(bob, bpw, resource='rb')
    b.presence()
    m = recv_msg(b, id_)
    sids = [i for by, i in stanza_ids(m) if by == '%s@localhost' % bob]
    assert len(sids) == 1, to_str(m)
    r = ok(query(b))
    assert r.ids == sids and r.bodies == ['while you were away']


def test_paging_forwards_and_backwards(server):
    a, b = pair(server)
    for i in range(7):
        send(a, b, 'm%d' % i)
    all_ids = archived_ids(b)
    assert len(all_ids) == 7
    # Forwards, 3 at a time (§4.3).
    r = ok(query(b, max_=3))
    assert r.bodies == ['m0', 'm1', 'm2'] and r.count == 7 and not r.complete
    assert r.first == all_ids[0] and r.last == all_ids[2] and r.first_index == '0'
    r = ok(query(b, max_=3, after=r.last))
    assert r.bodies == ['m3', 'm4', 'm5'] and not r.complete and r.count == 7
    r = ok(query(b, max_=3, after=r.last))
    assert r.bodies == ['m6'] and r.complete and r.first == r.last == all_ids[6]
    r = ok(query(b, max_=3, after=r.last))
    assert r.ids == [] and r.complete and r.first is None and r.count == 7
    # Backwards: the last page first (§4.3.3), chronological within.
    r = ok(query(b, max_=3, before=''))
    assert r.bodies == ['m4', 'm5', 'm6'] and not r.complete
    assert r.first_index is None and r.count == 7
    r = ok(query(b, max_=3, before=r.first))
    assert r.bodies == ['m1', 'm2', 'm3'] and not r.complete
    r = ok(query(b, max_=3, before=r.first))
    assert r.bodies == ['m0'] and r.complete
    # max 0: only the count.
    r = ok(query(b, max_=0))
    assert r.ids == [] and r.count == 7 and not r.complete
    # The default page (50) takes everything.
    r = ok(query(b))
    assert len(r.ids) == 7 and r.complete
    # Unknown ids in RSM after/before (§4.3.2), bad max.
    assert error_of(query(b, after='no-such-id')) == 'item-not-found'
    assert error_of(query(b, before='no-such-id')) == 'item-not-found'
    assert error_of(query(b, payload="<set xmlns='%s'><max>x</max></set>" % NS_RSM)) \
        == 'bad-request'


def test_with_start_end_filters(server):
    a, b = pair(server)
    carol, cpw = server.new_user(prefix='carol')
    c = online(server, carol, cpw, 'rc')
    send(a, b, 'a1')
    send(c, b, 'c1')
    send(a, b, 'a2')
    send(b, a, 'b-to-a')
    send(c, b, 'c2')
    # with: bare JID matches both directions and every resource (§4.1.1).
    r = ok(query(b, {'with': bare(a.jid)}))
    assert r.bodies == ['a1', 'a2', 'b-to-a'] and r.count == 3 and r.complete
    r = ok(query(b, {'with': bare(c.jid)}, max_=1, before=''))
    assert r.bodies == ['c2'] and r.count == 2 and not r.complete
    # with a full JID: that resource only.
    assert ok(query(b, {'with': a.jid})).bodies == ['a1', 'a2', 'b-to-a']
    assert ok(query(b, {'with': bare(a.jid) + '/other'})).bodies == []
    # start/end are inclusive (§4.1.2), any XEP-0082 time zone.  Stamps
    # never decrease; rows written in one batch may share one.
    r = ok(query(b))
    bodies = r.bodies
    stamps = [r.stamp(i) for i in range(5)]
    assert stamps == sorted(stamps)

    def between(lo=None, hi=None):
        return [x for x, t in zip(bodies, stamps)
                if (lo is None or t >= lo) and (hi is None or t <= hi)]
    assert ok(query(b, {'start': stamps[2]})).bodies == between(stamps[2])
    assert ok(query(b, {'end': stamps[1]})).bodies == between(None, stamps[1])
    assert ok(query(b, {'start': stamps[1], 'end': stamps[3]})).bodies == \
        between(stamps[1], stamps[3])
    assert len(between(stamps[2])) >= 3 and len(between(None, stamps[1])) >= 2
    t = datetime.datetime.strptime(stamps[2], '%Y-%m-%dT%H:%M:%S.%fZ')
    plus1 = (t + datetime.timedelta(hours=1)).strftime('%Y-%m-%dT%H:%M:%S.%f') + '+01:00'
    assert ok(query(b, {'start': plus1})).bodies == between(stamps[2])
    # A microsecond later excludes what was archived at that stamp.
    t1 = (t + datetime.timedelta(microseconds=1)).strftime('%Y-%m-%dT%H:%M:%S.%fZ')
    assert ok(query(b, {'start': t1})).bodies == between(t1)
    r = ok(query(b, {'start': '2000-01-01T00:00:00Z', 'end': '2000-12-31T00:00:00Z'}))
    assert r.ids == [] and r.count == 0 and r.complete
    r = ok(query(b, {'with': bare(c.jid), 'start': stamps[4]}))
    assert r.bodies == ['c2'] and r.count == 1
    # Bad input.
    for fields in ({'start': 'yesterday'}, {'end': '2020-02-30T00:00:00Z'},
                   {'start': '2020-01-01T00:00:00'}, {'with': 'a@b@c'},
                   {'with': ''}):
        assert error_of(query(b, fields)) == 'bad-request', fields
    assert error_of(query(b, {'x-unknown': '1'})) == 'feature-not-implemented'
    bad_type = ("<x xmlns='%s' type='submit'><field var='FORM_TYPE'><value>urn:other"
                "</value></field></x>" % NS_XDATA)
    assert error_of(query(b, payload=bad_type)) == 'bad-request'


def test_extended_ids_and_flip_page(server):
    a, b = pair(server)
    for i in range(6):
        send(a, b, 'x%d' % i)
    ids = archived_ids(b)
    # after-id/before-id (§4.1.3): exclusive, together a range.
    assert ok(query(b, {'after-id': ids[3]})).bodies == ['x4', 'x5']
    assert ok(query(b, {'before-id': ids[2]})).bodies == ['x0', 'x1']
    r = ok(query(b, {'after-id': ids[0], 'before-id': ids[4]}))
    assert r.bodies == ['x1', 'x2', 'x3'] and r.count == 3 and r.complete
    # With RSM inside that range.
    r = ok(query(b, {'after-id': ids[0], 'before-id': ids[4]}, max_=2))
    assert r.bodies == ['x1', 'x2'] and not r.complete and r.count == 3
    r = ok(query(b, {'after-id': ids[0], 'before-id': ids[4]}, max_=2, after=r.last))
    assert r.bodies == ['x3'] and r.complete
    # ids: exactly those, in archive order.
    r = ok(query(b, {'ids': [ids[4], ids[1]]}))
    assert r.ids == [ids[1], ids[4]] and r.count == 2
    # flip-page (§4.3.4): the same page, newest first.
    r = ok(query(b, max_=3, before='', flip=True))
    assert r.bodies == ['x5', 'x4', 'x3'] and r.first == ids[3] and r.last == ids[5]
    r = ok(query(b, max_=2, flip=True))
    assert r.bodies == ['x1', 'x0'] and not r.complete
    # An id that is not in this archive: item-not-found.
    assert error_of(query(b, {'after-id': 'nope'})) == 'item-not-found'
    assert error_of(query(b, {'before-id': 'nope'})) == 'item-not-found'
    assert error_of(query(b, {'ids': [ids[0], 'nope']})) == 'item-not-found'
    alice_ids = archived_ids(a)
    assert error_of(query(b, {'ids': [alice_ids[0]]})) == 'item-not-found'
    # Metadata (§5): first and last of the archive.
    r = b.iq('get', "<metadata xmlns='%s'/>" % NS_MAM2)
    md = r.find('{%s}metadata' % NS_MAM2)
    assert md.find('{%s}start' % NS_MAM2).get('id') == ids[0], to_str(r)
    assert md.find('{%s}end' % NS_MAM2).get('id') == ids[5], to_str(r)


def test_forbidden_for_others(server):
    a, b = pair(server)
    send(a, b, 'private')
    # Only the owner reads an archive (§8.1).
    assert error_of(query(a, to=bare(b.jid))) == 'forbidden'
    r = a.iq('get', "<prefs xmlns='%s'/>" % NS_MAM2, to=bare(b.jid))
    assert stanza_error(r)[1] == 'forbidden', to_str(r)
    r = a.iq('set', "<prefs xmlns='%s' default='never'/>" % NS_MAM2, to=bare(b.jid))
    assert stanza_error(r)[1] == 'forbidden', to_str(r)
    r = a.iq('get', "<query xmlns='%s'/>" % NS_MAM2, to=bare(b.jid))
    assert stanza_error(r)[1] == 'forbidden', to_str(r)
    # Unchanged.
    assert ok(query(b)).bodies == ['private']
    r = b.iq('get', "<prefs xmlns='%s'/>" % NS_MAM2)
    assert r.find('{%s}prefs' % NS_MAM2).get('default') == 'always'


def test_mam1_namespace(server):
    a, b = pair(server)
    send(a, b, 'old client')
    send(a, b, 'still old')
    r = ok(query(b, {'with': bare(a.jid)}, max_=1, ns=NS_MAM1))
    assert r.bodies == ['old client'] and r.count == 2 and not r.complete
    assert r.iq.find('{%s}fin' % NS_MAM2) is None, to_str(r.iq)
    r = ok(query(b, max_=5, after=r.last, ns=NS_MAM1))
    assert r.bodies == ['still old'] and r.complete
    # The form and the preferences in mam:1 too.
    f = b.iq('get', "<query xmlns='%s'/>" % NS_MAM1)
    fields = [x.get('var') for x in f.iter('{%s}field' % NS_XDATA)]
    assert fields[0] == 'FORM_TYPE' and f.find('.//{%s}value' % NS_XDATA).text == NS_MAM1
    p = b.iq('get', "<prefs xmlns='%s'/>" % NS_MAM1)
    assert p.find('{%s}prefs' % NS_MAM1).get('default') == 'always', to_str(p)


def test_prefs_never_always_roster(server):
    a, b = pair(server)
    carol, cpw = server.new_user(prefix='carol')
    c = online(server, carol, cpw, 'rc')
    # never, with alice always archived.
    r = set_prefs(b, 'never', always=[bare(a.jid)])
    p = r.find('{%s}prefs' % NS_MAM2)
    assert p.get('default') == 'never'
    assert [j.text for j in p.find('{%s}always' % NS_MAM2)] == [bare(a.jid)]
    m = send(c, b, 'not archived')
    assert stanza_ids(m) == [], to_str(m)
    m = send(a, b, 'archived')
    assert len(stanza_ids(m)) == 1
    assert ok(query(b)).bodies == ['archived']
    # Read back (XEP-0441 §2.1).
    g = b.iq('get', "<prefs xmlns='%s'/>" % NS_MAM2).find('{%s}prefs' % NS_MAM2)
    assert g.get('default') == 'never' and g.find('{%s}never' % NS_MAM2) is not None
    # always, with carol never: outgoing to carol is not archived either.
    set_prefs(b, 'always', never=[bare(c.jid)])
    send(b, c, 'to carol, unarchived')
    send(c, b, 'from carol, unarchived')
    send(b, a, 'to alice, archived')
    assert ok(query(b)).bodies == ['archived', 'to alice, archived']
    # roster: alice is in bob's roster, carol is not.
    r = b.iq('set', "<query xmlns='%s'><item jid='%s'/></query>" % (NS_ROSTER, bare(a.jid)))
    assert r.get('type') == 'result', to_str(r)
    set_prefs(b, 'roster')
    send(a, b, 'from a contact')
    m = send(c, b, 'from a stranger')
    assert stanza_ids(m) == []
    # Adding carol to the roster counts from the next message.
    r = b.iq('set', "<query xmlns='%s'><item jid='%s'/></query>" % (NS_ROSTER, bare(c.jid)))
    assert r.get('type') == 'result', to_str(r)
    m = send(c, b, 'carol is a contact now')
    assert len(stanza_ids(m)) == 1
    assert ok(query(b)).bodies[-2:] == ['from a contact', 'carol is a contact now']
    # Bad requests.
    r = b.iq('set', "<prefs xmlns='%s' default='sometimes'/>" % NS_MAM2)
    assert stanza_error(r)[1] == 'bad-request', to_str(r)
    r = b.iq('set', "<prefs xmlns='%s' default='always'><always><jid>a@b@c</jid>"
             "</always></prefs>" % NS_MAM2)
    assert stanza_error(r)[1] == 'jid-malformed', to_str(r)


def test_prefs_of_offline_recipient(server):
    """The preferences of a user who has no session are read from the
    store while the message waits."""
    alice, apw = server.new_user(prefix='alice')
    carol, _ = server.new_user(prefix='carol')
    dave, _ = server.new_user(prefix='dave')
    a = online(server, alice, apw, 'ra')
    db(server, "INSERT INTO mam_prefs (host, username, default_mode) VALUES "
               "('localhost', '%s', 'never')" % carol)
    a.message('%s@localhost' % carol, 'carol never archives')
    a.message('%s@localhost' % dave, 'dave always does')
    # No such account: nothing archived, the usual error.
    id_ = a.message('nobody%s@localhost' % alice, 'to nobody')
    el = recv_msg(a, id_)
    assert stanza_error(el) == ('cancel', 'service-unavailable'), to_str(el)
    rawxmpp.quiet(a)
    assert rows_of(server, carol) == 0
    assert rows_of(server, dave) == 1
    # The bounced message is in no archive, not even the sender's
    # (doc/architecture.md, "Storage failures").
    assert rows_of(server, alice) == 2
    # The offline copy carries the stanza id of dave's archive.
    stored = db(server, "SELECT stanza FROM offline_messages WHERE username = '%s'" % dave)
    sid = db(server, "SELECT stanza_id FROM mam_messages WHERE username = '%s'" % dave)
    assert "by='%s@localhost'" % dave in stored.replace('"', "'") and sid in stored, stored


def test_roster_prefs_of_offline_recipient(server):
    """default='roster' for a user who has no session: mod_roster answers
    from the store while the messages wait, in order; a roster change
    made by pigeonctl counts at once."""
    alice, apw = server.new_user(prefix='alice')
    carol, cpw = server.new_user(prefix='carol')
    dave, _ = server.new_user(prefix='dave')
    server.ctl('add_rosteritem', dave, 'localhost', alice, 'localhost', alice,
               'G', 'none', expect=0)
    db(server, "INSERT INTO mam_prefs (host, username, default_mode) VALUES "
               "('localhost', '%s', 'roster')" % dave)
    a = online(server, alice, apw, 'ra')
    c = online(server, carol, cpw, 'rc')
    for i in range(3):
        a.message('%s@localhost' % dave, 'contact %d' % i)
        c.message('%s@localhost' % dave, 'stranger %d' % i)
    rawxmpp.quiet(a)
    rawxmpp.quiet(c)
    wait_rows(server, dave, 3)
    bodies = [r[0] for r in db_rows(
        server, "SELECT stanza FROM mam_messages WHERE username = '%s' "
                "ORDER BY id" % dave)]
    assert len(bodies) == 3, bodies
    assert all('contact %d' % i in b for i, b in enumerate(bodies)), bodies
    server.ctl('add_rosteritem', dave, 'localhost', carol, 'localhost', carol,
               'G', 'none', expect=0)
    c.message('%s@localhost' % dave, 'stranger no more')
    rawxmpp.quiet(c)
    wait_rows(server, dave, 4)
    assert 'stranger no more' in db(
        server, "SELECT stanza FROM mam_messages WHERE username = '%s' "
                "ORDER BY id DESC LIMIT 1" % dave)


def local_part(jid):
    return jid.split('@')[0]


def test_which_messages_are_archived(server):
    a, b = pair(server)
    # Chat states alone are not; receipts, markers and OMEMO are.
    a.send("<message to='%s' type='chat' id='cs'>%s</message>" % (b.jid, CHAT_STATE))
    assert stanza_ids(recv_msg(b, 'cs')) == []
    for id_, payload in (('rc', RECEIPT % 'x1'), ('mk', MARKER % 'x2'), ('om', OMEMO)):
        a.send("<message to='%s' type='chat' id='%s'>%s</message>" % (b.jid, id_, payload))
        assert len(stanza_ids(recv_msg(b, id_))) == 1, id_
    # XEP-0334 hints.
    send(a, b, 'do not store', extra="<no-store xmlns='urn:xmpp:hints'/>")
    send(a, b, 'nor this', extra="<no-permanent-store xmlns='urn:xmpp:hints'/>")
    a.send("<message to='%s' type='chat' id='st'>%s<store xmlns='urn:xmpp:hints'/>"
           "</message>" % (b.jid, CHAT_STATE))
    assert len(stanza_ids(recv_msg(b, 'st'))) == 1
    # Normal and typeless with a body are; headline and groupchat not.
    send(a, b, 'normal', type_='normal')
    send(a, b, 'typeless', type_=None)
    send(a, b, 'headline', type_='headline')
    a.send("<message to='%s' type='error' id='er'><body>err</body></message>" % b.jid)
    rawxmpp.quiet(a)
    rawxmpp.quiet(b, lambda el: True)
    r = ok(query(b))
    got = [r.forwarded(i).get('id') for i in range(len(r.ids))]
    assert got[:4] == ['rc', 'mk', 'om', 'st'], got
    assert r.bodies[4:] == ['normal', 'typeless'], r.bodies
    assert ok(query(a)).count == 6


def test_message_to_self_archived_once(server):
    alice, apw = server.new_user(prefix='alice')
    a1 = online(server, alice, apw, 'one')
    a2 = online(server, alice, apw, 'two')
    m = send(a1, a2, 'note to self')
    assert len(stanza_ids(m)) == 1
    r = ok(query(a1, {'with': '%s@localhost' % alice}))
    assert r.bodies == ['note to self'] and r.count == 1
    assert rows_of(server, alice) == 1


def test_disco_and_form(server):
    a, b = pair(server)
    for to in (bare(a.jid), None, 'localhost'):
        r = a.iq('get', "<query xmlns='%s'/>" % NS_DISCO_INFO, to=to)
        feats = [f.get('var') for f in r.iter('{%s}feature' % NS_DISCO_INFO)]
        for f in (NS_MAM2, NS_MAM2 + '#extended', NS_MAM1, NS_SID):
            assert f in feats, (to, to_str(r))
    r = a.iq('get', "<query xmlns='%s'/>" % NS_DISCO_INFO, to=bare(a.jid))
    ident = r.find('.//{%s}identity' % NS_DISCO_INFO)
    assert ident.get('category') == 'account' and ident.get('type') == 'registered'
    # mod_push's feature belongs on the account too (XEP-0357 §4.1).
    feats = [f.get('var') for f in r.iter('{%s}feature' % NS_DISCO_INFO)]
    assert 'urn:xmpp:push:0' in feats and len(feats) == len(set(feats)), to_str(r)
    # Somebody else's bare JID: mod_disco's answer, without the archive.
    r = b.iq('get', "<query xmlns='%s'/>" % NS_DISCO_INFO, to=bare(a.jid))
    feats = [f.get('var') for f in r.iter('{%s}feature' % NS_DISCO_INFO)]
    assert NS_MAM2 not in feats, to_str(r)
    f = a.iq('get', "<query xmlns='%s'/>" % NS_MAM2)
    fields = {x.get('var'): x.get('type') for x in f.iter('{%s}field' % NS_XDATA)}
    assert fields == {'FORM_TYPE': 'hidden', 'with': 'jid-single', 'start': 'text-single',
                      'end': 'text-single', 'before-id': 'text-single',
                      'after-id': 'text-single', 'ids': 'list-multi'}, to_str(f)


@pytest.fixture
def private(make_server, driver):
    return make_server(driver)


def test_delete_old_mam_messages(private):
    a, b = pair(private)
    for i in range(3):
        send(a, b, 'old %d' % i)
    # Nothing is a day old yet.
    r = private.ctl('delete_old_mam_messages', '1', expect=0)
    assert r.stdout.strip() == '0'
    assert ok(query(b)).count == 3
    r = private.ctl('delete_old_mam_messages', '0', expect=0)
    assert r.stdout.strip() == '6', r.stdout
    assert ok(query(b)).count == 0 and ok(query(a)).count == 0
    for bad in ('-1', 'x', '12345678', ''):
        private.ctl('delete_old_mam_messages', bad, expect=2)
    # The archive goes on.
    send(a, b, 'new')
    assert ok(query(b)).bodies == ['new']


def test_restart_retention_and_account_deletion(make_server, driver):
    srv = make_server(driver, modules={'mod_mam': {'max_age_days': '2'}})
    alice, apw = srv.new_user(prefix='alice')
    bob, bpw = srv.new_user(prefix='bob')
    a = online(srv, alice, apw, 'ra')
    b = online(srv, bob, bpw, 'rb')
    set_prefs(b, 'always', never=['nobody@localhost'])
    sids = []
    for i in range(4):
        m = send(a, b, 'keep %d' % i)
        sids += [i for by, i in stanza_ids(m)]
    a.close()
    b.close()
    srv.stop()
    # Two of bob's messages become three days old (the server is
    # stopped: the store is edited directly).
    ids = sorted(int(db(srv, "SELECT id FROM mam_messages WHERE username = '%s' "
                             "AND stanza_id = '%s'" % (bob, s))) for s in sids)
    db(srv, "UPDATE mam_messages SET ts = ts - %d WHERE id IN (%d, %d)"
       % (3 * 86400 * 1000000, ids[0], ids[1]))
    srv.start()
    # The first sweep runs shortly after start-up.
    deadline = time.monotonic() + 15
    while rows_of(srv, bob) != 2:
        assert time.monotonic() < deadline, 'retention did not delete old rows'
        time.sleep(0.2)
    assert rows_of(srv, alice) == 4
    b = online(srv, bob, bpw, 'again')
    r = ok(query(b))
    assert r.bodies == ['keep 2', 'keep 3'] and r.ids == sids[2:]
    b.close()
    # Account deletion takes the archive along (foreign key).
    srv.ctl('unregister', bob, 'localhost', expect=0)
    assert rows_of(srv, bob) == 0
    assert int(db(srv, "SELECT count(*) FROM mam_prefs WHERE username = '%s'" % bob)) == 0


def test_received_carbon_carries_stanza_id(server):
    alice, apw = server.new_user(prefix='alice')
    bob, bpw = server.new_user(prefix='bob')
    a = online(server, alice, apw, 'ra')
    b1 = online(server, bob, bpw, 'one')
    b2 = server.login(bob, bpw, resource='two')
    r = b2.iq('set', "<enable xmlns='urn:xmpp:carbons:2'/>")
    assert r.get('type') == 'result', to_str(r)
    b2.presence()
    rawxmpp.quiet(b2, lambda el: local(el.tag) == 'presence')
    m = send(a, b1, 'for one')
    sid = [i for by, i in stanza_ids(m) if by == '%s@localhost' % bob]
    # The archive runs before received carbons (XEP-0313 §3.4): the copy
    # carries the same stanza id.
    el = b2.recv_until(lambda e: local(e.tag) == 'message'
                       and e.find('{urn:xmpp:carbons:2}received') is not None,
                       what='a received carbon')
    fwd = el.find('{urn:xmpp:carbons:2}received/{%s}forwarded/{%s}message'
                  % (NS_FORWARD, NS_CLIENT))
    assert len(sid) == 1 and stanza_ids(fwd) == [('%s@localhost' % bob, sid[0])], to_str(el)


def test_slixmpp_client(server):
    """slixmpp's XEP-0313/0359 plugins against the server."""
    import slixmpp
    import slixutil
    alice, apw = server.new_user(prefix='alice')
    bob, bpw = server.new_user(prefix='bob')

    async def scenario():
        a = server.slix('%s@localhost/desk' % alice, apw)
        b = server.slix('%s@localhost/phone' % bob, bpw)
        for c in (a, b):
            c.register_plugin('xep_0313')
            c.register_plugin('xep_0359')
        await a.start()
        await b.start()
        sids = []
        for i in range(12):
            a.send_message(mto='%s@localhost/phone' % bob, mbody='s%d' % i,
                           mtype='chat')
            m = await b.next_message()
            assert m['body'] == 's%d' % i
            assert m['stanza_id']['by'] == '%s@localhost' % bob
            sids.append(m['stanza_id']['id'])
        info = await b['xep_0030'].get_info(jid='%s@localhost' % bob)
        assert 'urn:xmpp:mam:2' in info['disco_info']['features']
        got, got_ids = [], []
        async for msg in b['xep_0313'].iterate(
                with_jid=slixmpp.JID('%s@localhost' % alice), rsm={'max': 5}):
            got.append(msg['mam_result']['forwarded']['stanza']['body'])
            got_ids.append(msg['mam_result']['id'])
        assert got == ['s%d' % i for i in range(12)] and got_ids == sids
        got = []
        async for msg in b['xep_0313'].iterate(rsm={'max': 5}, reverse=True):
            got.append(msg['mam_result']['forwarded']['stanza']['body'])
        assert got == ['s%d' % i for i in reversed(range(12))]
        await a.stop()
        await b.stop()
    slixutil.run(scenario, timeout=60)


def test_acked_messages_are_archived_before_kill(make_server, driver):
    """Durable before acknowledged: a message the server acked (XEP-0198)
    is in both archives even after a kill -9 right after the ack, while
    the recipient got it at once."""
    srv = make_server(driver)
    alice, apw = srv.new_user(prefix='alice')
    bob, bpw = srv.new_user(prefix='bob')
    a = srv.login(alice, apw, resource='phone')
    b = online(srv, bob, bpw, 'desk')
    a.send("<enable xmlns='urn:xmpp:sm:3'/>")
    el = a.recv_until(lambda e: e.tag.endswith('}enabled') or e.tag.endswith('}failed'),
                      what='<enabled/>')
    assert el.tag == '{urn:xmpp:sm:3}enabled', to_str(el)
    n = 1000
    a.send(''.join("<message to='%s@localhost/desk' type='chat' id='k%d'>"
                   "<body>k%d</body></message>" % (bob, i, i) for i in range(n)))
    a.send("<r xmlns='urn:xmpp:sm:3'/>")
    el = a.recv_until(lambda e: e.tag == '{urn:xmpp:sm:3}a', timeout=20, what='<a/>')
    assert int(el.get('h')) == n
    srv.kill()
    srv.start()
    assert rows_of(srv, alice) == n and rows_of(srv, bob) == n
    b = online(srv, bob, bpw, 'again')
    r = ok(query(b, max_=10, before=''))
    assert r.bodies == ['k%d' % i for i in range(n - 10, n)] and r.count == n
