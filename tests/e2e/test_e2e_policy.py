"""mod_e2e_policy: the "E2E required" policy (doc/e2e.md).

One server per driver: localhost requires end-to-end encryption (exempt:
echo@localhost and the component domain, written as a YAML list),
example.test keeps the default (optional)."""

import time
import xml.etree.ElementTree as ET

import pytest

import rawxmpp
from conftest import COMPONENT, Server, db, require_pgsql
from rawxmpp import NS_DISCO_INFO, local, to_str
from test_caps import info_of, server_c, ver_of
from test_component import component_login
from test_config import run_pigeond
from test_mam import ok, query
from test_omemo_traffic import (NS_AXOLOTL, NS_OMEMO2, legacy, omemo2, same_encrypted,
                                send_raw, archive_rows, offline_rows, wait_count,
                                FALLBACK)
from test_push import App, enable as push_enable, go_offline, check_summary

NS_POLICY = 'urn:pigeon:e2e-policy:0'
NS_STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas'
NS_XDATA = 'jabber:x:data'
NS_CLIENT = 'jabber:client'
OTHER = 'example.test'
OPENPGP = "<openpgp xmlns='urn:xmpp:openpgp:0'>hQEMA8l2ZQ==</openpgp>"
PGP_LEGACY = "<x xmlns='jabber:x:encrypted'>hQEMA8l2ZQ==</x>"
HOST_CONFIG = ('host_config:\n'
               '  %s:\n'
               '    modules:\n'
               '      mod_e2e_policy: {}\n' % OTHER)


@pytest.fixture(scope='module')
def srv(basedir, certs, driver):
    if driver == 'pgsql':
        require_pgsql()
    s = Server(basedir, certs, driver, name='e2e-' + driver,
               modules={'mod_e2e_policy': {'policy': 'required', 'exempt': 'X'}},
               extra_yaml=HOST_CONFIG)
    # the list option as a YAML list
    text = s.config_text().replace('exempt: "X"',
                                   'exempt: [echo@localhost, %s]' % COMPONENT)
    assert text != s.config_text()
    s.config.write_text(text)
    try:
        s.start()
    except BaseException:
        s.kill()
        raise
    yield s
    s.destroy()


# ---- helpers -------------------------------------------------------------

def online(s, user, pw, res='r', host='localhost'):
    c = s.login(user, pw, host=host, resource=res)
    c.name = c.jid
    c.presence()
    rawxmpp.quiet(c, lambda el: local(el.tag) == 'presence')
    return c


def pair(s):
    a, apw = s.new_user(prefix='ea')
    b, bpw = s.new_user(prefix='eb')
    return online(s, a, apw, 'phone'), online(s, b, bpw, 'phone')


def bare(jid):
    return jid.split('/')[0]


def refusal(c, id_):
    """The policy-violation error for message id_: checked whole."""
    el = c.recv_until(lambda e: local(e.tag) == 'message' and e.get('id') == id_,
                      what='the error for %s' % id_)
    assert el.get('type') == 'error', to_str(el)
    err = el.find('{%s}error' % NS_CLIENT)
    assert err is not None and err.get('type') == 'modify', to_str(el)
    assert err.find('{%s}policy-violation' % NS_STANZAS) is not None, to_str(el)
    text = err.findtext('{%s}text' % NS_STANZAS)
    assert text and 'end-to-end encryption' in text, to_str(el)
    assert err.find('{%s}e2e-required' % NS_POLICY) is not None, to_str(el)
    return el


def nothing(c):
    rawxmpp.quiet(c, lambda el: local(el.tag) == 'presence')


def delivered(c, id_):
    return c.recv_until(lambda e: local(e.tag) == 'message' and e.get('id') == id_,
                        what='message %s' % id_)


def no_error_for(c, ids, seconds=0.5, policy_only=False):
    """None of ids comes back as an error (a policy-violation, with
    policy_only) before a ping answer and `seconds` more."""
    ping_id = rawxmpp.new_id('barrier')
    c.send("<iq type='get' id='%s' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
           % ping_id)
    deadline = None
    while deadline is None or time.monotonic() < deadline:
        try:
            el = c.recv(timeout=0.1)
        except Exception:
            continue
        if local(el.tag) == 'iq' and el.get('id') == ping_id:
            deadline = time.monotonic() + seconds
        if local(el.tag) == 'message' and el.get('type') == 'error':
            assert el.get('id') not in ids or (
                policy_only and el.find('{%s}error/{%s}policy-violation'
                                        % (NS_CLIENT, NS_STANZAS)) is None), to_str(el)


