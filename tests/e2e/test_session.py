"""Resource binding (RFC 6120 7), conflicts, RFC 3921 session, virtual hosts."""

import rawxmpp
from rawxmpp import to_str


def test_bind_client_chosen_resource(server, user):
    name, password = user
    c = server.login(name, password, resource='phone')
    assert c.jid == '%s@localhost/phone' % name


def test_bind_server_generated_resource(server, user):
    name, password = user
    c1 = server.login(name, password)
    c2 = server.login(name, password)
    for c in (c1, c2):
        bare, _, res = c.jid.partition('/')
        assert bare == '%s@localhost' % name, c.jid
        assert res, 'empty server-generated resource: %r' % c.jid
    assert c1.jid != c2.jid, 'the server generated the same resource twice'


def test_bind_normalises_username_case(server):
    name, password = server.new_user(prefix='CaseUser')
    # nodeprep: the account is stored lower-case; login with any case works
    c = server.login(name.upper(), password, resource='r')
    assert c.jid == '%s@localhost/r' % name.lower(), c.jid


def test_session_is_an_optional_noop(server, user):
    name, password = user
    c = server.raw()
    c.login(name, password, bind=False)
    feats = c.features
    c.bind('s')
    sess = feats.find('{urn:ietf:params:xml:ns:xmpp-session}session')
    if sess is not None:
        assert sess.find('{urn:ietf:params:xml:ns:xmpp-session}optional') is not None, \
            'RFC 3921 session must be marked <optional/>: %s' % to_str(feats)
    # even when not advertised, old clients send it: must not break
    r = c.iq('set', "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/>")
    assert r.get('type') in ('result', 'error'), to_str(r)
    assert c.ping().get('type') == 'result'


def test_same_resource_replaces_first_session(server, user):
    name, password = user
    first = server.login(name, password, resource='same')
    second = server.login(name, password, resource='same')
    assert second.jid == '%s@localhost/same' % name
    assert first.expect_stream_error() == 'conflict'
    r = second.ping()
    assert r.get('type') == 'result', to_str(r)
    # the new session gets the messages
    sender_name, sender_pw = server.new_user()
    sender = server.login(sender_name, sender_pw, resource='s')
    sender.message(second.jid, 'to the survivor')
    m = second.recv_stanza('message')
    assert m.findtext('{jabber:client}body') == 'to the survivor'


def test_virtual_hosts_both_log_in(server):
    a_name, a_pw = server.new_user('localhost')
    b_name, b_pw = server.new_user('example.test')
    a = server.login(a_name, a_pw, 'localhost', resource='a')
    b = server.login(b_name, b_pw, 'example.test', resource='b')
    assert a.jid == '%s@localhost/a' % a_name
    assert b.jid == '%s@example.test/b' % b_name
    assert a.header.get('from') == 'localhost'
    assert b.header.get('from') == 'example.test'
    # cross-host messages are local routing
    b.presence()
    a.message(b.jid, 'hello other host')
    m = b.recv_stanza('message')
    assert m.get('from') == a.jid
    assert m.findtext('{jabber:client}body') == 'hello other host'


def test_virtual_hosts_have_separate_accounts(server):
    name, pw = server.new_user('localhost')
    # the same user name does not exist on the other host
    c = server.raw(domain='example.test')
    c.connect()
    c.open('example.test')
    c.starttls(sni='example.test')
    c.open('example.test')
    ok, el = c.auth_scram(name, pw, 'SCRAM-SHA-256')
    assert not ok, '%s@localhost could log in on example.test' % name
    assert c.failure_condition(el) == 'not-authorized'
