"""PEP notifications (XEP-0163 §4): +notify, last items, access models, CSI
and blocking (modules/pubsub/notify.c).

Receivers are raw clients that announce XEP-0115 caps built here: the
first client with a ver answers the server's disco#info query (its caps
become known later, which is itself a case: it then gets the last items),
later clients with the same ver are known at once.  Publishing is done
from a resource that sent no presence, so it is never a receiver.
"Nothing arrived" is checked after a client that should get the same
notification got it."""

import asyncio
import secrets
from xml.sax.saxutils import quoteattr

import pytest

import conftest
import slixutil
from rawxmpp import NS_DISCO_INFO, local, new_id, to_str
from test_caps import ver_of
from test_pubsub import pubsub_server  # noqa: F401 (a fixture)

NS_CAPS = 'http://jabber.org/protocol/caps'
NS_PUBSUB = 'http://jabber.org/protocol/pubsub'
NS_EVENT = NS_PUBSUB + '#event'
NS_XDATA = 'jabber:x:data'
NS_CSI = 'urn:xmpp:csi:0'
NS_BLOCKING = 'urn:xmpp:blocking'
NS_PAYLOAD = 'urn:example:pep'
CLIENT_NODE = 'https://client.example/pep'


@pytest.fixture
def pserver(server):
    """The shared server of each driver (mod_pep is a default module)."""
    return server


# ---- helpers -----------------------------------------------------------

def pep_node():
    return 'urn:example:pep:%s' % secrets.token_hex(5)


class Caps:
    """A client's disco#info announcing +notify for nodes, and its ver."""

    def __init__(self, *nodes):
        self.ids = [('client', 'pc', '', 'PEP tester')]
        self.feats = [NS_DISCO_INFO, NS_CAPS,
                      'urn:example:%s' % secrets.token_hex(6)] + \
            ['%s+notify' % n for n in nodes]
        self.ver = ver_of(self.ids, self.feats)
        self.answered = False

    def element(self):
        return ("<c xmlns='%s' hash='sha-1' node='%s' ver=%s/>"
                % (NS_CAPS, CLIENT_NODE, quoteattr(self.ver)))

    def answer(self, c, query):
        body = ''.join("<identity category='%s' type='%s' name=%s/>"
                       % (cat, typ, quoteattr(nm))
                       for cat, typ, _, nm in self.ids)
        body += ''.join('<feature var=%s/>' % quoteattr(f) for f in self.feats)
        q = query.find('{%s}query' % NS_DISCO_INFO)
        c.send("<iq type='result' id=%s to=%s><query xmlns='%s' node=%s>%s"
               "</query></iq>" % (quoteattr(query.get('id')),
                                  quoteattr(query.get('from')), NS_DISCO_INFO,
                                  quoteattr(q.get('node')), body))
        self.answered = True


def is_disco_query(el):
    return (local(el.tag) == 'iq' and el.get('type') == 'get'
            and el.find('{%s}query' % NS_DISCO_INFO) is not None)


def online(srv, name, pw, caps=None, resource=None, label=None):
    """A session with available presence (and caps); the first client of
    a ver answers the server's disco#info query."""
    c = srv.login(name, pw, resource=resource)
    c.name = label or name
    c.presence(caps.element() if caps is not None else '')
    if caps is not None and not caps.answered:
        caps.answer(c, c.recv_until(is_disco_query, what='a disco#info query'))
    return c


def publisher(srv, name, pw):
    """A resource of name that never sends presence: not a receiver."""
    c = srv.login(name, pw, resource='pub-' + secrets.token_hex(3))
    c.name = name + '/pub'
    return c


def subscribe_both(srv, a, b, group='Friends'):
    srv.ctl('add_rosteritem', a, 'localhost', b, 'localhost', b, group, 'both',
            expect=0)
    srv.ctl('add_rosteritem', b, 'localhost', a, 'localhost', a, group, 'both',
            expect=0)


