"""Stream errors (RFC 6120 4.9) for bad input."""

import pytest

import rawxmpp
from conftest import MAX_STANZA
from rawxmpp import NS_CLIENT, NS_STREAM

HEADER = ("<stream:stream xmlns='jabber:client' "
          "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' "
          "version='1.0'>")


def opened(server, port=None):
    """A raw client with an open (pre-TLS) stream on the optional-TLS port."""
    c = server.raw(port=port or server.c2s_plain_port)
    c.connect()
    c.open()
    return c


def logged_in(server):
    name, pw = server.new_user()
    return server.login(name, pw, resource='r')


def test_malformed_xml_before_auth(server):
    c = opened(server)
    c.send('<message><body>unclosed</message>')
    assert c.expect_stream_error() == 'not-well-formed'


def test_malformed_xml_after_login(server):
    c = logged_in(server)
    c.send("<message to='localhost'><body>x</body></message><<<>>")
    assert c.expect_stream_error() == 'not-well-formed'


def test_invalid_utf8(server):
    c = opened(server)
    c.send(b"<message><body>\xff\xfe</body></message>")
    assert c.expect_stream_error() in ('not-well-formed', 'unsupported-encoding')


def test_undeclared_prefix(server):
    c = opened(server)
    c.send('<foo:bar/>')
    assert c.expect_stream_error() == 'not-well-formed'


def test_doctype_in_prolog(server):
    c = server.raw(port=server.c2s_plain_port)
    c.connect()
    c.send("<?xml version='1.0'?><!DOCTYPE stream:stream [<!ENTITY x 'y'>]>" + HEADER)
    assert c.expect_stream_error() == 'restricted-xml'


def test_entity_declaration(server):
    c = server.raw(port=server.c2s_plain_port)
    c.connect()
    c.send("<?xml version='1.0'?><!DOCTYPE s [<!ENTITY lol 'lol'>"
           "<!ENTITY lol2 '&lol;&lol;&lol;'>]>" + HEADER)
    assert c.expect_stream_error() == 'restricted-xml'


def test_comment(server):
    c = opened(server)
    c.send('<!-- a comment -->')
    assert c.expect_stream_error() == 'restricted-xml'


def test_comment_inside_stanza_after_login(server):
    c = logged_in(server)
    c.send("<message to='localhost'><!-- hidden --><body>x</body></message>")
    assert c.expect_stream_error() == 'restricted-xml'


def test_processing_instruction(server):
    c = opened(server)
    c.send("<?evil instruction?>")
    assert c.expect_stream_error() == 'restricted-xml'


def test_oversized_stanza_after_login(server):
    c = logged_in(server)
    c.message(c.jid, 'x' * (MAX_STANZA + 5000))
    assert c.expect_stream_error() == 'policy-violation'


def test_oversized_stanza_before_auth(server):
    c = opened(server)
    c.send("<message><body>%s</body></message>" % ('y' * (MAX_STANZA * 2)))
    assert c.expect_stream_error() == 'policy-violation'


def test_stanza_under_limit_is_fine(server):
    c = logged_in(server)
    c.presence()
    c.message(c.jid, 'z' * (MAX_STANZA // 2))
    m = c.recv_stanza('message')
    assert len(m.findtext('{jabber:client}body')) == MAX_STANZA // 2


def test_too_deep_nesting(server):
    c = logged_in(server)
    c.send("<message to='%s'>" % c.jid + '<a>' * 200 + '</a>' * 200 + '</message>')
    assert c.expect_stream_error() == 'policy-violation'


def test_unknown_host(server):
    c = server.raw(port=server.c2s_plain_port)
    c.connect()
    c.start_stream('no-such-host.invalid', read=False)
    assert c.expect_stream_error() == 'host-unknown'
    assert c.header is not None, 'no stream header before the error (RFC 6120 4.9.1.3)'


def test_unknown_host_on_starttls_listener(server):
    c = server.raw()
    c.connect()
    c.start_stream('example.invalid', read=False)
    assert c.expect_stream_error() == 'host-unknown'


def test_wrong_stream_namespace(server):
    c = server.raw(port=server.c2s_plain_port)
    c.connect()
    c.start_stream(stream_ns='http://example.com/not-streams', read=False)
    assert c.expect_stream_error() == 'invalid-namespace'


def test_wrong_content_namespace(server):
    c = server.raw(port=server.c2s_plain_port)
    c.connect()
    c.start_stream(ns='jabber:server:nope', read=False)
    assert c.expect_stream_error() == 'invalid-namespace'


def test_wrong_root_element(server):
    c = server.raw(port=server.c2s_plain_port)
    c.connect()
    c.send("<?xml version='1.0'?><html xmlns='http://www.w3.org/1999/xhtml'>")
    assert c.expect_stream_error() in ('invalid-namespace', 'not-well-formed',
                                       'invalid-xml', 'bad-format')


def test_unsupported_version(server):
    # RFC 6120 4.7.5: answer with the highest version we support (1.0) or
    # refuse with <unsupported-version/>
    c = server.raw(port=server.c2s_plain_port)
    c.connect()
    c.start_stream(version='2.0', read=False)
    kind, el = c._next_event()
    assert kind == 'header', kind
    c.header = el
    if el.get('version') == '1.0':
        return
    assert c.expect_stream_error() == 'unsupported-version'


def test_close_stream_cleanly(server):
    c = logged_in(server)
    c.send('</stream:stream>')
    for _ in range(20):
        kind, el = c._next_event(10)
        if kind in ('close', 'eof'):
            return
        assert el is None or el.tag != '{%s}error' % NS_STREAM, rawxmpp.to_str(el)
    raise AssertionError('server did not close its stream')


def test_server_survives_abrupt_disconnects(server):
    # half-open streams, cut TLS handshakes, garbage: the server keeps going
    import socket
    for payload in (b'', b'\x16\x03\x01\x02\x00', b'<stream:stream', b'\x00' * 64,
                    HEADER.encode() + b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"):
        for port in (server.c2s_port, server.tls_port, server.component_port):
            s = socket.create_connection(('127.0.0.1', port), timeout=5)
            if payload:
                s.sendall(payload)
            s.close()
    c = logged_in(server)
    assert c.ping().get('type') == 'result'
