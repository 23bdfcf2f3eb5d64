"""The lock keys the services compute are Postgres's ``hashtext`` of the same texts.

tests/integration/test_transaction_locks.py compares ``hashtext`` with the server on random texts;
these are the server's answers (PostgreSQL 15, UTF-8) to texts at each of lookup3's boundaries
(a block of 12 bytes, the tail of 11), so a unit run alone finds a change to the keys."""

import pytest

from yidi.platform.db import hashtext, locks
from yidi.platform.errors import BadData

SERVER = [
    ("", -1477818771),
    ("a", 1075015857),
    ("ab", 1718550461),
    ("abc", -785388649),
    ("abcdefghijk", -1483803693),
    ("abcdefghijkl", -1586087212),
    ("abcdefghijklm", 405849808),
    ("yidi-pricing:P1234567890123456", -1396596614),
    ("yidi-clearing:440300197001011234", -1714330780),
    ("yidi-clearing-periods", -1017916113),
    ("中文", -922414767),
    ("😀 emoji", 235566771),
    ("quote ' and \\ backslash", 1189833225),
    ("x" * 23, 597544042),
    ("x" * 24, 1380215333),
    ("x" * 25, 733930510),
    ("é" * 13, 112378988),
]


@pytest.mark.parametrize("text, server", SERVER)
def test_a_lock_key_is_the_servers_hashtext(text, server):
    assert hashtext(text) == server


def test_a_batchs_locks_are_its_keys_hashed_in_their_scope_once_each_in_order():
    taken = locks("yidi-pricing", [b"P1234567890123456", "P1234567890123456", None, ""], shared_first="yidi-clearing-periods")
    assert taken is not None
    assert taken.keys == (-1396596614,) and taken.shared_first == -1017916113
    assert locks("yidi-pricing", [None, b""]) is None


def test_a_key_postgres_cannot_hold_is_bad_data():
    with pytest.raises(BadData):
        hashtext("P12\x0034")
