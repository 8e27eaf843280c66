"""XEP-0086 legacy error codes: every stanza error the server writes
carries code='NNN' from XEP-0086's table (src/core/stanza.c), whichever
layer or module wrote it; errors the server only relays are unchanged."""

from xml.sax.saxutils import quoteattr

from rawxmpp import NS_STANZAS, local, stanza_error, to_str

NS_BLOCKING = 'urn:xmpp:blocking'
NS_BLOCKING_ERRORS = 'urn:xmpp:blocking:errors'

# XEP-0086 §2, table 1 (plus policy-violation: RFC 6120, newer than the
# XEP; the server gives it 403).
CODES = {
    'bad-request': '400', 'conflict': '409',
    'feature-not-implemented': '501', 'forbidden': '403', 'gone': '302',
    'internal-server-error': '500', 'item-not-found': '404',
    'jid-malformed': '400', 'not-acceptable': '406', 'not-allowed': '405',
    'not-authorized': '401', 'payment-required': '402',
    'recipient-unavailable': '404', 'redirect': '302',
    'registration-required': '407', 'remote-server-not-found': '404',
    'remote-server-timeout': '504', 'resource-constraint': '500',
    'service-unavailable': '503', 'subscription-required': '407',
    'undefined-condition': '500', 'unexpected-request': '400',
    'policy-violation': '403',
}


def error_el(st):
    for child in st:
        if local(child.tag) == 'error':
            return child
    raise AssertionError('no <error/> in %s' % to_str(st))


def check(st, type_, cond):
    """st is an error of (type_, cond) with XEP-0086's code for cond."""
    assert st.get('type') == 'error', to_str(st)
    assert stanza_error(st) == (type_, cond), to_str(st)
    assert error_el(st).get('code') == CODES[cond], to_str(st)


def test_core_routing_errors(server, user):
    c = server.login(*user)
    # an iq to an account that does not exist (RFC 6121 §8.5.1)
    r = c.iq('get', "<query xmlns='jabber:iq:version'/>",
             to='nobody-here@localhost')
    check(r, 'cancel', 'service-unavailable')
    # an iq namespace no module serves
    r = c.iq('get', "<query xmlns='urn:example:nothing'/>", to='localhost')
    check(r, 'cancel', 'service-unavailable')
    # a domain that is neither local nor reachable
    mid = c.message('someone@elsewhere.invalid', 'hi')
    m = c.recv_stanza('message', id=mid)
    assert m.get('type') == 'error', to_str(m)
    cond = stanza_error(m)[1]
    assert cond in ('remote-server-not-found', 'service-unavailable'), to_str(m)
    assert error_el(m).get('code') == CODES[cond], to_str(m)


def test_stream_layer_errors(server, user):
    """Replies c2s writes straight onto the stream (not via the router)."""
    c = server.login(*user)
    # a second resource binding (RFC 6120 §7.7.2.3? not-allowed here)
    r = c.iq('set', "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
             "<resource>again</resource></bind>")
    assert r.get('type') == 'error', to_str(r)
    cond = stanza_error(r)[1]
    assert error_el(r).get('code') == CODES[cond], to_str(r)
    # a malformed address (RFC 6120 §8.3.3.8)
    c.send("<message to='a@@b@' id='bad1' type='chat'><body>x</body>"
           "</message>")
    m = c.recv_stanza('message', id='bad1')
    check(m, 'modify', 'jid-malformed')


def test_module_errors(server, user):
    c = server.login(*user)
    # mod_disco: a node nobody defines
    r = c.iq('get', "<query xmlns='http://jabber.org/protocol/disco#info' "
             "node='no-such-node'/>", to='localhost')
    check(r, 'cancel', 'item-not-found')
    # mod_private: an empty query (XEP-0049 §3)
    r = c.iq('get', "<query xmlns='jabber:iq:private'/>")
    check(r, 'modify', 'not-acceptable')
    # mod_roster: an item without a jid
    r = c.iq('set', "<query xmlns='jabber:iq:roster'><item name='x'/>"
             "</query>")
    assert r.get('type') == 'error', to_str(r)
    cond = stanza_error(r)[1]
    assert cond in ('bad-request', 'jid-malformed'), to_str(r)
    assert error_el(r).get('code') == CODES[cond], to_str(r)
    # mod_private: somebody else's storage
    other, _ = server.new_user(prefix='other')
    r = c.iq('get', "<query xmlns='jabber:iq:private'><x xmlns='a:b'/>"
             "</query>", to='%s@localhost' % other)
    assert r.get('type') == 'error', to_str(r)
    cond = stanza_error(r)[1]
    assert error_el(r).get('code') == CODES[cond], to_str(r)


