"""The bridges between the old storage protocols and PEP (issue 11):
mod_vcard (XEP-0398: PEP avatars <-> vCard photo, XEP-0153 hash) and
mod_private (XEP-0402 #compat: storage:bookmarks <-> urn:xmpp:bookmarks:1),
through the "pep" service of mod_pep.  Raw stanzas, both drivers."""

import base64
import hashlib
import os
import re
import time
from xml.sax.saxutils import escape, quoteattr

import pytest

from conftest import LOG_LEVEL, db_rows
from rawxmpp import NS_DISCO_INFO, local, stanza_error, to_str

NS_PUBSUB = 'http://jabber.org/protocol/pubsub'
NS_VCARD = 'vcard-temp'
NS_UPDATE = 'vcard-temp:x:update'
NS_DATA = 'urn:xmpp:avatar:data'
NS_META = 'urn:xmpp:avatar:metadata'
NS_CONVERSION = 'urn:xmpp:pep-vcard-conversion:0'
NS_PRIVATE = 'jabber:iq:private'
NS_BM_LEGACY = 'storage:bookmarks'
NS_BM = 'urn:xmpp:bookmarks:1'
NS_BM_COMPAT = 'urn:xmpp:bookmarks:1#compat'
GET_VCARD = "<vCard xmlns='vcard-temp'/>"

# A PNG signature, so that the type the server guesses is checkable.
PNG = b'\x89PNG\r\n\x1a\n'


def image(n=600):
    return PNG + os.urandom(n)


@pytest.fixture
def pep_server(server):
    """The shared server: mod_pep is a default module, loaded after
    mod_vcard and mod_private (they find the service when the first
    session starts)."""
    names = [m for m, o in server.modules.items() if o is not None]
    assert 'mod_pep' in names, names
    assert names.index('mod_pep') > names.index('mod_vcard'), names
    return server


def ok(r):
    assert r.get('type') == 'result', to_str(r)
    return r


def wait_for(fn, what, timeout=10.0):
    """fn() until it returns something true (the conversions run after
    the iq that started them, when the server's watch is called)."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        assert time.monotonic() < deadline, 'timed out waiting for ' + what
        time.sleep(0.05)


# ---- pubsub helpers ----------------------------------------------------------

def publish(c, node, item_xml, item_id=None, options=None):
    opts = ''
    if options:
        fields = ''.join(
            "<field var=%s><value>%s</value></field>" % (quoteattr(k), escape(v))
            for k, v in options.items())
        opts = ("<publish-options><x xmlns='jabber:x:data' type='submit'>"
                "<field var='FORM_TYPE' type='hidden'><value>"
                "http://jabber.org/protocol/pubsub#publish-options</value>"
                "</field>%s</x></publish-options>" % fields)
    idattr = ' id=%s' % quoteattr(item_id) if item_id is not None else ''
    return ok(c.iq('set', "<pubsub xmlns='%s'><publish node=%s><item%s>%s"
                          "</item></publish>%s</pubsub>"
                   % (NS_PUBSUB, quoteattr(node), idattr, item_xml, opts)))


def retract(c, node, item_id):
    return ok(c.iq('set', "<pubsub xmlns='%s'><retract node=%s notify='true'>"
                          "<item id=%s/></retract></pubsub>"
                   % (NS_PUBSUB, quoteattr(node), quoteattr(item_id))))


def items_of(c, node, to=None):
    """{item id: <item/>}, or None when the node does not exist."""
    r = c.iq('get', "<pubsub xmlns='%s'><items node=%s/></pubsub>"
             % (NS_PUBSUB, quoteattr(node)), to=to)
    if r.get('type') == 'error':
        assert stanza_error(r)[1] == 'item-not-found', to_str(r)
        return None
    return {i.get('id'): i for i in r.iter('{%s}item' % NS_PUBSUB)}


def account_features(c):
    r = ok(c.iq('get', "<query xmlns='%s'/>" % NS_DISCO_INFO,
                to=c.jid.split('/')[0]))
    return {f.get('var') for f in r.iter('{%s}feature' % NS_DISCO_INFO)}


# ---- avatar helpers ----------------------------------------------------------

def publish_avatar(c, img, mime='image/png', extra_info=''):
    sha = hashlib.sha1(img).hexdigest()
    publish(c, NS_DATA, "<data xmlns='%s'>%s</data>"
            % (NS_DATA, base64.b64encode(img).decode()), sha)
    publish(c, NS_META, "<metadata xmlns='%s'>%s<info bytes='%d' id='%s' "
            "type='%s' height='64' width='64'/></metadata>"
            % (NS_META, extra_info, len(img), sha, mime), sha)
    return sha


def vcard_photo(c):
    """(TYPE, decoded BINVAL) of the user's own vCard, or None."""
    r = ok(c.iq('get', GET_VCARD))
    photo = r.find('{%s}vCard/{%s}PHOTO' % (NS_VCARD, NS_VCARD))
    if photo is None:
        return None
    b = re.sub(r'\s+', '', photo.findtext('{%s}BINVAL' % NS_VCARD) or '')
    return (photo.findtext('{%s}TYPE' % NS_VCARD), base64.b64decode(b))


