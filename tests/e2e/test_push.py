"""mod_push: push notifications (XEP-0357).

The app server is a real XMPP component (slixmpp.ComponentXMPP) on the
server's component port, running its own event loop in a thread; the users
are raw clients.  It answers every publish (with a result, or with an
error when told to) and hands what it received to the test."""

import asyncio
import os
import queue
import threading
import time
import xml.etree.ElementTree as ET

import pytest
import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from conftest import COMPONENT, COMPONENT_SECRET, db
from rawxmpp import NS_DISCO_INFO, local, new_id, stanza_error, to_str

NS_PUSH = 'urn:xmpp:push:0'
NS_PUBSUB = 'http://jabber.org/protocol/pubsub'
NS_XDATA = 'jabber:x:data'
NS_COMPONENT = 'jabber:component:accept'
NS_OMEMO = 'eu.siacs.conversations.axolotl'
NS_CHATSTATES = 'http://jabber.org/protocol/chatstates'
NS_SM = 'urn:xmpp:sm:3'
PUBLISH_OPTIONS = 'http://jabber.org/protocol/pubsub#publish-options'
OTHER_APP = 'other@' + COMPONENT      # a second push service JID


# ---- the app server ------------------------------------------------------

class AppServer(slixmpp.ComponentXMPP):
    def __init__(self, owner, port):
        super().__init__(COMPONENT, COMPONENT_SECRET, '127.0.0.1', port)
        self.owner = owner
        self.ready = asyncio.get_event_loop().create_future()
        self.register_handler(Callback(
            'push publish',
            MatchXPath('{%s}iq/{%s}pubsub' % (NS_COMPONENT, NS_PUBSUB)),
            self._on_publish))
        self.add_event_handler('session_start', self._on_start)
        self.add_event_handler('stream_error', self._on_failure)
        self.add_event_handler('disconnected', self._on_failure)
        self.add_event_handler('connection_failed', self._on_failure)

    def _on_start(self, _ev):
        if not self.ready.done():
            self.ready.set_result(True)

    def _on_failure(self, why=None):
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(repr(why)))

    def _on_publish(self, iq):
        self.owner.received.put(parse_publish(iq.xml))
        if iq['type'] != 'set':
            return
        reply = iq.reply(clear=True)
        if self.owner.fail:
            reply['type'] = 'error'
            reply['error']['type'] = 'cancel'
            reply['error']['condition'] = 'item-not-found'
        reply.send()


class App:
    """The app server in a thread.  received: parsed publishes; fail: answer
    publishes with an error."""

    def __init__(self, server):
        self.port = server.component_port
        self.received = queue.Queue()
        self.fail = False
        self._started = threading.Event()
        self._error = None
        self._loop = None
        self._stop = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._started.wait(30) or self._error:
            raise AssertionError('the app server did not connect: %s' % self._error)

    def _run(self):
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except Exception as e:  # reported by __init__
            self._error = repr(e)
            self._started.set()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    async def _main(self):
        self._stop = asyncio.get_event_loop().create_future()
        # A component of an earlier test may still be connected: the
        # server answers <conflict/> until it has noticed that it is gone.
        for attempt in range(50):
            comp = AppServer(self, self.port)
            comp.connect('127.0.0.1', self.port)
            try:
                await asyncio.wait_for(asyncio.shield(comp.ready), 10)
                break
            except (ConnectionError, asyncio.TimeoutError) as e:
                comp.abort()
                if attempt == 49:
                    raise AssertionError('component login failed: %r' % e)
                await asyncio.sleep(0.2)
        self._started.set()
        await self._stop
        comp.abort()

    def next(self, timeout=10.0):
        try:
            return self.received.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError('no push notification within %.0f s' % timeout)

    def nothing(self, seconds=0.5):
        try:
            got = self.received.get(timeout=seconds)
        except queue.Empty:
            return
        raise AssertionError('unexpected push notification: %r' % (got,))

    def close(self):
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(
                lambda: self._stop.done() or self._stop.set_result(None))
        self._thread.join(10)


