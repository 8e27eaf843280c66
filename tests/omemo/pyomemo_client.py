"""Stack 1 of the OMEMO tests: python-omemo (Debian's python3-omemo 1.0 with
the oldmemo and twomemo backends) glued to slixmpp.

python-omemo does the cryptography and the session bookkeeping; it leaves
two things to its user, and this file is them:
  - a Storage (MemStorage: a dict, kept by the test so that a device
    survives a disconnect, like a client's database would);
  - the XMPP side of SessionManager: publishing and fetching bundles and
    device lists over PEP (XEP-0163/XEP-0060, with the publish-options of
    XEP-0384 §5.3.2) and sending the <encrypted/> message XML.
Incoming stanzas (live, carbons, MAM results, +notify device list events)
are read from slixmpp's raw XML and decrypted one at a time (a session's
ratchet must not be advanced by two decryptions at once).

    store = MemStorage()
    alice = OmemoClient(jid, password, cafile, port, store)
    await alice.start()                  # log in, publish device + bundle
    await alice.send_encrypted(bob_bare, 'hi')
    ev = await alice.next_decrypted()    # Decrypted(kind, sender, ...)

Namespaces: legacy 'eu.siacs.conversations.axolotl' (the one the C stack
speaks too) and 'urn:xmpp:omemo:2' (python with python only).  Trust:
blind trust (every device is trusted), which is what a test wants.
"""

import asyncio
import base64
import secrets
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional

import omemo
import oldmemo
import oldmemo.etree
import twomemo
import twomemo.etree
from omemo.storage import Just, Maybe, Nothing
from omemo.types import DeviceInformation, TrustLevel
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'e2e'))
import slixutil  # noqa: E402  (the test harness's slixmpp client)

NS_OLD = oldmemo.oldmemo.NAMESPACE          # eu.siacs.conversations.axolotl
NS_TWO = twomemo.twomemo.NAMESPACE          # urn:xmpp:omemo:2
NS_PUBSUB = 'http://jabber.org/protocol/pubsub'
NS_EVENT = 'http://jabber.org/protocol/pubsub#event'
NS_DATA = 'jabber:x:data'
NS_CARBONS = 'urn:xmpp:carbons:2'
NS_FORWARD = 'urn:xmpp:forward:0'
NS_MAM = 'urn:xmpp:mam:2'
NS_HINTS = 'urn:xmpp:hints'
NS_SCE = 'urn:xmpp:sce:1'
NS_CLIENT = 'jabber:client'
FALLBACK = 'I sent you an OMEMO encrypted message but your client does not seem to support that.'

DEVICES_NODE = {NS_OLD: NS_OLD + '.devicelist', NS_TWO: 'urn:xmpp:omemo:2:devices'}


def bundle_node(ns, device_id):
    """(node, item id) of a device's bundle (XEP-0384 legacy 0.3 §4.3 and 0.8 §5.3.2)."""
    if ns == NS_OLD:
        return '%s.bundles:%d' % (NS_OLD, device_id), 'current'
    return 'urn:xmpp:omemo:2:bundles', str(device_id)


def bare(jid):
    return str(jid).split('/')[0]


class MemStorage(omemo.Storage):
    """python-omemo's key/value storage in a dict (JSON values).  The test
    keeps the object to bring a device back after a disconnect."""

    def __init__(self):
        super().__init__(disable_cache=True)
        self.data: Dict[str, Any] = {}

    async def _load(self, key: str) -> Maybe[Any]:
        return Just(self.data[key]) if key in self.data else Nothing()

    async def _store(self, key: str, value: Any) -> None:
        self.data[key] = value

    async def _delete(self, key: str) -> None:
        self.data.pop(key, None)


class Decrypted(NamedTuple):
    """One decrypted (or undecryptable) OMEMO message.
    kind: 'message' (live), 'carbon-received', 'carbon-sent', 'mam'.
    body: the plaintext, None for an empty (key exchange/heartbeat) message.
    error: the exception text when decryption failed (body None).
    empty: the message had no payload (key exchange completion, heartbeat;
    a sent carbon of one is normally not for this device)."""
    kind: str
    sender: str
    device_id: int
    namespace: str
    body: Optional[str]
    error: Optional[str]
    stanza_id: Optional[str]
    empty: bool = False