def vcard_xml(fn, photo=None, mime='image/png'):
    p = ''
    if photo is not None:
        b = base64.b64encode(photo).decode()
        lines = '\n'.join(b[i:i + 76] for i in range(0, len(b), 76))
        p = ('<PHOTO><TYPE>%s</TYPE><BINVAL>\n%s\n</BINVAL></PHOTO>'
             % (mime, lines))
    return "<vCard xmlns='vcard-temp'><FN>%s</FN>%s</vCard>" % (escape(fn), p)


def presence_hash(c, jid, show=None, timeout=10.0):
    """The XEP-0153 photo of the next available presence from jid (with
    that <show/>: earlier ones may still be waiting to be read)."""
    p = c.recv_until(lambda e: local(e.tag) == 'presence'
                     and e.get('from') == jid and e.get('type') is None
                     and e.findtext('{jabber:client}show') == show,
                     timeout, what='available presence from %s' % jid)
    photo = p.find('{%s}x/{%s}photo' % (NS_UPDATE, NS_UPDATE))
    return None if photo is None else (photo.text or '').strip()


def item_ts(srv, user, node):
    """{item id: publish time} of user's node, read from the store: an
    item published again gets a newer time."""
    return {r[0]: int(r[1]) for r in db_rows(
        srv, "SELECT i.item_id, i.ts FROM pubsub_item i JOIN pubsub_node n "
             "ON n.id = i.node_id WHERE n.username = '%s' AND n.node = '%s'"
             % (user, node))}


def log_count(srv, pattern):
    return len(re.findall(pattern.encode(), srv.log.read_bytes()))


# ---- avatars -----------------------------------------------------------------

def test_pep_avatar_becomes_vcard_photo_and_presence_hash(pep_server):
    """XEP-0398 §3.1: a PEP avatar becomes the vCard photo; XEP-0153: every
    session's presence carries its hash at once, also a session that was
    up before the publish; the feature is on the account (§2)."""
    srv = pep_server
    name, pw = srv.new_user(prefix='pa')
    a = srv.login(name, pw, resource='a')
    b = srv.login(name, pw, resource='b')
    b.presence()
    assert NS_CONVERSION in account_features(a)
    ok(a.iq('set', vcard_xml('Juliet')))  # the rest of the vCard stays
    img = image()
    # an external URL first (§3.1: the inline one is picked)
    sha = publish_avatar(a, img, extra_info="<info bytes='9' id='%s' "
                         "type='image/png' url='https://example.org/a.png'/>"
                         % ('0' * 40))
    wait_for(lambda: vcard_photo(a) == ('image/png', img), 'the vCard photo')
    r = ok(a.iq('get', GET_VCARD))
    assert r.findtext('{%s}vCard/{%s}FN' % (NS_VCARD, NS_VCARD)) == 'Juliet'
    # both sessions (b did not set anything) advertise the new hash
    a.presence()
    assert presence_hash(b, a.jid) == sha
    b.presence('<show>away</show>')
    assert presence_hash(a, b.jid, 'away') == sha
    # another user reads the photo through vcard-temp (XEP-0153)
    other, opw = srv.new_user(prefix='pb')
    o = srv.login(other, opw)
    r = ok(o.iq('get', GET_VCARD, to='%s@localhost' % name))
    assert r.find('.//{%s}BINVAL' % NS_VCARD) is not None, to_str(r)


