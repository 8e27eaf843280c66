"""What modern clients publish at login, through real client code (issue 11).

slixmpp's plugins (xep_0060, xep_0163, xep_0084, xep_0172, xep_0223,
xep_0048 over xep_0049) and, where they have nothing (OMEMO, XEP-0402),
the payloads and publish-options forms that Conversations, Dino, Gajim and
Profanity send, published through xep_0060.  The expected behaviour comes
from the XEPs: 0060 (PubSub), 0163 (PEP), 0384 (OMEMO, both the legacy
eu.siacs.conversations.axolotl namespace and urn:xmpp:omemo:2), 0084,
0172, 0223, 0402, 0077.  User documentation: doc/pep.md.
"""

import asyncio
import base64
import hashlib
import re
import secrets
import time
import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError

import slixutil
from conftest import LOG_LEVEL, Server, db, pg_drop_db

NS_PUBSUB = 'http://jabber.org/protocol/pubsub'
NS_OWNER = NS_PUBSUB + '#owner'
NS_ERRORS = NS_PUBSUB + '#errors'
NS_EVENT = NS_PUBSUB + '#event'
NS_XDATA = 'jabber:x:data'
NS_STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas'
PUBLISH_OPTIONS = NS_PUBSUB + '#publish-options'
NODE_CONFIG = NS_PUBSUB + '#node_config'

AXOLOTL = 'eu.siacs.conversations.axolotl'
AXOLOTL_DEVICES = AXOLOTL + '.devicelist'
AXOLOTL_BUNDLES = AXOLOTL + '.bundles:%d'
OMEMO2 = 'urn:xmpp:omemo:2'
OMEMO2_DEVICES = OMEMO2 + ':devices'
OMEMO2_BUNDLES = OMEMO2 + ':bundles'
AVATAR_DATA = 'urn:xmpp:avatar:data'
AVATAR_META = 'urn:xmpp:avatar:metadata'
NICK = 'http://jabber.org/protocol/nick'
BOOKMARKS2 = 'urn:xmpp:bookmarks:1'
LEGACY_BOOKMARKS = 'storage:bookmarks'

PLUGINS = ('xep_0004', 'xep_0059', 'xep_0060', 'xep_0115', 'xep_0163',
           'xep_0084', 'xep_0172', 'xep_0223', 'xep_0049', 'xep_0048')
# Real OMEMO bundles are 10-20 KB (100 prekeys): the production default.
STANZA_LIMIT = 262144


# ---- servers and accounts ----------------------------------------------

def pep_server(basedir, certs, driver, name, **kw):
    modules = {'mod_pep': {}}
    modules.update(kw.pop('modules', {}))
    return Server(basedir, certs, driver, name=name,
                  max_stanza_size=STANZA_LIMIT, modules=modules, **kw)


@pytest.fixture(scope='module')
def srv(basedir, certs, driver):
    """One server with mod_pep per driver for the protocol tests (each
    test uses fresh accounts)."""
    s = pep_server(basedir, certs, driver, 'pep-' + driver)
    try:
        s.start()
    except BaseException:
        s.kill()
        if s.pg_db:
            pg_drop_db(s.pg_db)
        raise
    yield s
    s.destroy()


def contacts(server, a, b):
    """a and b have a mutual presence subscription ('both')."""
    server.ctl('add_rosteritem', a, 'localhost', b, 'localhost', b, 'Friends',
               'both', expect=0)
    server.ctl('add_rosteritem', b, 'localhost', a, 'localhost', a, 'Friends',
               'both', expect=0)


def bare(user):
    return '%s@localhost' % user


async def client(server, user, pw, resource='r', interests=()):
    """A logged-in slixmpp client with the PEP plugins, available, whose
    caps advertise <ns>+notify for each of interests (XEP-0163 §4)."""
    c = server.slix('%s@localhost/%s' % (user, resource), pw)
    for p in PLUGINS:
        c.register_plugin(p)
    c.events = asyncio.Queue()
    c.add_event_handler('pubsub_publish', c.events.put_nowait)
    c.add_event_handler('pubsub_retract', c.events.put_nowait)
    since = server.log_size()
    await c.start(presence=False)
    for ns in interests:
        c['xep_0030'].add_feature('%s+notify' % ns)
    # the plugins queued caps updates at bind; the presence must carry the
    # final verification string
    await asyncio.sleep(0.1)
    await c['xep_0115'].update_caps(broadcast=False)
    c.send_presence()
    await caps_known(server, c, since)
    return c


