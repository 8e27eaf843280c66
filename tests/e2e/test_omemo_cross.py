"""OMEMO through Pigeon between two independent implementations (issue 12).

Stack 1: python-omemo (Debian python3-omemo/oldmemo/twomemo) on slixmpp,
tests/omemo/pyomemo_client.py.  Stack 2: tests/tools/omemo-client
(libstrophe + libomemo-c), driven by tests/omemo/cclient.py.  Both speak
legacy OMEMO (eu.siacs.conversations.axolotl), the namespace they share;
python with python also does urn:xmpp:omemo:2.

What this proves about the server: PEP carries device lists and bundles
(publish-options, items, +notify), and an encrypted message gets through
every path (online, offline, MAM, carbons) unchanged, so that the other
stack decrypts it; the archive holds ciphertext only.  Every test runs on
both storage drivers (the `server` fixture).
"""

import asyncio
import os
import re
import sys

import pytest

import slixutil
from conftest import BUILDDIR, DEFAULT_MODULES, MODULE_PATH, db_rows, sanitizer_report
from test_blocking import subscribe_both

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', 'omemo'))
from cclient import CClient  # noqa: E402

try:
    import pyomemo_client as pyo  # noqa: E402
    PYOMEMO_ERROR = None
except ImportError as e:   # python3-omemo, -oldmemo, -twomemo, -xmlschema
    pyo = None
    PYOMEMO_ERROR = str(e)

OMEMO_C = BUILDDIR / 'tests' / 'tools' / 'omemo-client'


@pytest.fixture
def cbin():
    if not os.access(OMEMO_C, os.X_OK):
        pytest.skip('%s is not built (needs libomemo-c-dev and libstrophe-dev '
                    'at configure time)' % OMEMO_C)
    return OMEMO_C


class Stacks:
    """Factory of devices on one server: .c(user, pw, resource, *args) and
    .py(user, pw, resource, **kw); the C processes are killed at the end."""

    def __init__(self, server, cbin):
        self.server = server
        self.cbin = cbin
        self.cs = []

    def c(self, user, pw, resource, *args):
        cl = CClient(self.cbin, self.server, '%s@localhost/%s' % (user, resource),
                     pw, *args, sanitizer_report=sanitizer_report)
        self.cs.append(cl)
        return cl

    def py(self, user, pw, resource, storage=None, **kw):
        return pyo.OmemoClient('%s@localhost/%s' % (user, resource), pw,
                               self.server.cafile, self.server.c2s_port, storage, **kw)

    def close(self):
        for cl in self.cs:
            cl.kill()


def need_stacks():
    if pyo is None:
        pytest.skip('python-omemo stack unavailable: %s' % PYOMEMO_ERROR)
    if 'mod_pep' not in DEFAULT_MODULES:
        pytest.skip('the test servers do not load mod_pep (issue 11): OMEMO '
                    'needs PEP for device lists and bundles')


@pytest.fixture
def stacks(server, cbin):
    need_stacks()
    s = Stacks(server, cbin)
    yield s
    s.close()


def friends(server, a='oa', b='ob'):
    """Two new accounts with a mutual presence subscription (as OMEMO
    clients have: notifications go to contacts): ((a, pw), (b, pw))."""
    ua, ub = server.new_user(prefix=a), server.new_user(prefix=b)
    subscribe_both(server, ua[0], ub[0])
    return ua, ub


def archived(server, user):
    return [r[0] for r in db_rows(
        server, "SELECT stanza FROM mam_messages WHERE username = '%s' "
        "ORDER BY id" % user)]


async def c_sees_device(cl, jid, dev):
    """Until the C client prints a device list of jid that has dev."""
    while True:
        ev = await cl.event('DEVICELIST')
        if ev['args'][0] == jid and str(dev) in ev['args'][1].split(','):
            return


async def py_sees_device(p, jid, dev):
    while dev not in (await p.next_device_list(jid))[2]:
        pass


async def c_ready(cl):
    await cl.event('CONNECTED')
    ev = await cl.cmd('publish', 'PUBLISHED')
    return int(ev['args'][0])


