"""mod_caps: entity capabilities (XEP-0115), the server's and clients'."""

import asyncio
import base64
import hashlib
import secrets
import time
from xml.sax.saxutils import quoteattr

import conftest
import slixutil
from rawxmpp import NS_DISCO_INFO, XMPPTimeout, local, stanza_error, to_str

NS_CAPS = 'http://jabber.org/protocol/caps'
NS_XDATA = 'jabber:x:data'
CLIENT_NODE = 'https://client.example/caps'


def ver_of(identities, features, forms=(), hash_=hashlib.sha1):
    """XEP-0115 §5.1.  identities: (category, type, lang, name) tuples;
    forms: (FORM_TYPE, {var: [values]}) pairs."""
    s = ''.join('%s<' % i for i in sorted('/'.join(t) for t in identities))
    s += ''.join('%s<' % f for f in sorted(features))
    for form_type, fields in sorted(forms):
        s += form_type + '<'
        for var in sorted(fields):
            s += var + '<' + ''.join(v + '<' for v in sorted(fields[var]))
    return base64.b64encode(hash_(s.encode()).digest()).decode()


def info_of(query):
    ids = [(i.get('category') or '', i.get('type') or '',
            i.get('{http://www.w3.org/XML/1998/namespace}lang') or '',
            i.get('name') or '')
           for i in query.findall('{%s}identity' % NS_DISCO_INFO)]
    feats = [f.get('var') for f in query.findall('{%s}feature' % NS_DISCO_INFO)]
    return ids, feats


def server_c(features):
    c = features.find('{%s}c' % NS_CAPS)
    assert c is not None, 'no caps in stream features: %s' % to_str(features)
    assert c.get('hash') == 'sha-1' and c.get('node'), to_str(c)
    return c


def test_server_caps_in_stream_features(server, user):
    name, pw = user
    # before authentication (XEP-0115 §6.3; after the required STARTTLS) ...
    pre = server.raw()
    pre.connect()
    pre.open()
    pre.starttls()
    pre_c = server_c(pre.open())
    # ... and after
    c = server.login(name, pw)
    post_c = server_c(c.features)
    assert (pre_c.get('node'), pre_c.get('ver')) == \
        (post_c.get('node'), post_c.get('ver'))
    # the ver is the hash of what disco#info says, recomputed here
    r = c.iq('get', "<query xmlns='%s'/>" % NS_DISCO_INFO, to='localhost')
    assert r.get('type') == 'result', to_str(r)
    ids, feats = info_of(r.find('{%s}query' % NS_DISCO_INFO))
    assert post_c.get('ver') == ver_of(ids, feats), (ids, feats, to_str(post_c))
    # disco#info of node#ver: the same information, node echoed (§6.2)
    node = '%s#%s' % (post_c.get('node'), post_c.get('ver'))
    r = c.iq('get', "<query xmlns='%s' node=%s/>" % (NS_DISCO_INFO, quoteattr(node)),
             to='localhost')
    assert r.get('type') == 'result', to_str(r)
    q = r.find('{%s}query' % NS_DISCO_INFO)
    assert q.get('node') == node, to_str(r)
    assert sorted(info_of(q)[0]) == sorted(ids) and \
        sorted(info_of(q)[1]) == sorted(feats), to_str(r)
    # another ver of that node is unknown
    r = c.iq('get', "<query xmlns='%s' node=%s/>"
             % (NS_DISCO_INFO, quoteattr(post_c.get('node') + '#bogus')),
             to='localhost')
    assert stanza_error(r)[1] == 'item-not-found', to_str(r)


# ---- clients' caps -------------------------------------------------------

def client_info():
    """A client's disco#info with a random feature (a ver unique to the
    test) and an XEP-0232 form, and its ver."""
    ids = [('client', 'pc', '', 'Test Client'), ('client', 'pc', 'de', 'Testkunde')]
    feats = [NS_DISCO_INFO, NS_CAPS, 'urn:example:%s' % secrets.token_hex(6),
             'http://jabber.org/protocol/tune+notify']
    forms = [('urn:xmpp:dataforms:softwareinfo',
              {'os': ['Linux'], 'software': ['Tester'], 'software_version': ['1.0'],
               'ip_version': ['ipv6', 'ipv4']})]
    return ids, feats, forms, ver_of(ids, feats, forms)


def caps_presence(c, ver, hash_='sha-1'):
    c.presence("<c xmlns='%s' hash='%s' node='%s' ver=%s/>"
               % (NS_CAPS, hash_, CLIENT_NODE, quoteattr(ver)))


def is_disco_query(el):
    return (local(el.tag) == 'iq' and el.get('type') == 'get'
            and el.find('{%s}query' % NS_DISCO_INFO) is not None)


def answer(c, query, ids, feats, forms):
    q = query.find('{%s}query' % NS_DISCO_INFO)
    body = ''.join("<identity category='%s' type='%s'%s name=%s/>"
                   % (cat, typ, " xml:lang='%s'" % lang if lang else '',
                      quoteattr(nm)) for cat, typ, lang, nm in ids)
    body += ''.join("<feature var=%s/>" % quoteattr(f) for f in feats)
    for form_type, fields in forms:
        body += ("<x xmlns='%s' type='result'><field var='FORM_TYPE' "
                 "type='hidden'><value>%s</value></field>" % (NS_XDATA, form_type))
        for var, values in fields.items():
            body += "<field var='%s'>%s</field>" % (
                var, ''.join('<value>%s</value>' % v for v in values))
        body += '</x>'
    c.send("<iq type='result' id=%s to=%s><query xmlns='%s' node=%s>%s</query></iq>"
           % (quoteattr(query.get('id')), quoteattr(query.get('from')),
              NS_DISCO_INFO, quoteattr(q.get('node')), body))
    # the server has processed the answer once the ping comes back
    assert c.ping().get('type') == 'result'