def _publish_options(access='open', max_items=None):
    x = ET.Element('{%s}x' % NS_DATA, type='submit')
    fields = [('FORM_TYPE', 'http://jabber.org/protocol/pubsub#publish-options'),
              ('pubsub#access_model', access)]
    if max_items is not None:
        fields.append(('pubsub#max_items', str(max_items)))
    for var, value in fields:
        f = ET.SubElement(x, '{%s}field' % NS_DATA, var=var)
        if var == 'FORM_TYPE':
            f.set('type', 'hidden')
        ET.SubElement(f, '{%s}value' % NS_DATA).text = value
    opts = ET.Element('{%s}publish-options' % NS_PUBSUB)
    opts.append(x)
    return opts


def _sce_envelope(text):
    env = ET.Element('{%s}envelope' % NS_SCE)
    content = ET.SubElement(env, '{%s}content' % NS_SCE)
    ET.SubElement(content, '{%s}body' % NS_CLIENT).text = text
    ET.SubElement(env, '{%s}rpad' % NS_SCE).text = secrets.token_hex(secrets.randbelow(8) + 1)
    return ET.tostring(env)


def _sce_body(data):
    env = ET.fromstring(data)
    body = env.find('{%s}content/{%s}body' % (NS_SCE, NS_CLIENT))
    return body.text if body is not None else None


