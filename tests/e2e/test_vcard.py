"""mod_vcard: vcard-temp (XEP-0054) and vCard-based avatars (XEP-0153)."""

import base64
import hashlib
import os
from xml.sax.saxutils import escape

from rawxmpp import NS_DISCO_INFO, local, stanza_error, to_str

NS_VCARD = 'vcard-temp'
NS_UPDATE = 'vcard-temp:x:update'
GET = "<vCard xmlns='vcard-temp'/>"


def vcard_xml(fn='Juliet Capulet', photo=None, extra=''):
    photo_xml = ''
    if photo is not None:
        b = base64.b64encode(photo).decode()
        # XEP-0153 §4.6: base64 in lines of 76, whitespace ignored
        lines = '\n'.join(b[i:i + 76] for i in range(0, len(b), 76))
        photo_xml = ('<PHOTO><TYPE>image/png</TYPE><BINVAL>\n%s\n</BINVAL>'
                     '</PHOTO>' % lines)
    return ("<vCard xmlns='vcard-temp'><FN>%s</FN>%s%s</vCard>"
            % (escape(fn), photo_xml, extra))


def vcard_of(iq):
    assert iq.get('type') == 'result', to_str(iq)
    v = iq.find('{%s}vCard' % NS_VCARD)
    assert v is not None, 'result without <vCard/>: %s' % to_str(iq)
    return v


def must_set(c, payload, to=None):
    r = c.iq('set', payload, to=to)
    assert r.get('type') == 'result', to_str(r)
    return r


def presence_from(c, jid, timeout=30.0):
    return c.recv_until(lambda e: local(e.tag) == 'presence'
                        and e.get('from') == jid and e.get('type') is None,
                        timeout, what='available presence from %s' % jid)


def update_of(p):
    """None: no <x/>; 'not-ready': <x/> without <photo/>; else the photo
    text ('' for an empty <photo/>)."""
    x = p.find('{%s}x' % NS_UPDATE)
    if x is None:
        return None
    photo = x.find('{%s}photo' % NS_UPDATE)
    if photo is None:
        return 'not-ready'
    assert len(p.findall('{%s}x' % NS_UPDATE)) == 1, to_str(p)
    assert len(x.findall('{%s}photo' % NS_UPDATE)) == 1, to_str(p)
    return (photo.text or '').strip()


def test_vcard_round_trip_own_and_other(server):
    alice, apw = server.new_user(prefix='va')
    bob, bpw = server.new_user(prefix='vb')
    a = server.login(alice, apw)
    b = server.login(bob, bpw)
    fn = 'Jüliet <Capulet> & Co'
    must_set(a, vcard_xml(fn, extra="<NICKNAME>jc</NICKNAME>"
                                   "<X-EXT xmlns='urn:example:ext' a='1'/>"))
    # own vCard: iq without 'to' (XEP-0054 §3.1)
    v = vcard_of(a.iq('get', GET))
    assert v.findtext('{%s}FN' % NS_VCARD) == fn, to_str(v)
    assert v.findtext('{%s}NICKNAME' % NS_VCARD) == 'jc', to_str(v)
    ext = v.find('{urn:example:ext}X-EXT')
    assert ext is not None and ext.get('a') == '1', to_str(v)
    # another user reads it at the bare JID (§3.3), answered by the server
    r = b.iq('get', GET, to='%s@localhost' % alice)
    assert r.get('from') == '%s@localhost' % alice, to_str(r)
    v = vcard_of(r)
    assert v.findtext('{%s}FN' % NS_VCARD) == fn, to_str(v)
    # a second set replaces the whole vCard
    must_set(a, vcard_xml('Juliet'))
    v = vcard_of(b.iq('get', GET, to='%s@localhost' % alice))
    assert v.findtext('{%s}FN' % NS_VCARD) == 'Juliet', to_str(v)
    assert v.find('{%s}NICKNAME' % NS_VCARD) is None, to_str(v)


def test_vcard_missing(server):
    alice, apw = server.new_user(prefix='va')
    bob, bpw = server.new_user(prefix='vb')
    a = server.login(alice, apw)
    # own: an empty vCard (§3.1 allows it)
    v = vcard_of(a.iq('get', GET))
    assert len(list(v)) == 0, to_str(v)
    # someone else's: an error (§3.3), the same whether the account exists
    for who in (bob, 'nosuchuser'):
        r = a.iq('get', GET, to='%s@localhost' % who)
        assert r.get('type') == 'error', to_str(r)
        assert stanza_error(r) == ('cancel', 'item-not-found'), to_str(r)


