"""The PubSub engine: PEP (mod_pep, XEP-0163) on every account and the
generic service (mod_pubsub, XEP-0060) on pubsub.<host>.  Raw stanzas;
notification delivery and access models are in test_pep_notify.py."""

import pytest

from rawxmpp import stanza_error, to_str

NS = 'http://jabber.org/protocol/pubsub'
OWNER = NS + '#owner'
ERRORS = NS + '#errors'
XDATA = 'jabber:x:data'
RSM = 'http://jabber.org/protocol/rsm'
DISCO_INFO = 'http://jabber.org/protocol/disco#info'
DISCO_ITEMS = 'http://jabber.org/protocol/disco#items'
SERVICE = 'pubsub.localhost'


def ps(inner, ns=NS):
    return "<pubsub xmlns='%s'>%s</pubsub>" % (ns, inner)


def form(form_type, fields, type_='submit'):
    out = "<x xmlns='jabber:x:data' type='%s'>" % type_
    out += ("<field var='FORM_TYPE' type='hidden'><value>%s</value></field>"
            % form_type)
    for var, val in fields.items():
        vals = val if isinstance(val, list) else [val]
        out += "<field var='%s'>%s</field>" % (
            var, ''.join('<value>%s</value>' % v for v in vals))
    return out + '</x>'


def publish_options(fields):
    return "<publish-options>%s</publish-options>" % form(
        NS + '#publish-options', fields)


def publish(c, node, payload, item_id=None, options=None, to=None):
    item = "<item%s>%s</item>" % (
        " id='%s'" % item_id if item_id else '', payload)
    inner = "<publish node='%s'>%s</publish>" % (node, item)
    if options:
        inner += publish_options(options)
    return c.iq('set', ps(inner), to=to)


def ok(iq):
    assert iq.get('type') == 'result', to_str(iq)
    return iq


def must_publish(c, node, payload, item_id=None, options=None, to=None):
    r = ok(publish(c, node, payload, item_id, options, to))
    it = r.find('{%s}pubsub/{%s}publish/{%s}item' % (NS, NS, NS))
    assert it is not None and it.get('id'), to_str(r)
    return it.get('id')


def error(iq, cond, ps_cond=None, type_=None):
    """Asserts iq is the error cond with the pubsub#errors child ps_cond."""
    assert iq.get('type') == 'error', to_str(iq)
    t, c = stanza_error(iq)
    assert c == cond, to_str(iq)
    if type_:
        assert t == type_, to_str(iq)
    err = iq.find('{jabber:client}error')
    got = [ch for ch in err if ch.tag.startswith('{%s}' % ERRORS)]
    if ps_cond is None:
        assert not got, to_str(iq)
    else:
        assert got and got[0].tag == '{%s}%s' % (ERRORS, ps_cond), to_str(iq)
        return got[0]


def items(c, node, inner='', attrs='', to=None, extra=''):
    r = c.iq('get', ps("<items node='%s'%s>%s</items>%s"
                       % (node, attrs, inner, extra)), to=to)
    return r


def item_ids(iq):
    ok(iq)
    its = iq.findall('{%s}pubsub/{%s}items/{%s}item' % (NS, NS, NS))
    return [i.get('id') for i in its]


def payload_text(iq, item_id):
    for i in iq.findall('{%s}pubsub/{%s}items/{%s}item' % (NS, NS, NS)):
        if i.get('id') == item_id:
            return i.findtext('{urn:example:t}v')
    return None


def pay(v):
    return "<v xmlns='urn:example:t'>%s</v>" % v


# ---- PEP -----------------------------------------------------------------

