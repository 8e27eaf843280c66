#!/usr/bin/python3
"""Measure pigeond's message archive queries (mod_mam, XEP-0313) on a
large archive.

Creates a fresh store (PostgreSQL by default, or SQLite with --driver
sqlite), registers one user with pigeonctl (which also applies the
schema), bulk-loads N archived messages for that user straight into
mam_messages, spread over 100 peers and about a year (PostgreSQL: one
INSERT ... SELECT over generate_series; SQLite: executemany in one
transaction; the counters the schema's triggers keep are filled once
afterwards), then ANALYZEs (and VACUUMs on PostgreSQL, as autovacuum
would), starts pigeond on that store on a free port of 127.0.0.1 with a
throw-away certificate and times, over a real STARTTLS + SCRAM client
connection, R runs of each query:

  page:   the newest page (max 50) of one conversation
          (with=peer7, RSM <before/>)
  after:  the page (max 50) after an id in the middle of the archive
          (RSM <after/>)
  count:  the size of the whole archive (RSM <max>0</max>)

Each run is the time from sending the iq to receiving its <fin/>, with
every result message read.  Every query also returns the RSM <count/> of
its result set (checked).  Prints one line per query and mode:

    mam page: median 2.2 ms, p95 3.0 ms (50 runs, 50 results, sqlite, 1000000 msgs)
    ...
    mam page: median 2.2 ms, p95 3.1 ms (50 runs, 50 results, sqlite, 1000000 msgs, quickack)

--explain also prints the store's query plans of the three statements'
hot parts (EXPLAIN / EXPLAIN QUERY PLAN).

Each query is timed twice: as a client sees it, and with the bench
client's delayed ACKs switched off (TCP_QUICKACK before every read,
"quickack" in the output).  The two agree since pigeond sets TCP_NODELAY
on client sockets; before that, a page written in several TLS records
waited about 40 ms for the client's delayed ACK (Nagle).

    contrib/bench/mam-bench.py --driver pgsql --conninfo 'host=/tmp/pg dbname=postgres'
    contrib/bench/mam-bench.py --driver sqlite -n 1000000

With PostgreSQL a database pigeon_mam_bench_<pid> is created from
--conninfo (whose role needs CREATEDB) and dropped afterwards.
"""

import argparse
import asyncio
import os
import secrets
import shutil
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True
import benchclient as bc  # noqa: E402

NS_MAM = "urn:xmpp:mam:2"
NS_RSM = "http://jabber.org/protocol/rsm"
PEERS = 100
SPACING_US = 30 * 1000000  # N = 1M spans about a year


def log(msg):
    print(f"mam-bench: {msg}", file=sys.stderr, flush=True)





# --------------------------------------------------------------------------
# Bulk load.  Row i (1..n): ts = base + i * SPACING_US, peer i % PEERS,
# outgoing when i is even, a stanza as mod_mam stores it.

def stanza_sql(user):
    """The stored stanza of row i as a PostgreSQL expression."""
    return ("CASE WHEN i % 2 = 0 THEN "
            f"'<message to=\"peer' || (i % {PEERS}) || '@example.net/res\" "
            f"id=\"m' || i || '\" type=\"chat\" from=\"{user}@localhost/phone\">"
            "<body>archived message number ' || i || ', with some text to "
            "make it look like a chat line</body></message>' "
            f"ELSE '<message to=\"{user}@localhost/phone\" id=\"m' || i || "
            f"'\" type=\"chat\" from=\"peer' || (i % {PEERS}) || "
            "'@example.net/res\"><body>archived message number ' || i || "
            "', with some text to make it look like a chat line</body>"
            "</message>' END")


# The counters of mam_counts and mam_with_counts are filled once after
# the load rather than row by row by the triggers: in one transaction of a
# million rows, PostgreSQL would update the same counter row a million
# times, each time following the chain of its versions.
FILL_COUNTS = [
    "INSERT INTO mam_counts (host, username, n) SELECT host, username, "
    "count(*) FROM mam_messages GROUP BY host, username",
    "INSERT INTO mam_with_counts (host, username, with_bare, n) SELECT "
    "host, username, with_bare, count(*) FROM mam_messages "
    "GROUP BY host, username, with_bare",
]


