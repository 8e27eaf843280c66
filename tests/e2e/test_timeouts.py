"""Stream timers (RFC 6120 §4.9.3.4 connection-timeout): the negotiation
deadline and the idle timeout of an established session."""

import time

import rawxmpp


def test_negotiation_timeout(make_server):
    srv = make_server(extra_limits='  negotiation_timeout: 1\n')
    c = srv.raw(port=srv.c2s_plain_port)
    c.connect()
    c.open()
    started = time.monotonic()
    assert c.expect_stream_error(timeout=10) == 'connection-timeout'
    assert time.monotonic() - started < 8


def test_negotiation_timeout_without_stream_header(make_server):
    srv = make_server(extra_limits='  negotiation_timeout: 1\n')
    c = srv.raw(port=srv.c2s_plain_port)
    c.connect()
    # Not a byte sent: the server still answers with a header and the error.
    assert c.expect_stream_error(timeout=10) == 'connection-timeout'


def test_idle_session_times_out_and_active_one_stays(make_server):
    srv = make_server(extra_limits=('  negotiation_timeout: 30\n'
                                    '  keepalive_interval: 5\n'
                                    '  idle_timeout: 10\n'))
    idle_name, idle_pw = srv.new_user()
    busy_name, busy_pw = srv.new_user()
    idle = srv.login(idle_name, idle_pw, resource='idle')
    busy = srv.login(busy_name, busy_pw, resource='busy')
    started = time.monotonic()
    deadline = started + 25
    # The busy client pings every 2 s; the idle one says nothing.
    while time.monotonic() < deadline:
        busy.ping()
        try:
            cond = idle.expect_stream_error(timeout=2)
            break
        except rawxmpp.XMPPTimeout:
            continue
    else:
        raise AssertionError('idle session was never timed out')
    assert cond == 'connection-timeout'
    assert time.monotonic() - started >= 9
    # The active session is untouched.
    busy.ping()
