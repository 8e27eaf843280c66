#!/usr/bin/python3
"""Measure pigeond's memory per idle, authenticated TLS session.

Starts a fresh pigeond from the build tree on a free port on 127.0.0.1,
with a throw-away certificate, configuration and SQLite store in a
temporary directory, registers one account, then opens N client sessions
(STARTTLS, SASL SCRAM-SHA-256, resource binding, initial presence) and
keeps them open and idle.  The server's VmRSS is read before and after;
the difference divided by N is the figure of interest.

Only the Python standard library is used (asyncio, ssl, hashlib/hmac),
so the client side costs little and behaves predictably; that client is
in benchclient.py beside this script, shared with offline-bench.py.

    contrib/bench/idle-rss.py                 1000 sessions
    contrib/bench/idle-rss.py -n 100 --json out.json

All sessions belong to the one account, so every initial presence is
delivered to all the sessions already available (N*(N-1)/2 presences
in all); the client reads and discards that traffic, and the "after"
figure is taken once it has stopped.
"""

import argparse
import asyncio
import json
import os
import resource
import secrets
import ssl
import sys
import tempfile
import time

# The shared client sits next to this script, which runs from anywhere
# (also with -P / PYTHONSAFEPATH, which leave the script's directory out
# of sys.path); no bytecode cache, so as not to write into the source tree.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True
import benchclient as bc  # noqa: E402

USER = "bench"


def log(msg):
    print(f"idle-rss: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Server side: certificate, configuration, process.

def write_config(tmp, port, pem, builddir, srcdir, n):
    storage = ("storage:\n  driver: sqlite\n"
               f"  path: {bc.yaml_str(os.path.join(tmp, 'pigeon.db'))}\n")
    modules = ("modules:\n  mod_disco: {}\n  mod_ping: {}\n"
               "  mod_version: {}\n")
    limits = f"  max_sessions_per_user: {min(10000, max(100, n))}\n"
    return bc.write_pigeon_yml(tmp, port, pem, builddir, srcdir,
                               "idle-rss.py", storage, modules, limits)


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
        raise bc.BenchError(f"RLIMIT_NOFILE is {soft} (hard {hard}), "
                            f"{need} needed for this many sessions")
    return soft


def vmrss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                parts = line.split()
                assert parts[2] == "kB", line
                return int(parts[1])
    raise bc.BenchError(f"no VmRSS in /proc/{pid}/status")


# --------------------------------------------------------------------------
# Client side: a benchclient.Client per session.

class Session(bc.Client):
    """One session of the account, idle once set up."""

    def __init__(self, index, port, password, ssl_ctx, step_timeout,
                 presence=True):
        super().__init__(index, port, ssl_ctx, step_timeout)
        self.presence = presence
        self.password = password
        self.received_idle = 0  # bytes read once set up
        self.last_rx = 0.0
        self.closed_by_server = False

    async def setup(self):
        await self.login(USER, self.password, f"r{self.index}")
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


# --------------------------------------------------------------------------

async def run_sessions(args, port, password, pid):
    ssl_ctx = bc.client_ssl_context()

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
            raise bc.BenchError(f"{len(errors)} of {args.n} sessions "
                                "failed to set up")
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
            raise bc.BenchError(f"the server closed {dropped} idle sessions")
        if any(s.writer.is_closing() for s in sessions):
            raise bc.BenchError("some sessions are closed")
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
    ap = argparse.ArgumentParser(
        description="Measure pigeond memory per idle authenticated "
                    "TLS session.")
    ap.add_argument("-n", type=int, default=1000,
                    help="number of sessions (default 1000, at most 10000)")
    ap.add_argument("-c", "--concurrency", type=int, default=50,
                    help="sessions negotiated at the same time (default 50)")
    ap.add_argument("--json", metavar="PATH",
                    help="also write the figures as JSON to PATH")
    bc.add_tree_args(ap)
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

    try:
        builddir, srcdir, pigeond, pigeonctl = bc.build_tree(args)
    except bc.BenchError as e:
        log(str(e))
        return 2

    tmp = tempfile.mkdtemp(prefix="pigeon-idle-rss-")
    proc = None
    logpath = os.path.join(tmp, "pigeond.log")
    status = 1
    try:
        raise_nofile(args.n + 256)
        pem = bc.make_cert(tmp)
        port = bc.free_port()
        cfg = write_config(tmp, port, pem, builddir, srcdir, args.n)
        password = secrets.token_hex(12)
        bc.ctl(pigeonctl, cfg, tmp, "register", USER, bc.HOST, password)

        proc = bc.start_pigeond(pigeond, cfg, tmp, logpath)
        bc.wait_port(port, proc, 30)
        log(f"pigeond pid {proc.pid} listening on 127.0.0.1:{port}")

        result = asyncio.run(run_sessions(args, port, password, proc.pid))

        print_table(result)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
                f.write("\n")

        bc.stop_pigeond(proc, 30)
        status = 0
    except (Exception, KeyboardInterrupt) as e:
        log(bc.failure(e))
    finally:
        bc.finish(proc, logpath, tmp, args.keep, log)
    return status


if __name__ == "__main__":
    sys.exit(main())
