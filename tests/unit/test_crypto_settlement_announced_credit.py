"""A PAID bill's later payments pay its write-off before they become credit (D387), but never money invoicing has
been told is credit already: invoicing never takes credit back (``crypto_credit`` only grows), so netting announced
credit against the write-off counted the same money twice. ``settlement.recompute`` nets only the extra above the
credit announced out of it. Hand-worked figures on a $100.00 bill paid 99.60 USDC (0.40 written off, inside the
$0.50 band)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from kilo_crypto_watch.items import announcement_due
from kilo_crypto_watch.model import Bill, BillFlag, BillStatus, PaymentStatus
from kilo_crypto_watch.settlement import SettlementPolicy, recompute
from tests.crypto_core_fakes import T0, bill_with

POLICY = SettlementPolicy()
FINAL = PaymentStatus.FINALIZED


def _paid_short(*later: str, credit: str, written_off: str, announced: str, written_off_announced: str | None) -> Bill:
    """The $100.00 bill PAID by p0 (99.60 USDC: 0.40 written off), with later final USDC payments ``later`` (p1...)
    and the stored figures a recompute starts from."""
    drawn = [("USDC", "99.60", FINAL, False), *[("USDC", usd, FINAL, False) for usd in later]]
    return replace(
        bill_with("100.00", drawn),
        status=BillStatus.PAID,
        flags=frozenset({BillFlag.PARTIAL, BillFlag.MULTIPLE}),
        settled_usd=Decimal("99.60"),
        written_off_usd=Decimal(written_off),
        credit_usd=Decimal(credit),
        settled_payment_ids=("p0",),
        paid_at=T0,
        settled_announced=True,
        credit_announced_usd=Decimal(announced),
        written_off_announced_usd=None if written_off_announced is None else Decimal(written_off_announced),
    )


def test_given_a_bill_paid_before_netting_whose_later_payment_was_credited_then_credit_and_write_off_stay() -> None:
    # before D387 the later 1.00 became 1.00 of credit beside the 0.40 written off, and invoicing added the 1.00:
    # received 99.60 + 1.00 = 100.60 = 99.60 paid on the invoice + 1.00 held as credit. Netting now (credit 0.60,
    # write-off 0.00) would have invoicing lower the write-off to 0.00 beside the 1.00 it keeps: 101.00 for 100.60
    legacy = _paid_short("1.00", credit="1.00", written_off="0.40", announced="1.00", written_off_announced=None)
    after = recompute(legacy, POLICY, T0)
    assert (after.credit_usd, after.written_off_usd) == (Decimal("1.00"), Decimal("0.40"))
    assert BillFlag.PARTIAL in after.flags  # still written off
    assert not announcement_due(after)  # nothing to tell invoicing


def test_given_that_legacy_bill_and_a_further_payment_then_only_the_further_payment_pays_the_write_off() -> None:
    # + 0.30 final: extra 1.00 + 0.30 = 1.30, of which 1.00 is credit announced: 0.30 pays the write-off ->
    # 0.40 - 0.30 = 0.10 still off, credit stays 1.00. Received 100.90 = (100.00 - 0.10) on the invoice + 1.00 credit
    legacy = _paid_short(
        "1.00", "0.30", credit="1.00", written_off="0.40", announced="1.00", written_off_announced=None
    )
    after = recompute(legacy, POLICY, T0)
    assert (after.credit_usd, after.written_off_usd) == (Decimal("1.00"), Decimal("0.10"))
    assert announcement_due(after)  # the write-off fell: 0.10 < the 0.40 invoicing holds

    # once told (credit 1.00, write-off 0.10), recomputing changes nothing and there is nothing more to tell
    told = replace(after, credit_announced_usd=Decimal("1.00"), written_off_announced_usd=Decimal("0.10"))
    again = recompute(told, POLICY, T0)
    assert (again.credit_usd, again.written_off_usd) == (Decimal("1.00"), Decimal("0.10"))
    assert not announcement_due(again)

    # + 0.50 more: extra 1.80, 1.00 announced: 0.80 pays the 0.40 written off first, 0.40 more credit -> 1.40 credit,
    # 0.00 off. Received 101.40 = 100.00 on the invoice + 1.40 credit
    more = recompute(
        _paid_short(
            "1.00", "0.30", "0.50", credit="1.00", written_off="0.10", announced="1.00", written_off_announced="0.10"
        ),
        POLICY,
        T0,
    )
    assert (more.credit_usd, more.written_off_usd) == (Decimal("1.40"), Decimal("0.00"))
    assert BillFlag.PARTIAL not in more.flags


def test_given_a_legacy_bill_whose_credit_was_never_announced_then_the_later_payment_pays_the_write_off() -> None:
    # the old code stored 1.00 credit but invoicing was not told of it yet (announced 0.00): nothing of it is
    # invoicing's, so 0.40 of the 1.00 pays the write-off and 0.60 is credit - received 100.60 = 100.00 + 0.60
    legacy = _paid_short("1.00", credit="1.00", written_off="0.40", announced="0.00", written_off_announced=None)
    after = recompute(legacy, POLICY, T0)
    assert (after.credit_usd, after.written_off_usd) == (Decimal("0.60"), Decimal("0.00"))
    assert announcement_due(after)


def test_given_a_new_bill_whose_netted_credit_was_announced_then_recomputing_nets_the_same() -> None:
    # netted since D387: + 0.80 paid the 0.40 off and 0.40 is credit, announced as credit 0.40, write-off 0.00.
    # The 0.40 announced is the extra 0.80 less the 0.40 it paid: 0.80 - 0.40 = 0.40 still pays the write-off
    told = _paid_short("0.80", credit="0.40", written_off="0.00", announced="0.40", written_off_announced="0.00")
    again = recompute(told, POLICY, T0)
    assert (again.credit_usd, again.written_off_usd) == (Decimal("0.40"), Decimal("0.00"))
    assert not announcement_due(again)

    # a credit announced, then a later payment of 0.25: extra 1.05, the write-off was paid already -> 0.65 credit
    later = _paid_short(
        "0.80", "0.25", credit="0.40", written_off="0.00", announced="0.40", written_off_announced="0.00"
    )
    after = recompute(later, POLICY, T0)
    assert (after.credit_usd, after.written_off_usd) == (Decimal("0.65"), Decimal("0.00"))
    assert announcement_due(after)
