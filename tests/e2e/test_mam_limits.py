"""mod_mam hardening: per-user archive quotas (max_messages, max_bytes,
quota_policy, pigeonctl archive_stats) and resent messages (same XEP-0359
origin-id) that are delivered, stored and archived once."""

import subprocess
import time

from conftest import PIGEOND, db, pigeon_env
from rawxmpp import local, to_str
from test_mam import ok, online, query, rows_of

NS_SM = 'urn:xmpp:sm:3'
NS_SID = 'urn:xmpp:sid:0'
BODY = '{jabber:client}body'


def is_sm(el, name):
    return el.tag == '{%s}%s' % (NS_SM, name)


def enable_sm(c):
    c.send("<enable xmlns='%s'/>" % NS_SM)
    el = c.recv_until(lambda e: is_sm(e, 'enabled') or is_sm(e, 'failed'),
                      what='<enabled/>')
    assert is_sm(el, 'enabled'), to_str(el)


def ack(c):
    c.send("<r xmlns='%s'/>" % NS_SM)
    el = c.recv_until(lambda e: is_sm(e, 'a'), what='<a/>')
    return int(el.get('h'))


def msg(to, body, id_, origin=None):
    extra = ("<origin-id xmlns='%s' id='%s'/>" % (NS_SID, origin)
             if origin else '')
    return ("<message to='%s' type='chat' id='%s'><body>%s</body>%s</message>"
            % (to, id_, body, extra))


def bodies_until(c, last):
    """The bodies c receives, up to and including the message 'last'."""
    got = []
    while True:
        el = c.recv_until(lambda e: local(e.tag) == 'message'
                          and e.find(BODY) is not None,
                          what='message %r' % last)
        got.append(el.find(BODY).text)
        if got[-1] == last:
            return got


def stats(srv, host='localhost'):
    r = srv.ctl('archive_stats', host, expect=0)
    out = {}
    for line in r.stdout.splitlines():
        k, v = line.split()
        out[k] = int(v)
    return out


def count_body(server, user, body):
    assert user.isalnum() and body.isalnum()
    return int(db(server, "SELECT count(*) FROM mam_messages WHERE host = "
                          "'localhost' AND username = '%s' AND stanza LIKE "
                          "'%%>%s<%%'" % (user, body)))


# ---- item 18: resent messages --------------------------------------------

def test_resent_message_delivered_and_archived_once(server):
    """A client whose connection was cut before the ack logs in again
    (no resumption) and resends with the same origin-id and id: the
    recipient gets it once, each archive holds it once, the sender's
    new session counts it as handled and gets no error."""
    alice, apw = server.new_user(prefix='alice')
    bob, bpw = server.new_user(prefix='bob')
    b = online(server, bob, bpw, 'rb')
    to = '%s@localhost' % bob
    a = server.login(alice, apw, resource='ra')
    enable_sm(a)
    a.send(msg(to, 'first', 'm1', 'orig-1'))
    assert bodies_until(b, 'first') == ['first']
    a.close()       # cut before any <a/>
    a = server.login(alice, apw, resource='ra2')
    enable_sm(a)
    a.send(msg(to, 'first', 'm1', 'orig-1'))
    # The same origin-id to someone else is another message.
    a.send(msg('%s@localhost' % alice, 'toself', 'm2', 'orig-1'))
    a.send(msg(to, 'second', 'm3', 'orig-2'))
    assert ack(a) == 3
    assert bodies_until(b, 'second') == ['second']
    a.expect_silence(0.3)   # no error for the duplicate
    assert count_body(server, alice, 'first') == 1
    assert count_body(server, bob, 'first') == 1
    assert count_body(server, alice, 'toself') == 1
    assert count_body(server, bob, 'second') == 1
    # MAM sees it once too.
    r = ok(query(b))
    assert r.bodies.count('first') == 1, r.bodies


