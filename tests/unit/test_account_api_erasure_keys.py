"""The erasure's reading of the alerts table's keys (``kilo_account_api.adapters.names_identity``): which records
name a participant's identity (deleted at erasure) and which its pseudonym only (kept, D214)."""

from __future__ import annotations

import hashlib

from kilo_account_api.adapters import names_identity

# D80's pseudonym worked by hand: "erased-" + the first 16 hex digits of sha256("acct_e" NUL "alice")
ALICE = "erased-" + hashlib.sha256(b"acct_e\x00alice").hexdigest()[:16]


def test_given_a_removal_keyed_per_session_then_its_pseudonym_is_read_before_the_join_and_it_is_kept() -> None:
    """D71 amended (e4b): a removal's key ends with the session's join (ms) after the pseudonym."""
    assert not names_identity(f"ENFORCEMENT#2026-11@50#remove#standup#{ALICE}#1795168980000")
    assert not names_identity(f"ENFORCEMENT#2026-11@50#remove#standup#{ALICE}")  # join not known: as before
    assert not names_identity("ENFORCEMENT#2026-11@50#schedule_removal#-#-")  # the account's own step
    assert names_identity("ENFORCEMENT#2026-11@50#remove#standup#alice")  # written before D214: an identity
    assert names_identity("ENFORCEMENT#2026-11@50#remove#standup#alice#1795168980000")  # an identity, with a join
