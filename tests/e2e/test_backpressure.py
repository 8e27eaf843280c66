"""A client that stops reading must not make the server buffer without
bound: its stream is closed once too much output is queued."""

import time

from conftest import MAX_STANZA


def test_reader_that_never_reads_is_disconnected(server):
    slow_name, slow_pw = server.new_user()
    fast_name, fast_pw = server.new_user()
    slow = server.login(slow_name, slow_pw, resource='slow')
    slow.presence()
    fast = server.login(fast_name, fast_pw, resource='fast')
    body = 'x' * (MAX_STANZA - 500)
    slow_jid = slow.jid
    # About 40 MB: more than the kernel's socket buffers and the server's
    # output limit (4 MiB or 16 stanzas' worth) together.
    for _ in range(4000):
        fast.message(slow_jid, body)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        users = server.ctl('connected_users', expect=0).stdout.split()
        if slow_jid not in users:
            break
        time.sleep(0.5)
    else:
        raise AssertionError('the non-reading session was never closed')
    assert 'resource-constraint' in server.log_text()
    # The sender is unaffected.
    fast.ping()
    server.check_alive()