def test_resent_message_to_offline_recipient_stored_once(server):
    alice, apw = server.new_user(prefix='alice')
    bob, bpw = server.new_user(prefix='bob')
    to = '%s@localhost' % bob
    a = server.login(alice, apw, resource='ra')
    a.send(msg(to, 'offline1', 'o1', 'orig-off'))
    a.ping()        # routed
    a.close()
    a = server.login(alice, apw, resource='ra2')
    a.send(msg(to, 'offline1', 'o1', 'orig-off'))
    a.send(msg(to, 'offline2', 'o2', 'orig-off2'))
    a.ping()
    b = server.login(bob, bpw, resource='rb')
    b.presence()
    assert bodies_until(b, 'offline2') == ['offline1', 'offline2']
    b.expect_silence(0.3)
    assert count_body(server, bob, 'offline1') == 1
    assert count_body(server, alice, 'offline1') == 1


def test_resent_message_deduplicated_after_restart(make_server, driver):
    """The window of recent origin-ids is filled from the archive after
    a restart."""
    srv = make_server(driver)
    alice, apw = srv.new_user(prefix='alice')
    bob, bpw = srv.new_user(prefix='bob')
    to = '%s@localhost' % bob
    b = online(srv, bob, bpw, 'rb')
    a = srv.login(alice, apw, resource='ra')
    a.send(msg(to, 'before', 'r1', 'orig-restart'))
    assert bodies_until(b, 'before') == ['before']
    a.close()
    b.close()
    srv.stop()
    srv.start()
    b = online(srv, bob, bpw, 'rb')
    a = srv.login(alice, apw, resource='ra')
    a.send(msg(to, 'before', 'r1', 'orig-restart'))
    a.send(msg(to, 'after', 'r2', 'orig-after'))
    assert bodies_until(b, 'after') == ['after']
    assert count_body(srv, alice, 'before') == 1
    assert count_body(srv, bob, 'before') == 1


# ---- item 6: quotas --------------------------------------------------------

def send_n(a, b, n, prefix, pad=''):
    for i in range(n):
        a.message(b.jid, '%s%d%s' % (prefix, i, pad))
    bodies_until(b, '%s%d%s' % (prefix, n - 1, pad))


def wait_rows(srv, user, n, timeout=10.0):
    deadline = time.monotonic() + timeout
    while rows_of(srv, user) != n:
        assert time.monotonic() < deadline, \
            '%s has %d rows, expected %d' % (user, rows_of(srv, user), n)
        time.sleep(0.05)


def test_quota_max_messages_drops_oldest(make_server, driver):
    srv = make_server(driver, modules={'mod_mam': {'max_messages': '3'}})
    alice, apw = srv.new_user(prefix='alice')
    bob, bpw = srv.new_user(prefix='bob')
    a = online(srv, alice, apw, 'ra')
    b = online(srv, bob, bpw, 'rb')
    send_n(a, b, 5, 'q')
    # The oldest are deleted right after the new rows are written (a
    # query goes after every row of the messages delivered before it).
    ok(query(a))
    ok(query(b))
    wait_rows(srv, alice, 3)
    wait_rows(srv, bob, 3)
    r = ok(query(b))
    assert r.bodies == ['q2', 'q3', 'q4'] and r.count == 3, r.bodies
    assert ok(query(a)).bodies == ['q2', 'q3', 'q4']
    s = stats(srv)
    assert s['archive_messages'] == 6 and s['archive_users_at_quota'] == 2, s
    assert s['archive_quota_dropped'] == 4 and s['archive_quota_refused'] == 0, s
    # The byte figure is the stanzas' size.
    assert s['archive_bytes'] == int(db(
        srv, "SELECT sum(%s) FROM mam_messages WHERE host = 'localhost'"
        % ('octet_length(stanza)' if driver == 'pgsql'
           else 'length(CAST(stanza AS BLOB))'))), s