def test_pep_publish_items_retract(server, user):
    name, pw = user
    c = server.login(name, pw)
    bare = '%s@localhost' % name
    # auto-create with the defaults, item id given
    assert must_publish(c, 'urn:example:n', pay('one'), 'a') == 'a'
    r = items(c, 'urn:example:n')
    assert item_ids(r) == ['a'] and payload_text(r, 'a') == 'one'
    # default max_items is 1 (XEP-0163 §8): the new item replaces it
    gen = must_publish(c, 'urn:example:n', pay('two'))
    assert gen != 'a'
    assert item_ids(items(c, 'urn:example:n', to=bare)) == [gen]
    # a node of max 3 with four items keeps the newest three, newest first
    opts = {'pubsub#max_items': '3', 'pubsub#access_model': 'open'}
    for i in range(4):
        must_publish(c, 'urn:example:m', pay(str(i)), 'i%d' % i, opts)
    assert item_ids(items(c, 'urn:example:m')) == ['i3', 'i2', 'i1']
    # republishing an id replaces it and makes it the newest
    must_publish(c, 'urn:example:m', pay('again'), 'i1', opts)
    r = items(c, 'urn:example:m')
    assert item_ids(r) == ['i1', 'i3', 'i2']
    assert payload_text(r, 'i1') == 'again'
    # by id, max_items
    r = items(c, 'urn:example:m', "<item id='i2'/><item id='nope'/>")
    assert item_ids(r) == ['i2'] and payload_text(r, 'i2') == '2'
    assert item_ids(items(c, 'urn:example:m', attrs=" max_items='2'")) \
        == ['i1', 'i3']
    # retract
    ok(c.iq('set', ps("<retract node='urn:example:m' notify='true'>"
                      "<item id='i3'/></retract>")))
    assert item_ids(items(c, 'urn:example:m')) == ['i1', 'i2']
    error(c.iq('set', ps("<retract node='urn:example:m'><item id='i3'/>"
                         "</retract>")), 'item-not-found')
    error(c.iq('set', ps("<retract node='urn:example:nonode'>"
                         "<item id='i3'/></retract>")), 'item-not-found')
    error(c.iq('set', ps("<retract node='urn:example:m'/>")),
          'bad-request', 'item-required')
    error(items(c, 'urn:example:nonode'), 'item-not-found')


def test_pep_others_read_open_not_presence(server):
    alice, apw = server.new_user(prefix='psa')
    bob, bpw = server.new_user(prefix='psb')
    a = server.login(alice, apw)
    b = server.login(bob, bpw)
    abare = '%s@localhost' % alice
    must_publish(a, 'urn:example:open', pay('x'), '1',
                 {'pubsub#access_model': 'open'})
    must_publish(a, 'urn:example:pres', pay('y'), '1')
    assert item_ids(items(b, 'urn:example:open', to=abare)) == ['1']
    # presence access model (the PEP default) and no subscription
    error(items(b, 'urn:example:pres', to=abare), 'not-authorized',
          'presence-subscription-required')
    # only the account publishes, retracts, configures (XEP-0163)
    error(publish(b, 'urn:example:open', pay('z'), to=abare), 'forbidden')
    error(publish(b, 'urn:example:new', pay('z'), to=abare), 'forbidden')
    error(b.iq('set', ps("<retract node='urn:example:open'><item id='1'/>"
                         "</retract>"), to=abare), 'forbidden')
    error(b.iq('get', ps("<configure node='urn:example:open'/>", OWNER),
               to=abare), 'forbidden')
    error(b.iq('set', ps("<delete node='urn:example:open'/>", OWNER),
               to=abare), 'forbidden')
    # disco#items: bob sees the open node only, alice both
    r = ok(b.iq('get', "<query xmlns='%s'/>" % DISCO_ITEMS, to=abare))
    nodes = [i.get('node') for i in r.findall('{%s}query/{%s}item'
                                              % (DISCO_ITEMS, DISCO_ITEMS))]
    assert nodes == ['urn:example:open'], to_str(r)
    r = ok(a.iq('get', "<query xmlns='%s'/>" % DISCO_ITEMS, to=abare))
    nodes = [i.get('node') for i in r.findall('{%s}query/{%s}item'
                                              % (DISCO_ITEMS, DISCO_ITEMS))]
    assert nodes == ['urn:example:open', 'urn:example:pres'], to_str(r)
    # disco#info: the pep identity to anyone, the features to the owner
    r = ok(b.iq('get', "<query xmlns='%s'/>" % DISCO_INFO, to=abare))
    ids = [(i.get('category'), i.get('type')) for i in
           r.findall('{%s}query/{%s}identity' % (DISCO_INFO, DISCO_INFO))]
    assert ('pubsub', 'pep') in ids and ('account', 'registered') in ids
    r = ok(a.iq('get', "<query xmlns='%s'/>" % DISCO_INFO, to=abare))
    feats = {f.get('var') for f in
             r.findall('{%s}query/{%s}feature' % (DISCO_INFO, DISCO_INFO))}
    for f in ('publish', 'publish-options', 'auto-create', 'retrieve-items',
              'retract-items', 'purge-nodes', 'delete-nodes', 'config-node',
              'access-whitelist', 'persistent-items', 'rsm'):
        assert NS + '#' + f in feats, f


