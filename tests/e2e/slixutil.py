"""slixmpp (1.8) clients for the higher-level end-to-end tests.

Each test runs its coroutine in a fresh event loop with a hard timeout
(run()), and every wait inside has its own timeout, so a broken server
makes the test fail instead of hanging.
"""

import asyncio
import logging
from pathlib import Path

import slixmpp

ALL_SLIX = []


def run(coro_fn, timeout=30.0):
    """Runs coro_fn() in a new event loop, with a global timeout."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(asyncio.wait_for(coro_fn(), timeout))
    except asyncio.TimeoutError:
        raise AssertionError('slixmpp scenario did not finish within %.0f s' % timeout)
    finally:
        for c in list(ALL_SLIX):
            try:
                c.abort()
            except Exception:
                pass
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        ALL_SLIX.clear()
        asyncio.set_event_loop(None)
        loop.close()


class Client(slixmpp.ClientXMPP):
    """A slixmpp client that connects to 127.0.0.1:port, requires STARTTLS
    (or uses direct TLS), verifies the server certificate against the test
    certificate and the JID's domain, and logs in with `mech`."""

    def __init__(self, jid, password, cafile, port, *, mech='SCRAM-SHA-256',
                 direct_tls=False):
        super().__init__(jid, password)
        ALL_SLIX.append(self)
        self.port = port
        self.direct_tls = direct_tls
        self.use_ipv6 = False
        self.ca_certs = Path(cafile)
        self.whitespace_keepalive = False
        self.reconnect_max_attempts = 0
        self.incoming = asyncio.Queue()
        self.errors = []
        self._ready = asyncio.get_event_loop().create_future()
        for plugin in ('xep_0030', 'xep_0092', 'xep_0199'):
            self.register_plugin(plugin)
        fm = self['feature_mechanisms']
        fm.use_mech = mech
        orig = fm.sasl_callback

        # slixmpp 1.8 binds -PLUS to tls-unique (undefined with TLS 1.3) and
        # would send the 'y' flag for plain SCRAM; a correct server that
        # offers -PLUS must then fail us (RFC 5802 6).  Use 'n'.
        def creds(required, optional):
            res = orig(required, optional)
            if 'channel_binding' in res:
                res['channel_binding'] = None
            return res
        fm.sasl_callback = creds

        self.add_event_handler('session_start', self._on_session_start)
        self.add_event_handler('failed_all_auth', self._on_fail('authentication failed'))
        self.add_event_handler('failed_auth', self._on_fail('authentication failed'))
        self.add_event_handler('connection_failed', self._on_fail('connection failed'))
        self.add_event_handler('ssl_invalid_chain', self._on_fail('invalid certificate'))
        self.add_event_handler('stream_error', self._on_stream_error)
        self.add_event_handler('disconnected', self._on_fail('disconnected'))
        self.add_event_handler('message', lambda m: self.incoming.put_nowait(m))

    async def _pick_dns_answer(self, domain, port=None):
        # never resolve test domains (example.test): use self.address
        return None

    def _on_session_start(self, _event):
        if not self._ready.done():
            self._ready.set_result(True)

    def _on_fail(self, what):
        def handler(arg=None):
            self.errors.append('%s: %r' % (what, arg))
            if not self._ready.done():
                self._ready.set_exception(AssertionError(
                    '%s: %s (%r)' % (self.boundjid, what, arg)))
        return handler

    def _on_stream_error(self, err):
        self.errors.append('stream error: %s' % err)

    async def start(self, timeout=10.0, presence=True):
        self.connect(address=('127.0.0.1', self.port),
                     use_ssl=self.direct_tls, force_starttls=not self.direct_tls,
                     disable_starttls=self.direct_tls)
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except asyncio.TimeoutError:
            raise AssertionError('%s: no session within %.0f s (%s)'
                                 % (self.boundjid, timeout, self.errors))
        if presence:
            self.send_presence()
        return self

    async def next_message(self, timeout=5.0, with_body=True):
        while True:
            try:
                msg = await asyncio.wait_for(self.incoming.get(), timeout)
            except asyncio.TimeoutError:
                raise AssertionError('%s: no message within %.0f s'
                                     % (self.boundjid, timeout))
            if not with_body or msg['body'] or msg['type'] == 'error':
                return msg

    async def stop(self, timeout=5.0):
        try:
            await asyncio.wait_for(self.disconnect(wait=1.0), timeout)
        except Exception:
            pass


logging.getLogger('slixmpp').setLevel(logging.WARNING)