def test_vcard_set_of_someone_else_forbidden(server):
    alice, apw = server.new_user(prefix='va')
    bob, bpw = server.new_user(prefix='vb')
    a = server.login(alice, apw)
    b = server.login(bob, bpw)
    must_set(a, vcard_xml('Alice'))
    r = b.iq('set', vcard_xml('Mallory'), to='%s@localhost' % alice)
    assert r.get('type') == 'error', to_str(r)
    assert stanza_error(r)[1] == 'forbidden', to_str(r)
    r = b.iq('set', vcard_xml('Mallory'), to='localhost')
    assert stanza_error(r)[1] == 'forbidden', to_str(r)
    v = vcard_of(a.iq('get', GET))
    assert v.findtext('{%s}FN' % NS_VCARD) == 'Alice', to_str(v)
    # setting one's own at the explicit bare JID is allowed
    must_set(a, vcard_xml('Alice 2'), to='%s@localhost' % alice)
    v = vcard_of(b.iq('get', GET, to='%s@localhost' % alice))
    assert v.findtext('{%s}FN' % NS_VCARD) == 'Alice 2', to_str(v)


def test_vcard_server_and_disco(server, user):
    name, pw = user
    c = server.login(name, pw)
    vcard_of(c.iq('get', GET, to='localhost'))
    r = c.iq('get', "<query xmlns='%s'/>" % NS_DISCO_INFO, to='localhost')
    feats = [f.get('var') for f in r.iter('{%s}feature' % NS_DISCO_INFO)]
    assert NS_VCARD in feats, feats


def test_vcard_size_limit(make_server, driver):
    srv = make_server(driver, modules={'mod_vcard': {'max_size': 1000}})
    name, pw = srv.new_user(prefix='vs')
    c = srv.login(name, pw)
    must_set(c, vcard_xml('small'))
    big = vcard_xml('x' * 1200)
    r = c.iq('set', big)
    assert r.get('type') == 'error', to_str(r)
    assert stanza_error(r) == ('modify', 'not-acceptable'), to_str(r)
    text = r.find('.//{urn:ietf:params:xml:ns:xmpp-stanzas}text')
    assert text is not None and '1000' in (text.text or ''), to_str(r)
    # the limit counts the serialised vCard: just under it passes
    base = len(vcard_xml(''))
    must_set(c, vcard_xml('y' * (1000 - base)))
    r = c.iq('set', vcard_xml('y' * (1001 - base)))
    assert stanza_error(r)[1] == 'not-acceptable', to_str(r)
    v = vcard_of(c.iq('get', GET))
    assert v.findtext('{%s}FN' % NS_VCARD) == 'y' * (1000 - base), to_str(v)


def test_vcard_bad_base64_photo(server, user):
    name, pw = user
    c = server.login(name, pw)
    r = c.iq('set', "<vCard xmlns='vcard-temp'><PHOTO><BINVAL>!!notbase64"
                    "</BINVAL></PHOTO></vCard>")
    assert r.get('type') == 'error', to_str(r)
    assert stanza_error(r)[1] == 'bad-request', to_str(r)


def test_avatar_hash_in_presence(server):
    """XEP-0153 §3.1: after the vCard set, the presence the user sends
    carries the SHA-1 of the photo, whatever the client put there.  Seen
    by the user's other resource (presence without 'to' reaches them)."""
    name, pw = server.new_user(prefix='av')
    a = server.login(name, pw, resource='a')
    b = server.login(name, pw, resource='b')
    b.presence()
    image = os.urandom(3000)
    sha = hashlib.sha1(image).hexdigest()
    must_set(a, vcard_xml(photo=image))

    # empty photo (client thinks there is none): replaced by the hash
    a.presence("<x xmlns='%s'><photo/></x>" % NS_UPDATE)
    assert update_of(presence_from(b, a.jid)) == sha
    # a stale hash: replaced
    a.presence("<x xmlns='%s'><photo>%s</photo></x>" % (NS_UPDATE, 'ab' * 20))
    assert update_of(presence_from(b, a.jid)) == sha
    # no <x/> at all: added for the client
    a.presence('<status>here</status>')
    p = presence_from(b, a.jid)
    assert update_of(p) == sha, to_str(p)
    assert p.findtext('{jabber:client}status') == 'here', to_str(p)
    # empty <x/> ("not ready", XEP-0153 §4.1): XEP-0398 §4 requires the
    # server, which knows the hash, to fill it in
    a.presence("<x xmlns='%s'/>" % NS_UPDATE)
    assert update_of(presence_from(b, a.jid)) == sha

    # another client of the account removes the photo: empty from now on
    must_set(b, vcard_xml('no photo'))
    a.presence("<x xmlns='%s'><photo>%s</photo></x>" % (NS_UPDATE, sha))
    assert update_of(presence_from(b, a.jid)) == ''
    a.presence()
    assert update_of(presence_from(b, a.jid)) is None


def test_avatar_hash_loaded_at_login(server):
    """The hash comes from the store for a session started after the
    set (loaded at session start, before the first presence)."""
    name, pw = server.new_user(prefix='av')
    a = server.login(name, pw, resource='a')
    image = os.urandom(500)
    must_set(a, vcard_xml(photo=image))
    a.close()
    b = server.login(name, pw, resource='b')
    b.presence()
    c = server.login(name, pw, resource='c')
    c.presence()
    assert update_of(presence_from(b, c.jid)) == hashlib.sha1(image).hexdigest()