# ---- tests ---------------------------------------------------------------

def test_plaintext_refused(srv):
    """A body without an end-to-end payload: chat, normal, no type, an
    unknown type; to the bare JID, a full JID, oneself (no 'to')."""
    a, b = pair(srv)
    to = bare(b.jid)
    for type_, target in (('chat', to), ('normal', to), (None, b.jid),
                          ('bogus', b.jid)):
        id_ = send_raw(a, target, '<body>secret plans</body>', type_=type_)
        el = refusal(a, id_)
        assert el.get('from') == target, to_str(el)
    # a note to self: refused too
    id_ = rawxmpp.new_id('self')
    a.send("<message id='%s' type='chat'><body>note</body></message>" % id_)
    refusal(a, id_)
    # with unrelated payloads (an OOB URL, a chat state, hints)
    id_ = send_raw(a, to, "<body>https://up.example/f.jpg</body><x xmlns='jabber:x:oob'>"
                          "<url>https://up.example/f.jpg</url></x><active xmlns="
                          "'http://jabber.org/protocol/chatstates'/><store xmlns="
                          "'urn:xmpp:hints'/>")
    refusal(a, id_)
    nothing(b)


def test_plaintext_nowhere(srv):
    """Refused plaintext is not stored offline, not archived, and not
    delivered when the recipient comes online; the encrypted message
    after it is, all three ways."""
    an, apw = srv.new_user(prefix='ea')
    bn, bpw = srv.new_user(prefix='eb')
    a = online(srv, an, apw, 'phone')
    to = '%s@localhost' % bn
    refused = send_raw(a, to, '<body>plain</body>')
    refusal(a, refused)
    passed = send_raw(a, to, FALLBACK + legacy())
    no_error_for(a, [passed])
    wait_count(lambda: offline_rows(srv, bn), 1, 'offline rows')
    wait_count(lambda: archive_rows(srv, bn), 1, 'bob archive')
    assert archive_rows(srv, an) == 1
    # the sender's archive has the encrypted message only
    r = ok(query(a, max_=50))
    assert [r.forwarded(i).get('id') for i in range(len(r.results))] == [passed]
    b = srv.login(bn, bpw, resource='phone')
    b.presence()
    m = b.recv_stanza('message')
    assert m.get('id') == passed, to_str(m)
    same_encrypted(m, FALLBACK + legacy())
    nothing(b)
    r = ok(query(b, max_=50))
    assert [r.forwarded(i).get('id') for i in range(len(r.results))] == [passed]


def test_encrypted_passes(srv):
    """OMEMO in both namespaces (with and without fallback body, key
    exchanges), OpenPGP for XMPP and legacy OpenPGP (with a body)."""
    a, b = pair(srv)
    to = bare(b.jid)
    payloads = [FALLBACK + legacy(), legacy(), legacy(payload=False, prekey=True),
                FALLBACK + omemo2(to, bare(a.jid)), omemo2(to, bare(a.jid)),
                omemo2(to, bare(a.jid), payload=False, kex=True),
                '<body>This message is encrypted (XEP-0373)</body>' + OPENPGP,
                '<body>This message is encrypted</body>' + PGP_LEGACY]
    ids = []
    for p in payloads:
        id_ = send_raw(a, to, p)
        m = delivered(b, id_)
        assert m.get('type') == 'chat', to_str(m)
        ids.append(id_)
    no_error_for(a, ids)