def parse_publish(iq):
    """{'to', 'from', 'id', 'node', 'fields', 'options', 'count'} of a
    publish iq (an ElementTree element)."""
    def form(x):
        if x is None:
            return None
        return {f.get('var'): f.findtext('{%s}value' % NS_XDATA)
                for f in x.findall('{%s}field' % NS_XDATA)}
    pub = iq.find('{%s}pubsub/{%s}publish' % (NS_PUBSUB, NS_PUBSUB))
    note = (pub.find('{%s}item/{%s}notification' % (NS_PUBSUB, NS_PUSH))
            if pub is not None else None)
    x = note.find('{%s}x' % NS_XDATA) if note is not None else None
    opts = iq.find('{%s}pubsub/{%s}publish-options/{%s}x'
                   % (NS_PUBSUB, NS_PUBSUB, NS_XDATA))
    return {'to': iq.get('to'), 'from': iq.get('from'), 'id': iq.get('id'),
            'type': iq.get('type'),
            'node': pub.get('node') if pub is not None else None,
            'form_type': x.get('type') if x is not None else None,
            'fields': form(x), 'options': form(opts),
            'xml': ET.tostring(iq, encoding='unicode')}


@pytest.fixture
def app(server):
    a = App(server)
    yield a
    a.close()


@pytest.fixture
def private(make_server, driver):
    """A private server and its app server: make(options) -> (srv, app)."""
    made = []

    def make(**options):
        srv = make_server(driver, modules={'mod_push': options})
        a = App(srv)
        made.append(a)
        return srv, a
    yield make
    for a in made:
        a.close()


# ---- helpers -------------------------------------------------------------

def enable(c, jid=COMPONENT, node='n1', secret=None, expect='result'):
    form = ''
    if secret is not None:
        form = ("<x xmlns='%s' type='submit'>"
                "<field var='FORM_TYPE'><value>%s</value></field>"
                "<field var='secret'><value>%s</value></field></x>"
                % (NS_XDATA, PUBLISH_OPTIONS, secret))
    node_attr = " node='%s'" % node if node is not None else ''
    r = c.iq('set', "<enable xmlns='%s' jid='%s'%s>%s</enable>"
             % (NS_PUSH, jid, node_attr, form))
    assert r.get('type') == expect, to_str(r)
    return r


def disable(c, jid=COMPONENT, node=None):
    node_attr = " node='%s'" % node if node is not None else ''
    r = c.iq('set', "<disable xmlns='%s' jid='%s'%s/>" % (NS_PUSH, jid, node_attr))
    assert r.get('type') == 'result', to_str(r)


