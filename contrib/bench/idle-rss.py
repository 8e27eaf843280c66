#!/usr/bin/python3
"""Measure pigeond's memory per idle, authenticated TLS session.

Starts a fresh pigeond from the build tree on a free port on 127.0.0.1,
with a throw-away certificate, configuration and SQLite store in a
temporary directory, registers one account, then opens N client sessions
(STARTTLS, SASL SCRAM-SHA-256, resource binding, initial presence) and
keeps them open and idle.  The server's VmRSS is read before and after;
the difference divided by N is the figure of interest.

Only the Python standard library is used (asyncio, ssl, hashlib/hmac),
so the client side costs little and behaves predictably.

    contrib/bench/idle-rss.py                 1000 sessions
    contrib/bench/idle-rss.py -n 100 --json out.json

All sessions belong to the one account, so every initial presence is
delivered to all the sessions already available (N*(N-1)/2 presences
in all); the client reads and discards that traffic, and the "after"
figure is taken once it has stopped.
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import resource
import secrets
import shutil
import signal
import socket
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
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"

HOST = "localhost"
USER = "bench"
MECH = "SCRAM-SHA-256"


class BenchError(Exception):
    pass


def log(msg):
    print(f"idle-rss: {msg}", file=sys.stderr, flush=True)


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


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def yaml_str(s):
    return json.dumps(s)  # a JSON string is a valid double-quoted YAML scalar


def write_config(tmp, port, pem, builddir, srcdir, n):
    cfg = os.path.join(tmp, "pigeon.yml")
    max_sessions = min(10000, max(100, n))
    text = f"""\
# Written by contrib/bench/idle-rss.py.
hosts:
  - localhost

listen:
  - port: {port}
    ip: "127.0.0.1"
    module: c2s
    starttls_required: true

certfiles:
  - {yaml_str(pem)}

storage:
  driver: sqlite
  path: {yaml_str(os.path.join(tmp, "pigeon.db"))}

modules:
  mod_disco: {{}}
  mod_ping: {{}}
  mod_version: {{}}

limits:
  idle_timeout: 86400
  keepalive_interval: 86400
  max_sessions_per_user: {max_sessions}

log:
  level: warn

