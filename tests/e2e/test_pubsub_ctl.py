"""pigeonctl for PubSub/PEP (modules/pubsub/ctl.c): get_pubsub_nodes,
delete_pubsub_node (subscribers notified as for a client's delete),
pep_stats and the PEP figures of `pigeonctl stats`."""

import base64
import hashlib
import secrets
from xml.sax.saxutils import quoteattr

import pytest

from rawxmpp import NS_DISCO_INFO, local, to_str

NS_PUBSUB = 'http://jabber.org/protocol/pubsub'
NS_EVENT = NS_PUBSUB + '#event'
NS_CAPS = 'http://jabber.org/protocol/caps'
NS_XDATA = 'jabber:x:data'
CAPS_NODE = 'https://client.example/ctl'


def publish(c, node, item_id, payload, max_items='max'):
    """Publishes payload (XML text) as item_id of c's own PEP node."""
    form = ("<publish-options><x xmlns='%s' type='submit'>"
            "<field var='FORM_TYPE' type='hidden'><value>%s#publish-options"
            "</value></field><field var='pubsub#max_items'><value>%s</value>"
            "</field></x></publish-options>" % (NS_XDATA, NS_PUBSUB, max_items))
    r = c.iq('set', "<pubsub xmlns='%s'><publish node=%s><item id=%s>%s"
             "</item></publish>%s</pubsub>"
             % (NS_PUBSUB, quoteattr(node), quoteattr(item_id), payload, form))
    assert r.get('type') == 'result', to_str(r)


def announce_notify(c, *nodes):
    """c becomes available with caps whose features include node+notify
    for each node, and answers the server's disco#info query (XEP-0115)."""
    feats = [NS_DISCO_INFO, NS_CAPS, 'urn:example:%s' % secrets.token_hex(6)]
    feats += ['%s+notify' % n for n in nodes]
    ident = 'client/pc//Ctl Test'
    s = ident + '<' + ''.join('%s<' % f for f in sorted(feats))
    ver = base64.b64encode(hashlib.sha1(s.encode()).digest()).decode()
    c.presence("<c xmlns='%s' hash='sha-1' node='%s' ver=%s/>"
               % (NS_CAPS, CAPS_NODE, quoteattr(ver)))
    q = c.recv_until(lambda el: local(el.tag) == 'iq' and el.get('type') == 'get'
                     and el.find('{%s}query' % NS_DISCO_INFO) is not None,
                     30, what='the caps query')
    body = "<identity category='client' type='pc' name='Ctl Test'/>"
    body += ''.join("<feature var=%s/>" % quoteattr(f) for f in feats)
    c.send("<iq type='result' id=%s to=%s><query xmlns='%s' node=%s>%s</query>"
           "</iq>" % (quoteattr(q.get('id')), quoteattr(q.get('from')),
                      NS_DISCO_INFO,
                      quoteattr(q.find('{%s}query' % NS_DISCO_INFO).get('node')),
                      body))
    assert c.ping().get('type') == 'result'


def payload_bytes(srv, user, node):
    """The payload bytes of a node as the store holds them (computed here,
    not with the SQL the command uses)."""
    import conftest
    rows = conftest.db_rows(
        srv, "SELECT i.payload FROM pubsub_item i JOIN pubsub_node n ON "
        "n.id = i.node_id WHERE n.service = '%s@localhost' AND n.node = '%s'"
        % (user, node))
    return sum(len(r[0].encode()) for r in rows)


def nodes_of(srv, user, host='localhost'):
    r = srv.ctl('get_pubsub_nodes', user, host, expect=0)
    out = {}
    for line in r.stdout.splitlines():
        node, items, nbytes = line.split('\t')
        out[node] = (int(items), int(nbytes))
    return out


def figures(text):
    return dict(line.split(' ', 1) for line in text.splitlines() if ' ' in line)


@pytest.fixture
def pep_server(make_server, driver):
    return make_server(driver, modules={'mod_pep': {}})


def test_nodes_and_figures(pep_server):
    srv = pep_server
    a, apw = srv.new_user(prefix='pa')
    b, bpw = srv.new_user(prefix='pb')
    e, _ = srv.new_user(prefix='pe')
    ca = srv.login(a, apw)
    cb = srv.login(b, bpw)
    publish(ca, 'urn:example:one', 'i1', "<x xmlns='urn:example'>first</x>")
    publish(ca, 'urn:example:one', 'i2',
            "<x xmlns='urn:example'>second, a little longer \u00e9</x>")
    publish(ca, 'urn:example:two', 'i1', "<y xmlns='urn:example'/>")
    publish(cb, 'urn:example:one', 'only', "<x xmlns='urn:example'>b</x>")

    nodes = nodes_of(srv, a)
    assert sorted(nodes) == ['urn:example:one', 'urn:example:two'], nodes
    assert nodes['urn:example:one'] == (2, payload_bytes(srv, a, 'urn:example:one'))
    assert nodes['urn:example:two'] == (1, payload_bytes(srv, a, 'urn:example:two'))
    assert nodes['urn:example:one'][1] > nodes['urn:example:two'][1] > 0
    assert nodes_of(srv, b) == {
        'urn:example:one': (1, payload_bytes(srv, b, 'urn:example:one'))}
    # an account without nodes: nothing; no account, or not a host: errors
    assert nodes_of(srv, e) == {}
    r = srv.ctl('get_pubsub_nodes', 'nobody-' + a, 'localhost', expect=1)
    assert 'unknown user' in r.stderr
    srv.ctl('get_pubsub_nodes', a, 'nohost.example', expect=1)
    srv.ctl('get_pubsub_nodes', a, expect=2)

    total = sum(v[1] for v in list(nodes_of(srv, a).values())
                + list(nodes_of(srv, b).values()))
    want = {'pep_users': '2', 'pep_nodes': '3', 'pep_items': '4',
            'pep_bytes': str(total), 'pep_user_max_nodes': '2',
            'pep_user_max_items': '3',
            'pep_user_max_bytes': str(sum(v[1] for v in nodes_of(srv, a).values()))}
    got = figures(srv.ctl('pep_stats', 'localhost', expect=0).stdout)
    assert got == want, got
    stats = figures(srv.ctl('stats', expect=0).stdout)
    for k, v in want.items():
        assert stats.get('%s@localhost' % k) == v, (k, stats)
    # the other host has no PEP data
    assert stats.get('pep_nodes@example.test') == '0', stats