def test_pep_publish_options(server, user):
    name, pw = user
    c = server.login(name, pw)
    opts = {'pubsub#persist_items': 'true', 'pubsub#access_model': 'whitelist',
            'pubsub#max_items': 'max', 'pubsub#send_last_published_item': 'never'}
    # XEP-0223 / XEP-0402: auto-created with the options
    must_publish(c, 'urn:xmpp:bookmarks:1', pay('room1'), 'r1@conf', opts)
    must_publish(c, 'urn:xmpp:bookmarks:1', pay('room2'), 'r2@conf', opts)
    assert item_ids(items(c, 'urn:xmpp:bookmarks:1')) == ['r2@conf', 'r1@conf']
    r = ok(c.iq('get', ps("<configure node='urn:xmpp:bookmarks:1'/>", OWNER)))
    fields = {f.get('var'): f.findtext('{%s}value' % XDATA) for f in
              r.iter('{%s}field' % XDATA)}
    assert fields['pubsub#access_model'] == 'whitelist', to_str(r)
    assert fields['pubsub#max_items'] == 'max', to_str(r)
    # options that differ: precondition-not-met, nothing published
    r = publish(c, 'urn:xmpp:bookmarks:1', pay('x'), 'r3@conf',
                dict(opts, **{'pubsub#access_model': 'open'}))
    error(r, 'conflict', 'precondition-not-met')
    r = publish(c, 'urn:xmpp:bookmarks:1', pay('x'), 'r3@conf',
                {'pubsub#no_such_option': '1'})
    error(r, 'conflict', 'precondition-not-met')
    # a boolean written another way is the same value
    must_publish(c, 'urn:xmpp:bookmarks:1', pay('room3'), 'r3@conf',
                 dict(opts, **{'pubsub#persist_items': '1'}))
    assert len(item_ids(items(c, 'urn:xmpp:bookmarks:1'))) == 3


def test_pep_configure_default_purge_delete(server, user):
    name, pw = user
    c = server.login(name, pw)
    must_publish(c, 'urn:example:cfg', pay('1'), '1',
                 {'pubsub#max_items': '10'})
    for i in range(2, 6):
        must_publish(c, 'urn:example:cfg', pay(str(i)), str(i))
    # default configuration (XEP-0163 §8)
    r = ok(c.iq('get', ps("<default/>", OWNER)))
    fields = {f.get('var'): f.findtext('{%s}value' % XDATA) for f in
              r.iter('{%s}field' % XDATA)}
    assert fields['pubsub#access_model'] == 'presence', to_str(r)
    assert fields['pubsub#max_items'] == '1'
    assert fields['pubsub#send_last_published_item'] == 'on_sub_and_presence'
    # configure set: lowering max_items trims to the newest
    ok(c.iq('set', ps("<configure node='urn:example:cfg'>%s</configure>"
                      % form(NS + '#node_config',
                             {'pubsub#max_items': '2',
                              'pubsub#title': 'Tests'}), OWNER)))
    assert item_ids(items(c, 'urn:example:cfg')) == ['5', '4']
    r = ok(c.iq('get', ps("<configure node='urn:example:cfg'/>", OWNER)))
    fields = {f.get('var'): f.findtext('{%s}value' % XDATA) for f in
              r.iter('{%s}field' % XDATA)}
    assert fields['pubsub#title'] == 'Tests' and fields['pubsub#max_items'] == '2'
    # a bad value is refused and changes nothing
    error(c.iq('set', ps("<configure node='urn:example:cfg'>%s</configure>"
                         % form(NS + '#node_config',
                                {'pubsub#access_model': 'bogus'}), OWNER)),
          'not-acceptable')
    # purge, delete
    ok(c.iq('set', ps("<purge node='urn:example:cfg'/>", OWNER)))
    assert item_ids(items(c, 'urn:example:cfg')) == []
    ok(c.iq('set', ps("<delete node='urn:example:cfg'/>", OWNER)))
    error(items(c, 'urn:example:cfg'), 'item-not-found')
    error(c.iq('set', ps("<delete node='urn:example:cfg'/>", OWNER)),
          'item-not-found')
    # create with a configure form; conflict when it exists
    r = ok(c.iq('set', ps("<create node='urn:example:made'/><configure>%s"
                          "</configure>" % form(NS + '#node_config',
                                                {'pubsub#access_model':
                                                 'open'}))))
    error(c.iq('set', ps("<create node='urn:example:made'/>")), 'conflict')
    r = ok(c.iq('get', ps("<configure node='urn:example:made'/>", OWNER)))
    fields = {f.get('var'): f.findtext('{%s}value' % XDATA) for f in
              r.iter('{%s}field' % XDATA)}
    assert fields['pubsub#access_model'] == 'open'