def test_python_and_c_exchange_both_ways(server, stacks):
    """Alice (python-omemo) and Bob (libomemo-c): each decrypts the other's
    messages, key exchange first, then the ratchet; the archive has no
    plaintext."""
    (alice, apw), (bob, bpw) = friends(server)
    texts = ['h\u00e9llo from python <&>', 'second from python']
    replies = ['reply from C "libomemo-c"', 'second from C']

    async def scenario():
        b = stacks.c(bob, bpw, 'c')
        bob_dev = await c_ready(b)
        a = await stacks.py(alice, apw, 'py').start()
        await a.refresh(b.bare)
        assert bob_dev in await a.devices_of(b.bare)
        for i, (t, r) in enumerate(zip(texts, replies)):
            await a.send_encrypted(b.bare, t)
            ev = await b.event('DECRYPTED', kind='message', sid=a.device_id)
            assert ev['from'] == a.bare and ev['body'] == t, ev
            if i == 0:
                # the key exchange used one of Bob's pre-keys: his client
                # republishes the bundle to the node it created
                await b.event('REPUBLISHED')
            await b.cmd('send %s %s' % (a.bare, r), 'SENT')
            d = await a.next_decrypted()
            assert (d.sender, d.device_id, d.body, d.error) == (b.bare, bob_dev, r, None), d
        await b.quit()
        await a.stop()

    slixutil.run(scenario, timeout=90)
    stored = '\n'.join(archived(server, bob) + archived(server, alice))
    assert 'eu.siacs.conversations.axolotl' in stored
    for t in texts + replies:
        assert t not in stored and t.replace('"', '&quot;') not in stored


def test_bob_offline_decrypts_on_login(server, stacks):
    """Bob's device is offline: Alice's encrypted messages (the first one a
    key exchange, the last without a fallback body) wait in offline
    storage and decrypt when he comes back."""
    (alice, apw), (bob, bpw) = friends(server)

    async def scenario():
        b = stacks.c(bob, bpw, 'c')
        await c_ready(b)
        await b.cmd('disconnect', 'DISCONNECTED')
        a = await stacks.py(alice, apw, 'py').start()
        for i in range(3):
            # the last without the fallback <body/>: stored all the same
            await a.send_encrypted(b.bare, 'while you were away %d' % i,
                                   body=pyo.FALLBACK if i < 2 else None)
        await asyncio.sleep(0.3)
        await b.cmd('connect', 'CONNECTED')
        for i in range(3):
            ev = await b.event('DECRYPTED', kind='message')
            assert ev['body'] == 'while you were away %d' % i, ev
        # and the session works the other way at once
        await b.cmd('send %s back again' % a.bare, 'SENT')
        d = await a.next_decrypted()
        assert d.body == 'back again', d
        await b.quit()
        await a.stop()

    slixutil.run(scenario, timeout=90)


def test_bob_reads_conversation_from_mam(server, stacks):
    """Bob catches up from the archive (no initial presence, so nothing is
    delivered live) and decrypts Alice's messages; Alice's own archive has
    her sent messages as ciphertext she cannot read (not encrypted for the
    sending device), and the ones Bob sent her, which she had decrypted
    live, cannot be decrypted twice (the ratchet keys are gone): a client
    keeps plaintext locally, the server never has it."""
    (alice, apw), (bob, bpw) = friends(server)
    texts = ['archived one', 'archived two', 'archived three']

    async def scenario():
        b = stacks.c(bob, bpw, 'c')
        await c_ready(b)
        await b.cmd('disconnect', 'DISCONNECTED')
        a = await stacks.py(alice, apw, 'py').start()
        for i, t in enumerate(texts):
            await a.send_encrypted(b.bare, t, body=None if i == 1 else pyo.FALLBACK)
        await asyncio.sleep(0.3)
        await b.cmd('connect nopresence', 'CONNECTED')
        await b.cmd('mam %s' % a.bare)
        got = []
        for _ in texts:
            ev = await b.event('DECRYPTED', kind='mam')
            assert ev['from'] == a.bare, ev
            got.append(ev['body'])
        assert got == texts
        done = await b.event('MAMDONE')
        assert done['args'] == [str(len(texts))], done
        # Alice's side of the archive: her sent messages, not for her device
        res = await a.mam(b.bare)
        assert len(res) == len(texts), res
        assert all(r.body is None and r.error for r in res), res
        await b.quit()
        await a.stop()

    slixutil.run(scenario, timeout=90)