async def caps_known(server, c, since, timeout=10.0):
    """Waits until the server knows c's caps (mod_caps asks the client
    for its disco#info first when the hash is new): a publish before that
    would rightly not reach c, which a test must not race."""
    if LOG_LEVEL != 'debug':    # the 'known' line is a debug one
        await asyncio.sleep(1.0)
        return
    key = re.escape('sha-1/%s' % await c['xep_0115'].get_verstring(
        c.boundjid.full))
    start = time.monotonic()
    deadline = start + timeout
    while True:
        text = server.log_text(since)
        m = re.search(r'session (\d+): bound %s from'
                      % re.escape(c.boundjid.full), text)
        if m and (re.search(r'session %s: mod_caps: %s known'
                            % (m.group(1), key), text) or
                  re.search(r'mod_caps: verified %s from' % key,
                            text[m.end():])):
            return
        # known from the store (after a restart): no line, and no
        # question to the client
        if m and time.monotonic() - start > 1.0 and not re.search(
                r'session %s: mod_caps: asking' % m.group(1), text):
            return
        if time.monotonic() > deadline:
            raise AssertionError('%s: caps not known to the server within '
                                 '%.0f s' % (c.boundjid, timeout))
        await asyncio.sleep(0.05)


# ---- payloads ------------------------------------------------------------

def b64(n):
    return base64.b64encode(secrets.token_bytes(n)).decode()


def xml(text):
    return ET.fromstring(text)


def axolotl_devicelist(ids):
    return xml("<list xmlns='%s'>%s</list>" % (
        AXOLOTL, ''.join("<device id='%d'/>" % i for i in ids)))


def axolotl_bundle(prekeys=100):
    """A bundle as Conversations publishes it (keys are random bytes of
    the right sizes: the server does not look inside)."""
    return xml(
        "<bundle xmlns='%s'>"
        "<signedPreKeyPublic signedPreKeyId='1'>%s</signedPreKeyPublic>"
        "<signedPreKeySignature>%s</signedPreKeySignature>"
        "<identityKey>%s</identityKey><prekeys>%s</prekeys></bundle>"
        % (AXOLOTL, b64(33), b64(64), b64(33),
           ''.join("<preKeyPublic preKeyId='%d'>%s</preKeyPublic>"
                   % (i, b64(33)) for i in range(1, prekeys + 1))))


def omemo2_devices(ids):
    return xml("<devices xmlns='%s'>%s</devices>" % (
        OMEMO2, ''.join("<device id='%d' label='device %d'/>" % (i, i)
                        for i in ids)))


def omemo2_bundle(prekeys=100):
    return xml(
        "<bundle xmlns='%s'><spk id='1'>%s</spk><spks>%s</spks><ik>%s</ik>"
        "<prekeys>%s</prekeys></bundle>"
        % (OMEMO2, b64(32), b64(64), b64(32),
           ''.join("<pk id='%d'>%s</pk>" % (i, b64(32))
                   for i in range(1, prekeys + 1))))


def device_id():
    return secrets.randbelow(2 ** 31 - 2) + 1


def bookmark(name, nick, autojoin=True):
    return xml("<conference xmlns='%s' name='%s' autojoin='%s'><nick>%s</nick>"
               "</conference>" % (BOOKMARKS2, name,
                                  'true' if autojoin else 'false', nick))


def canon(e):
    """An element as a comparable value (namespaces, attributes, text,
    children; whitespace between elements ignored)."""
    return (e.tag, tuple(sorted(e.attrib.items())), (e.text or '').strip(),
            tuple(canon(c) for c in e))


# ---- protocol helpers ----------------------------------------------------

def options(c, form_type=PUBLISH_OPTIONS, **opts):
    """A submitted publish-options (or node_config) form: pubsub#<key>."""
    f = c['xep_0004'].make_form(ftype='submit')
    f.add_field(var='FORM_TYPE', ftype='hidden', value=form_type)
    for k, v in opts.items():
        f.add_field(var='pubsub#' + k, value=v)
    return f


OMEMO_OPEN = dict(access_model='open')
OMEMO2_BUNDLE_OPTS = dict(access_model='open', max_items='max')
BOOKMARK_OPTS = dict(persist_items='true', max_items='max',
                     send_last_published_item='never',
                     access_model='whitelist')


async def publish(c, node, payload, item_id=None, jid=None, **opts):
    return await c['xep_0060'].publish(
        jid, node, id=item_id, payload=payload,
        options=options(c, **opts) if opts else None, timeout=10)


