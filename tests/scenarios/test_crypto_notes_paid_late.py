"""A crypto bill the chain pays after a credit note found it unpaid: the note's not-collected part becomes account
credit with the paid status, once (D346; the card side is D339).

A note made while a crypto invoice that billed its period's usage was still open - a later invoice that billed the
period's late usage, or one of its early (progressive) invoices - records that usage as not collected
(``uncollected``, D188): nothing was paid for it. When the chain pays that bill (``CryptoBillSettled.v1``), the customer
has paid for usage that was withdrawn: the settled write credits it, in one transaction with the PAID status and the
bill's overpayment credit.

Figures (price book 2026-01: video $0.00072; Team $29 with 50,000 video minutes, Personal $0 with 5,000): coin on Team
by crypto from March 1, 50,000 March minutes (inside the allowance) -> March = 29.00 first-month fee + April's 29.00
in advance = 58.00, paid on chain. 10,000 more March minutes arrive late: April's close bills them, 10,000 x 0.00072 =
7.20, beside May's 29.00 in advance: April = 0.00 of its own usage + 29.00 + 7.20 = 36.20 (KB-coin-00002), open. The
10,000 minutes are then withdrawn (-7.20), found by May's close: its note on March finds the withdrawn usage billed
last by April (D307), which nobody has paid: 0.00 credit, 7.20 not collected; May = June's fee 29.00. April's money,
once paid, pays its own usage (0.00) first, then the late usage (7.20), then the fee (D191)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from kilo_billing.contracts import CryptoBillSettledV1
from kilo_billing.invoicing import BillingMethod, CreditNote, InvoiceRecord, InvoiceStatus
from kilo_billing.periods import Period
from kilo_invoice.crypto_settled import apply_crypto_settled
from kilo_invoice.logic import issue_early
from tests.scenarios.test_invoicing import APR, FEB, MAR, MAY, World, at, seg
from tests.scenarios.test_progressive_billing import mid, progressive

JUN = Period(2026, 6)
APRIL = "coin/2026-04"
NOTE = "coin/2026-03/credit-2026-05"


def _settled(
    invoice: InvoiceRecord, settled_usd: str, credit: str = "0.00", when: datetime | None = None
) -> CryptoBillSettledV1:
    """The crypto function's ``CryptoBillSettled.v1`` for ``invoice``: paid ``settled_usd``, ``credit`` over its total."""
    return CryptoBillSettledV1(
        event_id=f"crypto-settled:{invoice.invoice_id}",
        account_id=invoice.account_id,
        invoice_id=invoice.invoice_id,
        total=str(invoice.total),
        settled_usd=settled_usd,
        credit_usd=credit,
        occurred_at=(when or at(20, 5)).isoformat(),
    )


def _note(world: World, credit_id: str = NOTE) -> CreditNote:
    return world.store.credit_notes[credit_id]


def _late_usage_on_april(world: World) -> InvoiceRecord:
    """March 58.00 paid on chain; 10,000 late March minutes billed on April (36.20, open); the notes' inputs ready."""
    world.signup("coin", (at(1), "team"), method=BillingMethod.CRYPTO)
    world.store.rate("coin", "2026-03", seg(at(1)), "video", 50_000)
    march = world.close("coin", MAR)
    assert march.total == Decimal("58.00")  # 29.00 + 29.00
    apply_crypto_settled(world.store, _settled(march, "58.00", when=at(3, 4)))
    world.store.rate("coin", "2026-03", seg(at(1)), "video", 10_000)  # late: +7.20
    april = world.close("coin", APR)
    assert (april.total, april.status) == (Decimal("36.20"), InvoiceStatus.OPEN)  # 0.00 + 29.00 + 7.20
    world.store.rate("coin", "2026-03", seg(at(1)), "video", -10_000)  # withdrawn: -7.20
    return april


def _april_unpaid_when_withdrawn(world: World) -> InvoiceRecord:
    april = _late_usage_on_april(world)
    may = world.close("coin", MAY)
    note = _note(world)
    # April billed the withdrawn usage last and is unpaid: no credit, 7.20 not collected; May June's fee
    assert (note.to_credit, note.uncollected, note.returned) == (Decimal("0.00"), Decimal("7.20"), Decimal("0.00"))
    assert may.total == Decimal("29.00")
    return april