def options_form(**opts):
    fields = "<field var='FORM_TYPE' type='hidden'><value>%s#publish-options" \
             "</value></field>" % NS_PUBSUB
    for k, v in opts.items():
        fields += "<field var='pubsub#%s'><value>%s</value></field>" % (k, v)
    return ("<publish-options><x xmlns='%s' type='submit'>%s</x>"
            "</publish-options>" % (NS_XDATA, fields))


def publish(c, node, item_id, text=None, **opts):
    payload = "<x xmlns='%s'>%s</x>" % (NS_PAYLOAD, text or item_id)
    r = c.iq('set', "<pubsub xmlns='%s'><publish node=%s><item id=%s>%s</item>"
             "</publish>%s</pubsub>"
             % (NS_PUBSUB, quoteattr(node), quoteattr(item_id), payload,
                options_form(**opts) if opts else ''))
    assert r.get('type') == 'result', to_str(r)


def retract(c, node, item_id, notify=True):
    r = c.iq('set', "<pubsub xmlns='%s'><retract node=%s%s><item id=%s/>"
             "</retract></pubsub>"
             % (NS_PUBSUB, quoteattr(node), " notify='true'" if notify else '',
                quoteattr(item_id)))
    assert r.get('type') == 'result', to_str(r)


def items(c, owner, node):
    return c.iq('get', "<pubsub xmlns='%s'><items node=%s/></pubsub>"
                % (NS_PUBSUB, quoteattr(node)), to=owner)


def event_of(el):
    """(from, node, kind, id, payload text) of a notification, or None."""
    if local(el.tag) != 'message':
        return None
    ev = el.find('{%s}event' % NS_EVENT)
    if ev is None:
        return None
    its = ev.find('{%s}items' % NS_EVENT)
    if its is None:
        return (el.get('from'), None, local(ev[0].tag), None, None)
    for c in its:
        text = c.findtext('{%s}x' % NS_PAYLOAD)
        return (el.get('from'), its.get('node'), local(c.tag), c.get('id'), text)
    return (el.get('from'), its.get('node'), 'empty', None, None)


def wait_event(c, frm, node, kind='item', item_id=None, timeout=None, to=None):
    def pred(el):
        e = event_of(el)
        return (e is not None and e[0] == frm and e[1] == node and e[2] == kind
                and (item_id is None or e[3] == item_id))
    el = c.recv_until(pred, timeout, what='%s %s %s from %s' % (kind, node, item_id, frm))
    assert el.get('to') == (to or c.jid), to_str(el)
    assert el.get('type') == 'headline', to_str(el)
    return event_of(el)


def no_event(c, seconds=1.0):
    """Nothing but presence (no notification) within seconds."""
    c.expect_silence(seconds)


def until_pong(c):
    """Every element that arrives before the answer to a ping."""
    iq_id = new_id('pong')
    c.send("<iq type='get' id='%s' to='localhost'><ping xmlns='urn:xmpp:ping'/>"
           "</iq>" % iq_id)
    got = []
    while True:
        el = c.recv()
        if local(el.tag) == 'iq' and el.get('id') == iq_id:
            return got
        got.append(el)


def users(srv, n, prefix):
    return [srv.new_user(prefix='%s%d' % (prefix, i)) for i in range(n)]


# ---- notifications -----------------------------------------------------

def test_contacts_and_own_resources_notified(pserver):
    (alice, apw), (bob, bpw), (carol, cpw) = users(pserver, 3, 'pn')
    subscribe_both(pserver, alice, bob)
    node = pep_node()
    caps = Caps(node)
    other = Caps(pep_node())
    b1 = online(pserver, bob, bpw, caps, 'b1')
    b2 = online(pserver, bob, bpw, other, 'b2')   # no +notify for node
    a2 = online(pserver, alice, apw, caps, 'a2')  # the owner's other resource
    s = online(pserver, carol, cpw, caps)         # a stranger
    pub = publisher(pserver, alice, apw)
    abare = '%s@localhost' % alice
    publish(pub, node, 'i1', 'hello')
    assert wait_event(b1, abare, node, item_id='i1')[4] == 'hello'
    assert wait_event(a2, abare, node, item_id='i1')[4] == 'hello'
    no_event(b2)
    no_event(s)