def test_pep_avatar_disabled_and_bad_data(pep_server):
    """An empty <metadata/> (XEP-0084 §4.5) removes the vCard photo; data
    whose SHA-1 is not its id is not copied (§3.1 SHOULD verify)."""
    srv = pep_server
    name, pw = srv.new_user(prefix='pd')
    a = srv.login(name, pw, resource='a')
    b = srv.login(name, pw, resource='b')
    b.presence()
    img = image()
    publish_avatar(a, img)
    wait_for(lambda: vcard_photo(a) is not None, 'the vCard photo')
    publish(a, NS_META, "<metadata xmlns='%s'/>" % NS_META)
    wait_for(lambda: vcard_photo(a) is None, 'the photo removed')
    # a stale hash from the client: replaced by "no photo"
    a.presence("<x xmlns='%s'><photo>%s</photo></x>"
               % (NS_UPDATE, hashlib.sha1(img).hexdigest()))
    assert presence_hash(b, a.jid) == ''
    # an id that is not the SHA-1 of the data: not copied
    wrong = 'ab' * 20
    publish(a, NS_DATA, "<data xmlns='%s'>%s</data>"
            % (NS_DATA, base64.b64encode(image()).decode()), wrong)
    publish(a, NS_META, "<metadata xmlns='%s'><info bytes='1' id='%s' "
            "type='image/png'/></metadata>" % (NS_META, wrong), wrong)
    if LOG_LEVEL in ('debug', 'info'):
        wait_for(lambda: log_count(srv, r'avatar data %s of %s@\S+ is not'
                                   % (wrong, name)), 'the refusal')
    # metadata without a data item: not copied either
    publish(a, NS_META, "<metadata xmlns='%s'><info bytes='1' id='%s' "
            "type='image/png'/></metadata>" % (NS_META, 'cd' * 20), 'cd' * 20)
    # then a good one: copied, and the bad ones left no trace
    img2 = image()
    publish_avatar(a, img2)
    wait_for(lambda: vcard_photo(a) == ('image/png', img2), 'photo 2')


def test_vcard_photo_published_to_pep(pep_server):
    """XEP-0398 §3.2: a vCard set with a photo publishes the data (id: the
    SHA-1) and then the metadata, before the set is answered; no loop back
    into the vCard; a set that keeps the photo republishes nothing; a
    photo removed publishes an empty <metadata/>."""
    srv = pep_server
    name, pw = srv.new_user(prefix='pv')
    a = srv.login(name, pw, resource='a')
    b = srv.login(name, pw, resource='b')
    b.presence()
    img = image(900)
    sha = hashlib.sha1(img).hexdigest()
    # no TYPE in the vCard: guessed from the PNG signature
    raw = base64.b64encode(img).decode()
    ok(a.iq('set', "<vCard xmlns='vcard-temp'><FN>R</FN><PHOTO><BINVAL>%s"
                   "</BINVAL></PHOTO></vCard>" % raw))
    data = items_of(a, NS_DATA)
    assert data is not None and sha in data, data
    d = data[sha].find('{%s}data' % NS_DATA)
    assert base64.b64decode(d.text) == img
    meta = items_of(a, NS_META)
    assert meta is not None and sha in meta, meta
    info = meta[sha].findall('{%s}metadata/{%s}info' % (NS_META, NS_META))
    assert len(info) == 1, to_str(meta[sha])
    assert info[0].get('id') == sha
    assert info[0].get('bytes') == str(len(img))
    assert info[0].get('type') == 'image/png'
    # the presence hash at once, in the other session too
    a.presence('<show>xa</show>')
    assert presence_hash(b, a.jid, 'xa') == sha
    # the same photo again (a new FN): nothing republished
    before = item_ts(srv, name, NS_META)
    assert set(before) == {sha}
    ok(a.iq('set', vcard_xml('R2', img)))
    assert item_ts(srv, name, NS_META) == before
    assert item_ts(srv, name, NS_DATA).keys() == {sha}
    # the photo removed: XEP-0084 §4.5 "disabled"
    ok(a.iq('set', vcard_xml('R3')))
    meta = items_of(a, NS_META)
    empty = [i for i in meta.values()
             if i.find('{%s}metadata' % NS_META) is not None
             and len(i.find('{%s}metadata' % NS_META)) == 0]
    assert empty, [to_str(i) for i in meta.values()]
    assert vcard_photo(a) is None
    a.presence("<show>dnd</show><x xmlns='%s'><photo>%s</photo></x>"
               % (NS_UPDATE, sha))
    assert presence_hash(b, a.jid, 'dnd') == ''
    if LOG_LEVEL == 'debug':
        time.sleep(0.5)
        # our own publishes did not come back into the vCard (no loop)
        assert log_count(srv, r'PEP avatar of %s@\S+ -> vCard' % name) == 0
        assert log_count(srv, r'stored the vCard of %s@' % name) == 3