def test_given_late_usage_billed_on_an_open_crypto_april_when_the_chain_pays_it_after_the_note_then_credited_once() -> (
    None
):
    """The chain pays April's 36.20: its money pays the 7.20 of late usage first (its own usage is 0.00), so the 7.20
    withdrawn was paid for and becomes account credit (7.20 <= 7.20 held), once though the event is delivered twice;
    June = 29.00 - 7.20 = 21.80. Before: 0.00 credit, 7.20 left not collected, June 29.00."""
    world = World()
    april = _april_unpaid_when_withdrawn(world)

    paid, changed = apply_crypto_settled(world.store, _settled(april, "36.20"))
    again, changed_again = apply_crypto_settled(world.store, _settled(april, "36.20"))  # delivered again

    assert (paid.status, changed, changed_again) == (InvoiceStatus.PAID, True, False)
    assert again == paid
    note = _note(world)
    assert (note.to_credit, note.uncollected, note.returned, note.version) == (
        Decimal("7.20"),
        Decimal("0.00"),
        Decimal("0.00"),
        2,
    )
    assert note.history[-1] == (
        "7.20 collected since (invoice KB-coin-00002 paid): account credit",
        at(20, 5).isoformat(),
    )
    assert world.store.billing["coin"].credit == Decimal("7.20")
    assert world.close("coin", JUN).total == Decimal("21.80")  # 29.00 - 7.20


def test_given_april_overpaid_on_chain_after_the_note_then_its_overpayment_and_the_note_credit_land_together() -> None:
    """The chain pays April 40.00 for 36.20: 40.00 - 36.20 = 3.80 of overpayment (D95) and the note's 7.20, in the
    one write that marks April paid: 3.80 + 7.20 = 11.00 of account credit, April's crypto credit 3.80; a second
    delivery adds nothing; June = 29.00 - 11.00 = 18.00. Before: 3.80, the note 7.20 not collected, June 25.20."""
    world = World()
    april = _april_unpaid_when_withdrawn(world)

    apply_crypto_settled(world.store, _settled(april, "40.00", "3.80"))
    assert apply_crypto_settled(world.store, _settled(april, "40.00", "3.80"))[1] is False

    assert world.store.invoices[APRIL].crypto_credit == Decimal("3.80")
    assert (_note(world).to_credit, _note(world).uncollected) == (Decimal("7.20"), Decimal("0.00"))
    assert world.store.billing["coin"].credit == Decimal("11.00")
    assert world.close("coin", JUN).total == Decimal("18.00")  # 29.00 - 11.00


def test_given_the_chain_paying_april_between_mays_close_read_and_write_then_the_close_credits_it_at_once() -> None:
    """April is paid on chain while May's close composes (it read April open: 7.20 not collected): the settled write
    moves the refunds' fence the close's notes read, so the close composes again with April paid and its note
    credits the 7.20 at once: May = 29.00 - 7.20 = 21.80, nothing not collected. Before: the close wrote 7.20 not
    collected after April was paid, and nothing ever credited it (May 29.00, credit 0.00)."""
    world = World()
    april = _late_usage_on_april(world)
    world.store.before_create.append(lambda: apply_crypto_settled(world.store, _settled(april, "36.20")))

    may = world.close("coin", MAY)

    assert world.store.invoices[APRIL].status is InvoiceStatus.PAID
    assert (_note(world).to_credit, _note(world).uncollected) == (Decimal("7.20"), Decimal("0.00"))
    assert may.total == Decimal("21.80")  # 29.00 - 7.20
    assert world.store.billing["coin"].credit == Decimal("0.00")  # applied by May