def test_carbons_to_alices_second_device(server, stacks):
    """Alice has two python devices with carbons; Bob (C) builds sessions
    with both.  Bob's message reaches both Alice devices; Alice 1's message
    to Bob comes to Alice 2 as a sent carbon, encrypted for it too."""
    (alice, apw), (bob, bpw) = friends(server)
    store2 = pyo.MemStorage()

    async def scenario():
        a1 = await stacks.py(alice, apw, 'one', carbons=True).start()
        a2 = await stacks.py(alice, apw, 'two', storage=store2, carbons=True).start()
        # Alice 1 hears of her new device (+notify to the owner's sessions)
        await py_sees_device(a1, a1.bare, a2.device_id)
        b = stacks.c(bob, bpw, 'c')
        await c_ready(b)
        ev = await b.cmd('fetch %s' % a1.bare, 'FETCHED')
        assert sorted(int(x) for x in ev['args'][1].split(',')) == sorted(
            [a1.device_id, a2.device_id]), ev
        await b.cmd('send %s to both of you' % a1.bare, 'SENT')
        for a in (a1, a2):
            d = await a.next_decrypted()
            assert d.kind in ('message', 'carbon-received'), d
            assert (d.sender, d.body) == (b.bare, 'to both of you'), d
        await a1.refresh(b.bare)
        await a1.send_encrypted(b.bare, 'from my first device')
        assert not a1.encrypt_errors, a1.encrypt_errors
        ev = await b.event('DECRYPTED', kind='message')
        assert ev['body'] == 'from my first device' and ev['sid'] == str(a1.device_id)
        d = await a2.next_decrypted()
        assert (d.kind, d.sender, d.device_id, d.body) == (
            'carbon-sent', a1.bare, a1.device_id, 'from my first device'), d
        await b.quit()
        await a1.stop()
        await a2.stop()

    slixutil.run(scenario, timeout=90)


def test_device_added_later_becomes_reachable(server, stacks):
    """A device that joins later is announced by its device-list update
    (+notify) and gets the next messages: Alice's second python device
    seen by Bob (C), and Bob's second C device seen by Alice (python)."""
    (alice, apw), (bob, bpw) = friends(server)

    async def scenario():
        a1 = await stacks.py(alice, apw, 'one').start()
        b1 = stacks.c(bob, bpw, 'one')
        await c_ready(b1)
        await b1.cmd('fetch %s' % a1.bare, 'FETCHED')
        await a1.refresh(b1.bare)
        # Alice adds a device: Bob's device hears of it and encrypts for it
        a2 = await stacks.py(alice, apw, 'two').start()
        await c_sees_device(b1, a1.bare, a2.device_id)
        sent = await b1.cmd('send %s hello new device' % a1.bare, 'SENT')
        assert sent['keys'] == '2', sent
        for a in (a1, a2):
            d = await a.next_decrypted()
            assert (d.sender, d.body) == (b1.bare, 'hello new device'), d
        # Bob adds a device: Alice's python hears of it (+notify)
        b2 = stacks.c(bob, bpw, 'two')
        b2_dev = await c_ready(b2)
        await py_sees_device(a1, b1.bare, b2_dev)
        assert b2_dev in await a1.devices_of(b1.bare)
        await a1.send_encrypted(b1.bare, 'hello both bobs')
        for b in (b1, b2):
            ev = await b.event('DECRYPTED', body='hello both bobs')
            assert ev['kind'] in ('message', 'carbon-received'), ev
        await b1.quit()
        await b2.quit()
        await a1.stop()
        await a2.stop()

    slixutil.run(scenario, timeout=120)


def test_device_added_while_offline_seen_at_login(server, stacks):
    """Bob (C) is offline when Alice adds a device: at his next login the
    server sends him the device list's last item, and his next message is
    encrypted for the new device too."""
    (alice, apw), (bob, bpw) = friends(server)

    async def scenario():
        a1 = await stacks.py(alice, apw, 'one').start()
        b = stacks.c(bob, bpw, 'c')
        await c_ready(b)
        ev = await b.cmd('fetch %s' % a1.bare, 'FETCHED')
        assert ev['args'][1] == str(a1.device_id), ev
        await b.cmd('disconnect', 'DISCONNECTED')
        a2 = await stacks.py(alice, apw, 'two').start()
        await b.cmd('connect', 'CONNECTED')
        await c_sees_device(b, a1.bare, a2.device_id)
        sent = await b.cmd('send %s seen you at login' % a1.bare, 'SENT')
        assert sent['keys'] == '2', sent
        for a in (a1, a2):
            d = await a.next_decrypted()
            assert (d.sender, d.body) == (b.bare, 'seen you at login'), d
        await b.quit()
        await a1.stop()
        await a2.stop()

    slixutil.run(scenario, timeout=90)