def test_application_condition_keeps_its_place(server):
    """mod_blocking: not-acceptable with <blocked/> after the defined
    condition (RFC 6120 §8.3.2), the code on the <error/>."""
    a, apw = server.new_user(prefix='lc')
    b, _ = server.new_user(prefix='lc')
    ca = server.login(a, apw)
    ca.presence()
    r = ca.iq('set', "<block xmlns='%s'><item jid='%s@localhost'/></block>"
              % (NS_BLOCKING, b))
    assert r.get('type') == 'result', to_str(r)
    mid = ca.message('%s@localhost' % b, 'to a blocked contact')
    m = ca.recv_stanza('message', id=mid)
    check(m, 'cancel', 'not-acceptable')
    kids = list(error_el(m))
    assert local(kids[0].tag) == 'not-acceptable', to_str(m)
    assert kids[-1].tag == '{%s}blocked' % NS_BLOCKING_ERRORS, to_str(m)


def test_relayed_error_is_not_changed(server):
    """An error a client sends to another is delivered as it was written:
    the server adds no code to what it does not generate."""
    a, apw = server.new_user(prefix='lc')
    b, bpw = server.new_user(prefix='lc')
    ca = server.login(a, apw, resource='ra')
    cb = server.login(b, bpw, resource='rb')
    ca.presence()
    cb.presence()
    assert ca.ping().get('type') == 'result'
    cb.send("<message to=%s type='error' id='rel1'><error type='cancel'>"
            "<item-not-found xmlns='%s'/></error></message>"
            % (quoteattr(ca.jid), NS_STANZAS))
    m = ca.recv_stanza('message', id='rel1')
    assert m.get('type') == 'error', to_str(m)
    assert error_el(m).get('code') is None, to_str(m)
    # and one with its own code keeps it
    cb.send("<message to=%s type='error' id='rel2'><error type='cancel' "
            "code='418'><undefined-condition xmlns='%s'/></error></message>"
            % (quoteattr(ca.jid), NS_STANZAS))
    m = ca.recv_stanza('message', id='rel2')
    assert error_el(m).get('code') == '418', to_str(m)


def test_pubsub_errors(server, user):
    """The PubSub engine's errors: the code, the defined condition, then
    the pubsub#errors child."""
    ns = 'http://jabber.org/protocol/pubsub'
    c = server.login(*user)
    r = c.iq('get', "<pubsub xmlns='%s'><items node='urn:example:none'/>"
             "</pubsub>" % ns)
    check(r, 'cancel', 'item-not-found')

    def publish(access):
        return c.iq('set', (
            "<pubsub xmlns='%s'><publish node='urn:example:lc'><item id='1'>"
            "<x xmlns='urn:example'/></item></publish><publish-options>"
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' "
            "type='hidden'><value>%s#publish-options</value></field>"
            "<field var='pubsub#access_model'><value>%s</value></field>"
            "</x></publish-options></pubsub>") % (ns, ns, access))
    assert publish('open').get('type') == 'result'
    r = publish('whitelist')
    assert r.get('type') == 'error', to_str(r)
    cond = stanza_error(r)[1]
    assert cond in ('conflict', 'not-acceptable'), to_str(r)
    e = error_el(r)
    assert e.get('code') == CODES[cond], to_str(r)
    kids = list(e)
    assert local(kids[0].tag) == cond, to_str(r)
    assert kids[-1].tag == '{%s#errors}precondition-not-met' % ns, to_str(r)
