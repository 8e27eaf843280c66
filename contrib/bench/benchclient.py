"""What the scripts of contrib/bench (idle-rss.py, offline-bench.py,
mam-bench.py) have in common.

The server side: a throw-away certificate, a free port, waiting for
pigeond to listen, the tail of its log.  The client side: a minimal raw
XMPP client (STARTTLS, SASL SCRAM-SHA-256 without channel binding,
resource binding) on asyncio streams, which each script subclasses for
what its sessions do once logged in.

Only the Python standard library is used, so the client side costs
little and behaves predictably, and the scripts run with /usr/bin/python3
from a bare checkout.  Not a package: the scripts import it from their
own directory.
"""

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
import ssl
import subprocess
import time
import xml.etree.ElementTree as ET

NS_STREAMS = "http://etherx.jabber.org/streams"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"

HOST = "localhost"
MECH = "SCRAM-SHA-256"


class BenchError(Exception):
    pass


def q(ns, name):
    return f"{{{ns}}}{name}"


# --------------------------------------------------------------------------
# Server side: certificate, configuration, process.

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


def ephemeral_range():
    """The kernel's ephemeral port range (Linux default 32768-60999)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_port():
    """A port that is free now and lies below the ephemeral range: a port
    the kernel handed out (bind to 0) is one that the benchmark's own
    thousands of client connections may take before pigeond binds it."""
    lo, hi = ephemeral_range()
    top = lo if lo > 20000 else 65536
    bottom = 20000 if lo > 20000 else hi + 1
    rng = secrets.SystemRandom()
    for _ in range(200):
        port = rng.randrange(bottom, top)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise BenchError(f"no free port in {bottom}-{top - 1}")


def yaml_str(s):
    return json.dumps(s)  # a JSON string is a valid double-quoted YAML scalar


def write_pigeon_yml(tmp, port, pem, builddir, srcdir, script, storage,
                     modules, limits=""):
    """Writes tmp/pigeon.yml and returns its path: host localhost, a
    STARTTLS-only c2s listener on 127.0.0.1:port with the certificate pem,
    sessions never timed out, the modules and schemas of the trees, and
    the caller's storage and modules sections and extra limits (YAML
    lines, each ending in a newline)."""
    cfg = os.path.join(tmp, "pigeon.yml")
    text = f"""\
# Written by contrib/bench/{script}.
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
{modules}
limits:
  idle_timeout: 86400
  keepalive_interval: 86400
  max_connections_per_ip: 0
{limits}
log:
  level: warn

ctl_socket: {yaml_str(os.path.join(tmp, "pigeon.sock"))}
module_path: {yaml_str(os.path.join(builddir, "modules", ".libs"))}
schema_dir: {yaml_str(os.path.join(srcdir, "schemas"))}
"""
    with open(cfg, "w") as f:
        f.write(text)
    return cfg


def conninfo_for_db(conninfo, dbname):
    """conninfo naming the database dbname instead."""
    if re.match(r"postgres(ql)?://", conninfo):
        from urllib.parse import urlsplit, urlunsplit
        u = urlsplit(conninfo)
        return urlunsplit((u.scheme, u.netloc, "/" + dbname, u.query,
                           u.fragment))
    return f"{conninfo} dbname={dbname}"  # a later keyword wins


def psql(conninfo, sql, timeout=60):
    """Runs sql with psql; its unaligned output, stripped."""
    r = subprocess.run(["psql", conninfo, "-X", "-A", "-t", "-q",
                        "-v", "ON_ERROR_STOP=1", "-c", sql],
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise BenchError(f"psql failed: {r.stderr.strip()}")
    return r.stdout.strip()


def ctl(pigeonctl, cfg, cwd, *args, timeout=120):
    """pigeonctl -c cfg args...; its output, or BenchError."""
    r = subprocess.run([pigeonctl, "-c", cfg] + list(args), cwd=cwd,
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise BenchError(f"pigeonctl {args[0]} failed "
                         f"({r.returncode}): {r.stderr.strip()}")
    return r.stdout


def new_store(driver, conninfo, tmp, prefix):
    """A fresh store for a run: (storage YAML, conninfo, sqlite path,
    database to drop afterwards or None).  PostgreSQL: the database
    <prefix>_<pid>, created from conninfo (its role needs CREATEDB)."""
    if driver == "pgsql":
        dbname = f"{prefix}_{os.getpid()}"
        psql(conninfo, f"CREATE DATABASE {dbname}")
        conninfo = conninfo_for_db(conninfo, dbname)
        return ("storage:\n  driver: pgsql\n"
                f"  conninfo: {yaml_str(conninfo)}\n", conninfo, None,
                dbname)
    path = os.path.join(tmp, "pigeon.db")
    return ("storage:\n  driver: sqlite\n"
            f"  path: {yaml_str(path)}\n", None, path, None)


def drop_store(conninfo, dbname, log):
    """Drops what new_store created (nothing for SQLite: the file goes
    with the temporary directory).  Run after pigeond has stopped."""
    if dbname is None:
        return
    try:
        psql(conninfo, f"DROP DATABASE IF EXISTS {dbname}")
    except BenchError as e:
        log(f"cannot drop {dbname}: {e}")


def add_tree_args(ap):
    """--builddir and --srcdir, by default this checkout and its _build."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    ap.add_argument("--builddir", default=os.path.join(root, "_build"),
                    help="build tree (default: %(default)s)")
    ap.add_argument("--srcdir", default=root,
                    help="source tree (default: %(default)s)")