def load_pgsql(conninfo, user, n, base):
    # The stanza id: 10 random-looking hex digits and i in hex, unique.
    bc.psql(conninfo,
            "ALTER TABLE mam_messages DISABLE TRIGGER mam_messages_counted; "
            "INSERT INTO mam_messages (host, username, ts, stanza_id, "
            "origin_id, with_bare, with_resource, outgoing, stanza) "
            f"SELECT 'localhost', '{user}', {base} + i * {SPACING_US}, "
            "substr(md5(i::text || 'mam-bench'), 1, 10) || to_hex(i), NULL, "
            f"'peer' || (i % {PEERS}) || '@example.net', 'res', "
            f"CASE WHEN i % 2 = 0 THEN 1 ELSE 0 END, {stanza_sql(user)} "
            f"FROM generate_series(CAST(1 AS BIGINT), {n}) AS i; "
            "ALTER TABLE mam_messages ENABLE TRIGGER mam_messages_counted; "
            + "; ".join(FILL_COUNTS), timeout=3600)
    bc.psql(conninfo, "VACUUM ANALYZE", timeout=3600)


def sqlite_stanza(user, i):
    peer = f"peer{i % PEERS}@example.net/res"
    body = (f"<body>archived message number {i}, with some text to make it "
            "look like a chat line</body>")
    if i % 2 == 0:
        return (f'<message to="{peer}" id="m{i}" type="chat" '
                f'from="{user}@localhost/phone">{body}</message>')
    return (f'<message to="{user}@localhost/phone" id="m{i}" type="chat" '
            f'from="{peer}">{body}</message>')