async def items(c, jid, node, **kw):
    """[(item id, payload element or None)] of a retrieval, in the order
    the service gave them."""
    r = await c['xep_0060'].get_items(jid, node, timeout=10, **kw)
    got = r.xml.find('{%s}pubsub/{%s}items' % (NS_PUBSUB, NS_PUBSUB))
    assert got is not None and got.get('node') == node, r
    out = []
    for it in got.findall('{%s}item' % NS_PUBSUB):
        kids = list(it)
        out.append((it.get('id'), kids[0] if kids else None))
    return out


async def item(c, jid, node, item_id):
    r = await c['xep_0060'].get_item(jid, node, item_id, timeout=10)
    got = r.xml.findall('{%s}pubsub/{%s}items/{%s}item'
                        % (NS_PUBSUB, NS_PUBSUB, NS_PUBSUB))
    assert len(got) == 1 and got[0].get('id') == item_id, r
    return list(got[0])[0]


async def error_of(aw):
    """The error iq that aw (an iq send) must end in."""
    try:
        r = await aw
    except IqError as e:
        return e.iq
    raise AssertionError('expected an error, got %s' % r)


def cond(iq):
    """(type, condition, [pubsub#errors conditions]) of an error iq."""
    err = iq.xml.find('{jabber:client}error')
    assert err is not None, iq
    stanza = [ch.tag.split('}')[1] for ch in err
              if ch.tag.startswith('{%s}' % NS_STANZAS) and
              not ch.tag.endswith('}text')]
    specific = [ch.tag.split('}')[1] for ch in err
                if ch.tag.startswith('{%s}' % NS_ERRORS)]
    return err.get('type'), (stanza or [None])[0], specific


async def node_config(c, node):
    """{var: value or [values]} of the owner's configure form."""
    r = await c['xep_0060'].get_node_config(None, node, timeout=10)
    x = r.xml.find('{%s}pubsub/{%s}configure/{%s}x'
                   % (NS_OWNER, NS_OWNER, NS_XDATA))
    assert x is not None, r
    out = {}
    for f in x.findall('{%s}field' % NS_XDATA):
        vals = [v.text or '' for v in f.findall('{%s}value' % NS_XDATA)]
        out[f.get('var')] = vals[0] if len(vals) == 1 else vals
    return out


async def disco_nodes(c, jid):
    r = await c['xep_0030'].get_items(jid=jid, timeout=10)
    return {i[1] for i in r['disco_items']['items']}