def test_quota_max_bytes_drops_oldest(make_server, driver):
    srv = make_server(driver, modules={'mod_mam': {'max_bytes': '3000'}})
    alice, apw = srv.new_user(prefix='alice')
    bob, bpw = srv.new_user(prefix='bob')
    a = online(srv, alice, apw, 'ra')
    b = online(srv, bob, bpw, 'rb')
    pad = 'x' * 500     # about 600 bytes per stored stanza
    send_n(a, b, 10, 'b', pad)
    ok(query(b))    # every row written

    def size():
        return int(db(srv, "SELECT sum(%s) FROM mam_messages WHERE username = '%s'"
                      % ('octet_length(stanza)' if driver == 'pgsql'
                         else 'length(CAST(stanza AS BLOB))', bob)))
    deadline = time.monotonic() + 10
    while size() > 3000:
        assert time.monotonic() < deadline, size()
        time.sleep(0.05)
    assert size() >= 2400, size()
    r = ok(query(b))
    assert r.count * 600 <= 3000, (r.count, size(), r.bodies)
    assert r.bodies == ['b%d%s' % (i, pad) for i in range(10 - r.count, 10)]
    assert 4 <= r.count <= 5, r.count


def test_quota_refuse_keeps_delivering(make_server, driver):
    """refuse: past the quota new messages are delivered but not archived
    (the quota is an archiving policy, like the preferences)."""
    srv = make_server(driver, modules={'mod_mam': {
        'max_messages': '2', 'quota_policy': 'refuse'}})
    alice, apw = srv.new_user(prefix='alice')
    bob, bpw = srv.new_user(prefix='bob')
    a = online(srv, alice, apw, 'ra')
    b = online(srv, bob, bpw, 'rb')
    send_n(a, b, 4, 'f')
    r = ok(query(b))
    assert r.bodies == ['f0', 'f1'], r.bodies
    assert ok(query(a)).bodies == ['f0', 'f1']
    s = stats(srv)
    assert s['archive_quota_refused'] == 4 and s['archive_users_at_quota'] == 2, s
    assert s['archive_quota_dropped'] == 0, s
    # Room made by deleting is seen: the refusal after it counts again.
    srv.ctl('delete_old_mam_messages', '0', expect=0)
    send_n(a, b, 1, 'g')
    ok(query(b))
    send_n(a, b, 3, 'h')
    assert ok(query(b)).bodies == ['h0', 'h1'], ok(query(b)).bodies
    assert ok(query(a)).bodies == ['h0', 'h1']


def test_quota_applies_to_archives_filled_before(make_server, driver):
    """A quota set on archives already larger (or counted by a previous
    run) is enforced from the stored counters on the next message."""
    srv = make_server(driver)
    alice, apw = srv.new_user(prefix='alice')
    bob, bpw = srv.new_user(prefix='bob')
    a = online(srv, alice, apw, 'ra')
    b = online(srv, bob, bpw, 'rb')
    send_n(a, b, 6, 'p')
    a.close()
    b.close()
    srv.stop()
    srv.modules['mod_mam'] = {'max_messages': '2'}
    srv.write_config()
    srv.start()
    assert stats(srv)['archive_users_at_quota'] == 2
    a = online(srv, alice, apw, 'ra')
    b = online(srv, bob, bpw, 'rb')
    send_n(a, b, 1, 'n')
    ok(query(a))
    ok(query(b))
    wait_rows(srv, bob, 2)
    assert ok(query(b)).bodies == ['p5', 'n0']
    wait_rows(srv, alice, 2)


def test_quota_options_are_checked(make_server, driver):
    for opts, word in (({'quota_policy': 'sometimes'}, 'quota_policy'),
                       ({'max_messages': '-1'}, 'max_messages'),
                       ({'max_bytes': 'lots'}, 'max_bytes')):
        srv = make_server(driver, start=False, modules={'mod_mam': opts})
        r = subprocess.run([str(PIGEOND), '-c', str(srv.config)],
                           capture_output=True, text=True, timeout=30,
                           env=pigeon_env(), stdin=subprocess.DEVNULL)
        assert r.returncode != 0 and word in r.stdout + r.stderr, \
            (opts, r.returncode, r.stdout, r.stderr)

