"""STARTTLS, direct TLS and SASL (RFC 6120 5 and 6, RFC 5802/7677, XEP-0440,
XEP-0368)."""

import time
import warnings

import pytest

import rawxmpp
from rawxmpp import NS_BIND, NS_SASL, NS_TLS, to_str


def starttls_client(server, domain='localhost'):
    c = server.raw(domain=domain)
    c.connect()
    feats = c.open()
    st = feats.find('{%s}starttls' % NS_TLS)
    assert st is not None, 'STARTTLS not offered: %s' % to_str(feats)
    c.starttls()
    return c, c.open()


def test_starttls_features_before_tls(server):
    c = server.raw()
    c.connect()
    header = c.start_stream()
    assert header.tag == '{%s}stream' % rawxmpp.NS_STREAM
    assert header.get('id'), 'stream header without id'
    assert header.get('from') == 'localhost'
    assert header.get('version') == '1.0'
    feats = c.read_features()
    st = feats.find('{%s}starttls' % NS_TLS)
    assert st is not None, to_str(feats)
    assert st.find('{%s}required' % NS_TLS) is not None, \
        'STARTTLS must be <required/> on this listener: %s' % to_str(feats)
    assert c.mechanisms(feats) is None, \
        'SASL must not be offered before the mandatory TLS: %s' % to_str(feats)


def test_starttls_scram_sha256_login_and_bind(server, user):
    name, password = user
    c, feats = starttls_client(server)
    assert c.tls_version() in ('TLSv1.2', 'TLSv1.3')
    mechs = c.mechanisms(feats)
    assert mechs, 'no SASL mechanisms after STARTTLS: %s' % to_str(feats)
    for m in ('SCRAM-SHA-256', 'SCRAM-SHA-1', 'SCRAM-SHA-256-PLUS',
              'SCRAM-SHA-1-PLUS', 'PLAIN'):
        assert m in mechs, '%s not offered over TLS: %s' % (m, mechs)
    assert feats.find('{%s}starttls' % NS_TLS) is None, 'STARTTLS offered twice'
    ok, el = c.auth_scram(name, password, 'SCRAM-SHA-256')
    assert ok, to_str(el)
    feats = c.open()
    assert feats.find('{%s}bind' % NS_BIND) is not None, to_str(feats)
    assert c.mechanisms(feats) is None, 'SASL offered again after success'
    jid = c.bind('laptop')
    assert jid == '%s@localhost/laptop' % name
    r = c.ping()
    assert r.get('type') == 'result', to_str(r)


def test_channel_binding_types_advertised(server):
    # XEP-0440: the server lists the channel-binding types it supports
    c, feats = starttls_client(server)
    types = c.channel_bindings(feats)
    assert types is not None, 'no <sasl-channel-binding/> (XEP-0440): %s' % to_str(feats)
    assert 'tls-server-end-point' in types, types
    assert 'tls-exporter' in types, types


@pytest.mark.parametrize('mech', ['SCRAM-SHA-1', 'SCRAM-SHA-256'])
def test_scram_mechanisms(server, user, mech):
    name, password = user
    c, _ = starttls_client(server)
    ok, el = c.auth_scram(name, password, mech)
    assert ok, to_str(el)
    c.open()
    assert c.bind().startswith(name + '@localhost/')


@pytest.mark.parametrize('mech', ['SCRAM-SHA-1-PLUS', 'SCRAM-SHA-256-PLUS'])
def test_scram_plus_tls_server_end_point(server, user, mech):
    name, password = user
    c, _ = starttls_client(server)
    ok, el = c.auth_scram(name, password, mech, cb_type='tls-server-end-point')
    assert ok, to_str(el)
    c.open()
    c.bind()


@pytest.mark.skipif(not rawxmpp.HAVE_PYOPENSSL,
                    reason='pyOpenSSL (python3-openssl) needed for tls-exporter')
@pytest.mark.parametrize('direct_tls', [False, True], ids=['starttls', 'directtls'])
def test_scram_plus_tls_exporter(server, user, direct_tls):
    name, password = user
    c = server.raw(port=server.tls_port if direct_tls else None)
    c.connect(direct_tls=direct_tls, tls_impl='pyopenssl')
    if not direct_tls:
        c.open()
        c.starttls(tls_impl='pyopenssl')
    c.open()
    ok, el = c.auth_scram(name, password, 'SCRAM-SHA-256-PLUS', cb_type='tls-exporter')
    assert ok, to_str(el)
    c.open()
    c.bind()