async def next_event(c, node, timeout=5.0):
    """The next pubsub event message of node that c receives (those of
    other nodes are skipped)."""
    skipped = []
    while True:
        try:
            msg = await asyncio.wait_for(c.events.get(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError('%s: no event of %s within %.0f s (got: %s)'
                                 % (c.boundjid, node, timeout, skipped))
        if msg['pubsub_event']['items']['node'] == node:
            return msg
        skipped.append(msg)


def event_items(msg):
    x = msg.xml.find('{%s}event/{%s}items' % (NS_EVENT, NS_EVENT))
    return [(i.get('id'), (list(i) or [None])[0])
            for i in x.findall('{%s}item' % NS_EVENT)]


# ---- discovery -------------------------------------------------------------

def test_account_advertises_pep(srv):
    """Clients decide from the account's disco#info whether to use PEP and
    publish-options (Conversations, Dino and Gajim turn OMEMO and
    XEP-0402 on from it): the pep identity (XEP-0163 §6) and the features
    that XEP-0384, 0223 and 0402 need."""
    user, pw = srv.new_user(prefix='disco')

    async def scenario():
        c = await client(srv, user, pw)
        info = await c['xep_0030'].get_info(jid=bare(user), timeout=10)
        ids = {(i[0], i[1]) for i in info['disco_info']['identities']}
        feats = set(info['disco_info']['features'])
        assert ('pubsub', 'pep') in ids, ids
        for f in ('publish', 'publish-options', 'auto-create',
                  'access-open', 'access-presence', 'access-whitelist',
                  'persistent-items', 'retrieve-items', 'retract-items',
                  'config-node', 'config-node-max'):
            assert '%s#%s' % (NS_PUBSUB, f) in feats, (f, sorted(feats))
        await c.stop()
    slixutil.run(scenario)


# ---- OMEMO -----------------------------------------------------------------

def test_omemo_legacy_as_conversations_publishes(srv):
    """Conversations: the bundle of its device at
    eu.siacs.conversations.axolotl.bundles:<id>, then the device list, both
    with publish-options access_model=open.  A stranger (no subscription)
    fetches the bundle; a contact reads the device list."""
    alice, apw = srv.new_user(prefix='conv')
    bob, bpw = srv.new_user(prefix='convb')
    eve, epw = srv.new_user(prefix='conve')
    contacts(srv, alice, bob)
    dev, dev2 = device_id(), device_id()

    async def scenario():
        a = await client(srv, alice, apw)
        bundle = axolotl_bundle()
        await publish(a, AXOLOTL_BUNDLES % dev, bundle, 'current', **OMEMO_OPEN)
        await publish(a, AXOLOTL_DEVICES, axolotl_devicelist([dev]), 'current',
                      **OMEMO_OPEN)
        # a second device joins: the list is replaced, still one item
        await publish(a, AXOLOTL_DEVICES, axolotl_devicelist([dev, dev2]),
                      'current', **OMEMO_OPEN)
        cfg = await node_config(a, AXOLOTL_BUNDLES % dev)
        assert cfg.get('pubsub#access_model') == 'open', cfg

        e = await client(srv, eve, epw)
        got = await items(e, bare(alice), AXOLOTL_BUNDLES % dev)
        assert [i for i, _ in got] == ['current'], got
        assert canon(got[0][1]) == canon(bundle)
        got = await items(e, bare(alice), AXOLOTL_DEVICES)
        assert len(got) == 1 and canon(got[0][1]) == canon(
            axolotl_devicelist([dev, dev2])), got

        b = await client(srv, bob, bpw)
        got = await items(b, bare(alice), AXOLOTL_DEVICES, max_items=1)
        assert [i for i, _ in got] == ['current']
        assert canon(got[0][1]) == canon(axolotl_devicelist([dev, dev2]))
        # a node that does not exist
        err = await error_of(b['xep_0060'].get_items(
            bare(alice), AXOLOTL_BUNDLES % dev2, timeout=10))
        assert cond(err)[:2] == ('cancel', 'item-not-found'), err
        for c in (a, b, e):
            await c.stop()
    slixutil.run(scenario, timeout=60)


def test_omemo2_one_bundle_node_keeps_every_device(srv):
    """XEP-0384 (v0.8+): urn:xmpp:omemo:2:bundles is one node with one
    item per device (item id = device id), published with max_items=max
    and access_model=open; publishing five devices keeps all five."""
    alice, apw = srv.new_user(prefix='om2')
    eve, epw = srv.new_user(prefix='om2e')
    devs = [device_id() for _ in range(5)]
    bundles = {}

    async def scenario():
        a = await client(srv, alice, apw)
        for d in devs:
            bundles[d] = omemo2_bundle()
            await publish(a, OMEMO2_BUNDLES, bundles[d], str(d),
                          **OMEMO2_BUNDLE_OPTS)
        await publish(a, OMEMO2_DEVICES, omemo2_devices(devs), 'current',
                      **OMEMO_OPEN)
        cfg = await node_config(a, OMEMO2_BUNDLES)
        assert cfg.get('pubsub#access_model') == 'open', cfg
        got = await items(a, None, OMEMO2_BUNDLES)
        assert sorted(i for i, _ in got) == sorted(map(str, devs)), got

        e = await client(srv, eve, epw)
        got = await items(e, bare(alice), OMEMO2_BUNDLES)
        assert {i: canon(p) for i, p in got} == {
            str(d): canon(b) for d, b in bundles.items()}
        # what a client does to start a session: one bundle by id
        p = await item(e, bare(alice), OMEMO2_BUNDLES, str(devs[2]))
        assert canon(p) == canon(bundles[devs[2]])
        got = await items(e, bare(alice), OMEMO2_DEVICES)
        assert len(got) == 1 and canon(got[0][1]) == canon(
            omemo2_devices(devs)), got
        # a device goes away: its bundle is retracted, the others stay
        await a['xep_0060'].retract(None, OMEMO2_BUNDLES, str(devs[0]),
                                    timeout=10)
        got = await items(e, bare(alice), OMEMO2_BUNDLES)
        assert sorted(i for i, _ in got) == sorted(map(str, devs[1:])), got
        await a.stop()
        await e.stop()
    slixutil.run(scenario, timeout=60)


def test_omemo_device_list_notifies_contacts(srv):
    """XEP-0163 §4 as OMEMO uses it: a contact whose caps carry
    <devicelist>+notify gets the device list when it comes online (last
    item) and every new version; a stranger with the same caps gets
    nothing (the node is open to retrieval, but notifications follow the
    presence subscription)."""
    alice, apw = srv.new_user(prefix='ntf')
    bob, bpw = srv.new_user(prefix='ntfb')
    eve, epw = srv.new_user(prefix='ntfe')
    contacts(srv, alice, bob)
    d1, d2 = device_id(), device_id()

    async def scenario():
        a = await client(srv, alice, apw)
        await publish(a, OMEMO2_DEVICES, omemo2_devices([d1]), 'current',
                      **OMEMO_OPEN)
        b = await client(srv, bob, bpw, interests=[OMEMO2_DEVICES])
        e = await client(srv, eve, epw, interests=[OMEMO2_DEVICES])
        msg = await next_event(b, OMEMO2_DEVICES, timeout=10)
        assert msg['from'].bare == bare(alice)
        ev = event_items(msg)
        assert len(ev) == 1 and canon(ev[0][1]) == canon(
            omemo2_devices([d1])), msg
        await publish(a, OMEMO2_DEVICES, omemo2_devices([d1, d2]), 'current',
                      **OMEMO_OPEN)
        ev = event_items(await next_event(b, OMEMO2_DEVICES, timeout=10))
        assert canon(ev[0][1]) == canon(omemo2_devices([d1, d2]))
        # the stranger may fetch the open node but is not notified
        await asyncio.sleep(1.0)
        assert e.events.empty(), e.events.get_nowait()
        got = await items(e, bare(alice), OMEMO2_DEVICES)
        assert canon(got[0][1]) == canon(omemo2_devices([d1, d2]))
        for c in (a, b, e):
            await c.stop()
    slixutil.run(scenario, timeout=60)


# ---- publish-options ---------------------------------------------------------

def test_publish_options_auto_create_and_precondition(srv):
    """XEP-0060 §7.1.5: a publish with options creates the node with them;
    options that differ from an existing node's configuration fail with
    conflict + precondition-not-met and store nothing; the client then
    reconfigures the node (what Conversations does) and publishes again."""
    alice, apw = srv.new_user(prefix='popt')
    node = 'urn:example:settings'

    async def scenario():
        a = await client(srv, alice, apw)
        await publish(a, node, xml("<s xmlns='urn:example:settings'>1</s>"),
                      'current', access_model='open', max_items='1')
        cfg = await node_config(a, node)
        assert cfg.get('pubsub#access_model') == 'open', cfg
        # same options again: accepted
        await publish(a, node, xml("<s xmlns='urn:example:settings'>2</s>"),
                      'current', access_model='open')
        err = await error_of(publish(
            a, node, xml("<s xmlns='urn:example:settings'>3</s>"), 'current',
            access_model='whitelist'))
        assert cond(err) == ('cancel', 'conflict', ['precondition-not-met']), err
        got = await items(a, None, node)
        assert [p.text for _, p in got] == ['2'], got
        # Conversations' answer to precondition-not-met: configure, retry
        await a['xep_0060'].set_node_config(
            None, node, options(a, NODE_CONFIG, access_model='whitelist'),
            timeout=10)
        await publish(a, node, xml("<s xmlns='urn:example:settings'>3</s>"),
                      'current', access_model='whitelist')
        assert (await node_config(a, node)).get(
            'pubsub#access_model') == 'whitelist'
        got = await items(a, None, node)
        assert [p.text for _, p in got] == ['3'], got
        # a node published without options gets the PEP defaults
        # (XEP-0163 §8: presence access)
        await publish(a, 'urn:example:plain', xml("<p xmlns='urn:example:p'/>"))
        assert (await node_config(a, 'urn:example:plain')).get(
            'pubsub#access_model') == 'presence'
        await a.stop()
    slixutil.run(scenario, timeout=60)


# ---- avatars and nicknames -------------------------------------------------

def test_avatar_xep0084(srv):
    """slixmpp's XEP-0084 plugin: data then metadata (item id = SHA-1 of
    the image).  A contact fetches both; the default access model of PEP
    (presence) keeps a stranger out with not-authorized +
    presence-subscription-required (XEP-0060 §6.5.9.3)."""
    alice, apw = srv.new_user(prefix='av')
    bob, bpw = srv.new_user(prefix='avb')
    eve, epw = srv.new_user(prefix='ave')
    contacts(srv, alice, bob)
    image = b'\x89PNG\r\n\x1a\n' + secrets.token_bytes(3000)
    sha = hashlib.sha1(image).hexdigest()

    async def scenario():
        a = await client(srv, alice, apw)
        await a['xep_0084'].publish_avatar(image, timeout=10)
        await a['xep_0084'].publish_avatar_metadata(
            [{'id': sha, 'type': 'image/png', 'bytes': str(len(image)),
              'height': '64', 'width': '64'}], timeout=10)

        b = await client(srv, bob, bpw)
        r = await b['xep_0084'].retrieve_avatar(bare(alice), sha, timeout=10)
        data = r['pubsub']['items']['item']['avatar_data']['value']
        assert data == image
        got = await items(b, bare(alice), AVATAR_META)
        assert [i for i, _ in got] == [sha], got
        info = got[0][1].find('{%s}info' % AVATAR_META)
        assert info is not None and info.get('id') == sha
        assert int(info.get('bytes')) == len(image), ET.tostring(got[0][1])

        e = await client(srv, eve, epw)
        for node in (AVATAR_META, AVATAR_DATA):
            err = await error_of(e['xep_0060'].get_items(bare(alice), node,
                                                         timeout=10))
            assert cond(err) == ('auth', 'not-authorized',
                                 ['presence-subscription-required']), err
        for c in (a, b, e):
            await c.stop()
    slixutil.run(scenario, timeout=60)


def test_user_nickname_xep0172(srv):
    """slixmpp's XEP-0172 plugin publishes the nickname; a contact reads it
    and, with nick+notify in its caps, gets the change."""
    alice, apw = srv.new_user(prefix='nick')
    bob, bpw = srv.new_user(prefix='nickb')
    contacts(srv, alice, bob)

    async def scenario():
        a = await client(srv, alice, apw)
        await a['xep_0172'].publish_nick('Ishmael', timeout=10)
        b = await client(srv, bob, bpw, interests=[NICK])
        got = await items(b, bare(alice), NICK)
        assert len(got) == 1 and got[0][1].text == 'Ishmael', got
        await a['xep_0172'].publish_nick('Queequeg', timeout=10)
        for _ in range(2):      # the last item at login, then the change
            ev = event_items(await next_event(b, NICK, timeout=10))
            if ev and ev[0][1] is not None and ev[0][1].text == 'Queequeg':
                break
        else:
            raise AssertionError('no notification of the new nickname')
        await a.stop()
        await b.stop()
    slixutil.run(scenario, timeout=60)


# ---- private PEP and bookmarks --------------------------------------------

def test_private_pep_xep0223(srv):
    """slixmpp's XEP-0223 plugin (persist_items, access_model=whitelist):
    the owner reads the data back; a contact can neither read it
    (not-allowed + closed-node, XEP-0060 §6.5.9.5) nor see the node in
    disco#items."""
    alice, apw = srv.new_user(prefix='priv')
    bob, bpw = srv.new_user(prefix='privb')
    contacts(srv, alice, bob)
    node = 'urn:example:private-notes'

    async def scenario():
        a = await client(srv, alice, apw)
        note = a['xep_0004'].make_form(ftype='result')   # any payload
        note['title'] = 'secret'
        await a['xep_0223'].store(note, node=node, id='current', timeout=10)
        r = await a['xep_0223'].retrieve(node, timeout=10)
        got = r.xml.find('{%s}pubsub/{%s}items/{%s}item/{%s}x'
                         % (NS_PUBSUB, NS_PUBSUB, NS_PUBSUB, NS_XDATA))
        assert got is not None and got.findtext('{%s}title' % NS_XDATA) \
            == 'secret', r
        cfg = await node_config(a, node)
        assert cfg.get('pubsub#access_model') == 'whitelist', cfg
        assert node in await disco_nodes(a, bare(alice))

        b = await client(srv, bob, bpw)
        err = await error_of(b['xep_0060'].get_items(bare(alice), node,
                                                     timeout=10))
        assert cond(err) == ('cancel', 'not-allowed', ['closed-node']), err
        err = await error_of(b['xep_0060'].get_item(bare(alice), node,
                                                    'current', timeout=10))
        assert cond(err)[1] == 'not-allowed', err
        assert node not in await disco_nodes(b, bare(alice))
        await a.stop()
        await b.stop()
    slixutil.run(scenario, timeout=60)


def test_bookmarks_xep0402(srv):
    """XEP-0402: one item per room (item id = room JID) with the options
    of §3 (persist, max_items=max, whitelist, send_last never); the
    user's other resource gets each change (+notify); a retract removes
    one room; a contact cannot read them."""
    alice, apw = srv.new_user(prefix='bm')
    bob, bpw = srv.new_user(prefix='bmb')
    contacts(srv, alice, bob)
    rooms = ['room%d@conference.localhost' % i for i in range(3)]

    async def scenario():
        a = await client(srv, alice, apw, 'laptop')
        phone = await client(srv, alice, apw, 'phone', interests=[BOOKMARKS2])
        for i, room in enumerate(rooms):
            await publish(a, BOOKMARKS2, bookmark('Room %d' % i, 'alice'),
                          room, **BOOKMARK_OPTS)
            ev = event_items(await next_event(phone, BOOKMARKS2, timeout=10))
            assert ev[0][0] == room, ev
            assert ev[0][1].get('name') == 'Room %d' % i
        got = await items(a, None, BOOKMARKS2)
        assert sorted(i for i, _ in got) == rooms, got
        assert {i: p.findtext('{%s}nick' % BOOKMARKS2) for i, p in got} \
            == {r: 'alice' for r in rooms}
        await a['xep_0060'].retract(None, BOOKMARKS2, rooms[1], notify=True,
                                    timeout=10)
        msg = await asyncio.wait_for(phone.events.get(), 10)
        assert msg['pubsub_event']['items']['retract']['id'] == rooms[1], msg
        got = await items(phone, None, BOOKMARKS2)
        assert sorted(i for i, _ in got) == [rooms[0], rooms[2]], got

        b = await client(srv, bob, bpw)
        err = await error_of(b['xep_0060'].get_items(bare(alice), BOOKMARKS2,
                                                     timeout=10))
        assert cond(err)[:2] == ('cancel', 'not-allowed'), err
        for c in (a, phone, b):
            await c.stop()
    slixutil.run(scenario, timeout=60)


def test_bookmarks_xep0048_and_xep0402_agree(srv):
    """XEP-0411: an old client (slixmpp's XEP-0048 plugin over XEP-0049
    private storage) and a new one (XEP-0402) of the same user see the
    same bookmarks, whichever wrote them."""
    alice, apw = srv.new_user(prefix='bmc')
    old_room = 'old@conference.localhost'
    new_room = 'new@conference.localhost'

    async def scenario():
        a = await client(srv, alice, apw)
        info = await a['xep_0030'].get_info(jid=bare(alice), timeout=10)
        assert BOOKMARKS2 + '#compat' in info['disco_info']['features']
        bms = a['xep_0048'].stanza.Bookmarks()
        bms.add_conference(old_room, 'oldnick', name='Old', autojoin=True)
        await a['xep_0048'].set_bookmarks(bms, timeout=10)
        got = dict(await items(a, None, BOOKMARKS2))
        assert set(got) == {old_room}, got
        assert got[old_room].findtext('{%s}nick' % BOOKMARKS2) == 'oldnick'
        assert got[old_room].get('autojoin') in ('true', '1')

        await publish(a, BOOKMARKS2, bookmark('New', 'newnick'), new_room,
                      **BOOKMARK_OPTS)
        r = await a['xep_0048'].get_bookmarks(timeout=10)
        confs = {c['jid']: c for c in
                 r['private']['bookmarks']['conferences']}
        assert set(confs) == {old_room, new_room}, r
        assert confs[new_room]['nick'] == 'newnick'
        assert confs[new_room]['name'] == 'New'
        await a.stop()
    slixutil.run(scenario, timeout=60)


# ---- persistence, deletion, limits ----------------------------------------

def publish_everything(server, user, pw):
    """Publishes what a client sets up at login; returns
    {node: {item id: canonical payload}} for later comparison."""
    want = {}

    async def scenario():
        a = await client(server, user, pw)
        dev = device_id()
        sets = [
            (AXOLOTL_BUNDLES % dev, 'current', axolotl_bundle(20), OMEMO_OPEN),
            (AXOLOTL_DEVICES, 'current', axolotl_devicelist([dev]), OMEMO_OPEN),
            (OMEMO2_BUNDLES, str(dev), omemo2_bundle(20), OMEMO2_BUNDLE_OPTS),
            (OMEMO2_BUNDLES, str(dev + 1), omemo2_bundle(20),
             OMEMO2_BUNDLE_OPTS),
            (OMEMO2_DEVICES, 'current', omemo2_devices([dev, dev + 1]),
             OMEMO_OPEN),
            (BOOKMARKS2, 'r@conference.localhost', bookmark('R', 'me'),
             BOOKMARK_OPTS),
            (NICK, 'current', xml("<nick xmlns='%s'>Me</nick>" % NICK), {}),
            ('urn:example:private', 'current',
             xml("<p xmlns='urn:example:private'>x</p>"),
             dict(access_model='whitelist', persist_items='true')),
        ]
        for node, item_id, payload, opts in sets:
            await publish(a, node, payload, item_id, **opts)
            want.setdefault(node, {})[item_id] = canon(payload)
        await a.stop()
    slixutil.run(scenario, timeout=60)
    return want


def check_everything(server, user, pw, want):
    async def scenario():
        a = await client(server, user, pw)
        for node, its in want.items():
            got = await items(a, None, node)
            assert {i: canon(p) for i, p in got} == its, node
        assert (await node_config(a, AXOLOTL_DEVICES)).get(
            'pubsub#access_model') == 'open'
        assert (await node_config(a, BOOKMARKS2)).get(
            'pubsub#access_model') == 'whitelist'
        # max_items=max survived: a third bundle does not push one out
        await publish(a, OMEMO2_BUNDLES, omemo2_bundle(5), '7',
                      **OMEMO2_BUNDLE_OPTS)
        assert len(await items(a, None, OMEMO2_BUNDLES)) == 3
        await a.stop()
    slixutil.run(scenario, timeout=60)


def test_everything_persists_across_restart(make_server, driver):
    s = make_server(driver, max_stanza_size=STANZA_LIMIT,
                    modules={'mod_pep': {}})
    user, pw = s.new_user(prefix='pers')
    want = publish_everything(s, user, pw)
    s.stop()
    s.start()
    check_everything(s, user, pw, want)


def pubsub_rows(server, user):
    return int(db(server, "SELECT count(*) FROM pubsub_node WHERE service = "
                          "'%s@localhost'" % user)), int(db(
        server, "SELECT count(*) FROM pubsub_item i JOIN pubsub_node n ON "
                "n.id = i.node_id WHERE n.service = '%s@localhost'" % user))


@pytest.mark.parametrize('how', ['pigeonctl', 'xep0077'])
def test_account_deletion_removes_every_node(srv, how):
    """pigeonctl unregister and XEP-0077 cancel take the account's nodes
    and items with them: the same name registered again starts empty."""
    user, pw = srv.new_user(prefix='del')
    want = publish_everything(srv, user, pw)
    nodes, its = pubsub_rows(srv, user)
    assert nodes == len(want) and its == sum(map(len, want.values()))
    if how == 'pigeonctl':
        srv.ctl('unregister', user, 'localhost', expect=0)
    else:
        c = srv.login(user, pw)
        c.send("<iq type='set' id='bye'><query xmlns='jabber:iq:register'>"
               "<remove/></query></iq>")
        r = c.recv_stanza('iq', id='bye')
        assert r.get('type') == 'result'
        c.close()
    assert pubsub_rows(srv, user) == (0, 0)
    srv.register(user, 'localhost', pw)

    async def scenario():
        a = await client(srv, user, pw)
        assert await disco_nodes(a, bare(user)) == set()
        for node in want:
            err = await error_of(a['xep_0060'].get_items(None, node,
                                                         timeout=10))
            assert cond(err)[1] == 'item-not-found', (node, err)
        await a.stop()
    slixutil.run(scenario, timeout=60)


def test_item_too_large(make_server, driver):
    """XEP-0060 §7.1.3.5: a payload beyond the service's maximum gets
    not-acceptable + payload-too-big, and is not stored."""
    s = make_server(driver, max_stanza_size=STANZA_LIMIT,
                    modules={'mod_pep': {'max_item_size': 4096}})
    user, pw = s.new_user(prefix='big')

    async def scenario():
        a = await client(s, user, pw)
        await publish(a, OMEMO2_BUNDLES, omemo2_bundle(20), '1',
                      **OMEMO2_BUNDLE_OPTS)
        err = await error_of(publish(a, OMEMO2_BUNDLES, omemo2_bundle(100),
                                     '2', **OMEMO2_BUNDLE_OPTS))
        assert cond(err) == ('modify', 'not-acceptable',
                             ['payload-too-big']), err
        got = await items(a, None, OMEMO2_BUNDLES)
        assert [i for i, _ in got] == ['1'], got
        await a.stop()
    slixutil.run(scenario, timeout=60)
