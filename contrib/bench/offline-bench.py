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
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

NS_STREAMS = "http://etherx.jabber.org/streams"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"

HOST = "localhost"
MECH = "SCRAM-SHA-256"
CHUNK = 200  # messages per write


class BenchError(Exception):
    pass


def log(msg):
    print(f"offline-bench: {msg}", file=sys.stderr, flush=True)


def q(ns, name):
    return f"{{{ns}}}{name}"


# --------------------------------------------------------------------------
# Server side (as contrib/bench/idle-rss.py).

def make_cert(tmp):
    key = os.path.join(tmp, "key.pem")
    crt = os.path.join(tmp, "cert.pem")
    pem = os.path.join(tmp, "localhost.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec",
         "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "30", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost",
         "-keyout", key, "-out", crt],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        timeout=60)
    with open(pem, "wb") as out:
        for part in (crt, key):
            with open(part, "rb") as f:
                out.write(f.read())
    os.chmod(pem, 0o600)
    os.unlink(key)
    os.unlink(crt)
    return pem


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def yaml_str(s):
    return json.dumps(s)  # a JSON string is a valid double-quoted YAML scalar


def conninfo_for_db(conninfo, dbname):
    if re.match(r"postgres(ql)?://", conninfo):
        from urllib.parse import urlsplit, urlunsplit
        u = urlsplit(conninfo)
        return urlunsplit((u.scheme, u.netloc, "/" + dbname, u.query,
                           u.fragment))
    return f"{conninfo} dbname={dbname}"  # a later keyword wins