def test_last_item_on_login_caps_later_and_second_resource(pserver):
    (alice, apw), (bob, bpw), (carol, cpw) = users(pserver, 3, 'pl')
    subscribe_both(pserver, alice, bob)
    node = pep_node()
    caps = Caps(node)
    abare = '%s@localhost' % alice
    pub = publisher(pserver, alice, apw)
    publish(pub, node, 'old', 'first')
    publish(pub, node, 'new', 'second')
    # the first client of this ver: its caps become known once it answered
    b1 = online(pserver, bob, bpw, caps, 'b1')
    assert wait_event(b1, abare, node)[3:] == ('new', 'second')
    # a second resource, caps known at once: at its initial presence
    b2 = online(pserver, bob, bpw, caps, 'b2')
    assert wait_event(b2, abare, node)[3:] == ('new', 'second')
    # the owner's own new session gets its own node's last item
    a3 = online(pserver, alice, apw, caps, 'a3')
    assert wait_event(a3, abare, node)[3:] == ('new', 'second')
    # a stranger gets nothing, and b1 nothing more
    s = online(pserver, carol, cpw, caps)
    no_event(s)
    no_event(b1, 0.3)


def test_changed_caps_get_only_new_last_items(pserver):
    (alice, apw), (bob, bpw) = users(pserver, 2, 'pk')
    subscribe_both(pserver, alice, bob)
    n1, n2 = pep_node(), pep_node()
    abare = '%s@localhost' % alice
    pub = publisher(pserver, alice, apw)
    publish(pub, n1, 'one')
    publish(pub, n2, 'two')
    first, both = Caps(n1), Caps(n1, n2)
    b1 = online(pserver, bob, bpw, first, 'b1')
    wait_event(b1, abare, n1, item_id='one')
    # new caps, unknown until b1 answers: only n2 is new
    b1.presence(both.element())
    both.answer(b1, b1.recv_until(is_disco_query, what='a disco#info query'))
    wait_event(b1, abare, n2, item_id='two')
    # back to known caps without n2, then to both again (known at once)
    b1.presence(first.element())
    no_event(b1, 0.3)
    b1.presence(both.element())
    assert wait_event(b1, abare, n2)[3] == 'two'
    no_event(b1, 0.3)   # and not n1 again


# ---- access models -----------------------------------------------------

def test_presence_model_contact_reads_stranger_does_not(pserver):
    (alice, apw), (bob, bpw), (carol, cpw) = users(pserver, 3, 'pa')
    subscribe_both(pserver, alice, bob)
    node = pep_node()
    abare = '%s@localhost' % alice
    publish(publisher(pserver, alice, apw), node, 'p1')
    b = pserver.login(bob, bpw)
    r = items(b, abare, node)
    assert r.get('type') == 'result', to_str(r)
    assert [i.get('id') for i in r.iter('{%s}item' % NS_PUBSUB)] == ['p1']
    s = pserver.login(carol, cpw)
    r = items(s, abare, node)
    assert r.get('type') == 'error', to_str(r)
    assert not list(r.iter('{%s}item' % NS_PUBSUB)), to_str(r)


def test_open_node_readable_by_stranger(pserver):
    (alice, apw), (carol, cpw) = users(pserver, 2, 'po')
    node = pep_node()
    publish(publisher(pserver, alice, apw), node, 'o1', access_model='open')
    r = items(pserver.login(carol, cpw), '%s@localhost' % alice, node)
    assert r.get('type') == 'result', to_str(r)
    assert [i.get('id') for i in r.iter('{%s}item' % NS_PUBSUB)] == ['o1']


