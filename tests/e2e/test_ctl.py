"""pigeonctl (ejabberdctl-style administration)."""

import os
import stat
import time

import pytest

import rawxmpp
from rawxmpp import to_str

COMMANDS = ('register', 'unregister', 'change_password', 'registered_users',
            'connected_users', 'connected_users_number', 'kick_session',
            'status', 'stats', 'latency', 'latency_reset', 'stop', 'help')
# Declared by the modules (pgn_module_def.commands); the running server
# lists them.
MODULE_COMMANDS = {
    'add_rosteritem': 'mod_roster', 'delete_rosteritem': 'mod_roster',
    'get_roster': 'mod_roster', 'get_last': 'mod_last',
    'delete_old_messages': 'mod_offline',
    'delete_old_mam_messages': 'mod_mam', 'archive_stats': 'mod_mam',
    'get_pubsub_nodes': 'mod_pep', 'delete_pubsub_node': 'mod_pep',
    'pep_stats': 'mod_pep',
}


def lines(out):
    return [l.strip() for l in out.splitlines() if l.strip()]


def can_login(server, user, password, host='localhost'):
    c = server.raw(domain=host)
    c.connect()
    c.open(host)
    c.starttls(sni=host)
    c.open(host)
    ok, _ = c.auth_scram(user, password, 'SCRAM-SHA-256')
    c.close()
    return ok


def wait_for(pred, timeout=30.0, what='condition'):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError('timeout waiting for %s' % what)
        time.sleep(0.1)


def help_names(out):
    """Command names of the help list (after its heading)."""
    text = out.split('Commands (', 1)[1]
    return [l.split()[1] if l.startswith('  *') else l.split()[0]
            for l in text.splitlines()[1:] if l.startswith('  ')]


def test_help(server):
    for args in (('help',), ('--help',)):
        r = server.ctl(*args, expect=0)
        names = help_names(r.stdout)
        for cmd in COMMANDS + tuple(MODULE_COMMANDS):
            assert cmd in names, '%s missing from help:\n%s' % (cmd, r.stdout)
        assert len(names) == len(set(names)), names
        assert 'usage: pigeonctl' in r.stdout, r.stdout


def test_help_lists_loaded_modules_only(make_server, driver):
    """A module's commands come and go with it: nothing to edit in the
    core's table."""
    # mod_mam, mod_last and mod_pep depend on mod_roster: all go.
    gone = ('mod_roster', 'mod_mam', 'mod_last', 'mod_pep')
    srv = make_server(driver, modules={m: None for m in gone})
    names = help_names(srv.ctl('help', expect=0).stdout)
    for cmd, mod in MODULE_COMMANDS.items():
        assert (cmd in names) == (mod not in gone), (cmd, names)
    r = srv.ctl('get_roster', 'a', 'localhost')
    assert r.returncode == 2 and "unknown command 'get_roster'" in r.stderr, r
    srv.ctl('delete_old_messages', '30', expect=0)  # still served


def test_help_with_server_stopped(make_server, driver):
    srv = make_server(driver)
    srv.stop()
    r = srv.ctl('help', expect=0)
    names = help_names(r.stdout)
    assert set(names) == set(COMMANDS) | {'send_message'}, names
    assert 'not running' in r.stdout, r.stdout
    # A module's command needs the server that knows it.
    r = srv.ctl('get_roster', 'a', 'localhost')
    assert r.returncode == 3 and 'not running' in r.stderr, r


def test_usage_errors(server):
    assert server.ctl('no_such_command').returncode == 2
    assert server.ctl('register', 'onlyuser').returncode == 2
    assert server.ctl('register', 'a', 'localhost', 'pw', 'extra').returncode == 2
    assert server.ctl().returncode == 2
    # A module's command: its usage comes from the server.
    r = server.ctl('get_roster', 'onlyuser')
    assert r.returncode == 2, r
    assert r.stderr.strip() == 'usage: pigeonctl [-c FILE] get_roster USER HOST', r
    r = server.ctl('archive_stats', 'localhost', 'extra')
    assert r.returncode == 2 and 'archive_stats HOST' in r.stderr, r
    r = server.ctl('get_rooster', 'a', 'localhost')
    assert r.returncode == 2, r
    assert "did you mean 'get_roster'?" in r.stderr, r.stderr
    assert 'get_roster USER HOST' in r.stderr, r.stderr


def test_status(server):
    r = server.ctl('status', expect=0)
    assert r.stdout.strip(), 'status printed nothing'