def test_delete_node_notifies_and_removes(pep_server):
    srv = pep_server
    a, apw = srv.new_user(prefix='da')
    b, bpw = srv.new_user(prefix='db')
    srv.ctl('add_rosteritem', a, 'localhost', b, 'localhost', b, '', 'both',
            expect=0)
    srv.ctl('add_rosteritem', b, 'localhost', a, 'localhost', a, '', 'both',
            expect=0)
    node = 'urn:example:ctl:%s' % secrets.token_hex(4)
    ca = srv.login(a, apw, resource='ra')
    ca.presence()
    publish(ca, node, 'k1', "<x xmlns='urn:example'>1</x>")
    publish(ca, node, 'k2', "<x xmlns='urn:example'>2</x>")
    publish(ca, 'urn:example:keep', 'k', "<x xmlns='urn:example'>keep</x>")
    cb = srv.login(b, bpw, resource='rb')
    announce_notify(cb, node)

    srv.ctl('delete_pubsub_node', a, 'localhost', node, expect=0)
    ev = cb.recv_until(
        lambda el: local(el.tag) == 'message'
        and el.find('{%s}event/{%s}delete' % (NS_EVENT, NS_EVENT)) is not None,
        15, what='the delete notification')
    assert ev.get('from') == '%s@localhost' % a, to_str(ev)
    assert ev.find('{%s}event/{%s}delete' % (NS_EVENT, NS_EVENT)).get('node') \
        == node, to_str(ev)

    assert list(nodes_of(srv, a)) == ['urn:example:keep']
    import conftest
    assert conftest.db(srv, "SELECT count(*) FROM pubsub_item i JOIN "
                       "pubsub_node n ON n.id = i.node_id WHERE n.node = '%s'"
                       % node) in (0, '0')
    # the owner sees it gone too
    r = ca.iq('get', "<pubsub xmlns='%s'><items node=%s/></pubsub>"
              % (NS_PUBSUB, quoteattr(node)))
    assert r.get('type') == 'error', to_str(r)
    # twice: no such node; the other node and account are untouched
    r = srv.ctl('delete_pubsub_node', a, 'localhost', node, expect=1)
    assert 'no such node' in r.stderr
    srv.ctl('delete_pubsub_node', b, 'localhost', 'urn:example:keep', expect=1)
    assert nodes_of(srv, a)['urn:example:keep'][0] == 1


def test_generic_service_nodes(make_server, driver):
    srv = make_server(driver, modules={'mod_pubsub': {}})
    service = 'pubsub.localhost'
    a, apw = srv.new_user(prefix='ga')
    b, bpw = srv.new_user(prefix='gb')
    ca = srv.login(a, apw)
    cb = srv.login(b, bpw, resource='rb')
    cb.presence()  # notifications to the bare JID reach available ones
    node = 'news-%s' % secrets.token_hex(4)
    r = ca.iq('set', "<pubsub xmlns='%s'><create node='%s'/></pubsub>"
              % (NS_PUBSUB, node), to=service)
    assert r.get('type') == 'result', to_str(r)
    for i in ('n1', 'n2'):
        r = ca.iq('set', "<pubsub xmlns='%s'><publish node='%s'><item id='%s'>"
                  "<x xmlns='urn:example'>%s</x></item></publish></pubsub>"
                  % (NS_PUBSUB, node, i, i), to=service)
        assert r.get('type') == 'result', to_str(r)
    r = cb.iq('set', "<pubsub xmlns='%s'><subscribe node='%s' jid='%s@localhost'/>"
              "</pubsub>" % (NS_PUBSUB, node, b), to=service)
    assert r.get('type') == 'result', to_str(r)

    out = srv.ctl('get_pubsub_service_nodes', 'localhost', expect=0).stdout
    rows = [line.split('\t') for line in out.splitlines()]
    assert [(n, int(k)) for n, k, _ in rows] == [(node, 2)], out
    assert int(rows[0][2]) > 0
    stats = figures(srv.ctl('stats', expect=0).stdout)
    assert stats.get('pubsub_nodes@localhost') == '1', stats
    assert stats.get('pubsub_items@localhost') == '2', stats
    assert stats.get('pubsub_subscriptions@localhost') == '1', stats
    assert stats.get('pubsub_bytes@localhost') == rows[0][2], stats

    srv.ctl('delete_pubsub_service_node', 'localhost', node, expect=0)
    ev = cb.recv_until(
        lambda el: local(el.tag) == 'message'
        and el.find('{%s}event/{%s}delete' % (NS_EVENT, NS_EVENT)) is not None,
        15, what='the delete notification')
    assert ev.get('from') == service, to_str(ev)
    assert srv.ctl('get_pubsub_service_nodes', 'localhost',
                   expect=0).stdout == ''
    r = srv.ctl('delete_pubsub_service_node', 'localhost', node, expect=1)
    assert 'no such node' in r.stderr
