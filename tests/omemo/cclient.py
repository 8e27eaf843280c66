"""Driver of stack 2 (tests/tools/omemo-client, libstrophe + libomemo-c) for
the tests: one process per device, commands on its standard input, events
read from its standard output by a thread.  Waiting is asynchronous so that
python-omemo clients (stack 1) keep running in the same event loop.
"""

import asyncio
import os
import queue
import re
import subprocess
import threading
import time

from test_strophe import Strophe   # tests/e2e is on sys.path under pytest


def parse_event(line):
    """'DECRYPTED kind=message from=a@b sid=1 body=x y' ->
    {'event': 'DECRYPTED', 'kind': 'message', ..., 'body': 'x y'}.
    body= (always last) takes the rest of the line, unescaped."""
    head, _, body = line.partition(' body=')
    parts = head.split(' ')
    ev = {'event': parts[0]}
    for p in parts[1:]:
        k, eq, v = p.partition('=')
        if eq:
            ev[k] = v
        else:
            ev.setdefault('args', []).append(p)
    if _ or line.endswith(' body='):
        ev['body'] = re.sub(r'\\(.)', lambda m: {'n': '\n', 'r': '\r', '0': '\0'}
                            .get(m.group(1), m.group(1)), body)
    return ev


class CClient:
    """One omemo-client process (one OMEMO device)."""

    def __init__(self, binary, server, jid, password, *args, timeout=90,
                 sanitizer_report=None):
        self.jid = jid
        self.bare = jid.split('/')[0]
        cmd = [str(binary), '--jid', jid, '--password', password,
               '--host', '127.0.0.1', '--port', str(server.c2s_port),
               '--cafile', server.cafile, '--timeout', str(timeout)]
        cmd += [str(a) for a in args]
        self.argv = cmd
        self.timeout = timeout
        self.stdout, self.stderr = [], []
        self._unread = []
        self._lines = queue.Queue()
        self._sanitizer_report = sanitizer_report
        env = dict(os.environ)
        env.setdefault('ASAN_OPTIONS', 'detect_leaks=1')
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, encoding='utf-8', errors='replace',
                                     bufsize=1, env=env)
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout,
                                                      self._lines), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr,
                                                      None), daemon=True)]
        for t in self._threads:
            t.start()

    # one line at a time into a list and a queue, as test_strophe's client
    _pump = staticmethod(Strophe._pump)

    def report(self):
        return ('$ %s\nexit: %s\nstdout:\n  %s\nstderr:\n  %s'
                % (" ".join(self.argv), self.proc.returncode,
                   '\n  '.join(self.stdout), '\n  '.join(self.stderr[-60:])))

    def send(self, line):
        assert '\n' not in line
        try:
            self.proc.stdin.write(line + '\n')
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise AssertionError('omemo-client exited before %r\n%s'
                                 % (line, self.report()))

    def _drain(self):
        eof = False
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return eof
            if line is None:
                eof = True
                self._lines.put(None)      # stays at EOF
                return eof
            self._unread.append(line)

    async def event(self, prefix, timeout=15.0, **match):
        """Waits for (and consumes) the first unread event line starting
        with prefix whose fields equal match; other lines stay unread."""
        deadline = time.monotonic() + timeout
        while True:
            eof = self._drain()
            for i, line in enumerate(self._unread):
                if not line.startswith(prefix):
                    continue
                ev = parse_event(line)
                if all(ev.get(k) == str(v) for k, v in match.items()):
                    del self._unread[i]
                    return ev
            if eof or time.monotonic() > deadline:
                raise AssertionError('omemo-client %s: no %r %r line within %.0f s%s\n%s'
                                     % (self.jid, prefix, match, timeout,
                                        ' (exited)' if eof else '', self.report()))
            await asyncio.sleep(0.02)

    async def no_event(self, prefix, seconds=1.0, **match):
        try:
            ev = await self.event(prefix, seconds, **match)
        except AssertionError:
            return
        raise AssertionError('unexpected %r\n%s' % (ev, self.report()))

    async def cmd(self, line, expect=None, timeout=15.0, **match):
        self.send(line)
        if expect:
            return await self.event(expect, timeout, **match)
        return None

    async def quit(self):
        if self.proc.poll() is None:
            self.send('quit')
            await self.event('DONE', 15)
        return self.finish()

    def finish(self):
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError('omemo-client hung\n%s' % self.report())
        for t in self._threads:
            t.join(5)
        if self._sanitizer_report:
            pat = self._sanitizer_report('\n'.join(self.stderr))
            assert pat is None, 'sanitizer report (%s) from omemo-client\n%s' % (
                pat, self.report())
        assert self.proc.returncode == 0, 'omemo-client failed\n%s' % self.report()
        return self.stdout

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