def wait_offline(server, bare, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        out = server.ctl('connected_users', expect=0).stdout.split()
        if not any(j.startswith(bare + '/') for j in out):
            return
        assert time.monotonic() < deadline, '%s still connected: %s' % (bare, out)
        time.sleep(0.02)


def go_offline(server, c, user):
    c.send('</stream:stream>')
    wait_offline(server, '%s@localhost' % user)


def registered_user(server, **kw):
    """A user with push enabled at the app server, then offline."""
    user, pw = server.new_user(prefix='push')
    c = server.login(user, pw, resource='phone')
    enable(c, **kw)
    go_offline(server, c, user)
    return user, pw


def sender(server):
    user, pw = server.new_user(prefix='pfrom')
    c = server.login(user, pw, resource='desk')
    return c




def registrations(server, user):
    assert user.isalnum()
    return int(db(server, "SELECT count(*) FROM user_kv WHERE ns = 'push' "
                          "AND host = 'localhost' AND username = '%s'" % user))


def check_summary(n, count, frm, body=None, node='n1', to=COMPONENT):
    assert n['type'] == 'set' and n['from'] == 'localhost', n['xml']
    assert n['to'] == to and n['node'] == node, n['xml']
    f = n['fields']
    assert f is not None and f.get('FORM_TYPE') == 'urn:xmpp:push:summary', n['xml']
    assert n['form_type'] == 'submit', n['xml']
    assert f.get('message-count') == str(count), n['xml']
    assert f.get('last-message-sender') == frm, n['xml']
    assert f.get('last-message-body') == body, n['xml']


# ---- tests ---------------------------------------------------------------

def test_feature_advertised(server, user):
    """XEP-0357 §4.1: on the account's bare JID, to its owner."""
    name, pw = user
    c = server.login(name, pw)
    r = c.iq('get', "<query xmlns='%s'/>" % NS_DISCO_INFO,
             to='%s@localhost' % name)
    feats = [f.get('var') for f in r.iter('{%s}feature' % NS_DISCO_INFO)]
    assert NS_PUSH in feats, feats


def test_offline_user_notified_with_count_and_sender(server, app):
    user, pw = registered_user(server, secret='s3cr3t')
    b = sender(server)
    # neither chat states alone, nor headlines wake a phone; the body does
    b.send("<message to='%s@localhost' type='chat'><active xmlns='%s'/></message>"
           % (user, NS_CHATSTATES))
    b.send("<message to='%s@localhost' type='headline'><body>news</body></message>"
           % user)
    b.message('%s@localhost' % user, 'are you there?')
    n = app.next()
    check_summary(n, 1, b.jid)    # no body by default
    assert n['options'] == {'FORM_TYPE': PUBLISH_OPTIONS, 'secret': 's3cr3t'}, n['xml']
    assert 'are you there' not in n['xml']
    app.nothing()


def test_include_body_and_encrypted(private):
    srv, app = private(include_body=True, min_interval=0)
    user, pw = registered_user(srv)
    b = sender(srv)
    b.message('%s@localhost/phone' % user, 'hello <there> & you')
    check_summary(app.next(), 1, b.jid, body='hello <there> & you')
    # an encrypted message: never its (fallback) body
    b.send("<message to='%s@localhost' type='chat'><body>I sent you an OMEMO "
           "message</body><encrypted xmlns='%s'><header sid='1'/><payload>AAAA"
           "</payload></encrypted></message>" % (user, NS_OMEMO))
    n = app.next()
    check_summary(n, 1, b.jid)
    assert 'OMEMO' not in n['xml']
    # a long body is cut
    b.message('%s@localhost' % user, 'x' * 3000)
    n = app.next()
    assert n['fields']['last-message-body'] == 'x' * 1024, n['xml']


def test_disable_stops_notifications(private):
    server, app = private(min_interval=0)
    user, pw = server.new_user(prefix='push')
    c = server.login(user, pw, resource='phone')
    enable(c, node='n1')
    enable(c, node='n2')
    enable(c, jid=OTHER_APP, node='keep')
    disable(c, node='n1')
    go_offline(server, c, user)
    b = sender(server)
    b.message('%s@localhost' % user, 'one')
    got = sorted((n['to'], n['node']) for n in (app.next(), app.next()))
    assert got == [(COMPONENT, 'n2'), (OTHER_APP, 'keep')], got
    app.nothing()
    # disable without a node: every node of that service
    c = server.login(user, pw, resource='phone')
    disable(c)
    go_offline(server, c, user)
    assert registrations(server, user) == 1
    b.message('%s@localhost' % user, 'two')
    n = app.next()
    assert (n['to'], n['node']) == (OTHER_APP, 'keep'), n['xml']
    app.nothing()


def test_only_the_owner_enables(server, app):
    user, pw = server.new_user(prefix='push')
    other, opw = server.new_user(prefix='push')
    o = server.login(other, opw)
    r = o.iq('set', "<enable xmlns='%s' jid='%s' node='x'/>" % (NS_PUSH, COMPONENT),
             to='%s@localhost' % user)
    assert r.get('type') == 'error', to_str(r)
    assert registrations(server, user) == 0
    # malformed requests
    c = server.login(user, pw)
    r = enable(c, node=None, expect='error')
    assert stanza_error(r)[1] == 'bad-request', to_str(r)
    r = c.iq('set', "<enable xmlns='%s' node='x'/>" % NS_PUSH)
    assert stanza_error(r)[1] == 'bad-request', to_str(r)
    r = c.iq('set', "<enable xmlns='%s' jid='a@b@c' node='x'/>" % NS_PUSH)
    assert stanza_error(r)[1] == 'jid-malformed', to_str(r)
    assert registrations(server, user) == 0


def test_max_registrations(private):
    srv, app = private(max_registrations=2)
    user, pw = srv.new_user(prefix='push')
    c = srv.login(user, pw)
    enable(c, node='a')
    enable(c, node='b')
    r = enable(c, node='c', expect='error')
    assert stanza_error(r)[1] == 'resource-constraint', to_str(r)
    # re-enabling an existing one (new options) is not a new registration
    enable(c, node='b', secret='new')
    assert registrations(srv, user) == 2


def test_app_server_error_disables(private):
    srv, app = private(min_interval=0)
    app.fail = True
    user, pw = registered_user(srv, node='gone')
    b = sender(srv)
    b.message('%s@localhost' % user, 'first')
    check_summary(app.next(), 1, b.jid, node='gone')
    deadline = time.monotonic() + 10
    while registrations(srv, user) != 0:
        assert time.monotonic() < deadline, 'registration still stored'
        time.sleep(0.05)
    b.message('%s@localhost' % user, 'second')
    b.ping()
    app.nothing(1.0)


def test_rate_limit_coalesces(private):
    srv, app = private(min_interval=2)
    user, pw = registered_user(srv)
    b = sender(srv)
    c = sender(srv)
    b.message('%s@localhost' % user, 'm1')
    t0 = time.monotonic()
    check_summary(app.next(), 1, b.jid)
    b.message('%s@localhost' % user, 'm2')
    b.message('%s@localhost' % user, 'm3')
    b.ping()    # routed before c's: c's is the last message
    c.message('%s@localhost' % user, 'm4')
    c.ping()
    app.nothing(1.0)
    n = app.next(timeout=5)
    waited = time.monotonic() - t0
    check_summary(n, 3, c.jid)
    assert waited >= 1.5, waited
    app.nothing(2.5)   # nothing counted in the second interval


def test_no_notification_while_online(server, app):
    user, pw = server.new_user(prefix='push')
    c = server.login(user, pw, resource='phone')
    enable(c)
    c.presence()
    c.ping()
    b = sender(server)
    b.message('%s@localhost' % user, 'you are online')
    c.recv_stanza('message', **{'from': b.jid})
    go_offline(server, c, user)
    # Had the first message been published, this one would wait for the
    # end of the rate-limit interval (5 s) and count 2.
    d = sender(server)
    d.message('%s@localhost' % user, 'now you are not')
    # (A wrong publish fails the count or the sender, not the time.)
    check_summary(app.next(timeout=20), 1, d.jid)


def test_hibernated_user_notified(private):
    srv, app = private(min_interval=0)
    user, pw = srv.new_user(prefix='push')
    c = srv.login(user, pw, resource='phone')
    enable(c)
    c.send("<enable xmlns='%s' resume='true'/>" % NS_SM)
    el = c.recv_until(lambda e: e.tag == '{%s}enabled' % NS_SM, what='<enabled/>')
    assert el.get('resume') in ('true', '1'), to_str(el)
    c.presence()
    b = sender(srv)
    b.message('%s@localhost' % user, 'not acked')
    c.recv_stanza('message', **{'from': b.jid})
    # the connection dies without </stream:stream>: the session hibernates
    # with a stanza its client never acknowledged
    c.close()
    n = app.next()
    assert int(n['fields']['message-count']) >= 1, n['xml']
    assert 'last-message-sender' not in n['fields'], n['xml']
    assert n['to'] == COMPONENT and n['node'] == 'n1', n['xml']
    # a message for the hibernated session
    b.message('%s@localhost' % user, 'wake up')
    check_summary(app.next(), 1, b.jid)
