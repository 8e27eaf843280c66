"""A small, strict, synchronous XMPP client for precise protocol tests.

It speaks the raw protocol (socket + ssl / pyOpenSSL + a hand-written
SCRAM client) so that tests can check exactly what the server sends.
Every read has a timeout: a broken server makes a test fail, never hang.
"""

import base64
import hashlib
import hmac
import os
import socket
import ssl
import time
import uuid
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

NS_STREAM = 'http://etherx.jabber.org/streams'
NS_CLIENT = 'jabber:client'
NS_COMPONENT = 'jabber:component:accept'
NS_TLS = 'urn:ietf:params:xml:ns:xmpp-tls'
NS_SASL = 'urn:ietf:params:xml:ns:xmpp-sasl'
NS_BIND = 'urn:ietf:params:xml:ns:xmpp-bind'
NS_STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas'
NS_STREAMS = 'urn:ietf:params:xml:ns:xmpp-streams'
NS_SASL_CB = 'urn:xmpp:sasl-cb:0'
NS_PING = 'urn:xmpp:ping'
NS_DISCO_INFO = 'http://jabber.org/protocol/disco#info'
NS_VERSION = 'jabber:iq:version'

# Every client created during the current test, for failure reports.
ALL_CLIENTS = []

try:  # pyOpenSSL: only needed for the tls-exporter channel binding.
    from OpenSSL import SSL as _OSSL
    from OpenSSL import crypto as _OCRYPTO
    HAVE_PYOPENSSL = hasattr(_OSSL.Connection, 'export_keying_material')
except ImportError:  # pragma: no cover
    _OSSL = None
    HAVE_PYOPENSSL = False


class XMPPTimeout(AssertionError):
    pass


class StreamClosed(AssertionError):
    """The server closed the stream (or the TCP connection)."""


def local(tag):
    """'{ns}name' -> 'name'."""
    return tag.rsplit('}', 1)[-1]


def ns_of(tag):
    return tag[1:].split('}', 1)[0] if tag.startswith('{') else ''


def new_id(prefix='id'):
    return '%s-%s' % (prefix, uuid.uuid4().hex[:12])


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def saslname(name):
    return name.replace('=', '=3D').replace(',', '=2C')


def stanza_error(el):
    """(type, condition) of a stanza of type error, or (None, None)."""
    for child in el:
        if local(child.tag) == 'error':
            cond = None
            for c in child:
                if ns_of(c.tag) == NS_STANZAS and local(c.tag) != 'text':
                    cond = local(c.tag)
            return child.get('type'), cond
    return None, None


def to_str(el):
    try:
        return ET.tostring(el, encoding='unicode')
    except Exception:  # pragma: no cover
        return repr(el)


def quiet(c, allow=lambda el: False):
    """Asserts that nothing but what allow() accepts reached client c
    before the answer to a ping sent now: a session's stanzas are routed
    and answered in order, so anything sent to c earlier is there first."""
    iq_id = new_id('quiet')
    c.send("<iq type='get' id='%s' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
           % iq_id)
    while True:
        el = c.recv()
        if local(el.tag) == 'iq' and el.get('id') == iq_id:
            assert el.get('type') == 'result', to_str(el)
            return
        assert allow(el), '%s: unexpected %s' % (c.name, to_str(el))


class _PyOpenSSLTransport:
    """TLS over a memory BIO with pyOpenSSL, so that the socket keeps its
    timeouts and we get RFC 9266 tls-exporter."""

    def __init__(self, sock, cafile, sni, alpn):
        ctx = _OSSL.Context(_OSSL.TLS_CLIENT_METHOD)
        ctx.set_min_proto_version(_OSSL.TLS1_2_VERSION)
        ctx.load_verify_locations(cafile)
        ctx.set_verify(_OSSL.VERIFY_PEER, lambda c, x, e, d, ok: bool(ok))
        conn = _OSSL.Connection(ctx, None)
        if alpn:
            conn.set_alpn_protos([a.encode() for a in alpn])
        if sni:
            conn.set_tlsext_host_name(sni.encode())
        conn.set_connect_state()
        self.sock = sock
        self.conn = conn
        while True:
            try:
                conn.do_handshake()
                self._flush()
                break
            except _OSSL.WantReadError:
                self._flush()
                if not self._fill():
                    raise StreamClosed('EOF during the TLS handshake')

    def _flush(self):
        while True:
            try:
                data = self.conn.bio_read(65536)
            except _OSSL.WantReadError:
                return
            if not data:
                return
            self.sock.sendall(data)

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            self.conn.bio_shutdown()
            return False
        self.conn.bio_write(data)
        return True

    def settimeout(self, t):
        self.sock.settimeout(t)

    def sendall(self, data):
        self.conn.sendall(data)
        self._flush()

    def recv(self, n):
        while True:
            try:
                return self.conn.recv(n)
            except _OSSL.WantReadError:
                self._flush()
                if not self._fill():
                    return b''
            except (_OSSL.ZeroReturnError, _OSSL.SysCallError):
                return b''

    def close(self):
        try:
            self.conn.shutdown()
            self._flush()
        except Exception:
            pass
        self.sock.close()

    # channel binding data
    def server_cert_der(self):
        cert = self.conn.get_peer_certificate()
        return _OCRYPTO.dump_certificate(_OCRYPTO.FILETYPE_ASN1, cert)

    def exporter(self):
        return self.conn.export_keying_material(b'EXPORTER-Channel-Binding', 32)

    def alpn(self):
        p = self.conn.get_alpn_proto_negotiated()
        return p.decode() if p else None

    def version(self):
        return self.conn.get_protocol_version_name()