def test_pep_rsm_paging(server, user):
    name, pw = user
    c = server.login(name, pw)
    opts = {'pubsub#max_items': 'max'}
    for i in range(7):
        must_publish(c, 'urn:example:page', pay(str(i)), 'p%d' % i, opts)
    rsm = "<set xmlns='%s'><max>3</max>%s</set>"
    r = items(c, 'urn:example:page', extra=rsm % (RSM, ''))
    assert item_ids(r) == ['p6', 'p5', 'p4']
    s = r.find('{%s}pubsub/{%s}set' % (NS, RSM))
    assert s.findtext('{%s}count' % RSM) == '7', to_str(r)
    assert s.findtext('{%s}first' % RSM) == 'p6'
    assert s.findtext('{%s}last' % RSM) == 'p4'
    r = items(c, 'urn:example:page', extra=rsm % (RSM, '<after>p4</after>'))
    assert item_ids(r) == ['p3', 'p2', 'p1']
    r = items(c, 'urn:example:page', extra=rsm % (RSM, '<after>p1</after>'))
    assert item_ids(r) == ['p0']
    r = items(c, 'urn:example:page', extra=rsm % (RSM, '<before>p3</before>'))
    assert item_ids(r) == ['p6', 'p5', 'p4']
    r = items(c, 'urn:example:page', extra=rsm % (RSM, '<before/>'))
    assert item_ids(r) == ['p2', 'p1', 'p0']