def test_whitelist_node_only_owner(pserver):
    (alice, apw), (bob, bpw) = users(pserver, 2, 'pw')
    subscribe_both(pserver, alice, bob)
    node = pep_node()
    caps = Caps(node)
    abare = '%s@localhost' % alice
    b1 = online(pserver, bob, bpw, caps, 'b1')
    a2 = online(pserver, alice, apw, caps, 'a2')
    publish(publisher(pserver, alice, apw), node, 'w1', access_model='whitelist')
    wait_event(a2, abare, node, item_id='w1')
    no_event(b1)
    r = items(b1, abare, node)
    assert r.get('type') == 'error', to_str(r)
    # nor when the contact comes online again
    b2 = online(pserver, bob, bpw, caps, 'b2')
    no_event(b2)


def test_roster_model_groups(pserver):
    (alice, apw), (bob, bpw), (dave, dpw) = users(pserver, 3, 'pg')
    subscribe_both(pserver, alice, bob, group='Family')
    subscribe_both(pserver, alice, dave, group='Work')
    node = pep_node()
    caps = Caps(node)
    abare = '%s@localhost' % alice
    b1 = online(pserver, bob, bpw, caps, 'b1')
    d1 = online(pserver, dave, dpw, caps, 'd1')
    publish(publisher(pserver, alice, apw), node, 'g1', access_model='roster',
            roster_groups_allowed='Family')
    wait_event(b1, abare, node, item_id='g1')
    no_event(d1)
    assert items(d1, abare, node).get('type') == 'error'
    assert items(b1, abare, node).get('type') == 'result'


# ---- CSI and blocking --------------------------------------------------

def test_csi_holds_and_keeps_newest_per_node(pserver):
    (alice, apw), (bob, bpw) = users(pserver, 2, 'pc')
    subscribe_both(pserver, alice, bob)
    n1, n2 = pep_node(), pep_node()
    caps = Caps(n1, n2)
    abare = '%s@localhost' % alice
    b1 = online(pserver, bob, bpw, caps, 'b1')
    a2 = online(pserver, alice, apw, caps, 'a2')
    b1.send("<inactive xmlns='%s'/>" % NS_CSI)
    until_pong(b1)  # nonzas are processed in order: inactive from here on
    pub = publisher(pserver, alice, apw)
    for i in ('1', '2', '3'):
        publish(pub, n1, 'a' + i)
    publish(pub, n2, 'b1')
    # the active resource got all four, so bob's were routed too
    for i in ('1', '2', '3'):
        wait_event(a2, abare, n1, item_id='a' + i)
    wait_event(a2, abare, n2, item_id='b1')
    # held while inactive
    no_event(b1, 0.5)
    b1.send("<active xmlns='%s'/>" % NS_CSI)
    got = [event_of(el)[1:4] for el in until_pong(b1) if event_of(el)]
    assert got == [(n1, 'item', 'a3'), (n2, 'item', 'b1')], got


def test_blocking_either_way(pserver):
    (alice, apw), (bob, bpw), (carol, cpw), (dave, dpw) = users(pserver, 4, 'pb')
    for x in (bob, carol, dave):
        subscribe_both(pserver, alice, x)
    node = pep_node()
    caps = Caps(node)
    abare = '%s@localhost' % alice
    b1 = online(pserver, bob, bpw, caps, 'b1')
    c1 = online(pserver, carol, cpw, caps, 'c1')
    d1 = online(pserver, dave, dpw, caps, 'd1')
    # bob blocks alice; alice blocks dave
    r = b1.iq('set', "<block xmlns='%s'><item jid='%s'/></block>" % (NS_BLOCKING, abare))
    assert r.get('type') == 'result', to_str(r)
    pub = publisher(pserver, alice, apw)
    r = pub.iq('set', "<block xmlns='%s'><item jid='%s@localhost'/></block>"
               % (NS_BLOCKING, dave))
    assert r.get('type') == 'result', to_str(r)
    publish(pub, node, 'k1')
    wait_event(c1, abare, node, item_id='k1')
    no_event(b1)
    no_event(d1, 0.3)
    # nor the last item at a new session, while carol's new one gets it
    b2 = online(pserver, bob, bpw, caps, 'b2')
    d2 = online(pserver, dave, dpw, caps, 'd2')
    c2 = online(pserver, carol, cpw, caps, 'c2')
    wait_event(c2, abare, node, item_id='k1')
    no_event(b2, 0.5)
    no_event(d2, 0.3)
    # the owner offline (its list not cached): still applied
    pub.close()
    d3 = online(pserver, dave, dpw, caps, 'd3')
    c3 = online(pserver, carol, cpw, caps, 'c3')
    wait_event(c3, abare, node, item_id='k1')
    no_event(d3, 0.5)


