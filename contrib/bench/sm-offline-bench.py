#!/usr/bin/python3
"""Figures for issue 19, items 4 and 5: a client that never acknowledges,
and a large offline backlog.

Uses the end-to-end harness (tests/e2e/conftest.py, rawxmpp.py) to start
a throw-away pigeond from the build tree on SQLite (default limits,
max_stanza_size 262144, mod_offline quota 10000, every module unless
--no-mam leaves mod_mam out).

  unacked  A client enables stream management, reads everything and never
           acknowledges; another sends it N messages of SIZE bytes.
           Prints pigeond's VmRSS (/proc/PID/status) before, right after
           the sender's last message was routed, and its VmHWM, and
           whether the session was ended.  --type headline: messages
           that are not stored offline (the SM queue alone); --offline:
           the client has gone first (offline storage alone).
  backlog  N messages of SIZE bytes wait in offline storage; the recipient
           logs in (with --sm: stream management, acking every <r/>),
           waits 2 s before reading, then reads.  Whenever its stream is
           closed it logs in again, until it has every message.  Prints
           the logins, duplicates and messages out of order.

    PIGEON_BUILDDIR=_build PIGEON_SRCDIR=. \\
        contrib/bench/sm-offline-bench.py unacked -n 2000 --size 100000
    PIGEON_BUILDDIR=_build PIGEON_SRCDIR=. \\
        contrib/bench/sm-offline-bench.py backlog -n 200 --size 100000 [--sm]
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', '..', 'tests', 'e2e'))
sys.dont_write_bytecode = True
import conftest  # noqa: E402
import rawxmpp  # noqa: E402
from rawxmpp import local  # noqa: E402

NS_SM = 'urn:xmpp:sm:3'


def status(pid, key):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1]) // 1024  # MiB
    return -1


def server(base, certs, mam):
    srv = conftest.Server(base, certs, 'sqlite', max_stanza_size=262144,
                          modules={'mod_offline': {'quota': 10000},
                                   'mod_mam': {} if mam else None})
    return srv.start()


def stored(srv):
    return int(conftest.db(srv, "SELECT count(*) FROM offline_messages"))


def bench_unacked(srv, n, size, type_, offline):
    an, ap = srv.new_user(prefix='sma')
    bn, bp = srv.new_user(prefix='smb')
    a = srv.login(an, ap, resource='r')
    a.presence()
    a.send("<enable xmlns='%s' resume='true'/>" % NS_SM)
    if offline:  # the same messages, to nobody online: the store's part
        a.close()
        time.sleep(0.5)
    b = srv.login(bn, bp, resource='s')
    pid = srv.proc.pid
    time.sleep(0.5)
    before = status(pid, 'VmRSS')
    pad = 'x' * size
    got, ended, refused = 0, None, 0
    for i in range(n):
        b.sock.settimeout(60)  # recv() below leaves a short one
        b.send("<message to='%s' type='%s'><body>%d %s</body></message>"
               % (a.jid, type_, i, pad))
        # The sender reads its errors (offline storage busy), so that
        # its own output does not back up.
        while True:
            try:
                el = b.recv(timeout=0.001)
            except rawxmpp.XMPPTimeout:
                break
            if el.get('type') == 'error':
                refused += 1
        # Read what came meanwhile, never acknowledging.
        while ended is None and not offline:
            try:
                el = a.recv(timeout=0.001 if i < n - 1 else 0.2)
            except rawxmpp.XMPPTimeout:
                break
            except rawxmpp.StreamClosed as e:
                ended = e.condition or 'closed'
                break
            if local(el.tag) == 'message':
                got += 1
    ping = rawxmpp.new_id('ping')
    b.sock.settimeout(60)
    b.send("<iq type='get' id='%s' to='localhost'><ping xmlns='urn:xmpp:ping'/>"
           "</iq>" % ping)
    while True:
        el = b.recv(timeout=120)
        if el.get('id') == ping:
            break
        if el.get('type') == 'error':
            refused += 1
    after = status(pid, 'VmRSS')
    # What went to offline storage meanwhile: wait until it is written.
    last, rows = -1, stored(srv)
    while rows != last:
        time.sleep(1)
        last, rows = rows, stored(srv)
    settled = status(pid, 'VmRSS')
    peak = status(pid, 'VmHWM')
    print('unacked: %d x %d B %s messages to a never-acking SM client%s: '
          'VmRSS %d -> %d MiB (+%d), %d MiB once %d were stored offline, '
          'VmHWM %d MiB; client read %d; session %s; %d refused (store busy)'
          % (n, size, type_, ' (offline)' if offline else '', before, after, after - before, settled, rows,
             peak, got, 'ended (%s)' % ended if ended else 'still open',
             refused))


def bench_backlog(srv, n, size, sm):
    sn, sp = srv.new_user(prefix='snd')
    rn, rp = srv.new_user(prefix='rcp')
    s = srv.login(sn, sp, resource='s')
    pad = 'z' * size
    for i in range(n):
        s.send("<message to='%s@localhost' type='chat' id='b%d'><body>%d %s"
               "</body></message>" % (rn, i, i, pad))
    s.ping(timeout=120)
    deadline = time.monotonic() + 120
    while int(conftest.db(srv, "SELECT count(*) FROM offline_messages")) < n:
        assert time.monotonic() < deadline, 'not all stored'
        time.sleep(0.1)
    ids, logins = [], 0
    while len(set(ids)) < n and logins < 20:
        logins += 1
        c = srv.login(rn, rp, resource='r%d' % logins)
        if sm:
            c.send("<enable xmlns='%s' resume='true'/>" % NS_SM)
        c.presence()
        time.sleep(2)
        h = 0
        try:
            while len(set(ids)) < n:
                el = c.recv(timeout=10)
                if rawxmpp.ns_of(el.tag) != NS_SM:
                    h += 1
                    if local(el.tag) == 'message' and el.get('id'):
                        ids.append(el.get('id'))
                elif local(el.tag) == 'r':
                    c.send("<a xmlns='%s' h='%d'/>" % (NS_SM, h))
        except (rawxmpp.StreamClosed, rawxmpp.XMPPTimeout):
            pass
        c.close()
    order = [int(i[1:]) for i in ids]
    dups = len(ids) - len(set(ids))
    first = {}
    for pos, k in enumerate(order):
        first.setdefault(k, pos)
    seq = sorted(first, key=first.get)
    out_of_order = sum(1 for x, y in zip(seq, seq[1:]) if y < x)
    print('backlog%s: %d x %d B: %d login(s), %d received, %d duplicate(s), '
          '%d out of order, %d missing'
          % (' (SM)' if sm else '', n, size, logins, len(ids), dups,
             out_of_order, n - len(set(ids))))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('what', choices=('unacked', 'backlog'))
    ap.add_argument('-n', type=int, default=None)
    ap.add_argument('--size', type=int, default=100000)
    ap.add_argument('--sm', action='store_true')
    ap.add_argument('--no-mam', action='store_true',
                    help='without mod_mam (its archive writes are held in '
                    'memory too)')
    ap.add_argument('--offline', action='store_true',
                    help='unacked: the client is gone before the messages')
    ap.add_argument('--type', default='chat',
                    help='unacked: message type (headline: not stored)')
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix='pgn-smbench-')
    srv = None
    try:
        certs = conftest.Certs(base)
        srv = server(base, certs, not args.no_mam)
        if args.what == 'unacked':
            bench_unacked(srv, args.n or 2000, args.size, args.type,
                          args.offline)
        else:
            bench_backlog(srv, args.n or 200, args.size, args.sm)
    finally:
        if srv is not None:
            srv.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == '__main__':
    main()