def test_avatar_round_trip_no_loop(pep_server):
    """PEP -> vCard -> (a vCard set by an old client) -> PEP: each
    direction once."""
    srv = pep_server
    name, pw = srv.new_user(prefix='pl')
    a = srv.login(name, pw)
    img1 = image()
    sha1 = publish_avatar(a, img1)
    wait_for(lambda: vcard_photo(a) == ('image/png', img1), 'photo 1')
    # an old client sets the vCard it read back: same photo, no publish
    ok(a.iq('set', vcard_xml('Old client', img1)))
    assert items_of(a, NS_META).keys() == {sha1}
    # the old client changes the photo: to PEP
    img2 = image()
    sha2 = hashlib.sha1(img2).hexdigest()
    ok(a.iq('set', vcard_xml('Old client', img2)))
    assert sha2 in items_of(a, NS_META)
    assert sha2 in items_of(a, NS_DATA)
    time.sleep(0.5)
    assert vcard_photo(a) == ('image/png', img2)
    if LOG_LEVEL == 'debug':
        assert log_count(srv, r'PEP avatar of %s@\S+ -> vCard' % name) == 1


def test_pep_avatar_too_large_for_vcard(make_server, driver):
    """max_size bounds the copy: a larger PEP avatar stays in PEP only."""
    srv = make_server(driver, modules={'mod_pep': {},
                                       'mod_vcard': {'max_size': 4000}})
    name, pw = srv.new_user(prefix='ps')
    a = srv.login(name, pw)
    small = image(1000)
    publish_avatar(a, small)
    wait_for(lambda: vcard_photo(a) == ('image/png', small), 'small photo')
    publish_avatar(a, image(5000))
    time.sleep(0.5)
    assert vcard_photo(a) == ('image/png', small)


# ---- bookmarks ---------------------------------------------------------------

BM_OPTIONS = {'pubsub#persist_items': 'true', 'pubsub#max_items': 'max',
              'pubsub#send_last_published_item': 'never',
              'pubsub#access_model': 'whitelist'}


def private_q(inner):
    return "<query xmlns='%s'>%s</query>" % (NS_PRIVATE, inner)


def legacy_set(c, inner):
    ok(c.iq('set', private_q("<storage xmlns='%s'>%s</storage>"
                             % (NS_BM_LEGACY, inner))))


def legacy_get(c):
    """(conferences by jid, other children) of the private storage."""
    r = ok(c.iq('get', private_q("<storage xmlns='%s'/>" % NS_BM_LEGACY)))
    st = r.findall('{%s}query/{%s}storage' % (NS_PRIVATE, NS_BM_LEGACY))
    assert len(st) == 1, to_str(r)
    confs, others = {}, []
    for e in st[0]:
        if e.tag == '{%s}conference' % NS_BM_LEGACY:
            assert e.get('jid') not in confs, to_str(r)
            confs[e.get('jid')] = e
        else:
            others.append(e)
    return confs, others


def conference(c, items, jid):
    conf = items[jid].find('{%s}conference' % NS_BM)
    assert conf is not None, to_str(items[jid])
    return conf


