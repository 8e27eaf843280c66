#!/usr/bin/python3
"""Measure how fast pigeond stores offline messages (mod_offline).

Starts a fresh pigeond from the build tree (PostgreSQL by default, or
SQLite with --driver sqlite) on a free port on 127.0.0.1, with a
throw-away certificate and configuration, registers one recipient that
stays offline and K senders, and has the K senders (raw TLS clients,
SCRAM-SHA-256) pipeline N chat messages in all to the recipient.  The
clock starts when every sender is logged in and starts writing and stops
when the store holds all N messages (counted with psql, or with Python's
sqlite3 on the SQLite file, every 20 ms).  Prints one line:

    offline writes: N msgs in T s = X msgs/s (driver, K senders)

With --sm the senders use stream management (XEP-0198) and ask for an
ack after every chunk; the clock stops when the server has acknowledged
all N messages, and the store is counted right then: it must already
hold all of them (pigeond acknowledges a message only once it is
committed).  That prints the ack-to-durable rate:

    acked and durable: N msgs in T s = X msgs/s (driver, K senders, offline)

--online (implies --sm) keeps the recipient logged in, reading, with
mod_mam loaded: each message is delivered at once and archived for both
parties, and the ack waits for the archive's commit; the archive rows
(2 per message) are counted.

Only mod_offline and mod_ping are loaded, so the figure is the cost of
routing plus the durable write (one INSERT per message, each its own
transaction, on the store's one connection).  The quota is raised to N.

    contrib/bench/offline-bench.py --conninfo 'host=/tmp/pg dbname=postgres'
    contrib/bench/offline-bench.py --driver sqlite -n 20000 --senders 8

With PostgreSQL a database pigeon_offline_bench_<pid> is created from
--conninfo (whose role needs CREATEDB) and dropped afterwards, unless
--use-db says to use the conninfo's database as it is.  --config and
--port use an already running pigeond instead (its mod_offline quota
must be at least N; --conninfo or --sqlite-path must name its store).
"""

import argparse
import asyncio
import os
import secrets
import shutil
import sqlite3
import ssl
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

# The shared client sits next to this script, which runs from anywhere
# (also with -P / PYTHONSAFEPATH, which leave the script's directory out
# of sys.path); no bytecode cache, so as not to write into the source tree.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True
import benchclient as bc  # noqa: E402

CHUNK = 200  # messages per write


