"""xml:lang (RFC 6120 4.7.4, 8.1.5): a stanza a client sends without
xml:lang is in its stream's language, and the server says so on the
stanza it routes."""

from rawxmpp import new_id

XML_LANG = '{http://www.w3.org/XML/1998/namespace}lang'


def pair(server, lang):
    """A sender whose stream says xml:lang=lang (None: no xml:lang) and an
    available receiver."""
    (a, apw), (b, bpw) = server.new_user(prefix='la'), server.new_user(prefix='lb')
    sender = server.raw(name='sender')
    sender.lang = lang
    sender.login(a, apw, 'r')
    receiver = server.login(b, bpw, resource='r')
    receiver.presence()
    receiver.recv_stanza('presence')
    return sender, receiver


def test_stream_language_stamped_on_routed_stanzas(server):
    sender, receiver = pair(server, 'de')
    mid = sender.message(receiver.jid, 'hallo')
    m = receiver.recv_stanza('message', id=mid)
    assert m.get(XML_LANG) == 'de'
    # A stanza's own xml:lang wins.
    sender.send("<message to='%s' id='m2' xml:lang='fr'><body>salut</body>"
                "</message>" % receiver.jid)
    m = receiver.recv_stanza('message', id='m2')
    assert m.get(XML_LANG) == 'fr'
    # Presence and iq too.
    sender.send("<presence to='%s' id='p1'/>" % receiver.jid)
    p = receiver.recv_stanza('presence', id='p1')
    assert p.get(XML_LANG) == 'de'
    iq_id = new_id('iq')
    sender.send("<iq type='get' id='%s' to='%s'><query xmlns='urn:x:q'/></iq>"
                % (iq_id, receiver.jid))
    iq = receiver.recv_stanza('iq', id=iq_id)
    assert iq.get(XML_LANG) == 'de'
    assert iq.find('{urn:x:q}query').get(XML_LANG) is None


def test_no_stream_language_nothing_stamped(server):
    sender, receiver = pair(server, None)
    mid = sender.message(receiver.jid, 'hello')
    m = receiver.recv_stanza('message', id=mid)
    assert m.get(XML_LANG) is None