def test_bookmarks_legacy_to_pep_and_back(pep_server):
    """XEP-0402 #compat: a private set becomes one item per room; a new
    client's publish and retract show in the private get; a legacy set
    retracts the rooms it no longer lists; <url/>s survive."""
    srv = pep_server
    name, pw = srv.new_user(prefix='bk')
    old = srv.login(name, pw, resource='old')
    new = srv.login(name, pw, resource='new')
    assert NS_BM_COMPAT in account_features(new)
    legacy_set(old, "<conference jid='a@conf.example' name='Room A' "
                    "autojoin='1'><nick>jc</nick><password>s3</password>"
                    "</conference>"
                    "<conference jid='b@conf.example' autojoin='false'/>"
                    "<url name='site' url='https://example.org/'/>")
    items = items_of(new, NS_BM)
    assert set(items) == {'a@conf.example', 'b@conf.example'}, items
    ca = conference(new, items, 'a@conf.example')
    assert ca.get('name') == 'Room A'
    assert ca.get('autojoin') in ('true', '1')
    assert ca.findtext('{%s}nick' % NS_BM) == 'jc'
    assert ca.findtext('{%s}password' % NS_BM) == 's3'
    cb = conference(new, items, 'b@conf.example')
    assert cb.get('autojoin') in (None, 'false', '0')
    # the node is the user's alone (whitelist): another user cannot read
    other, opw = srv.new_user(prefix='bo')
    o = srv.login(other, opw)
    r = o.iq('get', "<pubsub xmlns='%s'><items node='%s'/></pubsub>"
             % (NS_PUBSUB, NS_BM), to='%s@localhost' % name)
    assert r.get('type') == 'error', to_str(r)

    # a new client adds a room and removes one
    publish(new, NS_BM, "<conference xmlns='%s' name='Room C' autojoin='true'>"
            "<nick>cc</nick><extensions><x xmlns='urn:example:ext' v='1'/>"
            "</extensions></conference>" % NS_BM, 'c@conf.example',
            options=BM_OPTIONS)
    retract(new, NS_BM, 'b@conf.example')
    confs, others = legacy_get(old)
    assert set(confs) == {'a@conf.example', 'c@conf.example'}, confs
    c = confs['c@conf.example']
    assert c.get('name') == 'Room C' and c.get('autojoin') in ('true', '1')
    assert c.findtext('{%s}nick' % NS_BM_LEGACY) == 'cc'
    assert c.find('{urn:example:ext}x') is not None, to_str(c)
    assert confs['a@conf.example'].findtext(
        '{%s}password' % NS_BM_LEGACY) == 's3'
    assert [e.get('url') for e in others] == ['https://example.org/']

    # the old client writes back what it read, minus room a
    legacy_set(old, "<conference jid='c@conf.example' name='Room C' "
                    "autojoin='true'><nick>cc</nick>"
                    "<x xmlns='urn:example:ext' v='1'/></conference>"
                    "<url name='site' url='https://example.org/'/>")
    items = items_of(new, NS_BM)
    assert set(items) == {'c@conf.example'}, items
    ext = conference(new, items, 'c@conf.example').find(
        '{%s}extensions/{urn:example:ext}x' % NS_BM)
    assert ext is not None and ext.get('v') == '1'
    # an empty list retracts everything, the node stays (empty)
    legacy_set(old, '')
    assert items_of(new, NS_BM) == {}
    confs, others = legacy_get(old)
    assert confs == {} and others == []


def test_bookmarks_unchanged_not_republished(pep_server):
    """XEP-0402: SHOULD NOT notify for unchanged items: a room listed
    again as it was is not published again (its item keeps its time)."""
    srv = pep_server
    name, pw = srv.new_user(prefix='bu')
    c = srv.login(name, pw)
    lst = ("<conference jid='r@conf.example' name='R' autojoin='true'>"
           "<nick>n</nick></conference>")
    legacy_set(c, lst + "<conference jid='s@conf.example'/>")
    before = item_ts(srv, name, NS_BM)
    assert set(before) == {'r@conf.example', 's@conf.example'}
    # the same room spelt otherwise (autojoin '1'), one changed
    legacy_set(c, "<conference autojoin='1' name='R' jid='r@conf.example'>"
                  "<nick>n</nick></conference>"
                  "<conference jid='s@conf.example' name='S'/>")
    after = item_ts(srv, name, NS_BM)
    assert after['r@conf.example'] == before['r@conf.example']
    assert after['s@conf.example'] > before['s@conf.example']


def test_bookmarks_duplicate_rooms_and_no_jid(pep_server):
    srv = pep_server
    name, pw = srv.new_user(prefix='bd')
    c = srv.login(name, pw)
    legacy_set(c, "<conference jid='d@conf.example' name='first'/>"
                  "<conference jid='d@conf.example' name='second'/>"
                  "<conference name='no jid'/>")
    items = items_of(c, NS_BM)
    assert set(items) == {'d@conf.example'}
    assert conference(c, items, 'd@conf.example').get('name') == 'first'


