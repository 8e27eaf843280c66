#!/usr/bin/python3
"""Measure what a connection that trickles whitespace after a stream
header costs pigeond, with a normal header and with hostile ones.

Starts a fresh pigeond from the build tree (throw-away certificate,
configuration and SQLite store in a temporary directory), logs one user
in (STARTTLS, SCRAM) and has it ping the server all the time; that
user's ping round trips are the "other users" figure.  Then, for each
phase, opens N unauthenticated plain-TCP connections that each send a
stream header and then one whitespace byte every --interval seconds
(TCP_NODELAY, so each byte is a read on the server) for --duration
seconds, and reports the server's CPU seconds (utime + stime from
/proc/<pid>/stat) over the phase and the pinger's latencies.

Phases (--phases, comma-separated, in order):
  idle     no trickling connections: the baseline for the pings
  normal   the header every client sends
  hostile  --decls prefixed namespace declarations (xmlns:pN='urn:x:N')
           on the root: the attack of issue 19 (9,000 by default, about
           200 KB; a server with bounded headers refuses it at once)
  max      the largest header the server accepts: --max-decls
           declarations whose URIs fill --max-header bytes (such a
           stream is never parked: its replay would be too long)
  parked   the longest namespace context that is still replayed when a
           parked stream resumes: one more declaration, its URI
           --parked-uri bytes long (a 128-byte replay)

    contrib/bench/header-trickle.py
    contrib/bench/header-trickle.py -n 32 --duration 10 --json out.json

Only the Python standard library is used; the client side shares
benchclient.py with the other scripts of this directory.
"""

import argparse
import asyncio
import json
import os
import secrets
import socket
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True
import benchclient as bc  # noqa: E402

USER = "pinger"
NS_PING = "urn:xmpp:ping"


def log(msg):
    print(f"header-trickle: {msg}", file=sys.stderr, flush=True)