def test_bodyless_and_other_types_pass(srv):
    """Receipts, markers, chat states, a subject; groupchat, headline and
    error messages with a body."""
    a, b = pair(srv)
    to = b.jid
    ids = [send_raw(a, to, p) for p in (
        "<received xmlns='urn:xmpp:receipts' id='r1'/>",
        "<displayed xmlns='urn:xmpp:chat-markers:0' id='r1'/>",
        "<composing xmlns='http://jabber.org/protocol/chatstates'/>",
        "<subject>topic</subject>")]
    ids.append(send_raw(a, to, '<body>news</body>', type_='headline'))
    seen = set()
    while seen != set(ids):
        m = b.recv_until(lambda e: local(e.tag) == 'message', what='the messages')
        seen.add(m.get('id'))
    # groupchat to a user: not the policy's business (no error from it)
    gid = send_raw(a, to, '<body>room text</body>', type_='groupchat')
    eid = send_raw(a, to, "<body>x</body><error type='cancel'><item-not-found "
                          "xmlns='%s'/></error>" % NS_STANZAS, type_='error')
    no_error_for(a, [gid, eid])


def test_exempt_jids(srv):
    """echo@localhost (a bot account) and the component's domain may
    exchange plaintext with anyone, both ways."""
    an, apw = srv.new_user(prefix='ea')
    a = online(srv, an, apw, 'phone')
    srv.register('echo', 'localhost', 'echo-pw')
    echo = online(srv, 'echo', 'echo-pw', 'bot')
    id_ = send_raw(a, echo.jid, '<body>ping</body>')
    delivered(echo, id_)
    id_ = send_raw(echo, a.jid, '<body>pong</body>')
    delivered(a, id_)
    ids = [id_]
    comp, el = component_login(srv)
    try:
        assert local(el.tag) == 'handshake', to_str(el)
        id_ = send_raw(a, 'help@%s' % COMPONENT, '<body>help</body>')
        ids.append(id_)
        m = comp.recv_stanza('message', id=id_)
        assert m.get('from') == a.jid, to_str(m)
        comp.send("<message from='help@%s' to='%s' type='chat' id='cb1'>"
                  "<body>how can I help?</body></message>" % (COMPONENT, a.jid))
        delivered(a, 'cb1')
    finally:
        comp.close()
    no_error_for(a, ids)


def test_to_and_from_the_server(srv):
    """A message to the host's JID is not refused by the policy; nor are
    the server's own (here: pigeonctl's broadcast, if any)."""
    a, _ = pair(srv)
    ids = [send_raw(a, 'localhost', '<body>hello server</body>'),
           send_raw(a, 'localhost/admin', '<body>hello</body>', type_='normal'),
           send_raw(a, OTHER, '<body>hello other host</body>')]
    no_error_for(a, ids, policy_only=True)


def test_from_another_domain(srv):
    """example.test keeps the default (optional): its users exchange
    plaintext there, but their plaintext to localhost is refused by
    localhost (the inbound check), encrypted passes."""
    cn, cpw = srv.new_user(host=OTHER, prefix='ec')
    dn, dpw = srv.new_user(host=OTHER, prefix='ed')
    an, apw = srv.new_user(prefix='ea')
    c = online(srv, cn, cpw, 'r', host=OTHER)
    d = online(srv, dn, dpw, 'r', host=OTHER)
    a = online(srv, an, apw, 'r')
    id_ = send_raw(c, d.jid, '<body>plain is fine here</body>')
    delivered(d, id_)
    # offline too: stored as usual with the policy optional
    en, epw = srv.new_user(host=OTHER, prefix='ee')
    send_raw(c, '%s@%s' % (en, OTHER), '<body>later</body>')
    wait_count(lambda: int(db(srv, "SELECT count(*) FROM offline_messages WHERE "
                                   "host = '%s' AND username = '%s'" % (OTHER, en))),
               1, 'offline rows on %s' % OTHER)
    id_ = send_raw(c, a.jid, '<body>plain to a strict host</body>')
    el = refusal(c, id_)
    assert el.get('from') == a.jid, to_str(el)
    id_ = send_raw(c, a.jid, FALLBACK + legacy())
    delivered(a, id_)
    nothing(a)
    # localhost's users cannot send plaintext out either
    id_ = send_raw(a, c.jid, '<body>out</body>')
    refusal(a, id_)
    nothing(c)