def test_scram_plus_wrong_channel_binding_data(server, user):
    name, password = user
    c, _ = starttls_client(server)
    ok, el = c.auth_scram(name, password, 'SCRAM-SHA-256-PLUS',
                          cb_type='tls-server-end-point', cb_data=b'\0' * 32)
    assert not ok, 'authenticated with forged channel binding data'
    assert c.failure_condition(el) == 'not-authorized', to_str(el)


def test_scram_y_flag_downgrade_refused(server, user):
    # RFC 5802 6: the client says "I support channel binding but think the
    # server does not" while the server does offer -PLUS: must fail.
    name, password = user
    c, _ = starttls_client(server)
    ok, el = c.auth_scram(name, password, 'SCRAM-SHA-256', gs2_flag='y')
    assert not ok, 'downgrade to SCRAM without channel binding not detected'
    assert c.failure_condition(el) == 'not-authorized', to_str(el)


@pytest.mark.parametrize('mech', ['SCRAM-SHA-256', 'SCRAM-SHA-1', 'PLAIN'])
def test_wrong_password(server, user, mech):
    name, password = user
    c, _ = starttls_client(server)
    if mech == 'PLAIN':
        ok, el = c.auth_plain(name, password + 'x')
    else:
        ok, el = c.auth_scram(name, password + 'x', mech)
    assert not ok
    assert el.tag == '{%s}failure' % NS_SASL
    assert c.failure_condition(el) == 'not-authorized', to_str(el)
    # the stream stays usable: a retry with the right password works
    ok, el = c.auth_scram(name, password, 'SCRAM-SHA-256')
    assert ok, to_str(el)


def test_scram_bad_proof(server, user):
    name, password = user
    c, _ = starttls_client(server)
    ok, el = c.auth_scram(name, password, 'SCRAM-SHA-256', bad_proof=True)
    assert not ok
    assert c.failure_condition(el) == 'not-authorized', to_str(el)


@pytest.mark.parametrize('mech', ['SCRAM-SHA-256', 'PLAIN'])
def test_unknown_user(server, mech):
    c, _ = starttls_client(server)
    if mech == 'PLAIN':
        ok, el = c.auth_plain('nosuchuser-' + rawxmpp.new_id(), 'whatever')
    else:
        ok, el = c.auth_scram('nosuchuser-' + rawxmpp.new_id()[3:], 'whatever', mech)
    assert not ok
    assert c.failure_condition(el) == 'not-authorized', to_str(el)


def test_unknown_mechanism(server):
    c, _ = starttls_client(server)
    c.send("<auth xmlns='%s' mechanism='X-NOPE'>=</auth>" % NS_SASL)
    ok, el = c._sasl_outcome(c.recv())
    assert not ok
    assert c.failure_condition(el) == 'invalid-mechanism', to_str(el)


def test_plain_over_tls(server, user):
    name, password = user
    c, feats = starttls_client(server)
    assert 'PLAIN' in c.mechanisms(feats)
    ok, el = c.auth_plain(name, password)
    assert ok, to_str(el)
    c.open()
    assert c.bind('plain') == '%s@localhost/plain' % name


def test_plain_not_offered_without_tls(server, user):
    name, password = user
    c = server.raw(port=server.c2s_plain_port)
    c.connect()
    feats = c.open()
    st = feats.find('{%s}starttls' % NS_TLS)
    assert st is not None, 'STARTTLS must still be offered: %s' % to_str(feats)
    assert st.find('{%s}required' % NS_TLS) is None
    mechs = c.mechanisms(feats) or []
    assert 'PLAIN' not in mechs, 'PLAIN offered without TLS: %s' % mechs
    assert not [m for m in mechs if m.endswith('-PLUS')], \
        '-PLUS offered without TLS: %s' % mechs
    c.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>"
           % (NS_SASL, rawxmpp.b64('\0%s\0%s' % (name, password))))
    try:
        ok, el = c._sasl_outcome(c.recv())
    except rawxmpp.StreamClosed as e:
        pytest.fail('PLAIN without TLS must get a SASL <failure/>, got %s' % e)
    assert not ok, 'PLAIN accepted without TLS'
    assert c.failure_condition(el) in ('invalid-mechanism', 'encryption-required'), \
        to_str(el)


