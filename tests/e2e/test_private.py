"""mod_private: private XML storage (XEP-0049)."""

import pytest

from rawxmpp import stanza_error, to_str

NS_PRIVATE = 'jabber:iq:private'


def q(inner):
    return "<query xmlns='%s'>%s</query>" % (NS_PRIVATE, inner)


def query_of(iq):
    assert iq.get('type') == 'result', to_str(iq)
    el = iq.find('{%s}query' % NS_PRIVATE)
    assert el is not None, to_str(iq)
    return el


def must_set(c, inner, to=None):
    r = c.iq('set', q(inner), to=to)
    assert r.get('type') == 'result', to_str(r)


def test_private_round_trip(server):
    alice, apw = server.new_user(prefix='pa')
    bob, bpw = server.new_user(prefix='pb')
    a = server.login(alice, apw)
    must_set(a, "<exodus xmlns='exodus:prefs'><defaultnick>Hamlet &amp; co"
                "</defaultnick></exodus>")
    got = query_of(a.iq('get', q("<exodus xmlns='exodus:prefs'/>")))
    ex = got.find('{exodus:prefs}exodus')
    assert ex is not None, to_str(got)
    assert ex.findtext('{exodus:prefs}defaultnick') == 'Hamlet & co', to_str(got)
    # a set replaces what the namespace held
    must_set(a, "<exodus xmlns='exodus:prefs'><defaultnick>Macbeth"
                "</defaultnick></exodus>")
    got = query_of(a.iq('get', q("<exodus xmlns='exodus:prefs'/>"),
                        to='%s@localhost' % alice))
    assert got.findtext('{exodus:prefs}exodus/{exodus:prefs}defaultnick') \
        == 'Macbeth', to_str(got)
    # every account has its own data
    b = server.login(bob, bpw)
    got = query_of(b.iq('get', q("<exodus xmlns='exodus:prefs'/>")))
    ex = got.find('{exodus:prefs}exodus')
    assert ex is not None and len(list(ex)) == 0, to_str(got)


def test_private_several_namespaces_and_elements(server, user):
    name, pw = user
    c = server.login(name, pw)
    # several namespaces in one set, and two elements of one namespace
    # (XEP-0049 §2.3).  Not storage:bookmarks: with mod_pep, its rooms
    # are the PEP bookmarks (test_pep_bridges.py) and come back as one.
    must_set(c, "<list xmlns='urn:example:multi'><conference jid='a@b'/>"
                "</list><notes xmlns='storage:rosternotes'><note jid='x@y'>"
                "hi</note></notes><list xmlns='urn:example:multi'><url/>"
                "</list>")
    got = query_of(c.iq('get', q("<list xmlns='urn:example:multi'/>")))
    els = list(got)
    assert [e.tag for e in els] == ['{urn:example:multi}list'] * 2, to_str(got)
    assert els[0].find('{urn:example:multi}conference').get('jid') == 'a@b'
    assert els[1].find('{urn:example:multi}url') is not None
    got = query_of(c.iq('get', q("<notes xmlns='storage:rosternotes'/>")))
    assert got.findtext('{storage:rosternotes}notes/{storage:rosternotes}note') \
        == 'hi', to_str(got)


def test_private_unknown_namespace_returns_request(server, user):
    name, pw = user
    c = server.login(name, pw)
    got = query_of(c.iq('get', q("<prefs xmlns='urn:example:nothing' v='1'/>")))
    els = list(got)
    assert len(els) == 1 and els[0].tag == '{urn:example:nothing}prefs', to_str(got)
    assert els[0].get('v') == '1' and len(list(els[0])) == 0, to_str(got)


def test_private_other_user_forbidden(server):
    alice, apw = server.new_user(prefix='pa')
    bob, bpw = server.new_user(prefix='pb')
    a = server.login(alice, apw)
    must_set(a, "<secret xmlns='urn:example:secret'>s3</secret>")
    b = server.login(bob, bpw)
    for type_ in ('get', 'set'):
        for to in ('%s@localhost' % alice, 'localhost'):
            r = b.iq(type_, q("<secret xmlns='urn:example:secret'>x</secret>"),
                     to=to)
            assert r.get('type') == 'error', to_str(r)
            assert stanza_error(r)[1] == 'forbidden', to_str(r)
    got = query_of(a.iq('get', q("<secret xmlns='urn:example:secret'/>")))
    assert got.findtext('{urn:example:secret}secret') == 's3', to_str(got)


@pytest.mark.parametrize('inner', [
    "<query xmlns='jabber:iq:roster'/>",
    "<x xmlns='http://jabber.org/protocol/muc'/>",
    "<vCard xmlns='vcard-temp'><FN>Hamlet</FN></vCard>",
    "<nonamespace/>",   # inherits jabber:iq:private: no namespace of its own
    "",                 # no child at all
])
def test_private_not_acceptable(server, user, inner):
    name, pw = user
    c = server.login(name, pw)
    for type_ in ('set', 'get'):
        r = c.iq(type_, q(inner))
        assert r.get('type') == 'error', to_str(r)
        assert stanza_error(r) == ('modify', 'not-acceptable'), to_str(r)


def test_private_get_two_namespaces_bad_request(server, user):
    name, pw = user
    c = server.login(name, pw)
    r = c.iq('get', q("<a xmlns='urn:example:a'/><b xmlns='urn:example:b'/>"))
    assert r.get('type') == 'error', to_str(r)
    assert stanza_error(r)[1] == 'bad-request', to_str(r)


def test_private_limits(make_server, driver):
    srv = make_server(driver, modules={
        'mod_private': {'max_size': 400, 'max_namespaces': 2}})
    name, pw = srv.new_user(prefix='pl')
    c = srv.login(name, pw)
    r = c.iq('set', q("<big xmlns='urn:example:big'>%s</big>" % ('z' * 500)))
    assert stanza_error(r) == ('modify', 'not-acceptable'), to_str(r)
    must_set(c, "<a xmlns='urn:example:a'>1</a>")
    must_set(c, "<b xmlns='urn:example:b'>1</b>")
    # a third namespace is over the quota ...
    r = c.iq('set', q("<c xmlns='urn:example:c'>1</c>"))
    assert r.get('type') == 'error', to_str(r)
    assert stanza_error(r)[1] == 'resource-constraint', to_str(r)
    # ... rewriting a stored one is not
    must_set(c, "<b xmlns='urn:example:b'>2</b>")
    got = query_of(c.iq('get', q("<b xmlns='urn:example:b'/>")))
    assert got.findtext('{urn:example:b}b') == '2', to_str(got)
    got = query_of(c.iq('get', q("<c xmlns='urn:example:c'/>")))
    assert got.findtext('{urn:example:c}c') in (None, ''), to_str(got)