def form_of(query_el):
    """{var: [values]} of the policy form, or None."""
    for x in query_el.findall('{%s}x' % NS_XDATA):
        fields = {f.get('var'): [v.text or '' for v in f.findall('{%s}value' % NS_XDATA)]
                  for f in x.findall('{%s}field' % NS_XDATA)}
        if fields.get('FORM_TYPE') == [NS_POLICY]:
            assert x.get('type') == 'result', to_str(x)
            ft = [f for f in x.findall('{%s}field' % NS_XDATA) if f.get('var') == 'FORM_TYPE']
            assert ft[0].get('type') == 'hidden', to_str(x)
            return fields
    return None


def test_disco_announces_the_policy(srv):
    """Feature and XEP-0128 form on each host, and the caps ver (XEP-0115)
    that covers the form."""
    an, apw = srv.new_user(prefix='ea')
    a = srv.login(an, apw, resource='r')
    for host, policy in (('localhost', 'required'), (OTHER, 'optional')):
        r = a.iq('get', "<query xmlns='%s'/>" % NS_DISCO_INFO, to=host)
        assert r.get('type') == 'result', to_str(r)
        q = r.find('{%s}query' % NS_DISCO_INFO)
        ids, feats = info_of(q)
        assert NS_POLICY in feats, feats
        assert (NS_POLICY + '#required' in feats) == (policy == 'required'), feats
        form = form_of(q)
        assert form is not None, to_str(r)
        assert form['policy'] == [policy], form
        assert sorted(form['encryption']) == sorted(
            [NS_AXOLOTL, NS_OMEMO2, 'urn:xmpp:openpgp:0', 'jabber:x:encrypted']), form
        if host == 'localhost':
            fields = {k: v for k, v in form.items() if k != 'FORM_TYPE'}
            assert server_c(a.features).get('ver') == \
                ver_of(ids, feats, [(NS_POLICY, fields)]), to_str(r)


def test_push_not_sent_for_refused(srv):
    """A refused message wakes nobody's phone; the encrypted one does,
    without its fallback body."""
    app = App(srv)
    try:
        bn, bpw = srv.new_user(prefix='eb')
        b = srv.login(bn, bpw, resource='phone')
        push_enable(b)
        go_offline(srv, b, bn)
        an, apw = srv.new_user(prefix='ea')
        a = online(srv, an, apw, 'r')
        to = '%s@localhost' % bn
        refusal(a, send_raw(a, to, '<body>plain</body>'))
        app.nothing(0.7)
        send_raw(a, to, FALLBACK + legacy())
        n = app.next()
        check_summary(n, 1, a.jid)
        assert 'OMEMO' not in n['xml']
    finally:
        app.close()


def test_stats_count_refusals(srv):
    a, b = pair(srv)
    refusal(a, send_raw(a, b.jid, '<body>x</body>'))
    out = srv.ctl('stats', expect=0).stdout
    figures = dict(line.split() for line in out.splitlines() if line.startswith('e2e_'))
    assert int(figures['e2e_refused@localhost']) >= 1, out
    assert 'e2e_refused_inbound@localhost' in figures, out


def test_bad_options_refused(make_server):
    """A full JID in exempt stops the start with the item named; a YAML
    list for an option that is not a list is refused by `pigeond -t`
    (the option named)."""
    s = make_server('sqlite', start=False,
                    modules={'mod_e2e_policy': {'policy': 'required',
                                                'exempt': 'ok@localhost, bot@localhost/res'}})
    r = run_pigeond('-c', str(s.config))
    assert r.returncode != 0, r
    assert "exempt: 'bot@localhost/res' is not a bare JID or a domain" in \
        r.stdout + r.stderr, r
    s2 = make_server('sqlite', start=False,
                     modules={'mod_e2e_policy': {'policy': 'X'}})
    s2.config.write_text(s2.config_text().replace('policy: "X"', 'policy: [required]'))
    r = run_pigeond('-t', '-c', str(s2.config))
    assert r.returncode == 2, r
    assert 'option policy: expected a single value, got a list' in r.stdout + r.stderr, r
    # the list itself is accepted by the check
    s2.config.write_text(s2.config_text().replace(
        'policy: "X"', 'policy: required\n    exempt:\n      - a@localhost\n'
                       '      - bot.localhost'))
    r = run_pigeond('-t', '-c', str(s2.config))
    assert r.returncode == 0, r
