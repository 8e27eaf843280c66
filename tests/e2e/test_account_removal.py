"""Deleting an account cancels its presence subscriptions (XEP-0077 §3.2,
RFC 6121 §3.2/§3.3): its contacts get unsubscribe/unsubscribed and their
rosters keep no ghost subscription, whether the account is removed by its
user (XEP-0077), by pigeonctl with the server running, or by pigeonctl on
the store while the server is stopped."""

import pytest

from rawxmpp import local, to_str
from test_presence import friends, is_sub, online, subscribe
from test_roster import login

NS_REGISTER = 'jabber:iq:register'


def setup_contacts(server, prefix):
    """a (to be deleted) with: b online and 'both'; c offline, a has 'to'
    on c (c has 'from'); d offline with a's request pending at d.
    Returns (a, (an, ap), b, (bn, bp), (cn, cp), (dn, dp))."""
    an, ap = server.new_user(prefix=prefix + 'a')
    bn, bp = server.new_user(prefix=prefix + 'b')
    cn, cp = server.new_user(prefix=prefix + 'c')
    dn, dp = server.new_user(prefix=prefix + 'd')
    a = online(server, an, ap, 'ra')
    b = online(server, bn, bp, 'rb')
    friends(a, b)
    c = online(server, cn, cp, 'rc')
    subscribe(a, c)
    c.close()
    d_bare = '%s@localhost' % dn
    a.presence(to=d_bare, type_='subscribe')
    a.push(d_bare, ask='subscribe')
    a.ping()
    return a, (an, ap), b, (bn, bp), (cn, cp), (dn, dp)


def check_cancelled(server, a_bare, b, cn, cp, dn, dp, b_online=True):
    """b (online) saw the cancellation; c and d, logging in, have no
    ghost left."""
    if b_online:
        b.wait(is_sub('unsubscribe', a_bare), 5, 'unsubscribe')
        b.wait(is_sub('unsubscribed', a_bare), 5, 'unsubscribed')
        b.push(a_bare, subscription='none')
        b.close()
    c = online(server, cn, cp, 'rc2')
    it = c.items().get(a_bare)
    assert it is not None and it.get('subscription') == 'none', (
        it is not None and to_str(it))
    c.close()
    d = online(server, dn, dp, 'rd')
    d.none(is_sub('subscribe', a_bare), 0.5, 'the dead request')
    assert a_bare not in d.items()
    d.close()


def test_xep0077_remove_cancels_subscriptions(server):
    a, (an, ap), b, (bn, bp), (cn, cp), (dn, dp) = setup_contacts(server, 'rm')
    a.send("<iq type='set' id='bye'><query xmlns='%s'><remove/></query></iq>"
           % NS_REGISTER)
    r = a.wait(lambda e: local(e.tag) == 'iq' and e.get('id') == 'bye')
    assert r.get('type') == 'result', to_str(r)
    check_cancelled(server, a.bare, b, cn, cp, dn, dp)


def test_pigeonctl_unregister_cancels_subscriptions(server):
    a, (an, ap), b, (bn, bp), (cn, cp), (dn, dp) = setup_contacts(server, 'cu')
    a_bare = a.bare
    a.close()
    server.ctl('unregister', an, 'localhost', expect=0)
    check_cancelled(server, a_bare, b, cn, cp, dn, dp)


def test_pigeonctl_unregister_offline_cancels_local_rows(make_server, driver):
    """With the server stopped, pigeonctl changes the local contacts'
    rows itself (no stanza can be sent): subscription 'none', no request
    left, and a new roster version so that a client with the old one
    gets the change pushed."""
    srv = make_server(driver)
    a, (an, ap), b, (bn, bp), (cn, cp), (dn, dp) = setup_contacts(srv, 'off')
    a_bare = a.bare
    ver = b.roster().find('{jabber:iq:roster}query').get('ver')
    assert ver
    a.close()
    b.close()
    srv.ctl('stop', expect=0)
    assert srv.wait_exit() == 0, srv.log_tail()
    srv.ctl('unregister', an, 'localhost', expect=0)
    srv.start()
    b = login(srv, bn, bp, 'rb2')
    b.roster(ver=ver)
    it = b.push(a_bare, subscription='none')
    assert it.get('ask') is None
    assert b.items()[a_bare].get('subscription') == 'none'
    b.close()
    check_cancelled(srv, a_bare, None, cn, cp, dn, dp, b_online=False)