def test_python_omemo2_with_itself(server, stacks):
    """urn:xmpp:omemo:2 (SCE envelope), python-omemo on both ends: the
    same server paths carry the newer namespace's device lists, bundles
    and messages."""
    (alice, apw), (carol, cpw) = friends(server, 'oa', 'oc')

    async def scenario():
        a = await stacks.py(alice, apw, 'py', namespaces=(pyo.NS_TWO,)).start()
        c = await stacks.py(carol, cpw, 'py', namespaces=(pyo.NS_TWO,)).start()
        await a.send_encrypted(c.bare, 'omemo two <works>')
        d = await c.next_decrypted()
        assert (d.namespace, d.body) == (pyo.NS_TWO, 'omemo two <works>'), d
        await c.send_encrypted(a.bare, 'and back')
        d = await a.next_decrypted()
        assert (d.namespace, d.body) == (pyo.NS_TWO, 'and back'), d
        await a.stop()
        await c.stop()

    slixutil.run(scenario, timeout=90)


# ---- with the "E2E required" policy ------------------------------------------

def test_policy_required_refuses_plaintext_passes_omemo(make_server, driver, cbin):
    """mod_e2e_policy with `policy: required`: Bob's (C) plaintext message is
    refused with policy-violation and stored nowhere; encrypted messages
    pass both ways, and so do receipts and chat markers (no body)."""
    need_stacks()
    if not (MODULE_PATH / 'mod_e2e_policy.so').exists():
        pytest.skip('mod_e2e_policy is not built (issue 12 policy module)')
    srv = make_server(driver, modules={'mod_e2e_policy': {'policy': 'required'}})
    st = Stacks(srv, cbin)
    (alice, apw), (bob, bpw) = friends(srv)
    secret = 'plaintext the server must refuse'

    async def scenario():
        a = await st.py(alice, apw, 'py').start()
        b = st.c(bob, bpw, 'c')
        await c_ready(b)
        sent = await b.cmd('plain %s %s' % (a.bare, secret), 'SENT')
        err = await b.event('MSGERROR', id=sent['args'][0])
        assert err['condition'] == 'policy-violation' and err['text'], err
        await a.send_encrypted(b.bare, 'encrypted passes')
        ev = await b.event('DECRYPTED', kind='message')
        assert ev['body'] == 'encrypted passes', ev
        await b.cmd('send %s so does this' % a.bare, 'SENT')
        d = await a.next_decrypted()
        assert d.body == 'so does this', d
        # a receipt and a displayed marker (XEP-0184, XEP-0333): no body
        for xml in ("<received xmlns='urn:xmpp:receipts' id='x1'/>",
                    "<displayed xmlns='urn:xmpp:chat-markers:0' id='x1'/>"):
            m = a.xmpp.make_message(mto=b.bare, mtype='chat')
            m.xml.append(pyo.ET.fromstring(xml))
            m.send()
            ev = await b.event('NOBODY', kind='message')
            assert ev['child'] == pyo.ET.fromstring(xml).tag.split('}')[1], ev
        await b.no_event('PLAIN', 0.5)
        await b.quit()
        await a.stop()

    try:
        slixutil.run(scenario, timeout=90)
    finally:
        st.close()
    rows = '\n'.join(archived(srv, alice) + archived(srv, bob))
    assert 'encrypted' in rows and secret not in rows
    assert not db_rows(srv, "SELECT stanza FROM offline_messages WHERE stanza LIKE '%%%s%%'"
                       % secret)


# ---- a real client: Profanity -------------------------------------------------