def test_control_socket_is_owner_only(server):
    st = os.stat(server.ctl_socket)
    assert stat.S_ISSOCK(st.st_mode), '%s is not a socket' % server.ctl_socket
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(stat.S_IMODE(st.st_mode))


def test_register_unregister(server):
    name = 'ctl' + rawxmpp.new_id()[3:]
    server.ctl('register', name, 'localhost', 'secret-1', expect=0)
    assert server.ctl('register', name, 'localhost', 'other').returncode == 1
    assert name in lines(server.ctl('registered_users', 'localhost', expect=0).stdout)
    assert can_login(server, name, 'secret-1')
    assert not can_login(server, name, 'other'), 'register twice changed the password'
    server.ctl('unregister', name, 'localhost', expect=0)
    assert name not in lines(server.ctl('registered_users', 'localhost', expect=0).stdout)
    assert not can_login(server, name, 'secret-1')
    assert server.ctl('unregister', name, 'localhost').returncode == 1


def test_register_unknown_host(server):
    r = server.ctl('register', 'someone', 'not-served.invalid', 'pw')
    assert r.returncode in (1, 2), r


def test_register_invalid_username(server):
    r = server.ctl('register', 'bad@name', 'localhost', 'pw')
    assert r.returncode in (1, 2), r


def test_change_password(server, user):
    name, pw = user
    server.ctl('change_password', name, 'localhost', 'new-pass', expect=0)
    assert can_login(server, name, 'new-pass')
    assert not can_login(server, name, pw)
    assert server.ctl('change_password', 'nosuch' + rawxmpp.new_id()[3:], 'localhost',
                      'x').returncode == 1


def test_registered_users_per_host(server):
    a, _ = server.new_user('localhost', prefix='hosta')
    b, _ = server.new_user('example.test', prefix='hostb')
    loc = lines(server.ctl('registered_users', 'localhost', expect=0).stdout)
    ex = lines(server.ctl('registered_users', 'example.test', expect=0).stdout)
    assert a in loc and a not in ex
    assert b in ex and b not in loc


def test_connected_users(server, user):
    name, pw = user
    c = server.login(name, pw, resource='ctlres')
    users = lines(server.ctl('connected_users', expect=0).stdout)
    assert c.jid in users, users
    n = server.ctl('connected_users_number', expect=0).stdout.strip()
    assert n.isdigit() and int(n) >= 1, n
    assert int(n) == len(users) or abs(int(n) - len(users)) <= 5  # others may come/go
    c.send('</stream:stream>')
    c.close()
    wait_for(lambda: c.jid not in lines(server.ctl('connected_users', expect=0).stdout),
             what='%s to leave connected_users' % c.jid)


def test_kick_session(server, user):
    name, pw = user
    c = server.login(name, pw, resource='victim')
    other = server.login(name, pw, resource='bystander')
    before = int(server.ctl('connected_users_number', expect=0).stdout)
    server.ctl('kick_session', name, 'localhost', 'victim', 'bye bye', expect=0)
    cond = c.expect_stream_error()
    assert cond, 'kicked client got no stream error condition'
    users = wait_for(
        lambda: (lambda u: u if c.jid not in u else None)(
            lines(server.ctl('connected_users', expect=0).stdout)),
        what='the kicked session to disappear')
    assert other.jid in users
    after = int(server.ctl('connected_users_number', expect=0).stdout)
    assert after <= before - 1 or after < before, (before, after)
    assert other.ping().get('type') == 'result'
    assert server.ctl('kick_session', name, 'localhost', 'victim', 'again').returncode == 1


def latency_figures(server):
    d = {}
    for line in lines(server.ctl('latency', expect=0).stdout):
        key, value = line.split()
        d[key] = float(value)
    return d


def test_latency(server):
    """The server's own delivery latency (doc/performance.md, "Latency
    tail"): after latency_reset it has counted exactly the messages routed
    from one session to another (not the answers to the sender), with
    ordered, plausible percentiles."""
    a_name, a_pw = server.new_user(prefix='lata')
    b_name, b_pw = server.new_user(prefix='latb')
    a = server.login(a_name, a_pw, resource='la')
    b = server.login(b_name, b_pw, resource='lb')
    server.ctl('latency_reset', expect=0)
    d = latency_figures(server)
    assert d['queued_count'] == 0 and d['flushed_count'] == 0, d
    assert d['queued_p99_us'] == 0 and d['flushed_max_us'] == 0, d
    n = 40
    for i in range(n):
        a.message(b.jid, 'latency %d' % i)
    for i in range(n):
        assert b.recv_stanza('message').get('from') == a.jid
    assert a.ping().get('type') == 'result'  # an answer to the sender
    d = latency_figures(server)
    assert d['queued_count'] == n, d
    # One sample per write that empties b's output buffer.
    assert 1 <= d['flushed_count'] <= n, d
    for h in ('queued', 'flushed'):
        p50, p99, p999, top = (d[h + k] for k in
                               ('_p50_us', '_p99_us', '_p999_us', '_max_us'))
        assert 0 <= p50 <= p99 <= p999 <= top < 10e6, (h, d)
        assert d[h + '_mean_us'] <= top, (h, d)
    assert d['queued_p50_us'] > 0, d
    # A stanza is written after it was queued.
    assert d['flushed_max_us'] + 2 >= d['queued_max_us'], d
    server.ctl('latency_reset', expect=0)
    assert latency_figures(server)['queued_count'] == 0


