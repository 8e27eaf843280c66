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


# ---- the stream header (issue 19): bounded, UTF-8 only -------------------
# The bounds are PGN_XML_MAX_HEADER_* and PGN_XML_MAX_LANG in
# include/pigeon/xml.h.
MAX_HEADER_BYTES = 4096
MAX_HEADER_NS = 16
MAX_LANG = 64


def header_with(extra, prolog="<?xml version='1.0'?>"):
    return (prolog + "<stream:stream xmlns='jabber:client' "
            "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' "
            "version='1.0'" + extra + ">")


def test_header_with_hundreds_of_declarations(server):
    # Replayed on every read after a park, such a header pinned the loop
    # (9,000 declarations did; 380 stay under this server's stanza size).
    c = server.raw(port=server.c2s_plain_port)
    c.connect()
    hdr = header_with(''.join(" xmlns:p%d='urn:x:%d'" % (i, i)
                              for i in range(380)))
    assert MAX_HEADER_BYTES < len(hdr) < MAX_STANZA
    c.send(hdr)
    assert c.expect_stream_error() == 'policy-violation'


def test_header_too_many_bytes(server):
    c = server.raw(port=server.c2s_plain_port)
    c.connect()
    c.send(header_with(" id='%s'" % ('i' * MAX_HEADER_BYTES)))
    assert c.expect_stream_error() == 'policy-violation'


def test_header_at_the_bounds_is_fine(server):
    # All the declarations allowed, padded to nearly all the bytes; one
    # binds the TLS namespace, and <starttls/> sent with that prefix after
    # the stream went idle (parked, resumed) is understood.
    def decls(pad):
        return ["xmlns:p%d='urn:x:%d%s'" % (i, i, 'x' * pad)
                for i in range(MAX_HEADER_NS - 3)] + \
            ["xmlns:tls='urn:ietf:params:xml:ns:xmpp-tls'"]
    base = len(header_with(' ' + ' '.join(decls(0))))
    hdr = header_with(' ' + ' '.join(
        decls((MAX_HEADER_BYTES - base) // (MAX_HEADER_NS - 3))))
    assert MAX_HEADER_BYTES - MAX_HEADER_NS < len(hdr) <= MAX_HEADER_BYTES
    c = server.raw(port=server.c2s_plain_port)
    c.connect()
    c.send(hdr)
    c.read_header()
    c.read_features()
    for _ in range(3):
        c.send(' ')
        c.expect_silence(0.1)
    c.send('<tls:starttls/>')
    el = c.recv()
    assert el.tag == '{urn:ietf:params:xml:ns:xmpp-tls}proceed', \
        rawxmpp.to_str(el)


def test_xml_lang_too_long_in_header(server):
    c = server.raw(port=server.c2s_plain_port)
    c.connect()
    c.lang = 'a' * (MAX_LANG + 1)
    c.start_stream(read=False)
    assert c.expect_stream_error() == 'policy-violation'


def test_xml_lang_too_long_in_stanza(server):
    c = logged_in(server)
    c.send("<message to='%s' xml:lang='%s'><body>x</body></message>"
           % (c.jid, 'b' * (MAX_LANG + 1)))
    assert c.expect_stream_error() == 'policy-violation'


@pytest.mark.parametrize('codec', ['utf-16', 'utf-16-le', 'utf-16-be'])
def test_utf16_stream(server, codec):
    # RFC 6120 11.6: UTF-8 only; expat would detect UTF-16 by itself.
    c = server.raw(port=server.c2s_plain_port)
    c.connect()
    c.send(header_with('', prolog="<?xml version='1.0' encoding='UTF-16'?>")
           .encode(codec))
    assert c.expect_stream_error() == 'unsupported-encoding'


@pytest.mark.parametrize('enc', ['UTF-16', 'ISO-8859-1'])
def test_encoding_declaration_other_than_utf8(server, enc):
    c = server.raw(port=server.c2s_plain_port)
    c.connect()
    c.send(header_with('', prolog="<?xml version='1.0' encoding='%s'?>" % enc))
    assert c.expect_stream_error() == 'unsupported-encoding'


def test_encoding_declaration_utf8_is_fine(server):
    c = server.raw(port=server.c2s_plain_port)
    c.connect()
    c.start_stream(prolog="<?xml version='1.0' encoding='utf-8'?>")
    c.read_features()