class RawClient:
    def __init__(self, port, *, domain='localhost', cafile=None, timeout=10.0,
                 ns=NS_CLIENT, host='127.0.0.1', name=None):
        self.port = port
        self.host = host
        self.domain = domain
        self.cafile = cafile
        self.timeout = timeout
        self.ns = ns
        self.lang = 'en'          # xml:lang of our stream headers (None: none)
        self.sock = None
        self.tls = None           # the ssl.SSLSocket / _PyOpenSSLTransport
        self.header = None
        self.closed = False
        self.eof = False
        self.jid = None
        self.transcript = []
        self.name = name or 'client%d' % len(ALL_CLIENTS)
        ALL_CLIENTS.append(self)
        self._reset_parser()

    # ---- transport ---------------------------------------------------
    def connect(self, direct_tls=False, sni=None, alpn=('xmpp-client',),
                tls_impl='ssl'):
        self.sock = socket.create_connection((self.host, self.port),
                                             timeout=self.timeout)
        self._log('*', 'connected to %s:%d' % (self.host, self.port))
        if direct_tls:
            self._wrap_tls(sni or self.domain, alpn, tls_impl)
        return self

    def _ssl_context(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_verify_locations(self.cafile)
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def _wrap_tls(self, sni, alpn=None, tls_impl='ssl'):
        if tls_impl == 'pyopenssl':
            self.tls = _PyOpenSSLTransport(self.sock, self.cafile, sni, alpn)
            self.sock = self.tls
        else:
            ctx = self._ssl_context()
            if alpn:
                ctx.set_alpn_protocols(list(alpn))
            self.sock.settimeout(self.timeout)
            self.sock = ctx.wrap_socket(self.sock, server_hostname=sni)
            self.tls = self.sock
        self._log('*', 'TLS established (%s)' % self.tls_version())
        self._reset_parser()

    def tls_version(self):
        if self.tls is None:
            return None
        return self.tls.version()

    def alpn(self):
        if isinstance(self.tls, ssl.SSLSocket):
            return self.tls.selected_alpn_protocol()
        return self.tls.alpn() if self.tls else None

    def cb_data(self, cb_type):
        """Channel binding data for tls-server-end-point / tls-exporter."""
        if cb_type == 'tls-server-end-point':
            if isinstance(self.tls, ssl.SSLSocket):
                der = self.tls.getpeercert(binary_form=True)
            else:
                der = self.tls.server_cert_der()
            # RFC 5929 4.1: SHA-256 for the SHA-256-signed test certificate.
            return hashlib.sha256(der).digest()
        if cb_type == 'tls-exporter':
            if isinstance(self.tls, ssl.SSLSocket):
                raise RuntimeError('tls-exporter needs tls_impl="pyopenssl"')
            return self.tls.exporter()
        raise ValueError(cb_type)

    def _log(self, who, data):
        if isinstance(data, bytes):
            data = data.decode('utf-8', 'replace')
        self.transcript.append('%s %s' % (who, data))

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self._log('C:', data[:4000])
        self.sock.sendall(data)

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except Exception:
                pass
            self.sock = None

    # ---- parsing -----------------------------------------------------
    def _reset_parser(self):
        self.parser = ET.XMLPullParser(events=('start', 'end'))
        self.depth = 0
        self.events = []
        self.root = None

    def _pump(self):
        try:
            evs = list(self.parser.read_events())
        except ET.ParseError as e:
            raise AssertionError('server sent malformed XML: %s' % e)
        for ev, el in evs:
            if ev == 'start':
                self.depth += 1
                if self.depth == 1:
                    self.root = el
                    self.events.append(('header', el))
            else:
                self.depth -= 1
                if self.depth == 1:
                    self.events.append(('elem', el))
                    try:
                        self.root.remove(el)
                    except ValueError:
                        pass
                elif self.depth == 0:
                    self.events.append(('close', el))

    def _next_event(self, timeout=None):
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while not self.events:
            if self.eof:
                return ('eof', None)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise XMPPTimeout('%s: no data from the server within %.1f s'
                                  % (self.name, timeout))
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                raise XMPPTimeout('%s: no data from the server within %.1f s'
                                  % (self.name, timeout))
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError) as e:
                self._log('*', 'connection error: %r' % e)
                data = b''
            if not data:
                self._log('*', 'EOF')
                self.eof = True
                continue
            self._log('S:', data[:4000])
            try:
                self.parser.feed(data)
            except ET.ParseError as e:
                raise AssertionError('server sent malformed XML: %s' % e)
            self._pump()
        return self.events.pop(0)

    def read_header(self, timeout=None):
        """Waits for the server's stream header; returns it."""
        kind, el = self._next_event(timeout)
        if kind != 'header':
            raise AssertionError('%s: expected the stream header, got %s %s'
                                 % (self.name, kind, el is not None and to_str(el)))
        self.header = el
        return el

    def recv(self, timeout=None):
        """Next top-level element.  A stream error or a closed stream raises
        StreamClosed (with .condition set for stream errors)."""
        kind, el = self._next_event(timeout)
        if kind == 'header':
            raise AssertionError('%s: unexpected second stream header' % self.name)
        if kind == 'elem' and el.tag == '{%s}error' % NS_STREAM:
            exc = StreamClosed('%s: stream error <%s/>: %s'
                               % (self.name, self._stream_error_condition(el),
                                  to_str(el)))
            exc.condition = self._stream_error_condition(el)
            exc.element = el
            self.closed = True
            raise exc
        if kind in ('close', 'eof'):
            self.closed = True
            exc = StreamClosed('%s: stream closed by the server (%s)'
                               % (self.name, kind))
            exc.condition = None
            raise exc
        return el

    @staticmethod
    def _stream_error_condition(el):
        for c in el:
            if ns_of(c.tag) == NS_STREAMS and local(c.tag) != 'text':
                return local(c.tag)
        return None

    def recv_until(self, pred, timeout=None, what='the expected element'):
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        skipped = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise XMPPTimeout('%s: timeout waiting for %s; got instead: %s'
                                  % (self.name, what,
                                     [to_str(e) for e in skipped]))
            try:
                el = self.recv(remaining)
            except XMPPTimeout:
                raise XMPPTimeout('%s: timeout waiting for %s; got instead: %s'
                                  % (self.name, what,
                                     [to_str(e) for e in skipped]))
            if pred(el):
                return el
            skipped.append(el)

    def recv_stanza(self, name, timeout=None, **attrs):
        def pred(el):
            if local(el.tag) != name:
                return False
            return all(el.get(k) == v for k, v in attrs.items())
        return self.recv_until(pred, timeout,
                               what='<%s %s>' % (name, attrs))

    def expect_stream_error(self, timeout=None):
        """Reads until a stream error; returns its condition.  Also checks
        that the server then closes the stream.  A stream header sent by the
        server before the error (RFC 6120 4.9.1.3) is accepted."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise XMPPTimeout('%s: no stream error within %.1f s; got %s'
                                  % (self.name, timeout, seen))
            try:
                kind, el = self._next_event(remaining)
            except XMPPTimeout:
                raise XMPPTimeout('%s: no stream error within %.1f s; got %s'
                                  % (self.name, timeout, seen))
            if kind == 'header':
                self.header = el
                continue
            if kind == 'elem' and el.tag == '{%s}error' % NS_STREAM:
                self.closed = True
                cond = self._stream_error_condition(el)
                self._expect_close()
                return cond
            if kind == 'elem':
                seen.append(to_str(el))
                continue
            raise AssertionError('%s: stream closed without a stream error '
                                 '(%s after %s)' % (self.name, kind, seen))

    def _expect_close(self, timeout=5.0):
        """After a stream error the server closes the stream/connection."""
        try:
            while True:
                kind, el = self._next_event(timeout)
                if kind in ('close', 'eof'):
                    return
        except XMPPTimeout:
            raise AssertionError('%s: server did not close the stream after '
                                 'a stream error' % self.name)

    def expect_silence(self, seconds=0.5, ignore=('presence',)):
        """Asserts that nothing (except ignored stanzas) arrives."""
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                el = self.recv(remaining)
            except XMPPTimeout:
                return
            if local(el.tag) not in ignore:
                raise AssertionError('%s: unexpected %s' % (self.name, to_str(el)))

    # ---- stream negotiation ------------------------------------------
    def start_stream(self, to=None, *, ns=None, stream_ns=NS_STREAM,
                     version='1.0', prolog="<?xml version='1.0'?>", extra='',
                     read=True):
        to = self.domain if to is None else to
        ns = self.ns if ns is None else ns
        self._reset_parser()
        self.header = None
        attrs = ''
        if to:
            attrs += ' to=%s' % quoteattr(to)
        if version:
            attrs += ' version=%s' % quoteattr(version)
        if self.lang is not None:
            attrs += ' xml:lang=%s' % quoteattr(self.lang)
        self.send("%s<stream:stream xmlns=%s xmlns:stream=%s%s%s>"
                  % (prolog, quoteattr(ns), quoteattr(stream_ns), attrs, extra))
        if read:
            return self.read_header()
        return None

    def read_features(self, timeout=None):
        el = self.recv(timeout)
        if el.tag != '{%s}features' % NS_STREAM:
            raise AssertionError('expected <stream:features/>, got %s' % to_str(el))
        self.features = el
        return el

    def open(self, to=None, **kw):
        self.start_stream(to, **kw)
        return self.read_features()

    @staticmethod
    def mechanisms(features):
        m = features.find('{%s}mechanisms' % NS_SASL)
        if m is None:
            return None
        return [x.text for x in m.findall('{%s}mechanism' % NS_SASL)]

    @staticmethod
    def channel_bindings(features):
        cb = features.find('{%s}sasl-channel-binding' % NS_SASL_CB)
        if cb is None:
            return None
        return [x.get('type') for x in cb.findall('{%s}channel-binding' % NS_SASL_CB)]

    def starttls(self, sni=None, tls_impl='ssl'):
        self.send("<starttls xmlns='%s'/>" % NS_TLS)
        el = self.recv()
        if el.tag != '{%s}proceed' % NS_TLS:
            raise AssertionError('STARTTLS: expected <proceed/>, got %s' % to_str(el))
        self._wrap_tls(sni or self.domain, None, tls_impl)

    def auth_plain(self, user, password, authzid=''):
        blob = b64('%s\0%s\0%s' % (authzid, user, password))
        self.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (NS_SASL, blob))
        return self._sasl_outcome(self.recv())

    def _sasl_outcome(self, el):
        if el.tag == '{%s}success' % NS_SASL:
            return True, el
        if el.tag == '{%s}failure' % NS_SASL:
            return False, el
        raise AssertionError('expected SASL <success/> or <failure/>, got %s' % to_str(el))

    @staticmethod
    def failure_condition(el):
        for c in el:
            if ns_of(c.tag) == NS_SASL and local(c.tag) != 'text':
                return local(c.tag)
        return None

    def auth_scram(self, user, password, mech='SCRAM-SHA-256', cb_type=None,
                   gs2_flag=None, cb_data=None, bad_proof=False):
        """A SCRAM (RFC 5802/7677) exchange.  Returns (ok, element)."""
        base = mech[:-5] if mech.endswith('-PLUS') else mech
        hname = {'SCRAM-SHA-1': 'sha1', 'SCRAM-SHA-256': 'sha256',
                 'SCRAM-SHA-512': 'sha512'}[base]
        if gs2_flag is None:
            gs2_flag = 'p=%s' % cb_type if cb_type else 'n'
        gs2 = gs2_flag + ',,'
        if cb_type and cb_data is None:
            cb_data = self.cb_data(cb_type)
        cnonce = b64(os.urandom(18))
        first_bare = 'n=%s,r=%s' % (saslname(user), cnonce)
        self.send("<auth xmlns='%s' mechanism='%s'>%s</auth>"
                  % (NS_SASL, mech, b64(gs2 + first_bare)))
        el = self.recv()
        if el.tag != '{%s}challenge' % NS_SASL:
            return self._sasl_outcome(el)
        server_first = base64.b64decode(el.text or '').decode()
        attrs = dict(kv.split('=', 1) for kv in server_first.split(','))
        assert attrs['r'].startswith(cnonce), 'server nonce must extend ours'
        assert len(attrs['r']) > len(cnonce), 'server added no nonce'
        salt = base64.b64decode(attrs['s'])
        iters = int(attrs['i'])
        assert iters >= 4096, 'iteration count %d < 4096 (RFC 7677)' % iters
        salted = hashlib.pbkdf2_hmac(hname, password.encode(), salt, iters)
        client_key = hmac.new(salted, b'Client Key', hname).digest()
        stored_key = hashlib.new(hname, client_key).digest()
        cbind = b64(gs2.encode() + (cb_data if cb_type else b''))
        final_wo = 'c=%s,r=%s' % (cbind, attrs['r'])
        auth_msg = ','.join([first_bare, server_first, final_wo]).encode()
        sig = hmac.new(stored_key, auth_msg, hname).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        if bad_proof:
            proof = bytes([proof[0] ^ 1]) + proof[1:]
        self.send("<response xmlns='%s'>%s</response>"
                  % (NS_SASL, b64(final_wo + ',p=' + b64(proof))))
        el = self.recv()
        server_key = hmac.new(salted, b'Server Key', hname).digest()
        expected_v = b64(hmac.new(server_key, auth_msg, hname).digest())
        if el.tag == '{%s}challenge' % NS_SASL:
            # server-final-message as a challenge: verify, send empty response
            final = base64.b64decode(el.text or '').decode()
            assert final == 'v=' + expected_v, 'bad server signature %r' % final
            self.send("<response xmlns='%s'/>" % NS_SASL)
            el = self.recv()
            return self._sasl_outcome(el)
        ok, el = self._sasl_outcome(el)
        if ok:
            assert el.text, 'SCRAM <success/> must carry the server-final-message'
            final = base64.b64decode(el.text).decode()
            assert final == 'v=' + expected_v, 'bad server signature %r' % final
        return ok, el

    def bind(self, resource=None):
        iq_id = new_id('bind')
        res = '<resource>%s</resource>' % escape(resource) if resource is not None else ''
        self.send("<iq type='set' id='%s'><bind xmlns='%s'>%s</bind></iq>"
                  % (iq_id, NS_BIND, res))
        el = self.recv_stanza('iq', id=iq_id)
        if el.get('type') != 'result':
            raise AssertionError('bind failed: %s' % to_str(el))
        jid = el.find('{%s}bind/{%s}jid' % (NS_BIND, NS_BIND))
        assert jid is not None and jid.text, 'bind result without <jid/>: %s' % to_str(el)
        self.jid = jid.text
        return self.jid

    def login(self, user, password, resource=None, *, mech='SCRAM-SHA-256',
              direct_tls=False, tls_port=None, bind=True):
        """Connect, STARTTLS (or direct TLS), authenticate, bind."""
        if direct_tls:
            if tls_port:
                self.port = tls_port
            self.connect(direct_tls=True)
        else:
            self.connect()
            feats = self.open()
            assert feats.find('{%s}starttls' % NS_TLS) is not None, \
                'no STARTTLS offered: %s' % to_str(feats)
            self.starttls()
        self.open()
        if mech == 'PLAIN':
            ok, el = self.auth_plain(user, password)
        else:
            ok, el = self.auth_scram(user, password, mech)
        assert ok, 'authentication of %s failed: %s' % (user, to_str(el))
        feats = self.open()
        assert feats.find('{%s}bind' % NS_BIND) is not None, \
            'no <bind/> feature after SASL: %s' % to_str(feats)
        if bind:
            return self.bind(resource)
        return None

    # ---- stanzas -----------------------------------------------------
    def iq(self, type_, payload='', to=None, timeout=None, frm=None):
        """Sends an iq and returns the response with the same id."""
        iq_id = new_id('iq')
        attrs = " type='%s' id='%s'" % (type_, iq_id)
        if to:
            attrs += ' to=%s' % quoteattr(to)
        if frm:
            attrs += ' from=%s' % quoteattr(frm)
        self.send('<iq%s>%s</iq>' % (attrs, payload))
        el = self.recv_until(lambda e: local(e.tag) == 'iq' and e.get('id') == iq_id
                             and e.get('type') in ('result', 'error'),
                             timeout, what='the response to iq %s' % iq_id)
        return el

    def ping(self, to=None, timeout=None):
        return self.iq('get', "<ping xmlns='%s'/>" % NS_PING, to=to or self.domain,
                       timeout=timeout)

    def message(self, to, body, type_='chat', id_=None, frm=None, extra=''):
        id_ = id_ or new_id('m')
        attrs = ' to=%s id=%s' % (quoteattr(to), quoteattr(id_))
        if type_:
            attrs += ' type=%s' % quoteattr(type_)
        if frm:
            attrs += ' from=%s' % quoteattr(frm)
        self.send('<message%s><body>%s</body>%s</message>' % (attrs, escape(body), extra))
        return id_

    def presence(self, extra=''):
        self.send('<presence>%s</presence>' % extra)


def sha1_handshake(stream_id, secret):
    return hashlib.sha1((stream_id + secret).encode()).hexdigest()