def build_tree(args, need_pigeond=True):
    """(builddir, srcdir, pigeond, pigeonctl) from add_tree_args' options;
    BenchError if pigeonctl, or pigeond when needed, is not there."""
    builddir = os.path.abspath(args.builddir)
    srcdir = os.path.abspath(args.srcdir)
    pigeond = os.path.join(builddir, "pigeond")
    pigeonctl = os.path.join(builddir, "pigeonctl")
    for exe in ([pigeond, pigeonctl] if need_pigeond else [pigeonctl]):
        if not os.access(exe, os.X_OK):
            raise BenchError(f"{exe} not found or not executable "
                             "(see --builddir)")
    return builddir, srcdir, pigeond, pigeonctl


def start_pigeond(pigeond, cfg, cwd, logpath):
    """Starts pigeond -c cfg in cwd, its output going to logpath."""
    with open(logpath, "wb") as logf:
        return subprocess.Popen([pigeond, "-c", cfg], cwd=cwd,
                                stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=subprocess.STDOUT)


def stop_pigeond(proc, timeout):
    """Stops pigeond as an administrator would (SIGTERM); that it takes
    longer than timeout s or exits with an error voids the run."""
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"pigeond did not exit within {timeout} s of "
                         "SIGTERM") from None
    if rc != 0:
        raise BenchError(f"pigeond exited with status {rc} after SIGTERM")


def finish(proc, logpath, tmp, keep, log, show_log=True):
    """How every run ends, whatever happened: no pigeond left running
    (proc may be None), what became of it and the tail of its log said
    through log when show_log, the temporary directory tmp removed unless
    keep."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if show_log:
        if proc is not None and proc.returncode is not None \
                and proc.returncode < 0:
            log(f"pigeond died of signal {-proc.returncode}")
        tail = log_tail(logpath)
        if tail:
            log("pigeond log (last lines):\n" + tail)
    if keep:
        log(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def failure(e):
    """The line that says why a run failed with e: a BenchError explains
    itself, anything else is named by its type."""
    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    if isinstance(e, BenchError):
        return f"FAILED: {e}"
    return f"FAILED: {type(e).__name__}: {e}"


def wait_port(port, proc, timeout):
    """Waits until something listens on port; proc is the pigeond being
    started (its early exit fails at once), or None for one already
    running."""
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


# --------------------------------------------------------------------------
# Client side: a minimal XMPP client, one per session.

def client_ssl_context():
    """The server's certificate is the throw-away one: nothing to verify."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Scram:
    """SCRAM-SHA-256 without channel binding (RFC 5802, RFC 7677)."""

    # (salt, iterations) -> SaltedPassword.  Sessions of one account would
    # otherwise each spend the PBKDF2 iterations on the same result.
    _salted = {}

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
        salt, iters = base64.b64decode(s), int(i)
        # The password is part of the key: two accounts may share a salt
        # only in theory, but then they must not share the result.
        key = (self.password, salt, iters)
        salted = Scram._salted.get(key)
        if salted is None:
            salted = hashlib.pbkdf2_hmac("sha256", self.password, salt, iters)
            Scram._salted[key] = salted
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
        server_final = server_final.decode()
        attrs = dict(kv.split("=", 1) for kv in server_final.split(","))
        if "e" in attrs:
            raise BenchError(f"SCRAM server error: {attrs['e']}")
        v = attrs.get("v")
        if v is None or not hmac.compare_digest(base64.b64decode(v),
                                                self.server_sig):
            raise BenchError("SCRAM server signature mismatch")