def test_pep_errors_and_limits(make_server, driver):
    srv = make_server(driver, modules={'mod_pep': {
        'max_nodes': 2, 'max_item_size': 200, 'max_bytes': 1024,
        'max_page': 2, 'max_items': 10}})
    name, pw = srv.new_user()
    c = srv.login(name, pw)
    # payload too big
    error(publish(c, 'urn:example:a', pay('x' * 300)), 'not-acceptable',
          'payload-too-big')
    # two nodes, then policy-violation
    opts = {'pubsub#max_items': 'max'}
    must_publish(c, 'urn:example:a', pay('1'), options=opts)
    must_publish(c, 'urn:example:b', pay('1'))
    error(publish(c, 'urn:example:c', pay('1')), 'policy-violation')
    # bytes per account
    r = None
    for i in range(20):
        r = publish(c, 'urn:example:a', pay('y' * 150), 'i%d' % i, opts)
        if r.get('type') == 'error':
            break
    assert i < 20
    error(r, 'policy-violation')
    # precondition differs (max_items of the node is 1): error above,
    # and items 'max' is capped at max_items (3)
    r = publish(c, 'urn:example:b', pay('1'), 'x', opts)
    error(r, 'conflict', 'precondition-not-met')
    # a page of at most max_page items, with <set/> to go on
    r = items(c, 'urn:example:a')
    assert len(item_ids(r)) == 2, to_str(r)
    s = r.find('{%s}pubsub/{%s}set' % (NS, RSM))
    assert s is not None and int(s.findtext('{%s}count' % RSM)) > 2, to_str(r)
    # 'max' is capped at the max_items option (10): room for many small
    # items, the oldest go
    ok(c.iq('set', ps("<purge node='urn:example:a'/>", OWNER)))
    for i in range(12):
        must_publish(c, 'urn:example:a', pay(i), 's%d' % i, opts)
    r = items(c, 'urn:example:a', extra="<set xmlns='%s'><max>2</max></set>"
              % RSM)
    assert r.find('.//{%s}count' % RSM).text == '10', to_str(r)
    # malformed requests
    error(c.iq('set', ps("<publish node='urn:example:a'/>")), 'bad-request',
          'item-required')
    error(c.iq('set', ps("<publish node='urn:example:a'><item id='q'/>"
                         "</publish>")), 'bad-request', 'payload-required')
    error(c.iq('set', ps("<publish node='urn:example:a'><item id='q'>%s%s"
                         "</item></publish>" % (pay(1), pay(2)))),
          'bad-request', 'invalid-payload')
    error(c.iq('set', ps("<publish><item>%s</item></publish>" % pay(1))),
          'bad-request', 'nodeid-required')
    el = error(c.iq('get', ps("<options node='urn:example:a' jid='%s@localhost'/>"
                              % name)), 'feature-not-implemented',
               'unsupported')
    assert el.get('feature') == 'subscription-options'


def test_pep_paging_without_rsm(make_server, driver):
    srv = make_server(driver, modules={'mod_pep': {'max_page': 2}})
    name, pw = srv.new_user()
    c = srv.login(name, pw)
    for i in range(3):
        must_publish(c, 'urn:example:p', pay(i), str(i),
                     {'pubsub#max_items': '10'})
    r = items(c, 'urn:example:p')
    assert item_ids(r) == ['2', '1']
    s = r.find('{%s}pubsub/{%s}set' % (NS, RSM))
    assert s is not None and s.findtext('{%s}count' % RSM) == '3', to_str(r)


def test_pep_persists_across_restart_and_account_deletion(make_server, driver):
    srv = make_server(driver)
    name, pw = srv.new_user()
    c = srv.login(name, pw)
    must_publish(c, 'urn:example:keep', pay('kept'), 'k',
                 {'pubsub#max_items': '5'})
    must_publish(c, 'urn:example:keep', pay('kept2'), 'k2')
    c.close()
    srv.stop()
    srv.start()
    c = srv.login(name, pw)
    r = items(c, 'urn:example:keep')
    assert item_ids(r) == ['k2', 'k'] and payload_text(r, 'k') == 'kept'
    # ts keeps growing after the restart: the new item is the newest
    must_publish(c, 'urn:example:keep', pay('kept3'), 'k3')
    assert item_ids(items(c, 'urn:example:keep'))[0] == 'k3'
    c.close()
    srv.ctl('unregister', name, 'localhost', expect=0)
    from conftest import db_rows
    rows = db_rows(srv, "SELECT COUNT(*) FROM pubsub_node WHERE service = '%s@localhost'"
                   % name)
    assert int(rows[0][0]) == 0
    rows = db_rows(srv, "SELECT COUNT(*) FROM pubsub_item i WHERE NOT EXISTS "
                        "(SELECT 1 FROM pubsub_node n WHERE n.id = i.node_id)")
    assert int(rows[0][0]) == 0


# ---- the generic service -----------------------------------------------------

@pytest.fixture(scope='module')
def pubsub_server(basedir, certs, driver):
    from conftest import Server, pg_drop_db
    srv = Server(basedir, certs, driver, name='pubsub-' + driver,
                 modules={'mod_pubsub': {}})
    try:
        srv.start()
    except BaseException:
        srv.kill()
        if srv.pg_db:
            pg_drop_db(srv.pg_db)
        raise
    yield srv
    srv.destroy()