def load_sqlite(path, user, n, base):
    import hashlib

    def rows():
        for i in range(1, n + 1):
            sid = hashlib.md5(f"{i}mam-bench".encode()).hexdigest()[:10] \
                + format(i, "x")
            yield ("localhost", user, base + i * SPACING_US, sid,
                   f"peer{i % PEERS}@example.net", "res",
                   1 if i % 2 == 0 else 0, sqlite_stanza(user, i))
    db = sqlite3.connect(path, timeout=60)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        triggers = db.execute("SELECT name, sql FROM sqlite_master WHERE "
                              "type = 'trigger' AND tbl_name = "
                              "'mam_messages'").fetchall()
        with db:
            for name, _ in triggers:
                db.execute(f"DROP TRIGGER {name}")
            db.executemany(
                "INSERT INTO mam_messages (host, username, ts, stanza_id, "
                "with_bare, with_resource, outgoing, stanza) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows())
            for _, sql in triggers:
                db.execute(sql)
            for sql in FILL_COUNTS:
                db.execute(sql)
        db.execute("ANALYZE")
    finally:
        db.close()


def stanza_id_of(driver, conninfo, path, user, i):
    sql = ("SELECT stanza_id FROM mam_messages WHERE host = 'localhost' "
           f"AND username = '{user}' ORDER BY id LIMIT 1 OFFSET {i - 1}")
    if driver == "pgsql":
        return bc.psql(conninfo, sql)
    db = sqlite3.connect(path, timeout=60)
    try:
        return db.execute(sql).fetchone()[0]
    finally:
        db.close()


# The hot parts of mod_mam's statements (see build_query_sql()), with the
# values of the runs.
def explain_sqls(user, with_bare, after_sid):
    base = f"host = 'localhost' AND username = '{user}'"
    sid_of = (f"(SELECT id FROM mam_messages WHERE {base} AND "
              f"stanza_id = '{after_sid}')")
    return [
        ("page", f"SELECT id, stanza_id, ts, stanza FROM mam_messages WHERE "
                 f"{base} AND with_bare = '{with_bare}' ORDER BY id DESC "
                 "LIMIT 51"),
        ("page count", f"SELECT n FROM mam_with_counts WHERE {base} AND "
                       f"with_bare = '{with_bare}'"),
        ("after", f"SELECT id, stanza_id, ts, stanza FROM mam_messages WHERE "
                  f"{base} AND id > {sid_of} ORDER BY id ASC LIMIT 51"),
        ("count", f"SELECT n FROM mam_counts WHERE {base}"),
        ("counted", f"SELECT count(*) FROM mam_messages WHERE {base} AND "
                    f"with_bare = '{with_bare}' AND id > {sid_of}"),
        ("start", "SELECT id FROM mam_messages WHERE ts >= 0 ORDER BY ts, "
                  "id LIMIT 1"),
    ]


def explain(driver, conninfo, path, user, after_sid):
    for name, sql in explain_sqls(user, "peer7@example.net", after_sid):
        if driver == "pgsql":
            plan = bc.psql(conninfo, "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) "
                                  + sql)
        else:
            db = sqlite3.connect(path, timeout=60)
            try:
                plan = "\n".join(r[3] for r in db.execute(
                    "EXPLAIN QUERY PLAN " + sql))
            finally:
                db.close()
        print(f"--- {name}: {sql}\n{plan}", flush=True)


# --------------------------------------------------------------------------
# Client side.

class Querier(bc.Client):
    def __init__(self, port, ssl_ctx, timeout, quickack):
        super().__init__(0, port, ssl_ctx, timeout, who="querier")
        self.seq = 0
        self.quickack = quickack

    async def element(self, what):
        if self.quickack and not self.pending:
            sock = self.writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return await super().element(what)

    async def query(self, form_fields, rsm):
        """Runs one query; returns (seconds, results, fin element)."""
        self.seq += 1
        iq_id = f"q{self.seq}"
        form = ""
        if form_fields:
            form = ("<x xmlns='jabber:x:data' type='submit'><field "
                    f"var='FORM_TYPE' type='hidden'><value>{NS_MAM}</value>"
                    "</field>" + "".join(
                        f"<field var='{k}'><value>{v}</value></field>"
                        for k, v in form_fields.items()) + "</x>")
        t0 = time.perf_counter()
        await self.send(f"<iq type='set' id='{iq_id}'><query xmlns='{NS_MAM}' "
                        f"queryid='{iq_id}'>{form}<set xmlns='{NS_RSM}'>{rsm}"
                        "</set></query></iq>")
        results = 0
        while True:
            el = await self.element(f"the answer to {iq_id}")
            if el.tag == "{jabber:client}message" and \
                    el.find(f"{{{NS_MAM}}}result") is not None:
                results += 1
            elif el.tag == "{jabber:client}iq" and el.get("id") == iq_id:
                elapsed = time.perf_counter() - t0
                if el.get("type") != "result":
                    raise bc.BenchError(f"query failed: "
                                        f"{ET.tostring(el)[:300]!r}")
                return elapsed, results, el.find(f"{{{NS_MAM}}}fin")


def pct(values, p):
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


async def run(args, port, user, password, after_sid, quickack):
    c = Querier(port, bc.client_ssl_context(), args.timeout, quickack)
    try:
        await c.login(user, password, "bench")
        await c.send("<presence/>")
        cases = [
            ("page", {"with": "peer7@example.net"}, "<max>50</max><before/>",
             50, args.n // PEERS),
            ("after", None, f"<max>50</max><after>{after_sid}</after>", 50,
             args.n),
            ("count", None, "<max>0</max>", 0, args.n),
        ]
        out = []
        for name, fields, rsm, want, want_count in cases:
            times = []
            for i in range(args.runs + 2):
                t, results, fin = await c.query(fields, rsm)
                count = int(fin.findtext(f"{{{NS_RSM}}}set/{{{NS_RSM}}}count"))
                if results != want or count != want_count:
                    raise bc.BenchError(f"{name}: {results} results, count "
                                        f"{count}; expected {want}, "
                                        f"{want_count}")
                if i >= 2:  # two warm-up runs
                    times.append(t * 1000)
            out.append((name, times, want))
        return out
    finally:
        await c.close()


def main():
    ap = argparse.ArgumentParser(
        description="Measure mod_mam query times on a large archive.")
    ap.add_argument("--driver", choices=("pgsql", "sqlite"), default="pgsql",
                    help="storage driver (default pgsql)")
    ap.add_argument("--conninfo", help="libpq connection string (PostgreSQL)")
    ap.add_argument("-n", type=int, default=1000000,
                    help="archived messages (default 1000000)")
    ap.add_argument("--runs", type=int, default=50,
                    help="timed runs of each query (default 50)")
    ap.add_argument("--explain", action="store_true",
                    help="print the query plans of the store")
    bc.add_tree_args(ap)
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="timeout of each network step, s (default 60)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary directory (for debugging)")
    args = ap.parse_args()
    if not 2 * PEERS <= args.n <= 10000000:
        ap.error(f"-n must be between {2 * PEERS} and 10000000")
    if not 1 <= args.runs <= 10000:
        ap.error("--runs must be between 1 and 10000")
    if args.driver == "pgsql" and not args.conninfo:
        ap.error("--driver pgsql needs --conninfo")
    if args.driver == "pgsql" and shutil.which("psql") is None:
        ap.error("psql is needed to load the archive")

    try:
        builddir, srcdir, pigeond, pigeonctl = bc.build_tree(args)
    except bc.BenchError as e:
        log(str(e))
        return 2

    tmp = tempfile.mkdtemp(prefix="pigeon-mam-bench-")
    logpath = os.path.join(tmp, "pigeond.log")
    proc = None
    dbname = None
    status = 1
    try:
        storage, conninfo, sqlite_path, dbname = bc.new_store(
            args.driver, args.conninfo, tmp, "pigeon_mam_bench")
        pem = bc.make_cert(tmp)
        port = bc.free_port()
        modules = "modules:\n  mod_ping: {}\n  mod_mam: {}\n"
        cfg = bc.write_pigeon_yml(tmp, port, pem, builddir, srcdir,
                                  "mam-bench.py", storage, modules)
        user, password = f"owner{secrets.token_hex(3)}", secrets.token_hex(12)
        # pigeond is not running: pigeonctl writes the store itself (and
        # creates the schema).
        bc.ctl(pigeonctl, cfg, tmp, "register", user, bc.HOST, password)
        base = int(time.time() * 1000000) - (args.n + 1) * SPACING_US
        t0 = time.monotonic()
        if args.driver == "pgsql":
            load_pgsql(conninfo, user, args.n, base)
        else:
            load_sqlite(sqlite_path, user, args.n, base)
        log(f"loaded {args.n} messages in {time.monotonic() - t0:.1f} s")
        after_sid = stanza_id_of(args.driver, conninfo, sqlite_path, user,
                                 args.n // 2)
        if args.explain:
            explain(args.driver, conninfo, sqlite_path, user, after_sid)

        proc = bc.start_pigeond(pigeond, cfg, tmp, logpath)
        bc.wait_port(port, proc, 60)
        for quickack in (False, True):
            results = asyncio.run(run(args, port, user, password, after_sid,
                                      quickack))
            for name, times, want in results:
                print(f"mam {name}: median {statistics.median(times):.1f} "
                      f"ms, p95 {pct(times, 95):.1f} ms ({len(times)} runs, "
                      f"{want} results, {args.driver}, {args.n} msgs"
                      f"{', quickack' if quickack else ''})", flush=True)
        bc.stop_pigeond(proc, 60)
        status = 0
    except (Exception, KeyboardInterrupt) as e:
        log(bc.failure(e))
    finally:
        bc.finish(proc, logpath, tmp, args.keep, log,
                  show_log=status != 0 and proc is not None)
        bc.drop_store(args.conninfo, dbname, log)
    return status


if __name__ == "__main__":
    sys.exit(main())