ctl_socket: {yaml_str(os.path.join(tmp, "pigeon.sock"))}
module_path: {yaml_str(os.path.join(builddir, "modules", ".libs"))}
schema_dir: {yaml_str(os.path.join(srcdir, "schemas"))}
"""
    with open(cfg, "w") as f:
        f.write(text)
    return cfg


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard
        if target == resource.RLIM_INFINITY:
            target = max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as e:
            log(f"cannot raise RLIMIT_NOFILE to {target}: {e}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        raise BenchError(f"RLIMIT_NOFILE is {soft} (hard {hard}), "
                         f"{need} needed for this many sessions")
    return soft


def vmrss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                parts = line.split()
                assert parts[2] == "kB", line
                return int(parts[1])
    raise BenchError(f"no VmRSS in /proc/{pid}/status")


def wait_port(port, proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
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

class Scram:
    """SCRAM-SHA-256 without channel binding (RFC 5802, RFC 7677)."""

    _salted = {}  # (salt, iterations) -> SaltedPassword; same for all

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
        key = (salt, iters)
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


class Session:
    def __init__(self, index, port, password, ssl_ctx, step_timeout,
                 presence=True):
        self.presence = presence
        self.index = index
        self.port = port
        self.password = password
        self.ssl_ctx = ssl_ctx
        self.timeout = step_timeout
        self.reader = None
        self.writer = None
        self.parser = None
        self.depth = 0
        self.pending = []
        self.received_idle = 0  # bytes read once set up
        self.last_rx = 0.0
        self.closed_by_server = False
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

    async def element(self, what):
        """The next complete top-level element of the stream."""
        while True:
            while self.pending:
                el = self.pending.pop(0)
                if el.tag == q(NS_STREAMS, "error"):
                    cond = [c.tag.split("}")[-1] for c in el]
                    raise BenchError(f"session {self.index}: stream error "
                                     f"{cond} while waiting for {what}")
                return el
            try:
                data = await asyncio.wait_for(self.reader.read(65536),
                                              self.timeout)
            except asyncio.TimeoutError:
                raise BenchError(f"session {self.index}: timeout waiting "
                                 f"for {what}") from None
            if not data:
                raise BenchError(f"session {self.index}: connection closed "
                                 f"by the server while waiting for {what}")
            self.parser.feed(data)
            for ev, el in self.parser.read_events():
                if ev == "start":
                    self.depth += 1
                else:
                    self.depth -= 1
                    if self.depth == 1:
                        self.pending.append(el)
                    elif self.depth == 0:
                        raise BenchError(f"session {self.index}: stream "
                                         f"closed while waiting for {what}")

    async def expect(self, tag, what):
        el = await self.element(what)
        if el.tag != tag:
            raise BenchError(f"session {self.index}: expected {what}, "
                             f"got {ET.tostring(el)[:300]!r}")
        return el

    # -- negotiation
    async def setup(self):
        try:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.port,
                                        limit=1 << 20),
                self.timeout)
        except asyncio.TimeoutError:
            raise BenchError(f"session {self.index}: connect timeout") \
                from None

        await self.open_stream()
        feats = await self.expect(q(NS_STREAMS, "features"),
                                  "features (plain)")
        if feats.find(q(NS_TLS, "starttls")) is None:
            raise BenchError(f"session {self.index}: no <starttls/> offered")
        await self.send(f"<starttls xmlns='{NS_TLS}'/>")
        await self.expect(q(NS_TLS, "proceed"), "<proceed/>")
        try:
            await asyncio.wait_for(
                self.writer.start_tls(self.ssl_ctx, server_hostname=HOST),
                self.timeout)
        except asyncio.TimeoutError:
            raise BenchError(f"session {self.index}: TLS handshake timeout") \
                from None

        await self.open_stream()
        feats = await self.expect(q(NS_STREAMS, "features"),
                                  "features (TLS)")
        mechs = [m.text for m in feats.iter(q(NS_SASL, "mechanism"))]
        if MECH not in mechs:
            raise BenchError(f"session {self.index}: {MECH} not offered "
                             f"({mechs})")
        scram = Scram(USER, self.password)
        await self.send(
            f"<auth xmlns='{NS_SASL}' mechanism='{MECH}'>"
            f"{base64.b64encode(scram.first()).decode()}</auth>")
        el = await self.element("SASL challenge")
        if el.tag != q(NS_SASL, "challenge"):
            raise BenchError(f"session {self.index}: SASL: expected "
                             f"challenge, got {ET.tostring(el)[:300]!r}")
        final = scram.final(base64.b64decode(el.text or ""))
        await self.send(f"<response xmlns='{NS_SASL}'>"
                        f"{base64.b64encode(final).decode()}</response>")
        el = await self.element("SASL success")
        if el.tag != q(NS_SASL, "success"):
            raise BenchError(f"session {self.index}: SASL: expected "
                             f"success, got {ET.tostring(el)[:300]!r}")
        scram.verify(base64.b64decode(el.text or ""))

        await self.open_stream()
        feats = await self.expect(q(NS_STREAMS, "features"),
                                  "features (authenticated)")
        if feats.find(q(NS_BIND, "bind")) is None:
            raise BenchError(f"session {self.index}: no <bind/> offered")
        await self.send(
            f"<iq type='set' id='bind{self.index}'>"
            f"<bind xmlns='{NS_BIND}'><resource>r{self.index}</resource>"
            "</bind></iq>")
        el = await self.expect("{jabber:client}iq", "bind result")
        if el.get("type") != "result":
            raise BenchError(f"session {self.index}: bind failed: "
                             f"{ET.tostring(el)[:300]!r}")
        sess = feats.find(q(NS_SESSION, "session"))
        if sess is not None and sess.find(q(NS_SESSION, "optional")) is None:
            await self.send(f"<iq type='set' id='sess{self.index}'>"
                            f"<session xmlns='{NS_SESSION}'/></iq>")
            el = await self.expect("{jabber:client}iq", "session result")
            if el.get("type") != "result":
                raise BenchError(f"session {self.index}: session failed")

        if self.presence:
            await self.send("<presence/>")
        # From here on the session is idle; what the server sends (the
        # other sessions' presences) is read and thrown away so that it
        # does not pile up in the server's output buffers.
        self.parser = None
        self.pending = []
        self.last_rx = time.monotonic()
        self.drain_task = asyncio.create_task(self.drain())

    async def drain(self):
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    self.closed_by_server = True
                    return
                self.received_idle += len(data)
                self.last_rx = time.monotonic()
        except (ConnectionError, ssl.SSLError, OSError):
            self.closed_by_server = True

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


# --------------------------------------------------------------------------

async def run_sessions(args, port, password, pid):
    ssl_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ssl_ctx.check_hostname = False
    ssl_ctx.verify_mode = ssl.CERT_NONE

    sessions = [Session(i, port, password, ssl_ctx, args.timeout,
                        not args.no_presence)
                for i in range(args.n)]
    sem = asyncio.Semaphore(args.concurrency)

    async def one(s):
        async with sem:
            await s.setup()

    result = None
    try:
        await asyncio.sleep(1.0)
        rss_before = vmrss_kib(pid)
        log(f"baseline VmRSS {rss_before} KiB; opening {args.n} sessions "
            f"({args.concurrency} at a time)")
        t0 = time.monotonic()
        outcomes = await asyncio.gather(*(one(s) for s in sessions),
                                        return_exceptions=True)
        errors = [e for e in outcomes if isinstance(e, BaseException)]
        if errors:
            for e in errors[:5]:
                log(f"error: {e!r}")
            raise BenchError(f"{len(errors)} of {args.n} sessions failed "
                             "to set up")
        log(f"{args.n} sessions up in {time.monotonic() - t0:.1f} s")

        # Settle: at least 2 s, and until no session has received
        # anything for 1 s (the presence fan-out must be over).
        await asyncio.sleep(2.0)
        deadline = time.monotonic() + args.settle_max
        while time.monotonic() < deadline:
            last = max(s.last_rx for s in sessions)
            if time.monotonic() - last >= 1.0:
                break
            await asyncio.sleep(0.25)
        else:
            log(f"warning: traffic still flowing after {args.settle_max} s")
        rss_after = vmrss_kib(pid)
        dropped = sum(s.closed_by_server for s in sessions)
        if dropped:
            raise BenchError(f"the server closed {dropped} idle sessions")
        if any(s.writer.is_closing() for s in sessions):
            raise BenchError("some sessions are closed")
        delta = rss_after - rss_before
        result = {
            "sessions": args.n,
            "rss_before_kib": rss_before,
            "rss_after_kib": rss_after,
            "delta_kib": delta,
            "delta_per_session_kib": round(delta / args.n, 2),
            "idle_bytes_received": sum(s.received_idle for s in sessions),
        }
    finally:
        await asyncio.gather(*(s.close() for s in sessions),
                             return_exceptions=True)
    return result


def print_table(r):
    cols = [("sessions", str(r["sessions"])),
            ("RSS before (KiB)", str(r["rss_before_kib"])),
            ("RSS after (KiB)", str(r["rss_after_kib"])),
            ("delta (KiB)", str(r["delta_kib"])),
            ("per session (KiB)", f"{r['delta_per_session_kib']:.2f}")]
    widths = [max(len(h), len(v)) for h, v in cols]
    print("  ".join(h.rjust(w) for (h, _), w in zip(cols, widths)))
    print("  ".join(v.rjust(w) for (_, v), w in zip(cols, widths)))
    sys.stdout.flush()


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    ap = argparse.ArgumentParser(
        description="Measure pigeond memory per idle authenticated "
                    "TLS session.")
    ap.add_argument("-n", type=int, default=1000,
                    help="number of sessions (default 1000, at most 10000)")
    ap.add_argument("-c", "--concurrency", type=int, default=50,
                    help="sessions negotiated at the same time (default 50)")
    ap.add_argument("--json", metavar="PATH",
                    help="also write the figures as JSON to PATH")
    ap.add_argument("--builddir", default=os.path.join(root, "_build"),
                    help="build tree (default: %(default)s)")
    ap.add_argument("--srcdir", default=root,
                    help="source tree (default: %(default)s)")
    ap.add_argument("--timeout", type=float, default=30.0,
                    help="timeout of each network step, s (default 30)")
    ap.add_argument("--settle-max", type=float, default=120.0,
                    help=argparse.SUPPRESS)
    ap.add_argument("--no-presence", action="store_true",
                    help="do not send initial presence (all sessions share "
                         "one account, so presence fans out N*(N-1)/2 "
                         "stanzas that inflate the figure)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary directory (for debugging)")
    args = ap.parse_args()
    if not 1 <= args.n <= 10000:
        ap.error("-n must be between 1 and 10000 (max_sessions_per_user)")
    if args.concurrency < 1:
        ap.error("--concurrency must be at least 1")

    builddir = os.path.abspath(args.builddir)
    srcdir = os.path.abspath(args.srcdir)
    pigeond = os.path.join(builddir, "pigeond")
    pigeonctl = os.path.join(builddir, "pigeonctl")
    for exe in (pigeond, pigeonctl):
        if not os.access(exe, os.X_OK):
            log(f"{exe} not found or not executable (see --builddir)")
            return 2

    tmp = tempfile.mkdtemp(prefix="pigeon-idle-rss-")
    proc = None
    logpath = os.path.join(tmp, "pigeond.log")
    status = 1
    try:
        raise_nofile(args.n + 256)
        pem = make_cert(tmp)
        port = free_port()
        cfg = write_config(tmp, port, pem, builddir, srcdir, args.n)
        password = secrets.token_hex(12)
        r = subprocess.run([pigeonctl, "-c", cfg, "register", USER, HOST,
                            password], cwd=tmp, capture_output=True,
                           text=True, timeout=60)
        if r.returncode != 0:
            raise BenchError(f"pigeonctl register failed "
                             f"({r.returncode}): {r.stderr.strip()}")

        with open(logpath, "wb") as logf:
            proc = subprocess.Popen([pigeond, "-c", cfg], cwd=tmp,
                                    stdin=subprocess.DEVNULL,
                                    stdout=logf, stderr=subprocess.STDOUT)
        wait_port(port, proc, 30)
        log(f"pigeond pid {proc.pid} listening on 127.0.0.1:{port}")

        result = asyncio.run(run_sessions(args, port, password, proc.pid))

        print_table(result)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
                f.write("\n")

        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise BenchError("pigeond did not exit within 30 s of SIGTERM")
        if rc != 0:
            raise BenchError(f"pigeond exited with status {rc} after SIGTERM")
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
        if proc is not None and proc.returncode is not None \
                and proc.returncode < 0:
            log(f"pigeond died of signal {-proc.returncode}")
        tail = log_tail(logpath)
        if tail:
            log("pigeond log (last lines):\n" + tail)
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