def test_service_disco(pubsub_server):
    srv = pubsub_server
    name, pw = srv.new_user()
    c = srv.login(name, pw)
    r = ok(c.iq('get', "<query xmlns='%s'/>" % DISCO_ITEMS, to='localhost'))
    jids = [i.get('jid') for i in r.iter('{%s}item' % DISCO_ITEMS)]
    assert SERVICE in jids, to_str(r)
    r = ok(c.iq('get', "<query xmlns='%s'/>" % DISCO_INFO, to=SERVICE))
    ids = [(i.get('category'), i.get('type')) for i in
           r.iter('{%s}identity' % DISCO_INFO)]
    assert ids == [('pubsub', 'service')], to_str(r)
    feats = {f.get('var') for f in r.iter('{%s}feature' % DISCO_INFO)}
    assert NS + '#subscribe' in feats and NS + '#create-nodes' in feats


def test_service_create_publish_subscribe(pubsub_server):
    srv = pubsub_server
    alice, apw = srv.new_user(prefix='psa')
    bob, bpw = srv.new_user(prefix='psb')
    a = srv.login(alice, apw)
    b = srv.login(bob, bpw, resource='r1')
    node = 'news-' + alice
    ok(a.iq('set', ps("<create node='%s'/>" % node), to=SERVICE))
    error(a.iq('set', ps("<create node='%s'/>" % node), to=SERVICE),
          'conflict')
    # instant node
    r = ok(a.iq('set', ps("<create/>"), to=SERVICE))
    instant = r.find('{%s}pubsub/{%s}create' % (NS, NS)).get('node')
    assert instant
    must_publish(a, node, pay('hello'), 'h1', to=SERVICE)
    # bob is not a publisher
    error(publish(b, node, pay('x'), to=SERVICE), 'forbidden')
    # but reads (open by default), and subscribes
    assert item_ids(items(b, node, to=SERVICE)) == ['h1']
    bjid = '%s@localhost' % bob
    error(b.iq('set', ps("<subscribe node='%s' jid='someone@localhost'/>"
                         % node), to=SERVICE), 'bad-request', 'invalid-jid')
    r = ok(b.iq('set', ps("<subscribe node='%s' jid='%s'/>" % (node, bjid)),
                to=SERVICE))
    sub = r.find('{%s}pubsub/{%s}subscription' % (NS, NS))
    assert sub.get('subscription') == 'subscribed' and sub.get('subid')
    r = ok(b.iq('get', ps("<subscriptions/>"), to=SERVICE))
    subs = r.findall('{%s}pubsub/{%s}subscriptions/{%s}subscription'
                     % (NS, NS, NS))
    assert [(s.get('node'), s.get('jid')) for s in subs] == [(node, bjid)]
    # the owner sees and manages subscriptions and affiliations
    r = ok(a.iq('get', ps("<subscriptions node='%s'/>" % node, OWNER),
                to=SERVICE))
    subs = r.findall('{%s}pubsub/{%s}subscriptions/{%s}subscription'
                     % (OWNER, OWNER, OWNER))
    assert [s.get('jid') for s in subs] == [bjid], to_str(r)
    error(b.iq('get', ps("<affiliations node='%s'/>" % node, OWNER),
               to=SERVICE), 'forbidden')
    ok(a.iq('set', ps("<affiliations node='%s'><affiliation jid='%s' "
                      "affiliation='publisher'/></affiliations>"
                      % (node, bjid), OWNER), to=SERVICE))
    r = ok(a.iq('get', ps("<affiliations node='%s'/>" % node, OWNER),
                to=SERVICE))
    affs = {x.get('jid'): x.get('affiliation') for x in
            r.iter('{%s}affiliation' % OWNER)}
    assert affs == {'%s@localhost' % alice: 'owner', bjid: 'publisher'}
    must_publish(b, node, pay('from bob'), 'b1', to=SERVICE)
    r = ok(b.iq('get', ps("<affiliations/>"), to=SERVICE))
    affs = [(x.get('node'), x.get('affiliation')) for x in
            r.iter('{%s}affiliation' % NS)]
    assert affs == [(node, 'publisher')]
    # outcast: no more reading
    ok(a.iq('set', ps("<affiliations node='%s'><affiliation jid='%s' "
                      "affiliation='outcast'/></affiliations>"
                      % (node, bjid), OWNER), to=SERVICE))
    error(items(b, node, to=SERVICE), 'forbidden')
    ok(a.iq('set', ps("<affiliations node='%s'><affiliation jid='%s' "
                      "affiliation='none'/></affiliations>"
                      % (node, bjid), OWNER), to=SERVICE))
    # unsubscribe
    ok(b.iq('set', ps("<unsubscribe node='%s' jid='%s'/>" % (node, bjid)),
            to=SERVICE))
    error(b.iq('set', ps("<unsubscribe node='%s' jid='%s'/>" % (node, bjid)),
               to=SERVICE), 'unexpected-request', 'not-subscribed')
    error(b.iq('set', ps("<subscribe node='nonode' jid='%s'/>" % bjid),
               to=SERVICE), 'item-not-found')
    # disco#items of the service lists the nodes
    r = ok(b.iq('get', "<query xmlns='%s'/>" % DISCO_ITEMS, to=SERVICE))
    nodes = [i.get('node') for i in r.iter('{%s}item' % DISCO_ITEMS)]
    assert node in nodes and instant in nodes
    # generic default config: open
    r = ok(a.iq('get', ps("<default/>", OWNER), to=SERVICE))
    fields = {f.get('var'): f.findtext('{%s}value' % XDATA) for f in
              r.iter('{%s}field' % XDATA)}
    assert fields['pubsub#access_model'] == 'open'
    # deleting bob's account removes his subscription
    ok(b.iq('set', ps("<subscribe node='%s' jid='%s/r1'/>" % (node, bjid)),
            to=SERVICE))
    b.close()
    srv.ctl('unregister', bob, 'localhost', expect=0)
    r = ok(a.iq('get', ps("<subscriptions node='%s'/>" % node, OWNER),
                to=SERVICE))
    assert r.findall('.//{%s}subscription' % OWNER) == [], to_str(r)
    # and deleting alice's removes the nodes she alone owned
    a.close()
    srv.ctl('unregister', alice, 'localhost', expect=0)
    carol, cpw = srv.new_user(prefix='psc')
    cc = srv.login(carol, cpw)
    error(items(cc, node, to=SERVICE), 'item-not-found')


