"""pigeond command line and configuration errors."""

import re
import subprocess

import pytest

from conftest import PIGEOND, free_port, pigeon_env, yq


def run_pigeond(*args, timeout=15):
    if not PIGEOND.exists():
        pytest.fail('%s not built' % PIGEOND, pytrace=False)
    try:
        return subprocess.run([str(PIGEOND)] + list(args), capture_output=True,
                              text=True, timeout=timeout, env=pigeon_env(),
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail('pigeond %s did not exit within %d s (did it accept the '
                    'config?)' % (' '.join(args), timeout))


def test_version():
    r = run_pigeond('--version')
    assert r.returncode == 0, r
    assert re.search(r'\d+\.\d+', r.stdout + r.stderr), r.stdout


def test_help():
    r = run_pigeond('--help')
    assert r.returncode == 0, r
    assert '-c' in r.stdout + r.stderr


def test_bad_option():
    r = run_pigeond('--no-such-option')
    assert r.returncode != 0


def test_missing_config_file(tmp_path):
    r = run_pigeond('-c', str(tmp_path / 'nope.yml'))
    assert r.returncode != 0
    assert 'nope.yml' in r.stderr, r.stderr


BASE = '''\
hosts:
  - "localhost"
listen:
  - port: PORT
    ip: "127.0.0.1"
    module: c2s
certfiles:
  - PEM
storage:
  driver: sqlite
  path: DB
ctl_socket: SOCK
modules:
  mod_ping: {}
limits:
  max_stanza_size: 65536
'''

# (id, text to replace, replacement, marker of the line that is wrong or None)
BAD = [
    ('port-not-a-number', 'port: PORT', 'port: notaport', 'notaport'),
    ('port-out-of-range', 'port: PORT', 'port: 70000', '70000'),
    ('unknown-listener', 'module: c2s', 'module: bogus_listener', 'bogus_listener'),
    ('unknown-driver', 'driver: sqlite', 'driver: mongodb', 'mongodb'),
    ('unknown-module', 'mod_ping: {}', 'mod_no_such_thing: {}', 'mod_no_such_thing'),
    ('bad-limit', 'max_stanza_size: 65536', 'max_stanza_size: -5', 'max_stanza_size'),
    ('no-hosts', 'hosts:\n  - "localhost"', 'hosts: []', 'hosts'),
    ('hosts-not-a-list', 'hosts:\n  - "localhost"', 'hosts: 42', 'hosts: 42'),
    ('yaml-syntax', 'modules:\n  mod_ping: {}', 'modules:\n  mod_ping: {unclosed', None),
    ('tab-indent', 'storage:\n  driver', 'storage:\n\tdriver', None),
]


def make_config(tmp_path, certs, old, new):
    text = (BASE.replace('PORT', str(free_port()))
                .replace('PEM', yq(certs.pem))
                .replace('DB', yq(tmp_path / 'db.sqlite'))
                .replace('SOCK', yq(tmp_path / 'ctl.sock')))
    assert old in BASE, old
    old_r = (old.replace('PORT', '').replace('PEM', ''))
    if 'PORT' in old:
        text = re.sub(r'port: \d+', new, text, count=1)
    else:
        text = text.replace(old_r, new, 1)
    path = tmp_path / 'bad.yml'
    path.write_text(text)
    return path, text


@pytest.mark.parametrize('case', BAD, ids=[b[0] for b in BAD])
def test_bad_config(tmp_path, certs, case):
    _, old, new, marker = case
    path, text = make_config(tmp_path, certs, old, new)
    r = run_pigeond('-c', str(path))
    assert r.returncode != 0, 'pigeond accepted:\n%s' % text
    m = re.search(r'(?:%s|%s):(\d+):' % (re.escape(str(path)), re.escape(path.name)),
                  r.stderr)
    assert m, 'no "FILE:LINE:" in the error output:\n%s' % r.stderr
    if marker is not None:
        want = [i + 1 for i, l in enumerate(text.splitlines()) if marker in l][0]
        got = int(m.group(1))
        assert abs(got - want) <= 1, ('error reported at line %d, the problem is on '
                                      'line %d:\n%s\n%s' % (got, want, text, r.stderr))
    assert 'AddressSanitizer' not in r.stderr and 'runtime error' not in r.stderr


def test_good_base_config_starts(tmp_path, certs):
    """The base of the bad-config cases is valid: the failures above are
    caused by the mutations."""
    import signal
    import socket
    import time
    path, text = make_config(tmp_path, certs, 'mod_ping: {}', 'mod_ping: {}')
    port = int(re.search(r'port: (\d+)', text).group(1))
    p = subprocess.Popen([str(PIGEOND), '-c', str(path)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, env=pigeon_env(),
                         stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            if p.poll() is not None:
                pytest.fail('pigeond exited %d on the base config:\n%s'
                            % (p.returncode, p.stdout.read().decode()))
            try:
                socket.create_connection(('127.0.0.1', port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, 'pigeond did not listen'
                time.sleep(0.05)
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            out = p.communicate(timeout=15)[0].decode()
        except subprocess.TimeoutExpired:
            p.kill()
            out = p.communicate()[0].decode()
            pytest.fail('pigeond ignored SIGTERM:\n' + out)
    assert p.returncode == 0, out
    assert 'AddressSanitizer' not in out and 'runtime error' not in out, out


def test_second_server_keeps_pid_file(make_server, driver):
    """A second pigeond that cannot start (its pid file is locked by the
    running one, its ports are taken) leaves the running one's pid file
    in place; the running one removes it when it stops."""
    first = make_server(driver, extra_yaml='pid_file: pigeond.pid\n')
    pid_file = first.dir / 'pigeond.pid'
    assert pid_file.read_text() == '%d\n' % first.proc.pid

    # The very same configuration: same pid file, same ports.
    r = run_pigeond('-c', str(first.config))
    assert r.returncode != 0, r.stdout + r.stderr
    assert 'already running (pid %d)' % first.proc.pid in r.stderr, r.stderr
    # Its own ports but the same pid file (named by absolute path).
    second = make_server(driver, start=False,
                         extra_yaml='pid_file: %s\n' % yq(str(pid_file)))
    r = run_pigeond('-c', str(second.config))
    assert r.returncode != 0, r.stdout + r.stderr
    assert 'locked' in r.stderr, r.stderr

    first.check_alive()
    assert pid_file.read_text() == '%d\n' % first.proc.pid
    first.stop()
    assert not pid_file.exists()


def test_failed_start_removes_own_pid_file(make_server, driver):
    """A server whose start fails after it took its pid file (here: the
    port is in use) removes the file it wrote, not someone else's."""
    first = make_server(driver)
    second = make_server(driver, start=False, extra_yaml='pid_file: mine.pid\n')
    second.c2s_port = first.c2s_port
    second.write_config()
    r = run_pigeond('-c', str(second.config))
    assert r.returncode != 0, r.stdout + r.stderr
    assert not (second.dir / 'mine.pid').exists()
    first.check_alive()


# ---- modules: declared options, checked by `pigeond -t` -------------------

# (id, the modules: entry, what the error must say) on top of BASE.
BAD_MODULES = [
    ('misspelt-option', 'mod_offline:\n    quta: 5',
     ["module mod_offline: unknown option 'quta'", "did you mean 'quota'?"]),
    ('wrong-type', 'mod_offline:\n    quota: lots',
     ['module mod_offline: option quota: expected an integer', "got 'lots'"]),
    ('out-of-range', 'mod_roster:\n    max_items: 0',
     ['module mod_roster: option max_items: expected an integer from 1',
      "got '0'"]),
    ('not-a-bool', 'mod_push:\n    include_body: sometimes',
     ['module mod_push: option include_body: expected true or false']),
    ('enum-value', 'mod_mam:\n    quota_policy: drop_newest',
     ['module mod_mam: option quota_policy: expected one of: drop_oldest, '
      'refuse', "did you mean 'drop_oldest'?"]),
    ('option-of-optionless-module', 'mod_ping:\n    interval: 5',
     ["module mod_ping: unknown option 'interval'", 'it has no options']),
    ('misspelt-module', 'mod_pnig: {}',
     ['module mod_pnig: no such module', "did you mean 'mod_ping'?"]),
]


def module_config(tmp_path, certs, entry):
    path, text = make_config(tmp_path, certs, 'mod_ping: {}', entry)
    # The entry's last line: the option (or the module) that is wrong.
    last = entry.splitlines()[-1].strip()
    line = [i + 1 for i, l in enumerate(text.splitlines())
            if l.strip() == last][0]
    return path, text, line


@pytest.mark.parametrize('case', BAD_MODULES, ids=[b[0] for b in BAD_MODULES])
def test_check_refuses_bad_module_options(tmp_path, certs, case):
    """`pigeond -t` opens the modules and checks their options against what
    they declare: FILE:LINE of the option, the module, the option and a
    hint; nothing is started."""
    _, entry, wants = case
    path, text, line = module_config(tmp_path, certs, entry)
    r = run_pigeond('-t', '-c', str(path))
    assert r.returncode == 2, 'pigeond -t accepted:\n%s\n%s' % (text, r.stdout)
    assert 'configuration OK' not in r.stdout
    assert '%s:%d: ' % (path, line) in r.stderr, (line, text, r.stderr)
    for want in wants:
        assert want in r.stderr, (want, r.stderr)
    assert not (tmp_path / 'ctl.sock').exists(), 'pigeond -t started a server'
    assert 'AddressSanitizer' not in r.stderr and 'runtime error' not in r.stderr
    # The start refuses it the same way.
    r = run_pigeond('-c', str(path))
    assert r.returncode != 0, 'pigeond started with:\n%s' % text
    assert '%s:%d: ' % (path, line) in r.stderr, r.stderr


def test_check_reports_every_module(tmp_path, certs):
    """All the modules' mistakes at once, not one per run."""
    path, text = make_config(tmp_path, certs, 'mod_ping: {}',
                             'mod_ping: {}\n  mod_offline:\n    quta: 5\n'
                             '  mod_roster:\n    max_items: x\n'
                             '  mod_mam:\n    max_page: 0\n'
                             '    quota_policy: never')
    r = run_pigeond('-t', '-c', str(path))
    assert r.returncode == 2, r
    for want in ("unknown option 'quta'", 'option max_items',
                 'option max_page', 'option quota_policy'):
        assert want in r.stderr, (want, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 4, r.stderr


def test_check_accepts_declared_options(tmp_path, certs):
    path, text = make_config(
        tmp_path, certs, 'mod_ping: {}',
        'mod_ping: {}\n  mod_offline:\n    quota: 5\n'
        '  mod_roster: {}\n'
        '  mod_mam:\n    quota_policy: refuse\n    max_page: 100\n'
        '  mod_push:\n    include_body: yes\n'
        '  mod_caps:\n    node: "https://example.test/caps"')
    r = run_pigeond('-t', '-c', str(path))
    assert r.returncode == 0, (text, r.stderr)
    assert 'configuration OK' in r.stdout, r.stdout