def stats_figures(server):
    d = {}
    for line in lines(server.ctl('stats', expect=0).stdout):
        key, value = line.split()
        assert key not in d, 'figure %s printed twice' % key
        d[key] = float(value)
    return d


def test_stats_core_figures(make_server, driver):
    """pigeonctl stats: the core figures count what a private server
    holds, before and after a login and once the session hibernates."""
    from test_limits import NS_SM, sm
    srv = make_server(driver)
    # The harness's start-up probes of the ports close asynchronously.
    d = wait_for(lambda: (lambda f: f if f['connections'] == 0
                          and f['streams'] == 0 else None)(stats_figures(srv)),
                 what='the start-up probes to be closed')
    assert d['hosts'] == 2 and 0 <= d['uptime_seconds'] < 600, d
    for k in ('connections', 'streams', 'sessions_bound',
              'sessions_hibernated', 'accounts_online', 'components',
              'latency_queued_count', 'stats_failed'):
        assert d[k] == 0, (k, d)
    assert 'latency_flushed_p99_us' in d, d
    name, pw = srv.new_user()
    a = srv.login(name, pw, resource='st')
    d = stats_figures(srv)
    for k in ('connections', 'streams', 'sessions_bound', 'accounts_online'):
        assert d[k] == 1, (k, d)
    assert d['sessions_hibernated'] == 0, d
    a.send("<enable xmlns='%s' resume='true'/>" % NS_SM)
    sm(a, '<enabled/>')
    a.close()
    d = wait_for(lambda: (lambda f: f if f['sessions_hibernated'] == 1
                          else None)(stats_figures(srv)),
                 what='the session to hibernate')
    assert d['sessions_bound'] == 0 and d['connections'] == 0, d
    assert d['accounts_online'] == 1 and d['streams'] == 1, d


def test_stats_archive_figures(make_server, driver):
    """mod_mam contributes its archive figures per host (NAME@HOST),
    counted from the store, the same as archive_stats HOST."""
    from test_mam import online
    from test_mam_limits import send_n, wait_rows
    srv = make_server(driver, modules={'mod_mam': {'max_messages': '2'}})
    alice, apw = srv.new_user(prefix='alice')
    bob, bpw = srv.new_user(prefix='bob')
    a = online(srv, alice, apw, 'ra')
    b = online(srv, bob, bpw, 'rb')
    d = stats_figures(srv)
    assert d['archive_messages@localhost'] == 0, d
    assert d['archive_messages@example.test'] == 0, d
    send_n(a, b, 3, 'st')
    wait_rows(srv, alice, 2)
    wait_rows(srv, bob, 2)
    d = stats_figures(srv)
    assert d['stats_failed'] == 0, d
    assert d['archive_users@localhost'] == 2, d
    assert d['archive_messages@localhost'] == 4, d
    assert d['archive_users_at_quota@localhost'] == 2, d
    assert d['archive_quota_dropped@localhost'] == 2, d
    assert d['archive_max_messages@localhost'] == 2, d
    assert d['archive_bytes@localhost'] > 0, d
    assert d['archive_messages@example.test'] == 0, d
    # archive_stats HOST is the same figures for one host.
    per_host = lines(srv.ctl('archive_stats', 'localhost', expect=0).stdout)
    assert per_host, 'archive_stats printed nothing'
    for line in per_host:
        key, value = line.split()
        assert d[key + '@localhost'] == float(value), (key, d)


def test_stats_without_modules(make_server, driver):
    """Without mod_mam and mod_pep the core figures come alone."""
    srv = make_server(driver, modules={'mod_mam': None, 'mod_pep': None})
    d = stats_figures(srv)
    assert 'hosts' in d and d['stats_failed'] == 0, d
    assert not [k for k in d if '@' in k], d