def test_bookmarks_converted_at_login_when_pep_enabled_later(make_server,
                                                             driver):
    """Bookmarks stored before mod_pep was enabled become items when the
    user next logs in (XEP-0411 §5), and stay visible to old clients."""
    srv = make_server(driver, modules={'mod_pep': None})
    name, pw = srv.new_user(prefix='bm')
    c = srv.login(name, pw)
    assert NS_BM_COMPAT not in account_features(c)
    legacy_set(c, "<conference jid='m@conf.example' name='M'/>")
    c.close()
    srv.stop()
    srv.modules['mod_pep'] = {}
    srv.write_config()
    srv.start()
    c = srv.login(name, pw)
    confs, _ = legacy_get(c)  # before the conversion or after: the same
    assert set(confs) == {'m@conf.example'}
    wait_for(lambda: items_of(c, NS_BM), 'the converted items')
    assert set(items_of(c, NS_BM)) == {'m@conf.example'}


# ---- without mod_pep ---------------------------------------------------------

def test_without_mod_pep_old_behaviour(make_server, driver):
    """No mod_pep: vCard avatars and private bookmarks as before, and no
    conversion features on the account."""
    srv = make_server(driver, modules={'mod_pep': None})
    name, pw = srv.new_user(prefix='np')
    a = srv.login(name, pw, resource='a')
    b = srv.login(name, pw, resource='b')
    b.presence()
    feats = account_features(a)
    assert NS_CONVERSION not in feats and NS_BM_COMPAT not in feats
    img = image()
    ok(a.iq('set', vcard_xml('np', img)))
    assert vcard_photo(a) == ('image/png', img)
    a.presence()
    assert presence_hash(b, a.jid) == hashlib.sha1(img).hexdigest()
    legacy_set(a, "<conference jid='x@conf.example' name='X'/>"
                  "<url name='u' url='https://example.org/'/>")
    confs, others = legacy_get(a)
    assert set(confs) == {'x@conf.example'} and len(others) == 1
    r = a.iq('get', "<pubsub xmlns='%s'><items node='%s'/></pubsub>"
             % (NS_PUBSUB, NS_BM))
    assert r.get('type') == 'error', to_str(r)


def test_conversion_options_off(make_server, driver):
    """pep_conversion / bookmarks_conversion false: mod_pep loaded, no
    bridge."""
    srv = make_server(driver, modules={
        'mod_pep': {}, 'mod_vcard': {'pep_conversion': False},
        'mod_private': {'bookmarks_conversion': False}})
    name, pw = srv.new_user(prefix='no')
    a = srv.login(name, pw)
    feats = account_features(a)
    assert NS_CONVERSION not in feats and NS_BM_COMPAT not in feats
    legacy_set(a, "<conference jid='y@conf.example'/>")
    assert not items_of(a, NS_BM)
    ok(a.iq('set', vcard_xml('off', image())))
    assert not items_of(a, NS_META)


def test_bookmarks_not_converted_into_a_node_others_may_read(pep_server):
    """XEP-0411 §6: the node must be the user's alone; a node a client
    configured open is left as it is (the engine's precondition check)."""
    srv = pep_server
    name, pw = srv.new_user(prefix='bw')
    c = srv.login(name, pw)
    opts = dict(BM_OPTIONS)
    opts['pubsub#access_model'] = 'open'
    publish(c, NS_BM, "<conference xmlns='%s' name='Open'/>" % NS_BM,
            'open@conf.example', options=opts)
    legacy_set(c, "<conference jid='secret@conf.example' name='S'>"
                  "<password>pw</password></conference>")
    assert set(items_of(c, NS_BM)) == {'open@conf.example'}


def test_mod_pep_configured_first(make_server, driver):
    """mod_pep loaded before the bridges (and so unloaded after them: the
    bridges unwatch in their unload, checked by a clean stop under the
    sanitizers)."""
    srv = make_server(driver, start=False)
    mods = dict(srv.modules)
    srv.modules = {'mod_roster': {}, 'mod_caps': {}, 'mod_pep': {}}
    srv.modules.update((k, v) for k, v in mods.items() if k not in srv.modules)
    srv.write_config()
    srv.start()
    name, pw = srv.new_user(prefix='pf')
    a = srv.login(name, pw)
    feats = account_features(a)
    assert NS_CONVERSION in feats and NS_BM_COMPAT in feats
    img = image()
    publish_avatar(a, img)
    wait_for(lambda: vcard_photo(a) == ('image/png', img), 'the vCard photo')
    legacy_set(a, "<conference jid='f@conf.example'/>")
    assert set(items_of(a, NS_BM)) == {'f@conf.example'}
    a.close()
    srv.stop()
