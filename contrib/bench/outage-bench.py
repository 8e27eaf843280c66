#!/usr/bin/python3
"""What a PostgreSQL outage does to a message stream (issue 19 items 7-8).

alice (stream management) sends RATE messages/s for TOTAL_S seconds to
bob (online, or offline with BOB_OFFLINE=1); after a few seconds a
private PostgreSQL cluster (initdb in a temporary directory, its own
socket; run as root it uses runuser postgres) is stopped for DOWN
seconds (MODE stop) or restarted with pg_ctl restart -m fast (MODE
restart).  Once alice's acks cover every message it prints: delivered
(with bob offline: in his offline storage), bounced, lost, delivered
messages missing from either archive, bounced ones in an archive,
duplicate rows, log lines from the outage on and lines naming a
reconnect, and the store's own outage lines.

    PIGEON_BUILDDIR=_build PIGEON_SRCDIR=. \
        contrib/bench/outage-bench.py stop 20 200 35

The server runs with the default storage.outage_hold (30 s) and log level
info (LEVEL=debug to change it); mod_offline's quota is raised to 100000.
Uses the end-to-end harness (tests/e2e), so /usr/bin/python3 with pytest.
"""
import os
import re
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', '..', 'tests', 'e2e'))
sys.dont_write_bytecode = True
import conftest  # noqa
from conftest import Server, Certs  # noqa
from test_storefail import PgCluster, NS_SM, BODY  # noqa
from rawxmpp import local  # noqa

if len(sys.argv) != 5 or sys.argv[1] not in ('stop', 'restart'):
    sys.exit('usage: outage-bench.py stop|restart DOWN RATE TOTAL_S')
mode, down, rate, total = (sys.argv[1], float(sys.argv[2]), float(sys.argv[3]),
                           float(sys.argv[4]))
base = tempfile.mkdtemp(prefix='pgn-meas-')
certs = Certs(tempfile.mkdtemp(prefix='c', dir=base))
cluster = PgCluster()


class S(Server):
    def storage_yaml(self):
        return 'storage:\n  driver: pgsql\n  conninfo: "%s"\n' % cluster.conninfo


conftest.LOG_LEVEL = os.environ.get('LEVEL', 'info')
srv = S(base, certs, 'sqlite', modules={'mod_offline': {'quota': 100000}})
srv.write_config()
srv.start()
try:
    alice, apw = srv.new_user(prefix='alice')
    bob, bpw = srv.new_user(prefix='bob')
    a = srv.login(alice, apw, resource='ra')
    a.timeout = 120
    a.presence()
    offline = os.environ.get('BOB_OFFLINE') == '1'
    if not offline:
        b = srv.login(bob, bpw, resource='rb')
        b.timeout = 120
        b.presence()
    a.send("<enable xmlns='%s'/>" % NS_SM)
    a.recv_until(lambda e: e.tag == '{%s}enabled' % NS_SM)
    n = int(rate * total)
    got = []
    stop_reader = threading.Event()

    def reader():
        while not stop_reader.is_set():
            try:
                el = b.recv(timeout=1)
            except Exception:
                continue
            if local(el.tag) == 'message' and el.find(BODY) is not None:
                got.append(el.find(BODY).text)
    rt = threading.Thread(target=reader, daemon=True)
    if not offline:
        rt.start()
    t0 = time.monotonic()

    def sender():
        for i in range(n):
            target = t0 + i / rate
            d = target - time.monotonic()
            if d > 0:
                time.sleep(d)
            a.message('%s@localhost' % bob, 'm%d' % i, id_='id%d' % i)
    st = threading.Thread(target=sender)
    st.start()
    time.sleep(min(5, total / 4))
    log0 = srv.log_size()
    tdown = time.monotonic()
    if mode == 'restart':
        cluster.restart()
    else:
        cluster.stop()
        time.sleep(down)
        cluster.start()
    tup = time.monotonic()
    st.join()
    a.send("<r xmlns='%s'/>" % NS_SM)
    bounced, h = set(), 0
    while h < n:
        el = a.recv(timeout=120)
        if el.tag == '{%s}a' % NS_SM:
            h = int(el.get('h'))
            if h < n:
                time.sleep(0.2)
                a.send("<r xmlns='%s'/>" % NS_SM)
        elif local(el.tag) == 'message' and el.get('type') == 'error':
            bounced.add(el.find(BODY).text)
    tack = time.monotonic()
    deadline = time.monotonic() + 60
    while not offline and len(got) + len(bounced) < n and time.monotonic() < deadline:
        time.sleep(0.1)
    if offline:
        for (stanza,) in cluster.psql('pigeon', "SELECT stanza FROM offline_messages"):
            got.append(re.search(r'<body>(m\d+)</body>', stanza).group(1))
    stop_reader.set()
    log = srv.log_text(log0)
    lines = log.count('\n')
    reconnect = len(re.findall(r'reconnect', log))
    arch = {}
    for user, stanza in cluster.psql('pigeon', 'SELECT username, stanza FROM mam_messages'):
        m = re.search(r'<body>(m\d+)</body>', stanza)
        arch.setdefault(user, []).append(m.group(1))
    gotset = set(got)
    res = {
        'sent': n, 'delivered': len(got), 'bounced': len(bounced),
        'lost': n - len(gotset | bounced),
        'delivered_not_in_alice_archive': len(gotset - set(arch.get(alice, []))),
        'delivered_not_in_bob_archive': len(gotset - set(arch.get(bob, []))),
        'bounced_in_alice_archive': len(bounced & set(arch.get(alice, []))),
        'bounced_in_bob_archive': len(bounced & set(arch.get(bob, []))),
        'dup_rows': sum(len(v) - len(set(v)) for v in arch.values()),
        'log_lines_from_outage': lines,
        'reconnect_lines': reconnect,
        'outage_s': round(tup - tdown, 1),
        'all_acked_after_s': round(tack - t0, 1),
        'store_log': [ln for ln in log.splitlines() if re.search(r'store (pgsql|sqlite):', ln)][:6],
    }
    for k, v in res.items():
        print('%s: %s' % (k, v))
finally:
    srv.kill()
    cluster.destroy()
    shutil.rmtree(base, ignore_errors=True)