# ---- a client library --------------------------------------------------

def test_slixmpp_add_interest_gets_notifications(pserver):
    (alice, apw), (bob, bpw) = users(pserver, 2, 'px')
    subscribe_both(pserver, alice, bob)
    node = pep_node()
    abare = '%s@localhost' % alice
    pub = publisher(pserver, alice, apw)
    publish(pub, node, 'before', 'last one')

    async def scenario():
        c = pserver.slix('%s@localhost/slix' % bob, bpw)
        c.register_plugin('xep_0115')
        c.register_plugin('xep_0163')
        got = asyncio.Queue()
        c.add_event_handler('pubsub_publish', lambda m: got.put_nowait(m))
        await c.start(presence=False)
        c['xep_0163'].add_interest(node)
        await c['xep_0115'].update_caps()
        c.send_presence()
        # the last item once its caps are verified ...
        m = await asyncio.wait_for(got.get(), 20)
        assert m['from'] == abare and m['pubsub_event']['items']['node'] == node
        assert m['pubsub_event']['items']['item']['id'] == 'before'
        # ... and the next publish
        await asyncio.get_event_loop().run_in_executor(
            None, publish, pub, node, 'after')
        m = await asyncio.wait_for(got.get(), 20)
        assert m['pubsub_event']['items']['item']['id'] == 'after'
        await c.stop()

    slixutil.run(scenario, timeout=60)


# ---- owner operations and the generic service --------------------------

def owner_iq(c, inner, to=None):
    r = c.iq('set', "<pubsub xmlns='%s#owner'>%s</pubsub>" % (NS_PUBSUB, inner), to=to)
    assert r.get('type') == 'result', to_str(r)
    return r


def test_retract_purge_config_delete_notified(pserver):
    (alice, apw), (bob, bpw) = users(pserver, 2, 'pd')
    subscribe_both(pserver, alice, bob)
    node = pep_node()
    caps = Caps(node)
    abare = '%s@localhost' % alice
    b1 = online(pserver, bob, bpw, caps, 'b1')
    pub = publisher(pserver, alice, apw)
    publish(pub, node, 'r1')
    wait_event(b1, abare, node, item_id='r1')
    retract(pub, node, 'r1', notify=True)
    assert wait_event(b1, abare, node, kind='retract')[3] == 'r1'
    publish(pub, node, 'd1')
    wait_event(b1, abare, node, item_id='d1')
    owner_iq(pub, "<purge node=%s/>" % quoteattr(node))
    assert wait_event(b1, abare, None, kind='purge')[0] == abare
    # notify_config on: the configuration notification carries the form
    owner_iq(pub, "<configure node=%s><x xmlns='%s' type='submit'><field "
             "var='FORM_TYPE' type='hidden'><value>%s#node_config</value>"
             "</field><field var='pubsub#notify_config'><value>1</value>"
             "</field></x></configure>" % (quoteattr(node), NS_XDATA, NS_PUBSUB))
    el = b1.recv_until(lambda e: event_of(e) is not None
                       and event_of(e)[2] == 'configuration',
                       what='a configuration notification')
    conf = el.find('{%s}event/{%s}configuration' % (NS_EVENT, NS_EVENT))
    assert conf.get('node') == node, to_str(el)
    assert conf.find('{%s}x' % NS_XDATA) is not None, to_str(el)
    owner_iq(pub, "<delete node=%s><redirect uri='xmpp:%s?;node=elsewhere'/>"
             "</delete>" % (quoteattr(node), abare))
    el = b1.recv_until(lambda e: event_of(e) is not None
                       and event_of(e)[2] == 'delete', what='a delete notification')
    d = el.find('{%s}event/{%s}delete' % (NS_EVENT, NS_EVENT))
    assert d.get('node') == node, to_str(el)
    assert d.find('{%s}redirect' % NS_EVENT).get('uri').endswith('node=elsewhere')