def cpu_seconds(pid):
    """utime + stime of pid, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime, stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def header(decls, pad=0):
    """A c2s stream header with decls extra prefixed declarations, each
    URI (urn:x:N) padded with pad more bytes."""
    extra = [f" xmlns:p{i}='urn:x:{i}{'x' * pad}'" for i in range(decls)]
    return ("<?xml version='1.0'?>"
            f"<stream:stream to='{bc.HOST}' version='1.0' xml:lang='en' "
            f"xmlns='jabber:client' xmlns:stream='{bc.NS_STREAMS}'"
            + "".join(extra) + ">").encode()


def max_header(max_decls, max_bytes):
    """The largest header within max_decls declarations and max_bytes."""
    base = len(header(max_decls, 0))
    if base > max_bytes:
        raise bc.BenchError(f"{max_decls} declarations need {base} bytes, "
                            f"more than --max-header {max_bytes}")
    return header(max_decls, (max_bytes - base) // max(1, max_decls))


def parked_header(uri_len):
    """One more declaration, its URI uri_len bytes long."""
    return header(1, max(0, uri_len - len("urn:x:0")))


class Trickle(threading.Thread):
    """n connections: each sends hdr, then one space every interval s
    until stop is set.  Connections the server closes are counted."""

    def __init__(self, port, n, hdr, interval):
        super().__init__(daemon=True)
        self.port, self.n, self.hdr, self.interval = port, n, hdr, interval
        self.socks = []
        self.closed = 0
        self.sent = 0
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.error = None

    def run(self):
        try:
            for _ in range(self.n):
                s = socket.create_connection(("127.0.0.1", self.port))
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.sendall(self.hdr)
                s.setblocking(False)
                self.socks.append(s)
            self.ready.set()
            alive = list(self.socks)
            nxt = time.monotonic()
            while not self.stop.is_set() and alive:
                for s in list(alive):
                    try:
                        while True:  # discard what the server says
                            if not s.recv(65536):
                                raise ConnectionResetError
                    except BlockingIOError:
                        pass
                    except OSError:
                        alive.remove(s)
                        self.closed += 1
                        continue
                    try:
                        s.send(b" ")
                        self.sent += 1
                    except BlockingIOError:
                        pass
                    except OSError:
                        alive.remove(s)
                        self.closed += 1
                nxt += self.interval
                delay = nxt - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    nxt = time.monotonic()
        except Exception as e:  # reported by the main thread
            self.error = e
            self.ready.set()
        finally:
            for s in self.socks:
                s.close()


class Pinger(bc.Client):
    async def ping_for(self, seconds, gap):
        """Pings the server for seconds; the round trips in ms."""
        rtts = []
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            i += 1
            t0 = time.monotonic()
            await self.send(f"<iq type='get' id='p{i}' to='{bc.HOST}'>"
                            f"<ping xmlns='{NS_PING}'/></iq>")
            el = await self.expect("{jabber:client}iq", "ping result")
            if el.get("id") != f"p{i}" or el.get("type") != "result":
                raise bc.BenchError("unexpected ping answer")
            rtts.append((time.monotonic() - t0) * 1000)
            await asyncio.sleep(gap)
        return rtts


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


async def run(args, port, password, pid):
    pinger = Pinger(0, port, bc.client_ssl_context(), args.timeout, "pinger")
    await pinger.login(USER, password, "bench")
    results = []
    headers = {
        "idle": None,
        "normal": header(0),
        "hostile": header(args.decls),
        "max": max_header(args.max_decls, args.max_header),
        "parked": parked_header(args.parked_uri),
    }
    try:
        for phase in args.phases:
            hdr = headers[phase]
            trickle = None
            if hdr is not None:
                trickle = Trickle(port, args.n, hdr, args.interval)
                trickle.start()
                while not trickle.ready.is_set():
                    await asyncio.sleep(0.01)
                if trickle.error:
                    raise bc.BenchError(f"{phase}: {trickle.error}")
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            rtts = await pinger.ping_for(args.duration, args.ping_gap)
            cpu1, t1 = cpu_seconds(pid), time.monotonic()
            if trickle is not None:
                trickle.stop.set()
                await asyncio.get_running_loop().run_in_executor(
                    None, trickle.join)
            r = {
                "phase": phase,
                "connections": 0 if hdr is None else args.n,
                "header_bytes": 0 if hdr is None else len(hdr),
                "closed_by_server": 0 if trickle is None else trickle.closed,
                "bytes_trickled": 0 if trickle is None else trickle.sent,
                "seconds": round(t1 - t0, 2),
                "server_cpu_s": round(cpu1 - cpu0, 2),
                # What one trickled byte (one read) costs, everything
                # else the server did in the phase included.
                "server_us_per_byte": round((cpu1 - cpu0) * 1e6 / trickle.sent,
                                            1) if trickle and trickle.sent
                else None,
                "pings": len(rtts),
                "ping_median_ms": round(statistics.median(rtts), 2),
                "ping_p99_ms": round(pct(rtts, 99), 2),
            }
            results.append(r)
            log(f"{phase}: {r}")
            await asyncio.sleep(1.0)  # let the server close the phase
    finally:
        await pinger.close()
    return results


def print_table(rows):
    cols = [("phase", "phase"), ("conns", "connections"),
            ("header B", "header_bytes"), ("closed", "closed_by_server"),
            ("bytes sent", "bytes_trickled"), ("wall s", "seconds"),
            ("server CPU s", "server_cpu_s"),
            ("us/byte", "server_us_per_byte"), ("pings", "pings"),
            ("ping median ms", "ping_median_ms"),
            ("ping p99 ms", "ping_p99_ms")]
    table = [[h for h, _ in cols]] + [[str(r[k]) for _, k in cols]
                                      for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for row in table:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(
        description="Server CPU and other users' ping latency while "
        "connections trickle whitespace after normal and hostile stream "
        "headers.")
    ap.add_argument("-n", type=int, default=32,
                    help="trickling connections per phase (default 32)")
    ap.add_argument("--duration", type=float, default=10.0,
                    help="seconds per phase (default 10)")
    ap.add_argument("--interval", type=float, default=0.002,
                    help="seconds between whitespace bytes (default 0.002)")
    ap.add_argument("--decls", type=int, default=9000,
                    help="declarations in the hostile header (default 9000)")
    ap.add_argument("--max-decls", type=int, default=14,
                    help="namespace declarations the server accepts on the "
                    "stream root beyond xmlns and xmlns:stream (default 14: "
                    "PGN_XML_MAX_HEADER_NS - 2)")
    ap.add_argument("--max-header", type=int, default=4096,
                    help="bytes the server accepts in a stream header "
                    "(default 4096: PGN_XML_MAX_HEADER_BYTES)")
    ap.add_argument("--parked-uri", type=int, default=31,
                    help="URI length of the 'parked' phase (default 31)")
    ap.add_argument("--phases", default="idle,normal,hostile,max,parked",
                    help="comma-separated (default %(default)s)")
    ap.add_argument("--ping-gap", type=float, default=0.01,
                    help=argparse.SUPPRESS)
    ap.add_argument("--timeout", type=float, default=60.0,
                    help=argparse.SUPPRESS)
    ap.add_argument("--json", metavar="PATH", help="also write the figures")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary directory (for debugging)")
    bc.add_tree_args(ap)
    args = ap.parse_args()
    args.phases = [p for p in args.phases.split(",") if p]
    for p in args.phases:
        if p not in ("idle", "normal", "hostile", "max", "parked"):
            ap.error(f"unknown phase {p}")

    try:
        builddir, srcdir, pigeond, pigeonctl = bc.build_tree(args)
    except bc.BenchError as e:
        log(str(e))
        return 2
    tmp = tempfile.mkdtemp(prefix="pigeon-header-trickle-")
    proc = None
    logpath = os.path.join(tmp, "pigeond.log")
    status = 1
    try:
        pem = bc.make_cert(tmp)
        port = bc.free_port()
        storage = ("storage:\n  driver: sqlite\n"
                   f"  path: {bc.yaml_str(os.path.join(tmp, 'p.db'))}\n")
        # The trickling connections never negotiate: keep them for the
        # whole phase.
        limits = "  negotiation_timeout: 3600\n"
        cfg = bc.write_pigeon_yml(tmp, port, pem, builddir, srcdir,
                                  "header-trickle.py", storage,
                                  "modules:\n  mod_ping: {}\n", limits)
        password = secrets.token_hex(12)
        bc.ctl(pigeonctl, cfg, tmp, "register", USER, bc.HOST, password)
        proc = bc.start_pigeond(pigeond, cfg, tmp, logpath)
        bc.wait_port(port, proc, 30)
        log(f"pigeond pid {proc.pid} on 127.0.0.1:{port}")
        rows = asyncio.run(run(args, port, password, proc.pid))
        print_table(rows)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=2)
                f.write("\n")
        bc.stop_pigeond(proc, 30)
        status = 0
    except (Exception, KeyboardInterrupt) as e:
        log(bc.failure(e))
    finally:
        bc.finish(proc, logpath, tmp, args.keep, log, show_log=status != 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
