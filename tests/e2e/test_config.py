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