def psql(conninfo, sql):
    r = subprocess.run(["psql", conninfo, "-X", "-A", "-t", "-q",
                        "-v", "ON_ERROR_STOP=1", "-c", sql],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise BenchError(f"psql failed: {r.stderr.strip()}")
    return r.stdout.strip()


def write_config(tmp, port, pem, builddir, srcdir, storage, quota):
    cfg = os.path.join(tmp, "pigeon.yml")
    text = f"""\
# Written by contrib/bench/offline-bench.py.
hosts:
  - localhost

listen:
  - port: {port}
    ip: "127.0.0.1"
    module: c2s
    starttls_required: true

certfiles:
  - {yaml_str(pem)}

{storage}
modules:
  mod_ping: {{}}
  mod_offline:
    quota: "{quota}"

limits:
  idle_timeout: 86400
  keepalive_interval: 86400

log:
  level: warn

ctl_socket: {yaml_str(os.path.join(tmp, "pigeon.sock"))}
module_path: {yaml_str(os.path.join(builddir, "modules", ".libs"))}
schema_dir: {yaml_str(os.path.join(srcdir, "schemas"))}
"""
    with open(cfg, "w") as f:
        f.write(text)
    return cfg


def wait_port(port, proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"pigeond exited with status {proc.returncode} "
                             "while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"pigeond did not listen on port {port} "
                     f"within {timeout} s")


def log_tail(path, lines=40):
    try:
        with open(path, errors="replace") as f:
            data = f.read().splitlines()
    except OSError:
        return ""
    return "\n".join(data[-lines:])


def ctl(pigeonctl, cfg, cwd, *args):
    r = subprocess.run([pigeonctl, "-c", cfg] + list(args), cwd=cwd,
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise BenchError(f"pigeonctl {args[0]} failed ({r.returncode}): "
                         f"{r.stderr.strip()}")
    return r.stdout


class Counter:
    """Counts the recipient's stored messages."""

    def __init__(self, driver, conninfo, sqlite_path, user):
        self.driver = driver
        self.conninfo = conninfo
        self.sqlite_path = sqlite_path
        self.sql = ("SELECT count(*) FROM offline_messages "
                    f"WHERE host = '{HOST}' AND username = '{user}'")

    def count(self):
        if self.driver == "pgsql":
            return int(psql(self.conninfo, self.sql))
        db = sqlite3.connect(self.sqlite_path, timeout=30)
        try:
            return db.execute(self.sql).fetchone()[0]
        finally:
            db.close()


# --------------------------------------------------------------------------
# Client side: a minimal XMPP client (as in idle-rss.py).

class Scram:
    """SCRAM-SHA-256 without channel binding (RFC 5802, RFC 7677)."""

    def __init__(self, user, password):
        self.password = password.encode()
        self.nonce = base64.b64encode(secrets.token_bytes(18)).decode()
        self.gs2 = "n,,"
        self.first_bare = f"n={user},r={self.nonce}"
        self.server_sig = None

    def first(self):
        return (self.gs2 + self.first_bare).encode()

    def final(self, server_first):
        server_first = server_first.decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        r, s, i = attrs.get("r"), attrs.get("s"), attrs.get("i")
        if r is None or s is None or i is None:
            raise BenchError(f"bad SCRAM server-first: {server_first!r}")
        if not r.startswith(self.nonce) or len(r) == len(self.nonce):
            raise BenchError("SCRAM server nonce does not extend ours")
        salted = hashlib.pbkdf2_hmac("sha256", self.password,
                                     base64.b64decode(s), int(i))
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        cbind = base64.b64encode(self.gs2.encode()).decode()
        without_proof = f"c={cbind},r={r}"
        auth_msg = f"{self.first_bare},{server_first},{without_proof}".encode()
        client_sig = hmac.digest(stored_key, auth_msg, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, client_sig))
        self.server_sig = hmac.digest(server_key, auth_msg, "sha256")
        return (f"{without_proof},p="
                f"{base64.b64encode(proof).decode()}").encode()

    def verify(self, server_final):
        attrs = dict(kv.split("=", 1)
                     for kv in server_final.decode().split(","))
        v = attrs.get("v")
        if v is None or not hmac.compare_digest(base64.b64decode(v),
                                                self.server_sig):
            raise BenchError("SCRAM server signature mismatch")


class Sender:
    def __init__(self, index, port, user, password, ssl_ctx, timeout):
        self.index = index
        self.port = port
        self.user = user
        self.password = password
        self.ssl_ctx = ssl_ctx
        self.timeout = timeout
        self.reader = self.writer = None
        self.parser = None
        self.depth = 0
        self.pending = []
        self.errors = 0
        self.error_sample = None
        self.drain_task = None

    async def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), self.timeout)

    async def open_stream(self):
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.pending = []
        await self.send(
            "<?xml version='1.0'?>"
            f"<stream:stream to='{HOST}' version='1.0' xml:lang='en' "
            f"xmlns='jabber:client' xmlns:stream='{NS_STREAMS}'>")

    def feed(self, data):
        self.parser.feed(data)
        for ev, el in self.parser.read_events():
            if ev == "start":
                self.depth += 1
            else:
                self.depth -= 1
                if self.depth == 1:
                    self.pending.append(el)
                elif self.depth == 0:
                    raise BenchError(f"sender {self.index}: stream closed")

    async def element(self, what):
        while not self.pending:
            try:
                data = await asyncio.wait_for(self.reader.read(65536),
                                              self.timeout)
            except asyncio.TimeoutError:
                raise BenchError(f"sender {self.index}: timeout waiting "
                                 f"for {what}") from None
            if not data:
                raise BenchError(f"sender {self.index}: connection closed "
                                 f"while waiting for {what}")
            self.feed(data)
        el = self.pending.pop(0)
        if el.tag == q(NS_STREAMS, "error"):
            raise BenchError(f"sender {self.index}: stream error "
                             f"{[c.tag for c in el]} waiting for {what}")
        return el

    async def expect(self, tag, what):
        el = await self.element(what)
        if el.tag != tag:
            raise BenchError(f"sender {self.index}: expected {what}, "
                             f"got {ET.tostring(el)[:300]!r}")
        return el

    async def setup(self):
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20),
            self.timeout)
        await self.open_stream()
        await self.expect(q(NS_STREAMS, "features"), "features")
        await self.send(f"<starttls xmlns='{NS_TLS}'/>")
        await self.expect(q(NS_TLS, "proceed"), "<proceed/>")
        await asyncio.wait_for(
            self.writer.start_tls(self.ssl_ctx, server_hostname=HOST),
            self.timeout)
        await self.open_stream()
        await self.expect(q(NS_STREAMS, "features"), "features (TLS)")
        scram = Scram(self.user, self.password)
        await self.send(f"<auth xmlns='{NS_SASL}' mechanism='{MECH}'>"
                        f"{base64.b64encode(scram.first()).decode()}</auth>")
        el = await self.expect(q(NS_SASL, "challenge"), "SASL challenge")
        final = scram.final(base64.b64decode(el.text or ""))
        await self.send(f"<response xmlns='{NS_SASL}'>"
                        f"{base64.b64encode(final).decode()}</response>")
        el = await self.expect(q(NS_SASL, "success"), "SASL success")
        scram.verify(base64.b64decode(el.text or ""))
        await self.open_stream()
        await self.expect(q(NS_STREAMS, "features"), "features (auth)")
        await self.send(f"<iq type='set' id='b{self.index}'><bind "
                        f"xmlns='{NS_BIND}'><resource>bench</resource>"
                        "</bind></iq>")
        el = await self.expect("{jabber:client}iq", "bind result")
        if el.get("type") != "result":
            raise BenchError(f"sender {self.index}: bind failed")
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
                for el in self.pending:
                    if el.tag == "{jabber:client}message" and \
                            el.get("type") == "error":
                        self.errors += 1
                        if self.error_sample is None:
                            self.error_sample = ET.tostring(el)[:300]
                self.pending = []
        except (ConnectionError, ssl.SSLError, OSError, BenchError):
            return

    async def pipeline(self, to, first, count, body):
        self.drain_task = asyncio.create_task(self.drain())
        for start in range(first, first + count, CHUNK):
            end = min(first + count, start + CHUNK)
            await self.send("".join(
                f"<message to='{to}' id='m{i}' type='chat'>"
                f"<body>{body} {i}</body></message>"
                for i in range(start, end)))

    async def close(self):
        if self.writer is None:
            return
        try:
            if not self.writer.is_closing():
                self.writer.write(b"</stream:stream>")
                self.writer.close()
                await asyncio.wait_for(self.writer.wait_closed(), 5)
        except Exception:
            self.writer.transport.abort()
        if self.drain_task is not None:
            self.drain_task.cancel()
            try:
                await self.drain_task
            except BaseException:
                pass


