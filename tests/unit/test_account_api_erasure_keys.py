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


def test_given_an_identity_shaped_like_a_pseudonym_and_a_join_in_a_key_other_than_a_removal_then_it_is_deleted() -> (
    None
):
    """Review v4b (D214 amended (e4c)): only a removal's key adds its session's join after the pseudonym. A record of
    another action written before D214 naming the identity ``erased-0123456789abcdef#42`` (an identity only shaped
    like a pseudonym is personal data, D239) ends ``#<pseudonym-shaped>#42`` too: it names an identity and is
    deleted, as before the join was read."""
    shaped = "erased-0123456789abcdef#42"  # "erased-" + 16 hex digits, then "#42": an identity, not a pseudonym
    assert names_identity(f"ENFORCEMENT#2026-11@50#audio_only#standup#{shaped}")
    assert names_identity(f"ENFORCEMENT#2026-11@50#restore#standup#{shaped}")
    assert not names_identity(f"ENFORCEMENT#2026-11@50#audio_only#standup#{ALICE}")  # a pseudonym alone: kept
    assert not names_identity(f"ENFORCEMENT#2026-10#audio_only#standup#{ALICE}")  # no limit in the scope: kept


def test_given_an_audio_only_keyed_per_session_then_its_pseudonym_is_read_before_the_join_and_it_is_kept() -> None:
    """Finding (ao): audio-only is claimed per session too, its key ending with the session's join (ms since the
    epoch: 13 digits, 1795168980000 = 2026-11-20 10:03 UTC) after the pseudonym: it names no identity, kept."""
    assert not names_identity(f"ENFORCEMENT#2026-11@50#audio_only#standup#{ALICE}#1795168980000")
    assert names_identity("ENFORCEMENT#2026-11@50#audio_only#standup#alice#1795168980000")  # an identity, a join
    # a join is 13 digits: an identity shaped "erased-<16 hex>#42" is still an identity for every action
    assert names_identity("ENFORCEMENT#2026-11@50#audio_only#standup#erased-0123456789abcdef#42")
    assert names_identity("ENFORCEMENT#2026-11@50#remove#standup#erased-0123456789abcdef#42")
