"""mod_ping (XEP-0199), mod_disco (XEP-0030), mod_version (XEP-0092)."""

import pytest

import rawxmpp
import slixutil
from rawxmpp import NS_DISCO_INFO, NS_PING, NS_VERSION, stanza_error, to_str
NS_DISCO_ITEMS = 'http://jabber.org/protocol/disco#items'


@pytest.mark.parametrize('host', ['localhost', 'example.test'])
def test_ping_server(server, host):
    name, pw = server.new_user(host)
    c = server.login(name, pw, host)
    r = c.ping(to=host)
    assert r.get('type') == 'result', to_str(r)
    assert r.get('from') == host, to_str(r)
    assert len(list(r)) == 0, 'ping result must be empty: %s' % to_str(r)


def test_ping_own_bare_jid(server, user):
    name, pw = user
    c = server.login(name, pw)
    r = c.ping(to='%s@localhost' % name)
    assert r.get('type') == 'result', to_str(r)


def test_disco_info_host(server, user):
    name, pw = user
    c = server.login(name, pw)
    r = c.iq('get', "<query xmlns='%s'/>" % NS_DISCO_INFO, to='localhost')
    assert r.get('type') == 'result', to_str(r)
    q = r.find('{%s}query' % NS_DISCO_INFO)
    assert q is not None, to_str(r)
    ids = [(i.get('category'), i.get('type')) for i in q.findall('{%s}identity' % NS_DISCO_INFO)]
    assert ('server', 'im') in ids, ids
    feats = [f.get('var') for f in q.findall('{%s}feature' % NS_DISCO_INFO)]
    for f in (NS_DISCO_INFO, NS_PING, NS_VERSION):
        assert f in feats, '%s not in disco#info features %s' % (f, feats)
    assert len(feats) == len(set(feats)), 'duplicate features: %s' % feats


def account_info(c, to):
    r = c.iq('get', "<query xmlns='%s'/>" % NS_DISCO_INFO, to=to)
    assert r.get('type') == 'result', to_str(r)
    q = r.find('{%s}query' % NS_DISCO_INFO)
    ids = [(i.get('category'), i.get('type'))
           for i in q.findall('{%s}identity' % NS_DISCO_INFO)]
    feats = [f.get('var') for f in q.findall('{%s}feature' % NS_DISCO_INFO)]
    return ids, feats


def test_disco_info_account(server):
    """An account's bare JID: the identity for anyone, and the account
    features modules add (archive, push) for the owner only."""
    a_name, a_pw = server.new_user()
    b_name, b_pw = server.new_user()
    a = server.login(a_name, a_pw)
    b = server.login(b_name, b_pw)
    ids, feats = account_info(a, '%s@localhost' % a_name)
    assert ('account', 'registered') in ids
    for f in ('urn:xmpp:mam:2', 'urn:xmpp:push:0', NS_DISCO_INFO):
        assert f in feats, '%s not in %s' % (f, feats)
    assert len(feats) == len(set(feats)), feats
    ids, feats = account_info(b, '%s@localhost' % a_name)
    assert ('account', 'registered') in ids
    assert 'urn:xmpp:mam:2' not in feats and 'urn:xmpp:push:0' not in feats


def test_disco_items_host(server, user):
    name, pw = user
    c = server.login(name, pw)
    r = c.iq('get', "<query xmlns='http://jabber.org/protocol/disco#items'/>",
             to='localhost')
    assert r.get('type') == 'result', to_str(r)


def test_disco_info_unknown_node(server, user):
    name, pw = user
    c = server.login(name, pw)
    r = c.iq('get', "<query xmlns='%s' node='no-such-node'/>" % NS_DISCO_INFO,
             to='localhost')
    assert r.get('type') == 'error', to_str(r)
    assert stanza_error(r)[1] in ('item-not-found', 'service-unavailable'), to_str(r)


def test_version(server, user):
    name, pw = user
    c = server.login(name, pw)
    r = c.iq('get', "<query xmlns='%s'/>" % NS_VERSION, to='localhost')
    assert r.get('type') == 'result', to_str(r)
    q = r.find('{%s}query' % NS_VERSION)
    assert q.findtext('{%s}name' % NS_VERSION) == 'Pigeon', to_str(r)
    assert (q.findtext('{%s}version' % NS_VERSION) or '').strip(), to_str(r)


def test_ping_set_is_bad_request_or_unavailable(server, user):
    name, pw = user
    c = server.login(name, pw)
    r = c.iq('set', "<ping xmlns='%s'/>" % NS_PING, to='localhost')
    assert r.get('type') == 'error', to_str(r)
    assert stanza_error(r)[1] in ('bad-request', 'service-unavailable',
                                  'feature-not-implemented'), to_str(r)


def test_slixmpp_ping_disco_version(server):
    name, pw = server.new_user(prefix='slix')

    async def scenario():
        c = await server.slix('%s@localhost/s' % name, pw).start()
        rtt = await c['xep_0199'].ping('localhost', timeout=5)
        assert rtt is not None
        info = await c['xep_0030'].get_info(jid='localhost', timeout=5)
        feats = info['disco_info']['features']
        assert NS_PING in feats and NS_VERSION in feats, feats
        ver = await c['xep_0092'].get_version('localhost', timeout=5)
        assert ver['software_version']['name'] == 'Pigeon', ver
        await c.stop()
    slixutil.run(scenario)


def test_slixmpp_direct_tls_login(server):
    name, pw = server.new_user('example.test', prefix='slixdt')

    async def scenario():
        c = await server.slix('%s@example.test/d' % name, pw, direct_tls=True).start()
        assert str(c.boundjid) == '%s@example.test/d' % name
        rtt = await c['xep_0199'].ping('example.test', timeout=5)
        assert rtt is not None
        await c.stop()
    slixutil.run(scenario)


def test_slixmpp_wrong_password_fails(server):
    name, pw = server.new_user(prefix='slixbad')

    async def scenario():
        c = server.slix('%s@localhost/x' % name, pw + 'nope')
        with pytest.raises(AssertionError, match='authentication failed|disconnected'):
            await c.start(timeout=10)
    slixutil.run(scenario)


@pytest.mark.parametrize('mech', ['SCRAM-SHA-1', 'PLAIN'])
def test_slixmpp_other_mechanisms(server, mech):
    name, pw = server.new_user(prefix='slixm')

    async def scenario():
        c = await server.slix('%s@localhost/m' % name, pw, mech=mech).start()
        await c.stop()
    slixutil.run(scenario)


def test_disco_info_account_lists_items(server):
    """XEP-0030: an account's bare JID answers disco#items, so its
    disco#info lists the feature, for its owner and for others."""
    a_name, a_pw = server.new_user()
    b_name, b_pw = server.new_user()
    a = server.login(a_name, a_pw)
    b = server.login(b_name, b_pw)
    for c in (a, b):
        _, feats = account_info(c, '%s@localhost' % a_name)
        assert NS_DISCO_ITEMS in feats, feats
        r = c.iq('get', "<query xmlns='%s'/>" % NS_DISCO_ITEMS,
                 to='%s@localhost' % a_name)
        assert r.get('type') == 'result', to_str(r)