class Client:
    """One c2s connection: login() negotiates it up to a bound resource;
    what follows (presence, reading what the server sends) is the
    subclass's.  Errors are BenchError, named after `who` and index."""

    def __init__(self, index, port, ssl_ctx, timeout, who="session"):
        self.index = index
        self.name = f"{who} {index}"
        self.port = port
        self.ssl_ctx = ssl_ctx
        self.timeout = timeout
        self.reader = None
        self.writer = None
        self.parser = None
        self.depth = 0
        self.pending = []
        self.drain_task = None

    # -- I/O helpers
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
            "xmlns='jabber:client' "
            f"xmlns:stream='{NS_STREAMS}'>")

    def feed(self, data, what=None):
        """Parses data; the complete top-level elements go to pending."""
        self.parser.feed(data)
        for ev, el in self.parser.read_events():
            if ev == "start":
                self.depth += 1
            else:
                self.depth -= 1
                if self.depth == 1:
                    self.pending.append(el)
                elif self.depth == 0:
                    waiting = f" while waiting for {what}" if what else ""
                    raise BenchError(f"{self.name}: stream closed{waiting}")

    async def element(self, what):
        """The next complete top-level element of the stream."""
        while not self.pending:
            try:
                data = await asyncio.wait_for(self.reader.read(65536),
                                              self.timeout)
            except asyncio.TimeoutError:
                raise BenchError(f"{self.name}: timeout waiting "
                                 f"for {what}") from None
            if not data:
                raise BenchError(f"{self.name}: connection closed "
                                 f"by the server while waiting for {what}")
            self.feed(data, what)
        el = self.pending.pop(0)
        if el.tag == q(NS_STREAMS, "error"):
            cond = [c.tag.split("}")[-1] for c in el]
            raise BenchError(f"{self.name}: stream error "
                             f"{cond} while waiting for {what}")
        return el

    async def expect(self, tag, what):
        el = await self.element(what)
        if el.tag != tag:
            raise BenchError(f"{self.name}: expected {what}, "
                             f"got {ET.tostring(el)[:300]!r}")
        return el

    # -- negotiation
    async def login(self, user, password, resource):
        """Connects, STARTTLS, SCRAM-SHA-256 as user, binds resource (and
        establishes the RFC 3921 session if the server requires one)."""
        try:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.port,
                                        limit=1 << 20),
                self.timeout)
        except asyncio.TimeoutError:
            raise BenchError(f"{self.name}: connect timeout") from None

        await self.open_stream()
        feats = await self.expect(q(NS_STREAMS, "features"),
                                  "features (plain)")
        if feats.find(q(NS_TLS, "starttls")) is None:
            raise BenchError(f"{self.name}: no <starttls/> offered")
        await self.send(f"<starttls xmlns='{NS_TLS}'/>")
        await self.expect(q(NS_TLS, "proceed"), "<proceed/>")
        try:
            await asyncio.wait_for(
                self.writer.start_tls(self.ssl_ctx, server_hostname=HOST),
                self.timeout)
        except asyncio.TimeoutError:
            raise BenchError(f"{self.name}: TLS handshake timeout") \
                from None

        await self.open_stream()
        feats = await self.expect(q(NS_STREAMS, "features"),
                                  "features (TLS)")
        mechs = [m.text for m in feats.iter(q(NS_SASL, "mechanism"))]
        if MECH not in mechs:
            raise BenchError(f"{self.name}: {MECH} not offered ({mechs})")
        scram = Scram(user, password)
        await self.send(
            f"<auth xmlns='{NS_SASL}' mechanism='{MECH}'>"
            f"{base64.b64encode(scram.first()).decode()}</auth>")
        el = await self.element("SASL challenge")
        if el.tag != q(NS_SASL, "challenge"):
            raise BenchError(f"{self.name}: SASL: expected "
                             f"challenge, got {ET.tostring(el)[:300]!r}")
        final = scram.final(base64.b64decode(el.text or ""))
        await self.send(f"<response xmlns='{NS_SASL}'>"
                        f"{base64.b64encode(final).decode()}</response>")
        el = await self.element("SASL success")
        if el.tag != q(NS_SASL, "success"):
            raise BenchError(f"{self.name}: SASL: expected "
                             f"success, got {ET.tostring(el)[:300]!r}")
        scram.verify(base64.b64decode(el.text or ""))

        await self.open_stream()
        feats = await self.expect(q(NS_STREAMS, "features"),
                                  "features (authenticated)")
        if feats.find(q(NS_BIND, "bind")) is None:
            raise BenchError(f"{self.name}: no <bind/> offered")
        await self.send(
            f"<iq type='set' id='bind{self.index}'>"
            f"<bind xmlns='{NS_BIND}'><resource>{resource}</resource>"
            "</bind></iq>")
        el = await self.expect("{jabber:client}iq", "bind result")
        if el.get("type") != "result":
            raise BenchError(f"{self.name}: bind failed: "
                             f"{ET.tostring(el)[:300]!r}")
        sess = feats.find(q(NS_SESSION, "session"))
        if sess is not None and sess.find(q(NS_SESSION, "optional")) is None:
            await self.send(f"<iq type='set' id='sess{self.index}'>"
                            f"<session xmlns='{NS_SESSION}'/></iq>")
            el = await self.expect("{jabber:client}iq", "session result")
            if el.get("type") != "result":
                raise BenchError(f"{self.name}: session failed")

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