def test_given_mays_close_landing_between_the_settlements_read_and_write_then_the_settlement_credits_its_note() -> None:
    """The settlement read April open with no note yet; May's close writes its note (7.20 not collected) before the
    settlement writes: the settled write needs the account's invoice sequence it read, so it reads again and credits
    the note's 7.20: credit 7.20, June 21.80. Before: April paid, the note's 7.20 left not collected, June 29.00."""
    world = World()
    april = _late_usage_on_april(world)
    world.store.before_update.append(lambda: world.close("coin", MAY))

    apply_crypto_settled(world.store, _settled(april, "36.20"))

    assert world.store.invoices[APRIL].status is InvoiceStatus.PAID
    assert (_note(world).to_credit, _note(world).uncollected) == (Decimal("7.20"), Decimal("0.00"))
    assert world.store.billing["coin"].credit == Decimal("7.20")
    assert world.close("coin", JUN).total == Decimal("21.80")  # 29.00 - 7.20


def test_given_a_crypto_early_invoice_paid_on_chain_after_the_note_then_its_withdrawn_usage_is_credited() -> None:
    """Personal by crypto from February, progressive at 5.00: 15,000 March minutes, 10,000 over x 0.00072 = 7.20
    billed early (open); March's close bills 7.20 - 7.20 = 0.00 (paid at once); -10,000 minutes found by April's
    close: the early invoice billed them and is unpaid: 0.00 credit, 7.20 not collected. The chain pays the early
    7.20: 7.20 account credit, once. Before: 0.00 credit, 7.20 not collected."""
    world = World()
    world.signup("coin", (at(1, 2), "personal"), method=BillingMethod.CRYPTO)
    progressive(world, "coin", "5.00")
    world.close("coin", FEB)
    world.store.rate("coin", "2026-03", seg(at(1)), "video", 15_000)
    (early,) = issue_early(world.deps, "coin", MAR, mid(10))
    assert (early.total, early.status) == (Decimal("7.20"), InvoiceStatus.OPEN)
    assert world.close("coin", MAR).total == Decimal("0.00")
    world.store.rate("coin", "2026-03", seg(at(1)), "video", -10_000)  # -7.20
    world.close("coin", APR)
    april_note = "coin/2026-03/credit-2026-04"
    assert (_note(world, april_note).to_credit, _note(world, april_note).uncollected) == (
        Decimal("0.00"),
        Decimal("7.20"),
    )

    apply_crypto_settled(world.store, _settled(early, "7.20"))
    apply_crypto_settled(world.store, _settled(early, "7.20"))  # delivered again

    note = _note(world, april_note)
    assert (note.to_credit, note.uncollected, note.version) == (Decimal("7.20"), Decimal("0.00"), 2)
    assert world.store.billing["coin"].credit == Decimal("7.20")


def test_given_march_itself_open_on_chain_when_its_usage_is_withdrawn_then_credited_at_once_and_paying_adds_nothing() -> (
    None
):
    """Control (passes before and after): Team by crypto, 60,000 March minutes -> March = 29.00 + 7.20 + April's
    29.00 = 65.20, left unpaid; -10,000 minutes found by April's close: a note on a crypto bill still open is account
    credit at once (``credit_note``: the crypto rail takes no money back, D131), so nothing is recorded not collected
    and April = 29.00 - 7.20 = 21.80. The chain then pays March 65.20 (twice delivered): no second 7.20 - the note
    stays as made, May 29.00."""
    world = World()
    world.signup("coin", (at(1), "team"), method=BillingMethod.CRYPTO)
    world.store.rate("coin", "2026-03", seg(at(1)), "video", 60_000)
    march = world.close("coin", MAR)
    assert march.total == Decimal("65.20")  # 29.00 + 7.20 + 29.00
    world.store.rate("coin", "2026-03", seg(at(1)), "video", -10_000)  # -7.20
    assert world.close("coin", APR).total == Decimal("21.80")
    april_note = "coin/2026-03/credit-2026-04"
    made = _note(world, april_note)
    assert (made.to_credit, made.uncollected) == (Decimal("7.20"), Decimal("0.00"))

    apply_crypto_settled(world.store, _settled(march, "65.20"))
    apply_crypto_settled(world.store, _settled(march, "65.20"))

    assert world.store.invoices["coin/2026-03"].status is InvoiceStatus.PAID
    assert _note(world, april_note) == made
    assert world.store.billing["coin"].credit == Decimal("0.00")
    assert world.close("coin", MAY).total == Decimal("29.00")
