"""mod_offline: offline messages (XEP-0160), XEP-0203 delay, XEP-0334
hints, quota, delete_old_messages."""

import time

import pytest

import rawxmpp
from conftest import db
from rawxmpp import local, stanza_error, to_str

BODY = '{jabber:client}body'
DELAY = '{urn:xmpp:delay}delay'
NS_HINTS = 'urn:xmpp:hints'
NS_CHATSTATES = 'http://jabber.org/protocol/chatstates'
NS_RECEIPTS = 'urn:xmpp:receipts'
NS_MARKERS = 'urn:xmpp:chat-markers:0'
NS_OMEMO = 'eu.siacs.conversations.axolotl'
STAMP_RE = r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$'


# ---- helpers -----------------------------------------------------------



def stored(server, username=None):
    """Rows in offline_messages (of username on localhost, or all)."""
    sql = 'SELECT count(*) FROM offline_messages'
    if username is not None:
        assert username.isalnum()
        sql += " WHERE host = 'localhost' AND username = '%s'" % username
    return int(db(server, sql))


def wait_stored(server, username, n, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        got = stored(server, username)
        if got == n:
            return
        if time.monotonic() > deadline:
            raise AssertionError('%s: %d offline messages stored, expected %d'
                                 % (username, got, n))
        time.sleep(0.05)


def barrier(c):
    """The server has routed everything c sent before (stanzas of one
    session are processed in order)."""
    assert c.ping().get('type') == 'result'


def sender_and_recipient(server):
    a_name, a_pw = server.new_user(prefix='osnd')
    b_name, b_pw = server.new_user(prefix='orcp')
    a = server.login(a_name, a_pw, resource='ra')
    a.presence()
    return a, b_name, b_pw


def raw_message(c, to, type_=None, id_=None, payload=''):
    id_ = id_ or rawxmpp.new_id('m')
    attrs = " to='%s' id='%s'" % (to, id_)
    if type_ is not None:
        attrs += " type='%s'" % type_
    c.send('<message%s>%s</message>' % (attrs, payload))
    return id_


def come_online(server, name, pw, resource='rb'):
    b = server.login(name, pw, resource=resource)
    b.presence()
    return b


def recv_messages(c, n, timeout=10.0):
    return [c.recv_stanza('message', timeout=timeout) for _ in range(n)]


def errors_for(c, seconds=0.7):
    """Message errors that reach c: everything up to the answer of a ping
    sent now (the server has routed all c sent before it), then for
    `seconds` more (answers of held or stored messages come later).
    Returns {id: (type, condition)}."""
    out = {}

    def note(el):
        if local(el.tag) == 'message' and el.get('type') == 'error':
            out[el.get('id')] = stanza_error(el)

    ping_id = rawxmpp.new_id('barrier')
    c.send("<iq type='get' id='%s' to='localhost'><ping xmlns='%s'/></iq>"
           % (ping_id, rawxmpp.NS_PING))
    while True:
        el = c.recv()
        if local(el.tag) == 'iq' and el.get('id') == ping_id:
            break
        note(el)
    deadline = time.monotonic() + seconds
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return out
        try:
            el = c.recv(remaining)
        except rawxmpp.XMPPTimeout:
            return out
        note(el)


def assert_our_delay(m, host='localhost'):
    import re
    delays = [d for d in m.findall(DELAY) if d.get('from') == host]
    assert len(delays) == 1, 'expected one <delay from=%s/>: %s' % (host, to_str(m))
    assert re.match(STAMP_RE, delays[0].get('stamp') or ''), to_str(m)


# ---- tests -------------------------------------------------------------

def test_disco_feature(server, user):
    name, pw = user
    c = server.login(name, pw)
    r = c.iq('get', "<query xmlns='%s'/>" % rawxmpp.NS_DISCO_INFO, to='localhost')
    feats = [f.get('var') for f in r.iter('{%s}feature' % rawxmpp.NS_DISCO_INFO)]
    assert 'msgoffline' in feats, to_str(r)


def test_stored_and_delivered_in_order_with_delay(server):
    a, b_name, b_pw = sender_and_recipient(server)
    bare = '%s@localhost' % b_name
    sent = [
        raw_message(a, bare, 'chat', payload='<body>one</body>'),
        raw_message(a, bare, 'normal', payload='<body>two</body>'),
        # no type: normal (RFC 6121 5.2.2)
        raw_message(a, bare, None, payload='<body>three</body>'),
        # to a resource that is not there: handled as for the bare JID
        raw_message(a, bare + '/gone', 'chat', payload='<body>four</body>'),
    ]
    assert errors_for(a, 0.3) == {}, 'a stored message was bounced'
    wait_stored(server, b_name, 4)

    b = come_online(server, b_name, b_pw)
    got = recv_messages(b, 4)
    assert [m.get('id') for m in got] == sent, [to_str(m) for m in got]
    assert [m.findtext(BODY) for m in got] == ['one', 'two', 'three', 'four']
    for m in got:
        assert m.get('from') == a.jid, to_str(m)
        assert_our_delay(m)
    assert got[0].get('type') == 'chat' and got[1].get('type') == 'normal'
    # delivered, hence deleted: a second login gets nothing
    wait_stored(server, b_name, 0)
    b.close()
    b2 = come_online(server, b_name, b_pw, resource='again')
    barrier(b2)
    b2.expect_silence(0.5)


def test_not_stored_groupchat_headline_chat_states(server):
    a, b_name, b_pw = sender_and_recipient(server)
    bare = '%s@localhost' % b_name
    gc = raw_message(a, bare, 'groupchat', payload='<body>gc</body>')
    hl = raw_message(a, bare, 'headline', payload='<body>news</body>')
    cs = raw_message(a, bare, 'chat',
                     payload="<composing xmlns='%s'/>" % NS_CHATSTATES)
    cs2 = raw_message(a, bare, 'chat',
                      payload="<active xmlns='%s'/><thread>t1</thread>" % NS_CHATSTATES)
    last = raw_message(a, bare, 'chat', payload='<body>last</body>')
    errs = errors_for(a)
    assert hl not in errs, 'a headline must not be bounced: %s' % errs
    assert last not in errs, errs
    # not stored: the router's rules answer (service-unavailable)
    for mid in (gc, cs, cs2):
        assert errs.get(mid) == ('cancel', 'service-unavailable'), (mid, errs)
    wait_stored(server, b_name, 1)

    b = come_online(server, b_name, b_pw)
    m = b.recv_stanza('message')
    assert m.get('id') == last, to_str(m)
    b.expect_silence(0.5)


def test_hints_and_bodyless_payloads(server):
    a, b_name, b_pw = sender_and_recipient(server)
    bare = '%s@localhost' % b_name
    expect = [
        # XEP-0334 <store/>: stored although a headline
        raw_message(a, bare, 'headline',
                    payload="<body>kept news</body><store xmlns='%s'/>" % NS_HINTS),
        # a body-less receipt (XEP-0184)
        raw_message(a, bare, 'chat',
                    payload="<received xmlns='%s' id='x1'/>" % NS_RECEIPTS),
    ]
    nostore = raw_message(a, bare, 'chat',
                          payload="<body>gone</body><no-store xmlns='%s'/>" % NS_HINTS)
    expect += [
        # XEP-0334 §4.1: <no-permanent-store/> keeps it out of archives
        # only; storage for later delivery is allowed (§3.4).  Not
        # archived, it still keeps its place behind the receipt, which
        # mod_mam holds while it reads the recipient's preferences.
        raw_message(a, bare, 'chat',
                    payload="<body>kept</body><no-permanent-store xmlns='%s'/>"
                    % NS_HINTS),
        # a body-less OMEMO message (key transport) and a chat marker
        raw_message(a, bare, 'chat',
                    payload="<encrypted xmlns='%s'><header sid='1'><iv>AAAA</iv>"
                            "</header></encrypted>" % NS_OMEMO),
        raw_message(a, bare, 'chat',
                    payload="<displayed xmlns='%s' id='x2'/>" % NS_MARKERS),
        # a chat state with <store/> is stored
        raw_message(a, bare, 'chat',
                    payload="<gone xmlns='%s'/><store xmlns='%s'/>"
                            % (NS_CHATSTATES, NS_HINTS)),
    ]
    errs = errors_for(a)
    for mid in expect:
        assert mid not in errs, (mid, errs)
    assert errs.get(nostore) == ('cancel', 'service-unavailable'), errs
    wait_stored(server, b_name, len(expect))

    b = come_online(server, b_name, b_pw)
    got = recv_messages(b, len(expect))
    assert [m.get('id') for m in got] == expect, [to_str(m) for m in got]
    assert got[1].find('{%s}received' % NS_RECEIPTS) is not None
    assert got[2].findtext('{jabber:client}body') == 'kept'
    assert got[3].find('{%s}encrypted' % NS_OMEMO) is not None
    for m in got:
        assert_our_delay(m)
    b.expect_silence(0.5)


def test_existing_server_delay_not_duplicated(server):
    a, b_name, b_pw = sender_and_recipient(server)
    bare = '%s@localhost' % b_name
    other = ("<delay xmlns='urn:xmpp:delay' from='elsewhere.example' "
             "stamp='2002-09-10T23:08:25Z'/>")
    ours = ("<delay xmlns='urn:xmpp:delay' from='localhost' "
            "stamp='2002-09-10T23:08:25Z'/>")
    m1 = raw_message(a, bare, 'chat', payload='<body>1</body>' + other)
    m2 = raw_message(a, bare, 'chat', payload='<body>2</body>' + ours)
    barrier(a)
    wait_stored(server, b_name, 2)
    b = come_online(server, b_name, b_pw)
    got = recv_messages(b, 2)
    assert [m.get('id') for m in got] == [m1, m2]
    assert len(got[0].findall(DELAY)) == 2, to_str(got[0])
    assert_our_delay(got[0])
    assert len(got[1].findall(DELAY)) == 1, to_str(got[1])
    assert got[1].find(DELAY).get('stamp') == '2002-09-10T23:08:25Z'


def test_unknown_account_is_not_stored(server, user):
    name, pw = user
    a = server.login(name, pw)
    mid = raw_message(a, 'nosuchuser%s@localhost' % rawxmpp.new_id()[3:],
                      'chat', payload='<body>hello?</body>')
    el = a.recv_stanza('message', id=mid)
    assert stanza_error(el) == ('cancel', 'service-unavailable'), to_str(el)


def test_quota(make_server, driver):
    srv = make_server(driver, modules={'mod_offline': {'quota': 3}})
    a, b_name, b_pw = sender_and_recipient(srv)
    bare = '%s@localhost' % b_name
    ok = [raw_message(a, bare, 'chat', payload='<body>%d</body>' % i)
          for i in range(3)]
    over = raw_message(a, bare, 'chat', payload='<body>too many</body>')
    el = a.recv_stanza('message', id=over)
    assert el.get('type') == 'error', to_str(el)
    assert stanza_error(el) == ('wait', 'resource-constraint'), to_str(el)
    err = el.find('{jabber:client}error')
    assert err.findtext('{%s}text' % rawxmpp.NS_STANZAS), \
        'quota error without a text: %s' % to_str(el)
    assert el.get('from') == bare, to_str(el)
    assert errors_for(a, 0.3) == {}
    assert stored(srv, b_name) == 3

    b = come_online(srv, b_name, b_pw)
    got = recv_messages(b, 3)
    assert [m.get('id') for m in got] == ok
    b.expect_silence(0.5)
    # room again once delivered
    wait_stored(srv, b_name, 0)
    b.close()
    mid = raw_message(a, bare, 'chat', payload='<body>after</body>')
    assert errors_for(a, 0.3) == {}
    wait_stored(srv, b_name, 1)
    b = come_online(srv, b_name, b_pw, resource='r2')
    assert b.recv_stanza('message').get('id') == mid


def test_bad_quota_option_refuses_to_start(make_server):
    srv = make_server('sqlite', start=False,
                      modules={'mod_offline': {'quota': 'lots'}})
    with pytest.raises(AssertionError, match='during start-up') as e:
        srv.start()
    assert 'quota' in str(e.value), str(e.value)
    srv.proc = None  # it never ran: nothing for the fixture to stop


def test_survives_restart(make_server, driver):
    srv = make_server(driver)
    a, b_name, b_pw = sender_and_recipient(srv)
    bare = '%s@localhost' % b_name
    sent = [raw_message(a, bare, 'chat', payload='<body>before %d</body>' % i)
            for i in range(3)]
    barrier(a)
    a.close()
    srv.stop()
    srv.start()
    b = come_online(srv, b_name, b_pw)
    got = recv_messages(b, 3)
    assert [m.get('id') for m in got] == sent
    for m in got:
        assert_our_delay(m)


def test_backlog_in_batches_then_live_messages_in_order(server):
    # 350 stored messages: four reads of the store; a message sent while
    # they are being delivered must come after all of them.
    n = 350
    a, b_name, b_pw = sender_and_recipient(server)
    bare = '%s@localhost' % b_name
    a.send(''.join("<message to='%s' id='bl%d' type='chat'><body>%d</body></message>"
                   % (bare, i, i) for i in range(n)))
    barrier(a)
    wait_stored(server, b_name, n, timeout=30)

    b = come_online(server, b_name, b_pw)
    first = b.recv_stanza('message', timeout=15)
    live = raw_message(a, bare, 'chat', payload='<body>live</body>')
    got = [first] + recv_messages(b, n, timeout=15)
    ids = [m.get('id') for m in got]
    assert ids == ['bl%d' % i for i in range(n)] + [live], ids[-5:]
    assert got[-1].find(DELAY) is None, 'the live message was delayed: %s' % to_str(got[-1])
    wait_stored(server, b_name, 0)


def test_unregister_deletes_offline_messages(server):
    a, b_name, b_pw = sender_and_recipient(server)
    raw_message(a, '%s@localhost' % b_name, 'chat', payload='<body>x</body>')
    barrier(a)
    wait_stored(server, b_name, 1)
    server.ctl('unregister', b_name, 'localhost', expect=0)
    assert stored(server, b_name) == 0


def test_delete_old_messages(make_server, driver):
    srv = make_server(driver)
    for bad in ('-1', 'abc', '1.5', '', '99999999999'):
        r = srv.ctl('delete_old_messages', bad) if bad else \
            srv.ctl('delete_old_messages')
        assert r.returncode == 2, (bad, r.returncode, r.stdout, r.stderr)
    a, b_name, b_pw = sender_and_recipient(srv)
    bare = '%s@localhost' % b_name
    for i in range(2):
        raw_message(a, bare, 'chat', payload='<body>old %d</body>' % i)
    barrier(a)
    wait_stored(srv, b_name, 2)
    r = srv.ctl('delete_old_messages', '1', expect=0)
    assert r.stdout.strip() == '0', r.stdout
    assert stored(srv, b_name) == 2
    r = srv.ctl('delete_old_messages', '0', expect=0)
    assert r.stdout.strip() == '2', r.stdout
    assert stored(srv, b_name) == 0
    b = come_online(srv, b_name, b_pw)
    barrier(b)
    b.expect_silence(0.5)


def test_broken_stored_row_does_not_block_the_rest(server):
    a, b_name, b_pw = sender_and_recipient(server)
    bare = '%s@localhost' % b_name
    m1 = raw_message(a, bare, 'chat', payload='<body>before</body>')
    barrier(a)
    wait_stored(server, b_name, 1)
    # an incomplete stanza, as a damaged row would be
    db(server, "INSERT INTO offline_messages (host, username, created_at, stanza) "
               "VALUES ('localhost', '%s', 0, '<message><body>cut')" % b_name)
    m2 = raw_message(a, bare, 'chat', payload='<body>after</body>')
    barrier(a)
    wait_stored(server, b_name, 3)
    b = come_online(server, b_name, b_pw)
    got = recv_messages(b, 2)
    assert [m.get('id') for m in got] == [m1, m2], [to_str(m) for m in got]
    wait_stored(server, b_name, 0)


@pytest.mark.parametrize('sm', [False, True], ids=['plain', 'sm'])
def test_large_backlog_in_one_login(make_server, driver, sm):
    """200 x 100 KB stored messages reach a client that is slow to read in
    one login, in order and once each: the backlog is written batch by
    batch as the session's output drains (and, with stream management,
    as the client acknowledges), never piled up until the stream is
    closed for unread output."""
    srv = make_server(driver, max_stanza_size=200000)
    a, b_name, b_pw = sender_and_recipient(srv)
    bare = '%s@localhost' % b_name
    n, pad = 200, 'z' * 100000
    for i in range(n):
        raw_message(a, bare, 'chat', id_='big%d' % i,
                    payload='<body>%d %s</body>' % (i, pad))
    barrier(a)
    wait_stored(srv, b_name, n, timeout=60)

    b = srv.login(b_name, b_pw, resource='rb')
    if sm:
        b.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
    b.presence()
    # Slow to start reading: everything the server cannot hand to the
    # kernel stays in its output buffer meanwhile.
    time.sleep(2)
    ids, h = [], 0
    while len(ids) < n:
        el = b.recv(timeout=30)
        tag = local(el.tag)
        if tag == 'message':
            ids.append(el.get('id'))
        if rawxmpp.ns_of(el.tag) != 'urn:xmpp:sm:3':
            h += 1
        elif tag == 'r':
            b.send("<a xmlns='urn:xmpp:sm:3' h='%d'/>" % h)
    assert ids == ['big%d' % i for i in range(n)]
    barrier(b)
    wait_stored(srv, b_name, 0, timeout=20)