def test_scram_without_tls_on_optional_listener(server, user):
    name, password = user
    c = server.raw(port=server.c2s_plain_port)
    c.connect()
    feats = c.open()
    assert 'SCRAM-SHA-256' in (c.mechanisms(feats) or []), to_str(feats)
    ok, el = c.auth_scram(name, password, 'SCRAM-SHA-256')
    assert ok, to_str(el)
    c.open()
    c.bind()


def test_starttls_on_optional_listener(server, user):
    name, password = user
    c = server.raw(port=server.c2s_plain_port)
    c.connect()
    c.open()
    c.starttls()
    feats = c.open()
    assert 'PLAIN' in c.mechanisms(feats)
    ok, el = c.auth_plain(name, password)
    assert ok, to_str(el)


def test_stanza_before_starttls_refused(server, user):
    name, _ = user
    c = server.raw()
    c.connect()
    c.open()
    c.send("<message to='%s@localhost' type='chat'><body>hi</body></message>" % name)
    cond = c.expect_stream_error()
    assert cond in ('not-authorized', 'policy-violation'), cond


def test_auth_before_starttls_refused(server, user):
    name, password = user
    c = server.raw()
    c.connect()
    c.open()
    c.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>"
           % (NS_SASL, rawxmpp.b64('\0%s\0%s' % (name, password))))
    try:
        el = c.recv()
    except rawxmpp.StreamClosed as e:
        assert e.condition in ('not-authorized', 'policy-violation',
                               'encryption-required'), str(e)
        return
    assert el.tag == '{%s}failure' % NS_SASL, 'auth before STARTTLS: %s' % to_str(el)
    assert c.failure_condition(el) in ('encryption-required', 'invalid-mechanism'), \
        to_str(el)


def test_iq_before_auth_refused(server):
    c, _ = starttls_client(server)
    c.send("<iq type='get' id='x1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    try:
        el = c.recv()
    except rawxmpp.StreamClosed as e:
        assert e.condition == 'not-authorized', str(e)
        return
    pytest.fail('stanza before authentication answered: %s' % to_str(el))


@pytest.mark.parametrize('host', ['localhost', 'example.test'])
def test_direct_tls_alpn_sni(server, host):
    name, password = server.new_user(host)
    c = server.raw(port=server.tls_port, domain=host)
    c.connect(direct_tls=True, sni=host, alpn=('xmpp-client',))
    assert c.alpn() == 'xmpp-client', 'ALPN not negotiated: %r' % c.alpn()
    assert c.tls_version() in ('TLSv1.2', 'TLSv1.3')
    feats = c.open(host)
    assert c.header.get('from') == host
    assert feats.find('{%s}starttls' % NS_TLS) is None, 'STARTTLS offered inside TLS'
    mechs = c.mechanisms(feats)
    assert 'SCRAM-SHA-256' in mechs and 'PLAIN' in mechs, mechs
    ok, el = c.auth_scram(name, password, 'SCRAM-SHA-256')
    assert ok, to_str(el)
    c.open(host)
    assert c.bind('dtls') == '%s@%s/dtls' % (name, host)


def test_direct_tls_without_alpn(server, user):
    name, password = user
    c = server.raw(port=server.tls_port)
    c.connect(direct_tls=True, alpn=None)
    c.open()
    ok, el = c.auth_scram(name, password, 'SCRAM-SHA-256')
    assert ok, to_str(el)


def test_tls_1_1_refused(server):
    import socket
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.set_ciphers('DEFAULT:@SECLEVEL=0')
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, OSError, ssl.SSLError):
        pytest.skip('this OpenSSL cannot even offer TLS 1.1')
    s = socket.create_connection(('127.0.0.1', server.tls_port), timeout=10)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        t = ctx.wrap_socket(s, server_hostname='localhost')
        # some stacks only fail on first read
        t.recv(1)
        pytest.fail('TLS 1.1 handshake succeeded (%s)' % t.version())
    s.close()


def test_auth_failures_are_slowed_down(make_server):
    srv = make_server('sqlite', auth_fail_delay_ms=300)
    name, password = srv.new_user()
    c = srv.raw()
    c.connect()
    c.open()
    c.starttls()
    c.open()
    t0 = time.monotonic()
    for _ in range(3):
        ok, el = c.auth_scram(name, 'wrong', 'SCRAM-SHA-256')
        assert not ok
    elapsed = time.monotonic() - t0
    assert elapsed >= 0.25, ('three failures answered in %.3f s despite '
                             'auth_fail_delay_ms: 300' % elapsed)