@pytest.fixture(scope='module')
def service_server(pubsub_server):
    """A server with mod_pubsub (test_pubsub.py's, per driver)."""
    return pubsub_server


def test_service_subscribers_notified(service_server):
    srv = service_server
    service = 'pubsub.localhost'
    (alice, apw), (bob, bpw), (carol, cpw), (dave, dpw) = users(srv, 4, 'ps')
    a = srv.login(alice, apw)
    node = 'news-' + alice
    r = a.iq('set', "<pubsub xmlns='%s'><create node='%s'/></pubsub>"
             % (NS_PUBSUB, node), to=service)
    assert r.get('type') == 'result', to_str(r)
    b1 = online(srv, bob, bpw, None, 'b1')
    c1 = online(srv, carol, cpw, None, 'c1')
    c2 = online(srv, carol, cpw, None, 'c2')
    d1 = online(srv, dave, dpw, None, 'd1')
    # bob by bare JID, carol by one full JID, dave then made an outcast
    for c, jid in ((b1, '%s@localhost' % bob), (c1, c1.jid),
                   (d1, '%s@localhost' % dave)):
        r = c.iq('set', "<pubsub xmlns='%s'><subscribe node='%s' jid='%s'/>"
                 "</pubsub>" % (NS_PUBSUB, node, jid), to=service)
        assert r.get('type') == 'result', to_str(r)
    owner_iq(a, "<affiliations node='%s'><affiliation jid='%s@localhost' "
             "affiliation='outcast'/></affiliations>" % (node, dave), to=service)
    r = a.iq('set', "<pubsub xmlns='%s'><publish node='%s'><item id='n1'>"
             "<x xmlns='%s'>news</x></item></publish></pubsub>"
             % (NS_PUBSUB, node, NS_PAYLOAD), to=service)
    assert r.get('type') == 'result', to_str(r)
    # a bare JID subscription is addressed to the bare JID
    assert wait_event(b1, service, node, item_id='n1',
                      to='%s@localhost' % bob)[4] == 'news'
    assert wait_event(c1, service, node, item_id='n1')[4] == 'news'
    no_event(c2, 0.5)
    no_event(d1, 0.3)


def test_service_presence_model_uses_owner_roster(service_server):
    """On pubsub.<host>, presence and roster access look at the roster of
    the node's local owners."""
    srv = service_server
    service = 'pubsub.localhost'
    (alice, apw), (bob, bpw), (carol, cpw) = users(srv, 3, 'pq')
    subscribe_both(srv, alice, bob)
    a = srv.login(alice, apw)
    node = 'friends-' + alice
    r = a.iq('set', "<pubsub xmlns='%s'><create node='%s'/><configure><x "
             "xmlns='%s' type='submit'><field var='FORM_TYPE' type='hidden'>"
             "<value>%s#node_config</value></field><field "
             "var='pubsub#access_model'><value>presence</value></field></x>"
             "</configure></pubsub>" % (NS_PUBSUB, node, NS_XDATA, NS_PUBSUB),
             to=service)
    assert r.get('type') == 'result', to_str(r)
    r = a.iq('set', "<pubsub xmlns='%s'><publish node='%s'><item id='f1'>"
             "<x xmlns='%s'>hi</x></item></publish></pubsub>"
             % (NS_PUBSUB, node, NS_PAYLOAD), to=service)
    assert r.get('type') == 'result', to_str(r)
    r = items(srv.login(bob, bpw), service, node)
    assert r.get('type') == 'result', to_str(r)
    assert [i.get('id') for i in r.iter('{%s}item' % NS_PUBSUB)] == ['f1']
    r = items(srv.login(carol, cpw), service, node)
    assert r.get('type') == 'error', to_str(r)