class OmemoClient:
    """One OMEMO device: a slixmpp session plus a python-omemo SessionManager."""

    def __init__(self, jid, password, cafile, port, storage=None,
                 namespaces=(NS_OLD,), carbons=False, label=None):
        self.jid = jid
        self.bare = bare(jid)
        self.password = password
        self.cafile = cafile
        self.port = port
        self.storage = storage if storage is not None else MemStorage()
        self.namespaces = tuple(namespaces)
        self.carbons = carbons
        self.label = label
        self.xmpp = None
        self.sm = None
        self.events: asyncio.Queue = asyncio.Queue()
        self.device_list_events: asyncio.Queue = asyncio.Queue()
        self._inbox: asyncio.Queue = asyncio.Queue()
        self._worker = None
        self._mam: Dict[str, list] = {}
        self.encrypt_errors = frozenset()    # of the last send_encrypted
        self.worker_errors = []              # device list events it could not use

    # ---- the XMPP side python-omemo asks for ---------------------------

    async def _iq(self, type_, child, to=None, timeout=10):
        # make_iq's default id is '0': concurrent iqs would collide
        iq = self.xmpp.make_iq(id=self.xmpp.new_id(), ito=to, itype=type_)
        iq.xml.append(child)
        return await iq.send(timeout=timeout)

    async def _publish(self, node, item_id, payload, options=True):
        def build(with_options):
            ps = ET.Element('{%s}pubsub' % NS_PUBSUB)
            pub = ET.SubElement(ps, '{%s}publish' % NS_PUBSUB, node=node)
            item = ET.SubElement(pub, '{%s}item' % NS_PUBSUB, id=item_id)
            item.append(payload)
            if with_options:
                ps.append(_publish_options(max_items='max' if node.endswith(':bundles') else None))
            return ps
        try:
            await self._iq('set', build(options))
        except IqError as e:
            # XEP-0060 §7.1.5: precondition-not-met when an existing node's
            # configuration differs; XEP-0384 clients then publish without.
            if not options or e.iq['error']['condition'] not in (
                    'conflict', 'precondition-not-met', 'feature-not-implemented',
                    'bad-request'):
                raise
            await self._iq('set', build(False))

    async def _items(self, jid, node):
        ps = ET.Element('{%s}pubsub' % NS_PUBSUB)
        ET.SubElement(ps, '{%s}items' % NS_PUBSUB, node=node)
        try:
            res = await self._iq('get', ps, to=jid)
        except IqError as e:
            if e.iq['error']['condition'] == 'item-not-found':
                return []
            raise
        return list(res.xml.iter('{%s}item' % NS_PUBSUB))

    def _manager_class(self):
        me = self

        class Manager(omemo.SessionManager):
            @staticmethod
            async def _upload_bundle(bundle):
                ns = bundle.namespace
                node, item_id = bundle_node(ns, bundle.device_id)
                ser = (oldmemo.etree.serialize_bundle if ns == NS_OLD
                       else twomemo.etree.serialize_bundle)
                try:
                    await me._publish(node, item_id, ser(bundle))
                except (IqError, IqTimeout) as e:
                    raise omemo.BundleUploadFailed(str(e)) from e

            @staticmethod
            async def _download_bundle(ns, bare_jid, device_id):
                node, item_id = bundle_node(ns, device_id)
                try:
                    items = await me._items(bare_jid, node)
                except (IqError, IqTimeout) as e:
                    raise omemo.BundleDownloadFailed(str(e)) from e
                for item in items:
                    if ns == NS_OLD or item.get('id') == item_id:
                        el = item.find('{%s}bundle' % ns)
                        if el is not None:
                            parse = (oldmemo.etree.parse_bundle if ns == NS_OLD
                                     else twomemo.etree.parse_bundle)
                            return parse(el, bare_jid, device_id)
                raise omemo.BundleNotFound('%s/%s: no bundle for %d' % (bare_jid, ns, device_id))

            @staticmethod
            async def _delete_bundle(ns, device_id):
                node, item_id = bundle_node(ns, device_id)
                ps = ET.Element('{%s}pubsub' % NS_PUBSUB)
                r = ET.SubElement(ps, '{%s}retract' % NS_PUBSUB, node=node, notify='true')
                ET.SubElement(r, '{%s}item' % NS_PUBSUB, id=item_id)
                try:
                    await me._iq('set', ps)
                except IqError:
                    pass          # absent already: nothing to delete
                except IqTimeout as e:
                    raise omemo.BundleDeletionFailed(str(e)) from e

            @staticmethod
            async def _upload_device_list(ns, device_list):
                ser = (oldmemo.etree.serialize_device_list if ns == NS_OLD
                       else twomemo.etree.serialize_device_list)
                try:
                    await me._publish(DEVICES_NODE[ns], 'current', ser(device_list))
                except (IqError, IqTimeout) as e:
                    raise omemo.DeviceListUploadFailed(str(e)) from e

            @staticmethod
            async def _download_device_list(ns, bare_jid):
                try:
                    items = await me._items(bare_jid, DEVICES_NODE[ns])
                except (IqError, IqTimeout) as e:
                    raise omemo.DeviceListDownloadFailed(str(e)) from e
                for item in items:
                    el = item.find('{%s}%s' % (ns, 'list' if ns == NS_OLD else 'devices'))
                    if el is not None:
                        parse = (oldmemo.etree.parse_device_list if ns == NS_OLD
                                 else twomemo.etree.parse_device_list)
                        return parse(el)
                return {}

            async def _evaluate_custom_trust_level(self, device: DeviceInformation):
                return (TrustLevel.DISTRUSTED if device.trust_level_name == 'distrusted'
                        else TrustLevel.TRUSTED)

            async def _make_trust_decision(self, undecided, identifier):
                for d in undecided:
                    await self.set_trust(d.bare_jid, d.identity_key, 'trusted')

            @staticmethod
            async def _send_message(message, bare_jid):
                # empty OMEMO messages (session completion, heartbeats)
                me._send_stanza(bare_jid, message, body=None)

        return Manager

    # ---- messages ------------------------------------------------------

    def _send_stanza(self, to, message, body=FALLBACK, extra=()):
        ser = (oldmemo.etree.serialize_message if message.namespace == NS_OLD
               else twomemo.etree.serialize_message)
        msg = self.xmpp.make_message(mto=to, mtype='chat')
        msg['id'] = 'om-' + secrets.token_hex(6)
        if body is not None:
            msg['body'] = body
        msg.xml.append(ser(message))
        # XEP-0384 §7 / XEP-0334: archive and store even without a body
        ET.SubElement(msg.xml, '{%s}store' % NS_HINTS)
        for el in extra:
            msg.xml.append(el)
        msg.send()
        return msg['id']

    async def send_encrypted(self, to, text, namespace=None, body=FALLBACK):
        """Encrypts text for every device of `to` and this account's other
        devices, sends it; returns the stanza id."""
        ns = namespace or self.namespaces[0]
        if not await self.devices_of(to):
            # python-omemo encrypts for the device lists it has; a contact
            # never seen (no +notify yet) is read from the server first
            await self.refresh(to, ns)
        plain = text.encode() if ns == NS_OLD else _sce_envelope(text)
        messages, errors = await self.sm.encrypt(
            frozenset([bare(to)]), {n: plain for n in self.namespaces}, [ns])
        self.encrypt_errors = errors
        msg = next(m for m in messages if m.namespace == ns)
        return self._send_stanza(bare(to), msg, body=body)

    async def refresh(self, jid, ns=None):
        """Re-reads jid's device list from the server."""
        await self.sm.refresh_device_list(ns or self.namespaces[0], bare(jid))

    async def devices_of(self, jid):
        info = await self.sm.get_device_information(bare(jid))
        return {d.device_id for d in info}

    @property
    def device_id(self):
        return self._device_id

    def _on_message(self, stanza):
        """slixmpp handler: sorts the raw XML into the inbox (decryption
        happens in order in _work)."""
        el = stanza.xml
        ev = el.find('{%s}event' % NS_EVENT)
        if ev is not None:
            self._inbox.put_nowait(('event', bare(el.get('from') or self.bare), ev, None))
            return
        res = el.find('{%s}result' % NS_MAM)
        if res is not None:
            fwd = res.find('{%s}forwarded/{%s}message' % (NS_FORWARD, NS_CLIENT))
            if fwd is not None and res.get('queryid') in self._mam:
                self._mam[res.get('queryid')].append((fwd, res.get('id')))
            return
        for kind in ('received', 'sent'):
            c = el.find('{%s}%s' % (NS_CARBONS, kind))
            if c is not None:
                fwd = c.find('{%s}forwarded/{%s}message' % (NS_FORWARD, NS_CLIENT))
                if fwd is not None and bare(el.get('from') or self.bare) == self.bare:
                    self._inbox.put_nowait(('carbon-' + kind, None, fwd, None))
                return
        self._inbox.put_nowait(('message', None, el, None))

    async def _decrypt_el(self, kind, el, stanza_id=None):
        """A Decrypted for a <message/> element, or None if not OMEMO."""
        sender = bare(el.get('from') or self.bare)
        for ns in self.namespaces:
            enc = el.find('{%s}encrypted' % ns)
            if enc is None:
                continue
            try:
                if ns == NS_OLD:
                    m = await oldmemo.etree.parse_message(enc, sender, self.bare, self.sm)
                else:
                    m = twomemo.etree.parse_message(enc, sender)
                plain, device, _ = await self.sm.decrypt(m)
            except Exception as e:  # reported to the test, which decides
                sid = enc.find('{%s}header' % ns)
                return Decrypted(kind, sender, int(sid.get('sid')) if sid is not None else 0,
                                 ns, None, '%s: %s' % (type(e).__name__, e), stanza_id,
                                 enc.find('{%s}payload' % ns) is None)
            body = None
            if plain is not None:
                body = plain.decode() if ns == NS_OLD else _sce_body(plain)
            return Decrypted(kind, sender, device.device_id, ns, body, None, stanza_id,
                             plain is None)
        return None

    async def _work(self):
        while True:
            kind, frm, el, _ = await self._inbox.get()
            if kind == 'event':
                for items in el.iter('{%s}items' % NS_EVENT):
                    for ns, node in DEVICES_NODE.items():
                        if items.get('node') != node or ns not in self.namespaces:
                            continue
                        for item in items.iter('{%s}item' % NS_EVENT):
                            lst = item.find('{%s}%s' % (ns, 'list' if ns == NS_OLD else 'devices'))
                            if lst is None:
                                continue
                            parse = (oldmemo.etree.parse_device_list if ns == NS_OLD
                                     else twomemo.etree.parse_device_list)
                            try:
                                dl = parse(lst)
                                await self.sm.update_device_list(ns, frm, dl)
                            except Exception as e:   # a bad list must not stop the worker
                                self.worker_errors.append('%s: %r' % (frm, e))
                                continue
                            self.device_list_events.put_nowait((frm, ns, set(dl)))
                continue
            d = await self._decrypt_el(kind, el)
            if d is not None:
                self.events.put_nowait(d)

    async def next_decrypted(self, timeout=10.0, with_body=True):
        """The next decrypted message, or the next that failed to decrypt
        (skipping empty OMEMO messages, even undecryptable ones, unless
        with_body is False)."""
        while True:
            try:
                d = await asyncio.wait_for(self.events.get(), timeout)
            except asyncio.TimeoutError:
                raise AssertionError('%s: no OMEMO message within %.0f s'
                                     % (self.jid, timeout))
            if not with_body or not d.empty:
                return d

    async def next_device_list(self, frm, timeout=10.0):
        while True:
            try:
                ev = await asyncio.wait_for(self.device_list_events.get(), timeout)
            except asyncio.TimeoutError:
                raise AssertionError('%s: no device list event from %s within %.0f s (%s)'
                                     % (self.jid, frm, timeout, self.worker_errors))
            if ev[0] == bare(frm):
                return ev

    async def mam(self, with_jid=None, timeout=10.0):
        """Queries this account's archive (XEP-0313), decrypts each result
        in archive order; returns the list of Decrypted (non-OMEMO results
        are left out)."""
        qid = 'q' + secrets.token_hex(4)
        self._mam[qid] = []
        q = ET.Element('{%s}query' % NS_MAM, queryid=qid)
        if with_jid:
            x = ET.SubElement(q, '{%s}x' % NS_DATA, type='submit')
            for var, value in (('FORM_TYPE', NS_MAM), ('with', bare(with_jid))):
                f = ET.SubElement(x, '{%s}field' % NS_DATA, var=var)
                if var == 'FORM_TYPE':
                    f.set('type', 'hidden')
                ET.SubElement(f, '{%s}value' % NS_DATA).text = value
        await self._iq('set', q, timeout=timeout)
        await asyncio.sleep(0)   # results are queued before the iq result
        out = []
        for el, sid in self._mam.pop(qid):
            d = await self._decrypt_el('mam', el, sid)
            if d is not None:
                out.append(d)
        return out

    # ---- life cycle ----------------------------------------------------

    async def start(self, presence=True, timeout=15.0):
        """Logs in, enables carbons if asked, announces +notify for the
        device lists (XEP-0115 caps, which the server verifies), creates or
        reloads the SessionManager (publishing bundle and device list)."""
        x = slixutil.Client(self.jid, self.password, self.cafile, self.port)
        self.xmpp = x
        x.register_plugin('xep_0115')
        for ns in self.namespaces:
            x['xep_0030'].add_feature(DEVICES_NODE[ns])
            x['xep_0030'].add_feature(DEVICES_NODE[ns] + '+notify')
        # slixmpp's 'message' event is only for messages with a <body>:
        # key exchanges, heartbeats, MAM results and PEP events have none
        x.register_handler(Callback('omemo-messages', MatchXPath('{%s}message' % NS_CLIENT),
                                    self._on_message))
        await x.start(timeout=timeout, presence=False)
        if self.carbons:
            await self._iq('set', ET.Element('{%s}enable' % NS_CARBONS))
        self._worker = asyncio.ensure_future(self._work())
        backends = []
        for ns in self.namespaces:
            backends.append(oldmemo.Oldmemo(self.storage) if ns == NS_OLD
                            else twomemo.Twomemo(self.storage))
        self.sm = await self._manager_class().create(
            backends, self.storage, self.bare, self.label, 'trusted')
        own, _ = await self.sm.get_own_device_information()
        self._device_id = own.device_id
        await self.sm.after_history_sync()
        if presence:
            await x['xep_0115'].update_caps()
            x.send_presence()
        return self

    async def stop(self):
        if self._worker:
            self._worker.cancel()
            self._worker = None
        if self.xmpp:
            await self.xmpp.stop()
            if self.xmpp in slixutil.ALL_SLIX:
                slixutil.ALL_SLIX.remove(self.xmpp)
            self.xmpp = None


def b64(data):
    return base64.b64encode(data).decode()