def test_profanity_exchanges_omemo_with_python_stack(make_server, driver, cbin):
    """Profanity (Debian's build, libsignal, legacy OMEMO), driven through
    tmux with tests/e2e/test_profanity.py's driver, turns OMEMO on and
    exchanges encrypted messages both ways with the python-omemo stack."""
    need_stacks()
    try:
        from test_profanity import PROFANITY, TMUX, Profanity
        from test_pep_clients import STANZA_LIMIT
    except ImportError as e:
        pytest.skip('the Profanity driver (tests/e2e/test_profanity.py) is '
                    'missing: %s' % e)
    if PROFANITY is None or TMUX is None:
        pytest.skip('profanity or tmux is not installed')
    srv = make_server(driver, max_stanza_size=STANZA_LIMIT)
    st = Stacks(srv, cbin)
    (puser, ppw), (bob, bpw) = friends(srv, 'op', 'ob')
    pbare = '%s@localhost' % puser
    prof = Profanity(srv.dir / 'prof')

    async def blocking(fn, *args):
        return await asyncio.get_event_loop().run_in_executor(None, fn, *args)

    async def scenario():
        await blocking(prof.wait_for, r"Type '/help'")
        prof.send('/connect %s server 127.0.0.1 port %d tls trust'
                  % (pbare, srv.c2s_port))
        await blocking(prof.wait_for, r'Enter password')
        prof.send(ppw)
        await blocking(prof.wait_for, r'logged in successfully')
        await blocking(prof.wait_log, r'Received disco#info response from: localhost')
        prof.send('/omemo trustmode blind')
        prof.send('/omemo gen')
        m = await blocking(prof.wait_for, r'Your Device ID is (\d+)', 60)
        pdev = int(m.group(1))
        b = await st.py(bob, bpw, 'py').start()
        deadline = asyncio.get_event_loop().time() + 20
        while pdev not in await b.devices_of(pbare):
            assert asyncio.get_event_loop().time() < deadline, \
                'Profanity device %d never in its device list' % pdev
            await asyncio.sleep(0.3)
            await b.refresh(pbare)
        # python -> Profanity (a key exchange: Profanity builds the session)
        await b.send_encrypted(pbare, 'hello Profanity from python-omemo')
        # Profanity names the contact by its roster name (the local part)
        await blocking(prof.wait_for, r'<< chat message: %s' % re.escape(bob))
        prof.send('/msg %s' % b.bare)
        await blocking(prof.wait_for, r'hello Profanity from python-omemo')
        # Profanity -> python, encrypted
        # the window is in OMEMO mode already (the incoming message was);
        # /omemo start is what a user types anyway
        prof.send('/omemo start')
        await blocking(prof.wait_for, r'\[OMEMO\]')
        prof.send('hello python-omemo from Profanity')
        d = await b.next_decrypted(timeout=20)
        assert (d.sender, d.namespace, d.body, d.error) == (
            pbare, pyo.NS_OLD, 'hello python-omemo from Profanity', None), d
        screen = prof.screen()
        await b.stop()
        return screen

    try:
        screen = slixutil.run(scenario, timeout=110)
    finally:
        prof.close()
        st.close()
    # the fallback body was never what Profanity showed for our message
    assert pyo.FALLBACK not in screen, screen
    stored = '\n'.join(archived(srv, puser) + archived(srv, bob))
    assert 'hello python-omemo from Profanity' not in stored
    assert 'hello Profanity from python-omemo' not in stored


# ---- the two stacks without a server -----------------------------------------
# The cryptography and the XML of both stacks, checked against each other
# with no server in between (omemo-client --offline; python-omemo with an
# in-memory "PEP"): when a test above fails, this one tells whether the
# stacks or the server are to blame.

def _offline_manager(net, own):
    import omemo
    from omemo.types import TrustLevel

    class Manager(omemo.SessionManager):
        @staticmethod
        async def _upload_bundle(bundle):
            net['bundles'][(bundle.namespace, own, bundle.device_id)] = bundle

        @staticmethod
        async def _download_bundle(ns, bare_jid, device_id):
            try:
                return net['bundles'][(ns, bare_jid, device_id)]
            except KeyError:
                raise omemo.BundleNotFound(str((ns, bare_jid, device_id)))

        @staticmethod
        async def _delete_bundle(ns, device_id):
            net['bundles'].pop((ns, own, device_id), None)

        @staticmethod
        async def _upload_device_list(ns, device_list):
            net['lists'][(ns, own)] = dict(device_list)

        @staticmethod
        async def _download_device_list(ns, bare_jid):
            return dict(net['lists'].get((ns, bare_jid), {}))

        async def _evaluate_custom_trust_level(self, device):
            return TrustLevel.TRUSTED

        async def _make_trust_decision(self, undecided, identifier):
            for d in undecided:
                await self.set_trust(d.bare_jid, d.identity_key, 'trusted')

        @staticmethod
        async def _send_message(message, bare_jid):
            net['sent'].append((message, bare_jid))

    return Manager