# ---- the pep service for other modules (pigeon/pep.h) -----------------------

def wait_items(c, node, want, timeout=5.0):
    """The items answer of node once its ids are want (the module works
    after the client's request was answered)."""
    import time
    deadline = time.time() + timeout
    while True:
        r = items(c, node)
        if r.get('type') == 'result' and item_ids(r) == want:
            return r
        assert time.time() < deadline, to_str(r)
        time.sleep(0.1)


def test_pep_service_watch_publish_items_retract(make_server, driver):
    """mod_test_pep watches urn:example:watched and mirrors it into
    urn:example:mirror through the service (items, publish with
    publish-options, retract)."""
    srv = make_server(driver, modules={'mod_test_pep': {}})
    name, pw = srv.new_user()
    c = srv.login(name, pw)
    must_publish(c, 'urn:example:watched', pay('w1'), 'w1',
                 {'pubsub#max_items': '5'})
    must_publish(c, 'urn:example:watched', pay('w2'), 'w2')
    must_publish(c, 'urn:example:other', pay('o'), 'o')
    r = wait_items(c, 'urn:example:mirror', ['w2', 'w1'])
    assert payload_text(r, 'w1') == 'w1'
    # the mirror was created with the module's publish-options
    r = ok(c.iq('get', ps("<configure node='urn:example:mirror'/>", OWNER)))
    fields = {f.get('var'): f.findtext('{%s}value' % XDATA) for f in
              r.iter('{%s}field' % XDATA)}
    assert fields['pubsub#max_items'] == 'max'
    ok(c.iq('set', ps("<retract node='urn:example:watched'><item id='w1'/>"
                      "</retract>")))
    wait_items(c, 'urn:example:mirror', ['w2'])
    # the node the module did not watch was not mirrored
    r = items(c, 'urn:example:mirror', "<item id='o'/>")
    assert item_ids(r) == []