def expect_query(c, ver, timeout=30.0):
    el = c.recv_until(is_disco_query, timeout, what='a disco#info query')
    assert el.get('from') == 'localhost', to_str(el)
    assert el.get('to') == c.jid, to_str(el)
    node = el.find('{%s}query' % NS_DISCO_INFO).get('node')
    assert node == '%s#%s' % (CLIENT_NODE, ver), to_str(el)
    return el


def expect_no_query(c, seconds=1.5):
    deadline = time.monotonic() + seconds
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            el = c.recv(remaining)
        except XMPPTimeout:
            return
        assert not is_disco_query(el), 'asked again: %s' % to_str(el)


def stored_caps(srv, ver):
    sql = "SELECT features FROM caps WHERE hash = 'sha-1' AND ver = '%s'" % ver
    return [r[0] for r in conftest.db_rows(srv, sql)]


def wait_stored(srv, ver, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        rows = stored_caps(srv, ver)
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def test_client_caps_queried_once_then_cached(server):
    ids, feats, forms, ver = client_info()
    n1, p1 = server.new_user(prefix='ca')
    n2, p2 = server.new_user(prefix='cb')
    a = server.login(n1, p1)
    caps_presence(a, ver)
    answer(a, expect_query(a, ver), ids, feats, forms)
    # verified, in the store ...
    rows = wait_stored(server, ver)
    assert rows == ['\n'.join(sorted(feats))], rows
    assert 'mod_caps: verified sha-1/%s from %s' % (ver, a.jid) in server.log_text()
    # ... and nobody else with that ver is asked
    b = server.login(n2, p2)
    caps_presence(b, ver)
    expect_no_query(b)
    # a client that sends the same caps again is not asked either
    caps_presence(a, ver)
    expect_no_query(a, 0.5)


def test_client_caps_wrong_answer_not_cached(server):
    ids, feats, forms, ver = client_info()
    n1, p1 = server.new_user(prefix='ca')
    n2, p2 = server.new_user(prefix='cb')
    a = server.login(n1, p1)
    caps_presence(a, ver)
    # an answer whose hash is not the ver (§5.4): ignored
    answer(a, expect_query(a, ver), ids, feats + ['urn:example:extra'], forms)
    assert stored_caps(server, ver) == []
    # so the next client with that ver is asked, and a duplicate feature
    # makes the answer ill-formed
    b = server.login(n2, p2)
    caps_presence(b, ver)
    answer(b, expect_query(b, ver), ids, feats + [feats[0]], forms)
    assert stored_caps(server, ver) == []
    # a third client answers right: cached at last
    c = server.login(*server.new_user(prefix='cc'))
    caps_presence(c, ver)
    answer(c, expect_query(c, ver), ids, feats, forms)
    assert wait_stored(server, ver) == ['\n'.join(sorted(feats))]


def test_client_caps_unanswered_then_asked_elsewhere(server):
    """A client that leaves without answering does not block the ver."""
    ids, feats, forms, ver = client_info()
    a = server.login(*server.new_user(prefix='ca'))
    caps_presence(a, ver)
    expect_query(a, ver)
    a.close()
    deadline = time.monotonic() + 5
    while '%s ended' % a.jid not in server.log_text():
        assert time.monotonic() < deadline, 'the server missed the disconnect'
        time.sleep(0.05)
    b = server.login(*server.new_user(prefix='cb'))
    caps_presence(b, ver)
    answer(b, expect_query(b, ver), ids, feats, forms)
    assert wait_stored(server, ver) == ['\n'.join(sorted(feats))]


def test_client_caps_loaded_from_store_after_restart(make_server, driver):
    srv = make_server(driver)
    ids, feats, forms, ver = client_info()
    a = srv.login(*srv.new_user(prefix='ca'))
    caps_presence(a, ver)
    answer(a, expect_query(a, ver), ids, feats, forms)
    assert wait_stored(srv, ver)
    a.close()
    srv.stop()
    srv.start()
    b = srv.login(*srv.new_user(prefix='cb'))
    caps_presence(b, ver)
    expect_no_query(b)


def test_slixmpp_caps_verified(server):
    """slixmpp's own caps (its xep_0115 hashes its disco#info) verify."""
    name, pw = server.new_user(prefix='sx')
    jid = '%s@localhost/caps' % name

    async def scenario():
        c = server.slix(jid, pw)
        c.register_plugin('xep_0115')
        await c.start(presence=False)
        # slixmpp computes its ver once asked to; presence then has it
        await c['xep_0115'].update_caps()
        c.send_presence()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            log = server.log_text()
            if ' from %s' % jid in log and 'mod_caps: verified sha-1/' in log:
                break
            await asyncio.sleep(0.1)
        await c.stop()

    slixutil.run(scenario)
    log = server.log_text()
    assert 'does not match' not in ''.join(
        line for line in log.splitlines(True) if jid in line), log[-3000:]
    assert any('mod_caps: verified sha-1/' in line and line.endswith('from %s' % jid)
               for line in log.splitlines()), log[-3000:]