async def run(args, port, senders_creds, recipient, counter):
    ssl_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ssl_ctx.check_hostname = False
    ssl_ctx.verify_mode = ssl.CERT_NONE
    senders = [Sender(i, port, u, p, ssl_ctx, args.timeout)
               for i, (u, p) in enumerate(senders_creds)]
    to = f"{recipient}@{HOST}"
    body = "x" * max(0, args.body_size - 8)
    try:
        await asyncio.gather(*(s.setup() for s in senders))
        if counter.count() != 0:
            raise BenchError("the recipient already has stored messages")
        share, extra = divmod(args.n, len(senders))
        plan, first = [], 0
        for i, s in enumerate(senders):
            count = share + (1 if i < extra else 0)
            plan.append((s, first, count))
            first += count
        t0 = time.monotonic()
        sending = asyncio.gather(*(s.pipeline(to, f, c, body)
                                   for s, f, c in plan))
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
                raise BenchError(f"{errors} messages bounced, e.g. "
                                 f"{sample!r}")
            if time.monotonic() > deadline:
                raise BenchError(f"only {n} of {args.n} messages stored "
                                 f"after {args.max_time} s")
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - t0
        await sending
        if n != args.n:
            raise BenchError(f"{n} messages stored, {args.n} sent")
        return elapsed
    finally:
        await asyncio.gather(*(s.close() for s in senders),
                             return_exceptions=True)


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
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
    ap.add_argument("--body-size", type=int, default=64,
                    help="approximate body bytes (default 64)")
    ap.add_argument("--builddir", default=os.path.join(root, "_build"),
                    help="build tree (default: %(default)s)")
    ap.add_argument("--srcdir", default=root,
                    help="source tree (default: %(default)s)")
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

    builddir = os.path.abspath(args.builddir)
    srcdir = os.path.abspath(args.srcdir)
    pigeond = os.path.join(builddir, "pigeond")
    pigeonctl = os.path.join(builddir, "pigeonctl")
    for exe in ([pigeonctl] if args.config else [pigeond, pigeonctl]):
        if not os.access(exe, os.X_OK):
            log(f"{exe} not found or not executable (see --builddir)")
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
            if args.driver == "pgsql":
                if not args.use_db:
                    dbname = f"pigeon_offline_bench_{os.getpid()}"
                    psql(conninfo, f"CREATE DATABASE {dbname}")
                    conninfo = conninfo_for_db(conninfo, dbname)
                storage = ("storage:\n  driver: pgsql\n"
                           f"  conninfo: {yaml_str(conninfo)}\n")
            else:
                sqlite_path = os.path.join(tmp, "pigeon.db")
                storage = ("storage:\n  driver: sqlite\n"
                           f"  path: {yaml_str(sqlite_path)}\n")
            pem = make_cert(tmp)
            port = free_port()
            cfg = write_config(tmp, port, pem, builddir, srcdir, storage,
                               max(1000, args.n))
            with open(logpath, "wb") as logf:
                proc = subprocess.Popen([pigeond, "-c", cfg], cwd=tmp,
                                        stdin=subprocess.DEVNULL,
                                        stdout=logf,
                                        stderr=subprocess.STDOUT)
        wait_port(port, proc, 30)

        tag = secrets.token_hex(4)
        recipient = f"rcpt{tag}"
        ctl(pigeonctl, cfg, tmp, "register", recipient, HOST,
            secrets.token_hex(12))
        creds = []
        for i in range(args.senders):
            u, p = f"snd{tag}x{i}", secrets.token_hex(12)
            ctl(pigeonctl, cfg, tmp, "register", u, HOST, p)
            creds.append((u, p))
        counter = Counter(args.driver, conninfo, sqlite_path, recipient)

        elapsed = asyncio.run(run(args, port, creds, recipient, counter))
        print(f"offline writes: {args.n} msgs in {elapsed:.2f} s = "
              f"{args.n / elapsed:.0f} msgs/s ({args.driver}, "
              f"{args.senders} senders)", flush=True)

        # Leave a used server as we found it (the recipient's messages
        # go with the account).
        for u, _ in creds:
            ctl(pigeonctl, cfg, tmp, "unregister", u, HOST)
        ctl(pigeonctl, cfg, tmp, "unregister", recipient, HOST)
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                raise BenchError("pigeond did not exit within 60 s of "
                                 "SIGTERM")
            if rc != 0:
                raise BenchError(f"pigeond exited with status {rc}")
        status = 0
    except BenchError as e:
        log(f"FAILED: {e}")
    except Exception as e:
        log(f"FAILED: {type(e).__name__}: {e}")
    except KeyboardInterrupt:
        log("interrupted")
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if status != 0 and proc is not None:
            tail = log_tail(logpath)
            if tail:
                log("pigeond log (last lines):\n" + tail)
        if dbname is not None:
            try:
                psql(args.conninfo, f"DROP DATABASE IF EXISTS {dbname}")
            except BenchError as e:
                log(f"cannot drop {dbname}: {e}")
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