def test_stacks_interoperate_without_server(cbin):
    if pyo is None:
        pytest.skip('python-omemo stack unavailable: %s' % PYOMEMO_ERROR)
    import xml.etree.ElementTree as ET
    import oldmemo
    import oldmemo.etree

    class NoServer:
        c2s_port = 1
        cafile = '/dev/null'

    alice, bob = 'alice@offline.test', 'bob@offline.test'
    net = {'bundles': {}, 'lists': {}, 'sent': []}

    def message_xml(frm, enc):
        return ("<message xmlns='jabber:client' type='chat' from='%s/py' to='%s'>%s"
                "</message>" % (frm, bob, ET.tostring(enc, encoding='unicode')))

    async def scenario():
        b = CClient(cbin, NoServer, bob + '/c', 'x', '--offline',
                    sanitizer_report=sanitizer_report)
        ev = await b.cmd('bundle', 'BUNDLE')
        bob_dev = int(ev['args'][0])
        bundle_xml = b.stdout[-1].split(' ', 2)[2]
        net['bundles'][(pyo.NS_OLD, bob, bob_dev)] = oldmemo.etree.parse_bundle(
            ET.fromstring(bundle_xml), bob, bob_dev)
        net['lists'][(pyo.NS_OLD, bob)] = {bob_dev: None}
        store = pyo.MemStorage()
        sm = await _offline_manager(net, alice).create(
            [oldmemo.Oldmemo(store)], store, alice, None, 'trusted')
        own, _ = await sm.get_own_device_information()
        await sm.refresh_device_list(pyo.NS_OLD, bob)
        # python -> C: a key exchange, then ratchet messages
        for text in ('first <from> python & co', 'second', 'th\u00efrd'):
            msgs, _ = await sm.encrypt(frozenset([bob]), {pyo.NS_OLD: text.encode()})
            enc = oldmemo.etree.serialize_message(next(iter(msgs)))
            await b.cmd('inject ' + message_xml(alice, enc))
            ev = await b.event('DECRYPTED')
            assert (ev['from'], ev['sid'], ev['body']) == (alice, str(own.device_id), text), ev
        # C -> python (the session Bob got from Alice's key exchange)
        await b.cmd('devices %s %d' % (alice, own.device_id), 'DEVICELIST')
        for text in ('reply from <C>', 'and again'):
            ev = await b.cmd('encrypt %s %s' % (alice, text), 'STANZA')
            stanza = ET.fromstring(b.stdout[-1].split(' ', 1)[1])
            enc = stanza.find('{%s}encrypted' % pyo.NS_OLD)
            m = await oldmemo.etree.parse_message(enc, bob, alice, sm)
            plain, dev, _ = await sm.decrypt(m)
            assert (plain.decode(), dev.device_id) == (text, bob_dev)
        # C starts a session from python's bundle (C's key exchange)
        store2 = pyo.MemStorage()
        carol = 'carol@offline.test'
        sm2 = await _offline_manager(net, carol).create(
            [oldmemo.Oldmemo(store2)], store2, carol, None, 'trusted')
        own2, _ = await sm2.get_own_device_information()
        cb = net['bundles'][(pyo.NS_OLD, carol, own2.device_id)]
        await b.cmd('session %s %d %s' % (carol, own2.device_id, ET.tostring(
            oldmemo.etree.serialize_bundle(cb), encoding='unicode')), 'SESSION')
        await b.cmd('devices %s %d' % (carol, own2.device_id), 'DEVICELIST')
        await b.cmd('encrypt %s hello carol' % carol, 'STANZA')
        stanza = ET.fromstring(b.stdout[-1].split(' ', 1)[1])
        enc = stanza.find('{%s}encrypted' % pyo.NS_OLD)
        assert enc.find('{%s}header/{%s}key' % (pyo.NS_OLD, pyo.NS_OLD)).get('prekey') == 'true'
        m = await oldmemo.etree.parse_message(enc, bob, carol, sm2)
        plain, dev, _ = await sm2.decrypt(m)
        assert plain == b'hello carol'
        await b.quit()

    slixutil.run(scenario, timeout=60)