@pytest.mark.parametrize('drv', ['sqlite', 'pgsql'])
def test_stop_and_offline_commands(make_server, drv):
    srv = make_server(drv)
    online, online_pw = srv.new_user()
    c = srv.login(online, online_pw, resource='r')
    srv.ctl('stop', expect=0)
    assert srv.wait_exit() == 0, srv.log_tail()
    srv.check_log()
    try:
        c.expect_stream_error(timeout=2)
    except AssertionError:
        pass  # closed with or without system-shutdown: both fine here
    # commands that need the server
    for args in (('connected_users',), ('connected_users_number',), ('status',),
                 ('kick_session', online, 'localhost', 'r', 'x'), ('stop',)):
        r = srv.ctl(*args)
        assert r.returncode == 3, ('pigeonctl %s with the server stopped: exit %d'
                                   % (' '.join(args), r.returncode))
    # account commands work on the store directly
    srv.ctl('register', 'offline1', 'localhost', 'pw-offline', expect=0)
    assert srv.ctl('register', 'offline1', 'localhost', 'x').returncode == 1
    srv.ctl('register', 'offline2', 'example.test', 'pw2', expect=0)
    users = lines(srv.ctl('registered_users', 'localhost', expect=0).stdout)
    assert 'offline1' in users and online in users
    srv.ctl('change_password', 'offline1', 'localhost', 'pw-changed', expect=0)
    srv.ctl('unregister', online, 'localhost', expect=0)
    # and the server sees all of it after a restart
    srv.start()
    assert can_login(srv, 'offline1', 'pw-changed')
    assert not can_login(srv, 'offline1', 'pw-offline')
    assert can_login(srv, 'offline2', 'pw2', host='example.test')
    assert not can_login(srv, online, online_pw)


@pytest.mark.parametrize('drv', ['sqlite', 'pgsql'])
def test_sigterm_shuts_down_cleanly(make_server, drv):
    srv = make_server(drv)
    name, pw = srv.new_user()
    c = srv.login(name, pw)
    srv.stop()   # asserts exit 0 and no sanitizer report
    assert c.expect_stream_error() == 'system-shutdown'


@pytest.mark.parametrize('drv', ['sqlite', 'pgsql'])
def test_accounts_survive_restart(make_server, drv):
    srv = make_server(drv)
    name, pw = srv.new_user()
    srv.stop()
    srv.start()
    assert can_login(srv, name, pw)
    assert name in lines(srv.ctl('registered_users', 'localhost', expect=0).stdout)


def test_send_message_to_local_user(server, user):
    name, pw = user
    c = server.login(name, pw, resource='inbox')
    r = server.ctl('send_message', 'chat', 'admin@localhost',
                   '%s@localhost/inbox' % name, 'subj', 'hello from ctl', expect=0)
    assert 'sent' in r.stdout, r.stdout
    msg = c.recv_stanza('message')
    assert 'hello from ctl' in to_str(msg)


def test_send_message_unreachable(server):
    """An address nobody can receive is an error, not "sent"."""
    ghost = 'nosuch' + rawxmpp.new_id()[3:]
    for to, why in (('someone@remote.invalid', 'no route to remote.invalid'),
                    ('%s@localhost' % ghost, 'does not exist'),
                    ('%s@example.test/res' % ghost, 'does not exist')):
        r = server.ctl('send_message', 'chat', 'admin@localhost', to, '', 'hi')
        assert r.returncode == 1, (to, r.stdout, r.stderr)
        assert why in r.stdout + r.stderr, (to, r.stdout, r.stderr)
        assert 'sent' not in r.stdout, (to, r.stdout)
    # The host itself is an address.
    server.ctl('send_message', 'normal', 'admin@localhost', 'localhost', '',
               'to the server', expect=0)


def test_send_message_component(make_server, driver):
    """A configured component is reachable only while it is connected."""
    from conftest import COMPONENT, COMPONENT_SECRET
    srv = make_server(driver)
    r = srv.ctl('send_message', 'chat', 'admin@localhost', 'x@' + COMPONENT, '', 'hi')
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert 'connected component' in r.stdout + r.stderr, r.stdout + r.stderr
    comp = srv.component()
    comp.connect()
    header = comp.start_stream(COMPONENT, ns=rawxmpp.NS_COMPONENT, version=None)
    comp.send('<handshake>%s</handshake>'
              % rawxmpp.sha1_handshake(header.get('id'), COMPONENT_SECRET))
    comp.recv()  # <handshake/>
    srv.ctl('send_message', 'chat', 'admin@localhost', 'x@' + COMPONENT, '',
            'to the bot', expect=0)
    assert 'to the bot' in to_str(comp.recv_stanza('message'))
    comp.close()