def log(msg):
    print(f"offline-bench: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Server side (the rest is in benchclient.py).



def write_config(tmp, port, pem, builddir, srcdir, storage, quota,
                 archive=False):
    modules = ("modules:\n  mod_ping: {}\n"
               f"  mod_offline:\n    quota: \"{quota}\"\n")
    if archive:
        modules += "  mod_mam: {}\n"
    return bc.write_pigeon_yml(tmp, port, pem, builddir, srcdir,
                               "offline-bench.py", storage, modules)



class Counter:
    """Counts the recipient's stored messages."""

    def __init__(self, driver, conninfo, sqlite_path, user, table):
        self.driver = driver
        self.conninfo = conninfo
        self.sqlite_path = sqlite_path
        self.sql = (f"SELECT count(*) FROM {table} "
                    f"WHERE host = '{bc.HOST}' AND username = '{user}'")
        if table == "mam_messages":
            # Both archives: the run's accounts all carry its tag.
            tag = user[len("rcpt"):]
            self.sql = (f"SELECT count(*) FROM {table} WHERE "
                        f"host = '{bc.HOST}' AND username LIKE '%{tag}%'")

    def count(self):
        if self.driver == "pgsql":
            return int(bc.psql(self.conninfo, self.sql))
        db = sqlite3.connect(self.sqlite_path, timeout=30)
        try:
            return db.execute(self.sql).fetchone()[0]
        finally:
            db.close()


# --------------------------------------------------------------------------
# Client side: a benchclient.Client per sender.

NS_SM = "urn:xmpp:sm:3"
STANZAS = ("{jabber:client}message", "{jabber:client}presence",
           "{jabber:client}iq")


class Sender(bc.Client):
    def __init__(self, index, port, user, password, ssl_ctx, timeout,
                 sm=False):
        super().__init__(index, port, ssl_ctx, timeout, who="sender")
        self.user = user
        self.password = password
        self.errors = 0
        self.error_sample = None
        self.sm = sm
        self.acked = 0       # the server's last h
        self.received = 0    # stanzas from the server since <enabled/>
        self.all_acked = asyncio.Event()
        self.count = 0

    async def setup(self):
        await self.login(self.user, self.password, "bench")
        if self.sm:
            await self.send(f"<enable xmlns='{NS_SM}'/>")
            await self.expect(bc.q(NS_SM, "enabled"), "<enabled/>")
        await self.send("<presence/>")

    async def drain(self):
        """Reads what the server sends meanwhile; counts message errors
        (a quota error or a storage error means the figure is void)."""
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    return
                self.feed(data)
                answer = False
                for el in self.pending:
                    if el.tag == "{jabber:client}message" and \
                            el.get("type") == "error":
                        self.errors += 1
                        if self.error_sample is None:
                            self.error_sample = ET.tostring(el)[:300]
                    if el.tag in STANZAS:
                        self.received += 1
                    elif el.tag == bc.q(NS_SM, "r"):
                        answer = True
                    elif el.tag == bc.q(NS_SM, "a"):
                        # The initial <presence/> is stanza 1.
                        self.acked = int(el.get("h"))
                        if self.acked >= self.count + 1:
                            self.all_acked.set()
                self.pending = []
                if answer:
                    await self.send(f"<a xmlns='{NS_SM}' "
                                    f"h='{self.received}'/>")
        except (ConnectionError, ssl.SSLError, OSError, bc.BenchError):
            return

    async def pipeline(self, to, first, count, body):
        self.count = count
        self.drain_task = asyncio.create_task(self.drain())
        for start in range(first, first + count, CHUNK):
            end = min(first + count, start + CHUNK)
            await self.send("".join(
                f"<message to='{to}' id='m{i}' type='chat'>"
                f"<body>{body} {i}</body></message>"
                for i in range(start, end))
                + (f"<r xmlns='{NS_SM}'/>" if self.sm else ""))


class Reader(bc.Client):
    """The recipient with --online: reads and discards."""

    async def run(self, user, password):
        await self.login(user, password, "bench")
        await self.send("<presence/>")

        async def discard():
            try:
                while await self.reader.read(1 << 20):
                    pass
            except (ConnectionError, ssl.SSLError, OSError):
                return
        self.drain_task = asyncio.create_task(discard())


async def acked(args, senders, counter, t0):
    """--sm: waits for every ack, then checks the store at once."""
    try:
        await asyncio.wait_for(
            asyncio.gather(*(s.all_acked.wait() for s in senders)),
            args.max_time)
    except asyncio.TimeoutError:
        raise bc.BenchError(f"not everything acknowledged after "
                            f"{args.max_time} s") from None
    elapsed = time.monotonic() - t0
    errors = sum(s.errors for s in senders)
    if errors:
        raise bc.BenchError(f"{errors} messages bounced")
    loop = asyncio.get_running_loop()
    n = await loop.run_in_executor(None, counter.count)
    want = args.n * (2 if args.online else 1)
    if n < want:
        raise bc.BenchError(f"acknowledged, but only {n} of {want} rows "
                            "are in the store")
    return elapsed


async def run(args, port, senders_creds, recipient, rcpt_pw, counter):
    ssl_ctx = bc.client_ssl_context()
    senders = [Sender(i, port, u, p, ssl_ctx, args.timeout, args.sm)
               for i, (u, p) in enumerate(senders_creds)]
    to = f"{recipient}@{bc.HOST}"
    body = "x" * max(0, args.body_size - 8)
    reader = None
    try:
        await asyncio.gather(*(s.setup() for s in senders))
        if args.online:
            reader = Reader(0, port, ssl_ctx, args.timeout, who="recipient")
            await reader.run(recipient, rcpt_pw)
        if counter.count() != 0:
            raise bc.BenchError("the recipient already has stored messages")
        share, extra = divmod(args.n, len(senders))
        plan, first = [], 0
        for i, s in enumerate(senders):
            count = share + (1 if i < extra else 0)
            plan.append((s, first, count))
            first += count
        t0 = time.monotonic()
        sending = asyncio.gather(*(s.pipeline(to, f, c, body)
                                   for s, f, c in plan))
        if args.sm:
            elapsed = await acked(args, senders, counter, t0)
            await sending
            return elapsed
        deadline = t0 + args.max_time
        loop = asyncio.get_running_loop()
        n = 0
        while True:
            n = await loop.run_in_executor(None, counter.count)
            if n >= args.n:
                break
            errors = sum(s.errors for s in senders)
            if errors:
                sample = next(s.error_sample for s in senders
                              if s.error_sample)
                raise bc.BenchError(f"{errors} messages bounced, e.g. "
                                    f"{sample!r}")
            if time.monotonic() > deadline:
                raise bc.BenchError(f"only {n} of {args.n} messages "
                                    f"stored after {args.max_time} s")
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - t0
        await sending
        if n != args.n:
            raise bc.BenchError(f"{n} messages stored, {args.n} sent")
        return elapsed
    finally:
        await asyncio.gather(*(s.close() for s in senders),
                             return_exceptions=True)
        if reader is not None:
            await reader.close()


def main():
    ap = argparse.ArgumentParser(
        description="Measure pigeond's offline-message write rate.")
    ap.add_argument("--driver", choices=("pgsql", "sqlite"), default="pgsql",
                    help="storage driver (default pgsql)")
    ap.add_argument("--conninfo",
                    help="libpq connection string (PostgreSQL)")
    ap.add_argument("--use-db", action="store_true",
                    help="use the conninfo's database as it is instead of "
                         "a throw-away one")
    ap.add_argument("-n", type=int, default=10000,
                    help="messages in all (default 10000)")
    ap.add_argument("--senders", type=int, default=4,
                    help="sending clients K (default 4)")
    ap.add_argument("--sm", action="store_true",
                    help="stream management: time until every message is "
                         "acknowledged (and check it is stored)")
    ap.add_argument("--online", action="store_true",
                    help="the recipient is online; messages are archived "
                         "(mod_mam); implies --sm")
    ap.add_argument("--body-size", type=int, default=64,
                    help="approximate body bytes (default 64)")
    bc.add_tree_args(ap)
    ap.add_argument("--config", help="use the running pigeond of this "
                    "configuration (with --port)")
    ap.add_argument("--port", type=int,
                    help="its STARTTLS c2s port on 127.0.0.1")
    ap.add_argument("--sqlite-path", help="its SQLite file (with --config "
                    "and --driver sqlite)")
    ap.add_argument("--timeout", type=float, default=30.0,
                    help="timeout of each network step, s (default 30)")
    ap.add_argument("--max-time", type=float, default=600.0,
                    help="give up after this many seconds (default 600)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary directory (for debugging)")
    args = ap.parse_args()
    if args.online:
        args.sm = True
    if not 1 <= args.n <= 1000000:
        ap.error("-n must be between 1 and 1000000")
    if not 1 <= args.senders <= 1000:
        ap.error("--senders must be between 1 and 1000")
    if args.driver == "pgsql" and not args.conninfo:
        ap.error("--driver pgsql needs --conninfo")
    if args.config and not args.port:
        ap.error("--config needs --port")
    if args.config and args.driver == "sqlite" and not args.sqlite_path:
        ap.error("--config with --driver sqlite needs --sqlite-path")
    if args.driver == "pgsql" and shutil.which("psql") is None:
        ap.error("psql is needed to count the stored messages")

    try:
        builddir, srcdir, pigeond, pigeonctl = bc.build_tree(
            args, need_pigeond=not args.config)
    except bc.BenchError as e:
        log(str(e))
        return 2

    tmp = tempfile.mkdtemp(prefix="pigeon-offline-bench-")
    logpath = os.path.join(tmp, "pigeond.log")
    proc = None
    dbname = None
    status = 1
    try:
        conninfo = args.conninfo
        sqlite_path = args.sqlite_path
        if args.config:
            cfg, port = os.path.abspath(args.config), args.port
        else:
            if args.driver == "pgsql" and args.use_db:
                storage = ("storage:\n  driver: pgsql\n"
                           f"  conninfo: {bc.yaml_str(conninfo)}\n")
            else:
                storage, conninfo, sqlite_path, dbname = bc.new_store(
                    args.driver, conninfo, tmp, "pigeon_offline_bench")
            pem = bc.make_cert(tmp)
            port = bc.free_port()
            cfg = write_config(tmp, port, pem, builddir, srcdir, storage,
                               max(1000, args.n), archive=args.online)
            proc = bc.start_pigeond(pigeond, cfg, tmp, logpath)
        bc.wait_port(port, proc, 30)

        tag = secrets.token_hex(4)
        recipient = f"rcpt{tag}"
        rcpt_pw = secrets.token_hex(12)
        bc.ctl(pigeonctl, cfg, tmp, "register", recipient, bc.HOST, rcpt_pw)
        creds = []
        for i in range(args.senders):
            u, p = f"snd{tag}x{i}", secrets.token_hex(12)
            bc.ctl(pigeonctl, cfg, tmp, "register", u, bc.HOST, p)
            creds.append((u, p))
        counter = Counter(args.driver, conninfo, sqlite_path, recipient,
                          "mam_messages" if args.online
                          else "offline_messages")

        elapsed = asyncio.run(run(args, port, creds, recipient, rcpt_pw,
                                  counter))
        what = "acked and durable" if args.sm else "offline writes"
        where = (", online + archive" if args.online
                 else ", offline" if args.sm else "")
        print(f"{what}: {args.n} msgs in {elapsed:.2f} s = "
              f"{args.n / elapsed:.0f} msgs/s ({args.driver}, "
              f"{args.senders} senders{where})", flush=True)

        # Leave a used server as we found it (the recipient's messages
        # go with the account).
        for u, _ in creds:
            bc.ctl(pigeonctl, cfg, tmp, "unregister", u, bc.HOST)
        bc.ctl(pigeonctl, cfg, tmp, "unregister", recipient, bc.HOST)
        if proc is not None:
            bc.stop_pigeond(proc, 60)
        status = 0
    except (Exception, KeyboardInterrupt) as e:
        log(bc.failure(e))
    finally:
        # pigeond first, so that nothing holds the database being dropped.
        bc.finish(proc, logpath, tmp, args.keep, log,
                  show_log=status != 0 and proc is not None)
        bc.drop_store(args.conninfo, dbname, log)
    return status


if __name__ == "__main__":
    sys.exit(main())
