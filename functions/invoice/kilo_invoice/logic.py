"""Invoicing's logic: start a period's close, close one account (fenced, rerunnable at any point), keep our invoices'
status in step with the processor's events, refunds. Pure: ports in, outcomes out (docs/decisions.md, invoicing)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from kilo_billing.accounts import AccountDirectory
from kilo_billing.contracts import (
    DisputeKind,
    DisputeOpenedV1,
    InvoiceIssuedV1,
    PaymentFailedV1,
    PaymentMethodAttachedV1,
    RefundFailedV1,
)
from kilo_billing.invoicing import (
    CARRIED,
    CREDIT,
    ERASED_DETAILS,
    FEE_KINDS,
    SHORTFALL,
    AccountLedger,
    BillingMethod,
    CreditMove,
    CreditNote,
    CreditNoteStatus,
    InvoiceRecord,
    InvoiceStatus,
    LedgerConflictError,
    LedgerStore,
    Line,
    RefundRequest,
    amount_due,
    below_card_minimum,
    can_move,
    compose_close,
    credit_collected,
    credit_note_reason,
    credit_reinstated,
    creditable,
    customer_details_digest,
    details_erased,
    early_invoices,
    first_period,
    given_back,
    invoice_id,
    is_early,
    kept_whole,
    money_held,
    notes_credit,
    paid_since,
    period_held,
    refundable,
    to_the_card,
    void_credit,
)
from kilo_billing.money import CENT, ZERO, before_tax, is_whole_cents, money_str, total, with_tax
from kilo_billing.periods import Period
from kilo_billing.progressive import invoice_early
from kilo_billing.publisher import EventPublisher
from kilo_billing.stripe_events import LIVEMODE_MISMATCH, foreign
from kilo_invoice.model import (
    CloseDeps,
    CloseOutcome,
    DraftVoided,
    EarlierRefundFinishedError,
    EventOutcome,
    InvoiceNotFoundError,
    InvoiceNotRecordedYetError,
    NoteWaiting,
    PaymentOfAStrayInvoiceError,
    StripeModeMismatchError,
)
from kilo_invoice.ports import (
    GATEWAY_MAX_LINES,
    REFUND_METADATA,
    CloseJobQueue,
    Customer,
    GatewayInvoice,
    GatewayLine,
    GatewayMisconfiguredError,
    GatewayPartlyRefundedError,
    GatewayRejectedError,
    GatewayUnavailableError,
    InvoiceRequest,
    PaymentGateway,
    PaymentInvoice,
    RunMarkers,
    StripeEvents,
)

GATEWAY_ATTEMPTS: Final = 4  # a call the processor did not answer is retried with the same ids, then the job fails
LEDGER_ATTEMPTS: Final = 5
ISSUED: Final = "issued"
EARLY_JOB: Final = "early"  # a job of the close queue that checks progressive billing instead of closing


# --- the schedule and the fan-out ---------------------------------------------------------------------------------


def due_period(now: datetime, grace: timedelta) -> Period:
    """The latest period whose close is due at ``now``: periods close ``grace`` after they end (late webhooks)."""
    return Period.containing(now - grace).previous()


def start_run(
    store: LedgerStore, queue: CloseJobQueue, markers: RunMarkers, period: Period, now_ms: int, batch: int = 500
) -> int:
    """Queue one close job per registered account (once per period; a rerun queues them again: jobs are
    idempotent). Returns how many jobs were queued (0 when the period was already fanned out)."""
    if markers.fanned_out(period.key):
        return 0
    queued = 0
    pending: list[tuple[str, str]] = []
    for account in store.accounts():
        pending.append((account, period.key))
        if len(pending) >= batch:
            queue.send(pending)
            queued += len(pending)
            pending = []
    if pending:
        queue.send(pending)
        queued += len(pending)
    markers.mark_fanned_out(period.key, queued, now_ms)
    return queued


# --- closing one account ------------------------------------------------------------------------------------------


def close_account(deps: CloseDeps, account_id: str, period: Period, now: datetime) -> CloseOutcome:
    """Close ``period`` for one account: compose and store the draft with the billed watermarks (once), issue it
    (card: one processor invoice, idempotent on our invoice id; crypto: an open USD bill), announce it. The period's
    early (progressive) invoices that are still drafts - their issue failed in the period's last hours, and the
    hourly checks look at the running period only - are issued and announced first: the close deducts them.

    Safe to run again at any point: a stored invoice is never recomposed, the processor call is idempotent on our
    invoice id, and every status change is conditioned on the status read. A pending credit note the processor refuses
    as ours to fix (``GatewayMisconfiguredError``) does not stop the invoice: it stays pending for the next run and
    the outcome names it (``notes_waiting``, alarmed by the handler); an outage still fails the close (D330).
    Notes earlier closes left pending are taken to the processor before the close composes (D334): what they
    end as (a reduction refused because the invoice was voided there gives 0.00) is what the close reads."""
    created = False
    invoice: InvoiceRecord | None = None
    notes: dict[str, CreditNote] = {}
    waiting: dict[str, NoteWaiting] = {}  # by credit id: the processor refused the note as ours to fix (D330)
    stepped = False
    for _ in range(LEDGER_ATTEMPTS):
        ledger = deps.store.ledger(account_id)
        invoice = ledger.invoices.get(invoice_id(account_id, period))
        notes = dict(ledger.credit_notes)
        if invoice is not None:
            break
        if not stepped:  # earlier closes' pending notes first: the compose reads what they gave (D334)
            stepped = True
            if _step_notes(deps, ledger, notes.values(), now, waiting):
                ledger = deps.store.ledger(account_id)
                notes = dict(ledger.credit_notes)
        draft = compose_close(ledger, period, deps.catalog, now)
        if draft is None:
            return CloseOutcome(account_id, period.key, None, False)
        try:
            deps.store.create_invoice(draft)
        except LedgerConflictError:
            continue  # another run got there first, or rating's aggregate item was created meanwhile: re-read
        invoice, created = draft.invoice, True
        notes |= {note.credit_id: note for note in draft.credit_notes}
        break
    if invoice is None:
        raise LedgerConflictError(f"{account_id} {period}: the close kept conflicting")
    for early in early_invoices(ledger, period):  # the close deducts them: any left a draft is issued first
        if early.status is InvoiceStatus.DRAFT or ISSUED not in early.announced:
            _announce_issued(deps, _issue(deps, ledger, early, now), now)
    _step_notes(deps, ledger, notes.values(), now, waiting)  # the close's own (negative late usage), a rerun's
    invoice = _issue(deps, ledger, invoice, now)
    invoice = _announce_issued(deps, invoice, now)
    if details_erased(ledger.profile):
        _forget_customer(deps, account_id)
    return CloseOutcome(account_id, period.key, invoice, created, tuple(waiting[key] for key in sorted(waiting)))


def _step_notes(
    deps: CloseDeps,
    ledger: AccountLedger,
    notes: Iterable[CreditNote],
    now: datetime,
    waiting: dict[str, NoteWaiting],
) -> bool:
    """Take each pending credit note to the processor (``_issue_credit_note``), by credit id; one refused as ours to
    fix, or as void there by a revision ours has not followed yet (D343 amended), waits, named in
    ``waiting`` and not tried again by this close (the same answer at once, D330); an outage raises. Returns whether
    any step was tried."""
    tried = False
    for note in sorted(notes, key=lambda n: n.credit_id):
        if note.status is not CreditNoteStatus.PENDING or note.credit_id in waiting:
            continue
        tried = True
        try:
            _issue_credit_note(deps, ledger, note, now)
        except (GatewayMisconfiguredError, _NoteWaitsError) as exc:  # the note waits, alarmed (D330, D343)
            waiting[note.credit_id] = NoteWaiting(note.credit_id, str(exc))
    return tried


def _forget_customer(deps: CloseDeps, account_id: str) -> None:
    """An erased account's processor customer loses the contact details it still holds (D80, D189), once:
    the billing item's ``customer_details`` then says so (``ERASED_DETAILS``; the account API's erasure leaves the
    digest of empty details there, which differs). Saved after the processor's update, so a failure in between
    repeats a harmless update at the next close. No customer yet: nothing at the processor to erase (one found or
    created later for a card invoice is erased by the close that issues it, after it)."""
    ledger = deps.store.ledger(account_id)  # the customer id as the issue just stored it
    customer_id = ledger.billing.customer_id
    if customer_id is None or ledger.billing.customer_details == ERASED_DETAILS or not details_erased(ledger.profile):
        return
    _with_retries(deps, lambda: deps.gateway.forget_details(customer_id))
    deps.store.save_billing(account_id, customer_details=ERASED_DETAILS)


def start_early_checks(
    store: LedgerStore, directory: AccountDirectory, queue: CloseJobQueue, period: Period, batch: int = 100
) -> int:
    """Progressive billing's trigger (the hourly starter): one early-invoice check job for ``period`` (the running
    one) per account with a progressive threshold (profiles read 100 at a time). Returns how many were queued."""
    queued = 0
    ids = list(store.accounts())
    for start in range(0, len(ids), batch):
        profiles = directory.registered(ids[start : start + batch])
        due = [(account, period.key) for account, p in sorted(profiles.items()) if p.progressive_threshold_usd]
        if due:
            queue.send(due, EARLY_JOB)
            queued += len(due)
    return queued


def issue_early(deps: CloseDeps, account_id: str, period: Period, now: datetime) -> list[InvoiceRecord]:
    """Store the early invoice due now, if any (``kilo_billing.progressive.invoice_early``), then issue and announce
    every early invoice of the period not issued yet, as the close issues its invoice (a crash in between is caught
    up by the next check). Returns the period's early invoices."""
    invoice_early(deps.store, account_id, period, deps.catalog, lambda: now)
    ledger = deps.store.ledger(account_id)
    return [
        _announce_issued(deps, _issue(deps, ledger, invoice, now), now) for invoice in early_invoices(ledger, period)
    ]


def close_through(deps: CloseDeps, account_id: str, period: Period, now: datetime) -> list[CloseOutcome]:
    """Close ``period`` for one account, first closing every earlier period of the account not closed yet (periods
    close in order, D51): those since its last month-end invoice, or - with none yet - those from its first period
    (``first_period``: the month it signed up in, no earlier than the first price book), so a schedule that missed a
    month, a first month's job that failed, or an operator's run of a later month catches up instead of leaving a
    month unbilled. A month-end invoice stored but not through its close yet - still a draft, or issued but not
    announced (a job failed after the store: a note's or the issue's outage, the bus) - is not closed: the cursor starts
    at the earliest such one, so the queue's retry of a catch-up job takes it up again (``close_account`` reruns a
    stored invoice safely: its notes, issue, announcement), D336. What a close job and ``kilo-billing invoice
    run`` call; rerunnable like ``close_account``."""
    ledger = deps.store.ledger(account_id)
    stored = [inv for inv in ledger.invoices.values() if not is_early(inv)]  # an early one closes nothing
    unfinished = [  # a voided one is through: nothing to issue or announce (a draft Stripe voided, D132)
        inv.period
        for inv in stored
        if inv.status is InvoiceStatus.DRAFT or (inv.status is not InvoiceStatus.VOID and ISSUED not in inv.announced)
    ]
    if unfinished:
        cursor = min(Period.parse(min(unfinished)), period)
    elif stored:
        cursor = min(Period.parse(max(inv.period for inv in stored)).next(), period)  # a rerun: ``period`` alone
    elif ledger.profile is not None:
        cursor = min(first_period(ledger.profile, deps.catalog), period)
    else:
        cursor = period  # no profile: nothing to close (``close_account`` says so)
    pending = []
    while cursor <= period:
        pending.append(cursor)
        cursor = cursor.next()
    return [close_account(deps, account_id, each, now) for each in pending]


def _with_retries(deps: CloseDeps, call: Callable[[], Any]) -> Any:
    for attempt in range(GATEWAY_ATTEMPTS):
        try:
            return call()
        except GatewayMisconfiguredError:
            raise  # ours to fix: the same answer at once (the queue delivers the job again, and dead-letters it)
        except GatewayUnavailableError:
            if attempt == GATEWAY_ATTEMPTS - 1:
                raise
            deps.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


ADJUSTMENT: Final = "adjustment"
FOLDED: Final = "folded"  # a processor line standing for several of our lines (``fit_lines``)


def _fold(kind: str, description: str, lines: Sequence[Line], period: str) -> Line:
    starts = [line.start for line in lines if line.start is not None]
    ends = [line.end for line in lines if line.end is not None]
    amount = total([line.amount for line in lines])
    return Line(
        kind,
        f"{description}: {money_str(amount)}",
        amount,
        period,
        start=min(starts) if starts else None,
        end=max(ends) if ends else None,
    )


def fit_lines(invoice: InvoiceRecord, limit: int = GATEWAY_MAX_LINES) -> list[Line]:
    """``invoice``'s lines as the processor gets them, at most ``limit`` (Stripe holds 250 invoice items per invoice,
    D187). Our invoice keeps every line (the receipt and the API show them); the processor's sums the same:
    - at most ``limit`` lines: all of them, as they are;
    - beyond: each earlier period's late usage (its adjustment lines: up to 4 meters per tier segment, for up to
      ``MAX_ADJUSTED_PERIODS`` periods) becomes one amount line for that period, where its first line was;
    - still beyond (many carried invoices ...): the lines from the ``limit``-th on become one amount line."""
    lines = list(invoice.lines)
    if len(lines) <= limit:
        return lines
    late: dict[str, list[Line]] = {}
    for line in lines:
        if line.kind == ADJUSTMENT and line.period != invoice.period:
            late.setdefault(line.period, []).append(line)
    fitted: list[Line] = []
    for line in lines:
        group = late.get(line.period) if line.kind == ADJUSTMENT else None
        if group is None or len(group) == 1:
            fitted.append(line)
        elif line is group[0]:
            what = f"Late usage for {line.period}, {len(group)} lines (itemised on invoice {invoice.number})"
            fitted.append(_fold(ADJUSTMENT, what, group, line.period))
    if len(fitted) <= limit:
        return fitted
    rest = fitted[limit - 1 :]
    what = f"{len(rest)} further lines (itemised on invoice {invoice.number})"
    return [*fitted[: limit - 1], _fold(FOLDED, what, rest, invoice.period)]


def gateway_request(invoice: InvoiceRecord, customer_id: str, automatic_tax: bool = False) -> InvoiceRequest:
    """What the processor is asked for: our invoice's lines (folded to what one processor invoice holds, ``fit_lines``),
    a unit price and quantity on usage and late-usage lines, our ids in the metadata."""
    lines = [
        GatewayLine(
            description=line.description,
            amount=line.amount,
            quantity=line.quantity if line.kind in ("usage", ADJUSTMENT) else None,
            unit_price=line.unit_price if line.kind in ("usage", ADJUSTMENT) else None,
            period_start=line.start,
            period_end=line.end,
            metadata={"kind": line.kind, **({"meter": line.meter} if line.meter else {})},
            used=line.used if line.kind == "usage" else None,
            included=line.included if line.kind == "usage" else None,
        )
        for line in fit_lines(invoice)
    ]
    return InvoiceRequest(
        invoice_id=invoice.invoice_id,
        number=invoice.number,
        account_id=invoice.account_id,
        customer_id=customer_id,
        lines=lines,
        automatic_tax=automatic_tax,
        metadata={"invoice_id": invoice.invoice_id, "account_id": invoice.account_id, "period": invoice.period},
    )


def _issue(deps: CloseDeps, ledger: AccountLedger, invoice: InvoiceRecord, now: datetime) -> InvoiceRecord:
    if invoice.status is not InvoiceStatus.DRAFT:
        return invoice
    if below_card_minimum(invoice):  # the processor would mark it paid uncharged: kept, carried to the next (D126)
        return _save_with(deps.store, invoice, _while_draft(lambda current: current.moved(InvoiceStatus.CARRIED, now)))
    if invoice.method is BillingMethod.CRYPTO or invoice.total == 0:  # crypto bills any amount: not carried

        def opened(current: InvoiceRecord) -> InvoiceRecord:
            issued = current.moved(InvoiceStatus.OPEN, now)
            # nothing to collect: no processor invoice (D-invoice: $0 invoices stay ours)
            return issued.moved(InvoiceStatus.PAID, now) if invoice.total == 0 else issued

        return _save_with(deps.store, invoice, _while_draft(opened))
    customer_id = ledger.billing.customer_id
    profile = ledger.profile
    customer = Customer(invoice.account_id, profile.email or None, profile.name or None) if profile else None
    # the profile's email and name as last given the customer: given again only when they changed (D172)
    details = customer_details_digest(customer.email, customer.name) if customer else None
    if customer_id is None:
        customer_id = str(
            _with_retries(deps, lambda: deps.gateway.ensure_customer(customer or Customer(invoice.account_id)))
        )
        # only these: the flags may move meanwhile
        deps.store.save_billing(invoice.account_id, customer_id=customer_id, customer_details=details)
    elif customer is not None and details != ledger.billing.customer_details and not details_erased(profile):
        known = customer_id
        _with_retries(deps, lambda: deps.gateway.bring_details(known, customer))
        deps.store.save_billing(invoice.account_id, customer_details=details)
    request = gateway_request(invoice, customer_id, deps.automatic_tax)
    found: GatewayInvoice = _with_retries(deps, lambda: deps.gateway.issue_invoice(request))

    def issued(current: InvoiceRecord) -> InvoiceRecord:
        opened = replace(
            current.moved(InvoiceStatus.OPEN, now),
            gateway_id=found.gateway_id,
            hosted_url=found.hosted_url,
            pdf_url=found.pdf_url,
        )
        return opened.moved(InvoiceStatus.PAID, now) if found.status == "paid" else opened

    return _save_with(deps.store, invoice, _while_draft(issued))


def _while_draft(step: Callable[[InvoiceRecord], InvoiceRecord]) -> Callable[[InvoiceRecord], InvoiceRecord]:
    """The close's step from a draft, applied to the invoice as stored: re-applied after a conflict while it is still
    a draft (another writer changed other fields); once it moved on (a processor event, another run) the stored one
    wins."""
    return lambda current: step(current) if current.status is InvoiceStatus.DRAFT else current


class _NoteWaitsError(Exception):
    """A credit note's reduction refused on an invoice void at the processor by a revision it names (made in Stripe,
    its events perhaps not yet applied): the note stays pending for later closes (D343 amended)."""


NOTE_STEPS: Final = 3  # a reduction refused -> the same amount credited out of band -> refused too: given up


def _issue_credit_note(deps: CloseDeps, ledger: AccountLedger, note: CreditNote, now: datetime) -> CreditNote:
    """Make the processor's credit note a stored credit note still waits for, on the credited card invoice, once
    (idempotent on the note's id). A reduction of the amount due the processor refuses - the invoice was paid there
    before its event reached us - becomes account credit instead (with the note, in one transaction: once), recorded
    on the processor's invoice as credited out of band. The invoice's status the processor names in the refusal (or,
    when it does not say, our record's) decides, as the close would for a note made now: void, nothing is credited;
    any other (written off; or still open, the amount refused), account credit only for what the invoice collected -
    the account credit it applied (``creditable``, D193) - the rest not collected, and the note is done (no processor
    note; D337). A note refused again is given up (the money side is already ours: the account credit). An outage
    raises (the close job is retried; the note stays pending). Void there by a revision the processor names - a
    revision made in Stripe voids the original, and ours follows the revision when its events come - the note waits
    (``_NoteWaitsError``); a plain void (no revision) is nothing collected, as above; ours moved to another processor
    invoice meanwhile, the note is tried on it (D343 amended, review 2)."""
    for _ in range(NOTE_STEPS):
        if note.status is not CreditNoteStatus.PENDING:
            break
        credited = ledger.invoices.get(note.invoice_id)
        gateway_id = credited.gateway_id if credited is not None else None
        try:
            if gateway_id is None:
                raise GatewayRejectedError(f"{note.invoice_id} has no processor invoice")
            if note.to_due > 0 and not note.out_of_band and note.asked_on != gateway_id:
                # stored before the call: made there with its answer lost, the note is still pending, and that
                # invoice's ``invoice.paid`` counts it (``_paid_short``; D344 amended, review i)
                note = _save_note(deps, replace(note, version=note.version + 1, asked_on=gateway_id))
                if note.asked_on != gateway_id or note.status is not CreditNoteStatus.PENDING:
                    continue  # another run moved it on: from what it stored
            made = _make_note(deps, gateway_id, note)
        except GatewayRejectedError as exc:
            ledger = deps.store.ledger(note.account_id)  # what the processor's events have told us meanwhile
            found = ledger.invoices.get(note.invoice_id)
            # the processor's own status decides (its invoice.voided may not have reached us yet); our record when the
            # refusal does not say it
            said = exc.status if exc.status is not None else (found.status.value if found is not None else None)
            if found is not None and found.gateway_id != gateway_id:  # ours followed a revision meanwhile: on it
                continue
            if (
                note.to_due > 0
                and said == InvoiceStatus.VOID.value
                and exc.revision is not None
                and found is not None
                and found.status is not InvoiceStatus.VOID
            ):
                # void there by a revision made in Stripe (it names it): ours follows the revision when its events
                # come - which may then be paid. Not "nothing collected": the note waits (alarmed), retried by later
                # closes on the invoice ours then names (D343 amended). A plain void (no revision named) is
                # nothing collected at once, whether or not its invoice.voided has reached us: a note waiting for it
                # would be composed at its full amount by the next close and billed again (D334; review 2)
                raise _NoteWaitsError(
                    f"{note.credit_id}: {gateway_id} is void at the processor, revised as {exc.revision} ({exc})"
                ) from exc
            if note.to_due > 0 and said == InvoiceStatus.VOID.value:  # nothing collected, nothing owed back
                done = _note_step(
                    note,
                    now,
                    f"reduction refused ({exc}): void",
                    to_due=ZERO,
                    processor=ZERO,
                    status=CreditNoteStatus.DONE,
                )
                note = _save_note(deps, done)
            elif note.to_due > 0 and said != InvoiceStatus.PAID.value:
                # written off, or still asking and the amount refused (paid in part, another note at Stripe): not
                # money we know it collected - bounded as the close's note on it would be, the rest not collected
                # (D337; waiting for ever on an open invoice was a review's finding)
                note = _save_written_off(deps, ledger, note, now, f"reduction refused ({exc}) on an invoice {said}")
            elif note.to_due > 0:  # paid there (perhaps before we heard): account credit for what it still holds
                note = _save_paid_there(deps, ledger, note, now, f"reduction refused ({exc})", refused_on=gateway_id)
            elif note.to_card:  # the card got nothing back: what it was to get is account credit after all (D433)
                given = note.processor
                step = _note_step(
                    note,
                    now,
                    f"refused to the card ({exc}): {money_str(given)} account credit",
                    to_credit=note.to_credit + given,
                    returned=note.returned - given,
                    processor=ZERO,
                    to_card=False,
                    status=CreditNoteStatus.DONE,
                )
                note = _save_note(deps, step, given)
            else:
                note = _save_note(
                    deps, _note_step(note, now, f"refused ({exc})", processor=ZERO, status=CreditNoteStatus.DONE)
                )
            continue
        note = _save_note(
            deps, _note_step(note, now, f"made {made}", gateway_note_id=made, status=CreditNoteStatus.DONE)
        )
    return note


def _with_nothing_taken_off(ledger: AccountLedger, note: CreditNote) -> list[CreditNote]:
    """The account's credit notes with ``note`` as its reduction, refused, left it: taking nothing off its invoice -
    what the bounds on its account credit read (``_save_paid_there``, ``_save_written_off``)."""
    others = (other for other in ledger.credit_notes.values() if other.credit_id != note.credit_id)
    return [*others, replace(note, to_due=ZERO, processor=ZERO)]


def _save_paid_there(
    deps: CloseDeps, ledger: AccountLedger, note: CreditNote, now: datetime, why: str, refused_on: str | None = None
) -> CreditNote:
    """A reduction refused on an invoice paid at the processor (its ``invoice.paid`` may not have reached us): what it
    would have taken off becomes account credit for at most what that invoice still holds of the period's usage
    (``money_held``, read as paid - the processor says so - with what we know of its refunds and disputes) and what
    the period holds beyond the notes' credit (``period_held``); the rest was given back already (``returned``). Before
    (D131's branch, a review of D337): the whole amount, 3.60 on top of 65.20 charged back. The credit is then
    recorded on the processor's invoice as credited out of band (the note's next step); nothing to credit: done.
    Refused on a Stripe invoice (``refused_on``) whose ``invoice.paid`` counted the pending note as taken off what
    Stripe asked (``_paid_short``, D344 amended: the write left ``short_counted:<refused_on>:<note>``) and recorded a
    shortfall: the refusal proves the note never made (a made note's retry returns it), so Stripe asked ``to_due``
    more and the shortfall was that much more - added to its ``shortfall:`` entry in the same write as the credit,
    before the credit's bound is read (D353, amended in review 4: the marker decides, not when it was asked)."""
    for _ in range(LEDGER_ATTEMPTS):
        short = _shortfall_missed(ledger, note, refused_on)
        if short is None:
            break
        ledger = replace(ledger, invoices={**ledger.invoices, short.invoice_id: short})
        moved = _paid_there_step(ledger, note, now, why)
        added = moved.to_credit - note.to_credit
        stored = ledger.invoices[short.invoice_id]
        move = CreditMove(ledger.billing.credit, added, (moved,), ledger.billing.refund_rev)
        try:
            deps.store.update_invoice_and_credit(short, stored.status, move)
            return moved
        except LedgerConflictError:
            ledger = deps.store.ledger(note.account_id)
            found = ledger.credit_notes.get(note.credit_id)
            if found is None:
                raise
            if found.version != note.version:
                return found  # another run moved it on: continue from what it stored
    else:
        raise LedgerConflictError(f"{note.credit_id}: kept conflicting")
    moved = _paid_there_step(ledger, note, now, why)
    return _save_note(deps, moved, moved.to_credit - note.to_credit)


def _paid_there_step(ledger: AccountLedger, note: CreditNote, now: datetime, why: str) -> CreditNote:
    held = _held_paid_there(ledger, note)
    found = ledger.invoices.get(note.invoice_id)
    if held > 0 and found is not None and found.taxed is not None:  # Stripe taxed it: to the card (D433)
        step = _note_step(
            note,
            now,
            f"{why}: paid there, {money_str(held)} given back to the card",
            to_due=ZERO,
            to_credit=note.to_credit + held,
            returned=note.returned + note.to_due - held,
        )
        return to_the_card(step, held)
    return _note_step(
        note,
        now,
        f"{why}: paid there, {money_str(held)} account credit",
        to_due=ZERO,
        processor=held,
        to_credit=note.to_credit + held,
        returned=note.returned + note.to_due - held,
        out_of_band=True,
        **({} if held > 0 else {"status": CreditNoteStatus.DONE}),
    )


def _shortfall_missed(ledger: AccountLedger, note: CreditNote, refused_on: str | None) -> InvoiceRecord | None:
    """The note's invoice with ``note.to_due`` added to its ``shortfall:<refused_on>`` entry, when ``invoice.paid``
    of that Stripe invoice recorded one while counting the pending note as made there (its ``short_counted:`` marker,
    written with the shortfall: ``_invoice_event``); otherwise none (``_save_paid_there``)."""
    found = ledger.invoices.get(note.invoice_id)
    entry = f"{SHORTFALL}{refused_on}"
    if (
        found is None
        or refused_on is None
        or _short_counted(refused_on, note.credit_id) not in found.announced
        or note.status is not CreditNoteStatus.PENDING
        or found.status is not InvoiceStatus.PAID
        or not any(refund == entry for refund, _ in found.outside_refunds)
    ):
        return None
    outside = tuple(
        (refund, amount + note.to_due if refund == entry else amount) for refund, amount in found.outside_refunds
    )
    grown = replace(found, outside_refunds=outside)
    return _within_total(grown)


SHORT_COUNTED: Final = "short_counted:"  # ``announced`` marker: an ``invoice.paid`` counted a pending note (review 4)


def _short_counted(gateway_id: str, credit_id: str) -> str:
    """The marker the ``invoice.paid`` write of Stripe invoice ``gateway_id`` leaves for a pending note its shortfall
    counted as made there (``_paid_short``): its later refusal there grows the shortfall (``_shortfall_missed``)."""
    return f"{SHORT_COUNTED}{gateway_id}:{credit_id}"


def _counted_by(obj: dict[str, Any], notes: Iterable[CreditNote]) -> tuple[str, ...]:
    """The markers of the pending notes an ``invoice.paid`` of Stripe invoice ``obj`` counts as taken off what it
    asked (``_paid_short``: asked on it, made there with the answer lost - or never made, which a refusal there later
    proves, ``_shortfall_missed``)."""
    here = _ref(obj.get("id"))
    if here is None:
        return ()
    return tuple(
        _short_counted(here, note.credit_id)
        for note in notes
        if note.status is CreditNoteStatus.PENDING and note.asked_on == here
    )


def _held_paid_there(ledger: AccountLedger, note: CreditNote) -> Decimal:
    """What of ``note``'s reduction the note's invoice, read as paid, holds for account credit: at most what it still
    holds of the period's usage (``money_held``) and what the period holds beyond the notes' credit (``period_held``),
    both read with the note taking nothing off it (``_save_paid_there``, ``_credit_revision_paid``)."""
    found = ledger.invoices.get(note.invoice_id)
    if found is None:
        return ZERO
    paid = replace(found, status=InvoiceStatus.PAID)
    ledger = replace(ledger, invoices={**ledger.invoices, found.invoice_id: paid})
    notes = _with_nothing_taken_off(ledger, note)
    here = money_held(paid, notes, given_back(ledger, notes)).held.get(note.period, ZERO)
    return max(ZERO, min(note.to_due, here, period_held(ledger, note.period, notes)))


def _credit_revision_paid(
    ledger: AccountLedger, invoice: InvoiceRecord, now: datetime, carried: tuple[str, ...] = ()
) -> tuple[CreditNote, ...]:
    """The notes that turn their reduction into account credit because ``invoice`` (about to be stored paid, on a
    revision made in Stripe) was paid: a revision copies the original's lines, not the notes made on it, so what it
    asked (and collected) did not take those notes off (D344 amended, revision paid in full). The done notes on the
    invoice made at Stripe on another of its Stripe invoices (``asked_on`` not the paid one: a note made on the paid
    one took that off what it asked), earliest first, each move their ``to_due`` as a reduction refused on a paid
    invoice does (``_held_paid_there``, D131): what the payment holds now becomes account credit; what it would hold
    kept whole (``kept_whole``: no refund, no dispute's funds withdrawn) but went back already is ``returned`` -
    credited if the funds are reinstated or the refund fails (``credit_reinstated``). Not bounded by what was received
    above what ours asks: a discount made on the revision is a shortfall of its own (``_paid_short``, D350).
    Not the notes the revision carried over by hand (``carried``, ``_carried_over``: it asked what ours asks after
    them; review 4). Each comes back one version on; ``to_due`` only goes down, so a second delivery (the invoice is
    paid already) gives nothing again."""
    now_read = replace(ledger, invoices={**ledger.invoices, invoice.invoice_id: invoice})
    whole_read = replace(ledger, invoices={**ledger.invoices, invoice.invoice_id: kept_whole(invoice)})
    made = [
        note
        for note in _made_elsewhere(invoice, invoice.gateway_id, ledger.credit_notes.values())
        if note.credit_id not in carried
    ]
    changed: list[CreditNote] = []
    for note in made:
        held = _held_paid_there(now_read, note)
        covered = max(held, _held_paid_there(whole_read, note))
        if covered <= 0:
            continue
        lost = f", {money_str(covered - held)} given back already (refunded or disputed)" if covered > held else ""
        step = _note_step(
            note,
            now,
            f"{invoice.gateway_id}, a revision not carrying this note, paid: {money_str(held)} account credit{lost}",
            to_due=note.to_due - covered,
            to_credit=note.to_credit + held,
            returned=note.returned + covered - held,
        )
        now_read = replace(now_read, credit_notes={**now_read.credit_notes, note.credit_id: step})
        whole_read = replace(whole_read, credit_notes={**whole_read.credit_notes, note.credit_id: step})
        changed.append(step)
    return tuple(changed)


def _save_written_off(deps: CloseDeps, ledger: AccountLedger, note: CreditNote, now: datetime, why: str) -> CreditNote:
    """A reduction refused on an invoice not paid (written off, or open with the amount refused): as the close's note
    on one (D193), account credit only for what ``creditable`` gives - of the invoice's own money only the account
    credit it applied - read with the note itself taking nothing off the invoice; the rest was never collected. Done:
    no processor note (D337)."""
    held = creditable(ledger, note.period, _with_nothing_taken_off(ledger, note), note.to_due)
    done = _note_step(
        note,
        now,
        f"{why}: {money_str(held)} account credit, the rest not collected",
        to_due=ZERO,
        processor=ZERO,
        to_credit=note.to_credit + held,
        uncollected=note.uncollected + note.to_due - held,
        status=CreditNoteStatus.DONE,
    )
    return _save_note(deps, done, held)


def _make_note(deps: CloseDeps, gateway_id: str, note: CreditNote) -> str:
    reason, key = credit_note_reason(note), note.gateway_credit_id
    if note.to_card:  # a paid invoice Stripe taxed: its note refunded to the card (D433)
        return str(_with_retries(deps, lambda: deps.gateway.refund_note(gateway_id, note.processor, reason, key)))
    return str(
        _with_retries(deps, lambda: deps.gateway.credit_note(gateway_id, note.processor, reason, key, note.out_of_band))
    )


def _note_step(note: CreditNote, now: datetime, what: str, **changes: Any) -> CreditNote:
    return replace(note, version=note.version + 1, history=(*note.history, (what, now.isoformat())), **changes)


def _save_note(deps: CloseDeps, note: CreditNote, credit_added: Decimal = ZERO) -> CreditNote:
    """Store a credit note's step (and the account credit it adds, in the same transaction, from the credit read);
    on a conflict the stored note wins (another run took the step) and the step is tried again from it."""
    for _ in range(LEDGER_ATTEMPTS):
        ledger = deps.store.ledger(note.account_id) if credit_added else None
        try:
            if ledger is not None:
                deps.store.update_credit_note(note, ledger.billing.credit, credit_added)
            else:
                deps.store.update_credit_note(note)
            return note
        except LedgerConflictError:
            stored = deps.store.ledger(note.account_id).credit_notes.get(note.credit_id)
            if stored is None:
                raise
            if stored.version != note.version - 1:
                return stored  # another run moved it on: continue from what it stored
    raise LedgerConflictError(f"{note.credit_id}: kept conflicting")


def _announce_issued(deps: CloseDeps, invoice: InvoiceRecord, now: datetime) -> InvoiceRecord:
    """``InvoiceIssued.v1`` once an invoice is issued - not a draft, not one voided (never issued to the customer)."""
    if invoice.status in (InvoiceStatus.DRAFT, InvoiceStatus.VOID) or ISSUED in invoice.announced:
        return invoice
    event = InvoiceIssuedV1(
        event_id=f"invoice-issued:{invoice.invoice_id}",
        account_id=invoice.account_id,
        invoice_id=invoice.invoice_id,
        number=invoice.number,
        period=invoice.period,
        total=money_str(invoice.total),
        method=invoice.method.value,
        status=invoice.status.value,
        hosted_url=invoice.hosted_url,
        occurred_at=now.isoformat(),
    )
    deps.publisher.publish(InvoiceIssuedV1.DETAIL_TYPE, event.model_dump())
    return _mark_announced(deps.store, invoice, ISSUED)


def _mark_announced(store: LedgerStore, invoice: InvoiceRecord, *markers: str) -> InvoiceRecord:
    """Record an alert as published (published first: a crash in between publishes the same event id again)."""
    return _save_with(store, invoice, lambda current: replace(current, announced=current.announced | set(markers)))


# --- payment status from the processor's events --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _StripeEvent:
    """A stored Stripe event as the handlers below read it: its id, its type and the object it is about
    (``data.object``)."""

    id: str
    type: str
    obj: dict[str, Any]
    created: int = 0  # when Stripe created the event (seconds): a charge's total is newer or older than a failure
    livemode: object = None  # the envelope's, as sent
    account: object = None  # the envelope's Stripe Connect account, if any (none for the platform's own events)

    @classmethod
    def parse(cls, body: bytes) -> _StripeEvent:
        event = json.loads(body)
        created = event.get("created")
        at = created if isinstance(created, int) and not isinstance(created, bool) and created > 0 else 0
        obj = dict(event["data"]["object"])
        return cls(str(event["id"]), str(event["type"]), obj, at, event.get("livemode"), event.get("account"))

    def foreign(self, livemode: bool) -> tuple[str, str] | None:
        """Why the event is not ours to apply in a stage taking ``livemode`` events (D349), if it is not: its code
        and the words."""
        return foreign({"livemode": self.livemode, "account": self.account}, livemode)

    def outcome(self, invoice_id: str | None, changed: bool, published: tuple[str, ...] = ()) -> EventOutcome:
        return EventOutcome(self.id, self.type, invoice_id, changed, published)

    def occurred_at(self, now: datetime) -> str:
        """When the event happened, for an alert it raises: Stripe's ``created`` (``now`` when it has none, or one
        past 9999-12-31T23:59:59 UTC that ingest lets through - milliseconds, say: see ``_dated``). The alerts ledger
        sends a key once per month of this time: every redelivery of the event keys the same month, also one handled
        after a UTC month end (D348 amended, review 2; ``DisputeOpened.v1`` and ``RefundFailed.v1`` too: D348
        amended, dated by the event)."""
        return _dated(self.created, now)


# the last second a datetime can hold (253402300799); ingest accepts any ``created`` below 2**53
_LAST_DATABLE: Final = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp())


def _dated(created: int, now: datetime) -> str:
    """``created`` (Stripe's seconds) as an alert's ``occurred_at``; ``now`` when it is not known (0) or out of a
    datetime's range (past the year 9999: ``fromtimestamp`` would raise, the alert never published and the message
    retried to the DLQ - D348 amended, review g2)."""
    return (datetime.fromtimestamp(created, UTC) if 0 < created <= _LAST_DATABLE else now).isoformat()


def _metadata(obj: dict[str, Any]) -> dict[str, Any]:
    found = obj.get("metadata")
    return dict(found) if isinstance(found, dict) else {}


def _find(
    store: LedgerStore, ids: Iterable[str | None], metadata: dict[str, Any]
) -> tuple[AccountLedger, InvoiceRecord]:
    ours = metadata.get("invoice_id")
    if isinstance(ours, str) and "/" in ours:
        ledger = store.ledger(ours.split("/", 1)[0])
        if ours in ledger.invoices:
            return ledger, ledger.invoices[ours]
    for ref in ids:
        if not ref:
            continue
        found = store.invoice_for_gateway(ref)
        if found is not None:
            ledger = store.ledger(found[0])
            if found[1] in ledger.invoices:
                return ledger, ledger.invoices[found[1]]
    raise InvoiceNotFoundError(f"no invoice of ours for {ours or [i for i in ids if i]}")


def _find_payment(
    store: LedgerStore, gateway: PaymentGateway | None, refs: Iterable[str | None], metadata: dict[str, Any]
) -> tuple[AccountLedger, InvoiceRecord]:
    """The invoice a charge, refund or dispute event is about: by the payment's pointers ``invoice.paid`` recorded,
    else (the event came first: any order is possible) by asking the processor which invoice the payment intent
    paid; the refs are then recorded on the invoice, as ``invoice.paid`` would have. A payment the processor ties to
    a Stripe invoice we hold no pointer for (ours does not know that id yet: its ``invoice.finalized``/``paid`` not
    applied) raises ``InvoiceNotRecordedYetError``, retried by the queue; only a payment of no invoice at all is
    ``InvoiceNotFoundError`` (D383)."""
    wanted = tuple(ref for ref in refs if ref)
    try:
        return _find(store, wanted, metadata)
    except InvoiceNotFoundError:
        if gateway is None:
            raise
    unknown: list[PaymentInvoice] = []  # Stripe invoices the payments belong to, none of them recorded by ours
    for ref in wanted:
        paid_by = gateway.invoice_for_payment(ref)  # unavailable: raised, the queue delivers the event again
        found = store.invoice_for_gateway(paid_by.gateway_id) if paid_by else None
        if found is None:
            unknown += [paid_by] if paid_by else []
            continue
        ledger = store.ledger(found[0])
        invoice = ledger.invoices.get(found[1])
        if invoice is None:
            continue
        invoice = _save_with(store, invoice, lambda inv: _with_refs(inv, wanted))
        return ledger, invoice
    raise _not_found(store, wanted, unknown)


def _not_found(
    store: LedgerStore, wanted: Sequence[str], unknown: Sequence[PaymentInvoice]
) -> LookupError | InvoiceNotRecordedYetError:
    """Why no invoice of ours was found for a payment of the Stripe invoices ``unknown``: one whose metadata names an
    invoice of ours that can still record it (no Stripe id yet, this one, or a revision of its) is not recorded
    yet - retried (``InvoiceNotRecordedYetError``); one naming an invoice of ours that never will (a duplicate of
    the one it recorded, ours voided or gone) is a stray - ignored, logged at ERROR (``PaymentOfAStrayInvoiceError``);
    none with our metadata is nothing of ours (``InvoiceNotFoundError``) (D383 amended)."""
    for paid_by in unknown:
        ours = _named(store, paid_by.ours)
        if (ours is not None and ours.gateway_id in (None, paid_by.gateway_id)) or (ours and paid_by.revises):
            return InvoiceNotRecordedYetError(
                f"payment {list(wanted)} belongs to Stripe invoice {paid_by.gateway_id}, which invoice "
                f"{paid_by.ours} of ours has not recorded yet (its invoice.finalized or invoice.paid not applied): "
                "retried"
            )
    stray = [paid_by for paid_by in unknown if paid_by.ours]
    if stray:
        return PaymentOfAStrayInvoiceError(
            f"payment {list(wanted)} belongs to Stripe invoice {stray[0].gateway_id}, which names invoice "
            f"{stray[0].ours} of ours but is not it (a duplicate, or ours voided): not applied"
        )
    return InvoiceNotFoundError(f"no invoice of ours for {list(wanted)}")


def _named(store: LedgerStore, ours: str | None) -> InvoiceRecord | None:
    """The invoice of ours a Stripe invoice's metadata names, while it is not void (a void one records no payment)."""
    if not ours or "/" not in ours:
        return None
    invoice = store.ledger(ours.split("/", 1)[0]).invoices.get(ours)
    return invoice if invoice is not None and invoice.status is not InvoiceStatus.VOID else None


def _with_refs(invoice: InvoiceRecord, refs: Iterable[str]) -> InvoiceRecord:
    new = tuple(dict.fromkeys(ref for ref in refs if ref not in invoice.gateway_refs))
    return replace(invoice, gateway_refs=invoice.gateway_refs + new) if new else invoice


def _paid_with(gateway: PaymentGateway | None, invoice: InvoiceRecord) -> tuple[tuple[str, ...], str | None]:
    """The processor's ids of the payments of a paid card invoice (one call per ``invoice.paid``): refund and dispute
    events name them, not the invoice. Looked up after the paid status is stored, and optional: a processor that
    refuses the lookup for good or does not answer it leaves the payment matched later by ``_find_payment``, which
    asks the processor then (D301). Asked even when refs are recorded: a dispute or charge event of one of several
    payments may have recorded its own before ``invoice.paid`` came (D304); recording is idempotent. A lookup that
    failed on our side (the key's secret malformed, the key revoked: ``GatewayMisconfiguredError``) is let pass too,
    but said (the second value) for the handler to alarm: it fails every later lookup the same way (D316)."""
    if gateway is None or invoice.gateway_id is None or invoice.method is not BillingMethod.CARD:
        return (), None
    try:
        return gateway.payment_refs(invoice.gateway_id), None
    except GatewayMisconfiguredError as exc:
        return (), str(exc)
    except (GatewayRejectedError, GatewayUnavailableError):
        return (), None


def _ref(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def _invoice_money(invoice: InvoiceRecord, cents: int) -> Decimal:
    """What Stripe charged, refunded or disputed of ``invoice``'s payment (``cents``, tax included) counted on ours:
    with Stripe Tax (``taxed``), before tax in its Stripe invoice's proportion, rounded once (``money.before_tax``:
    the whole payment is exactly the invoice's total before tax); without, as it is (D384)."""
    charged = Decimal(cents).scaleb(-2)
    return charged if invoice.taxed is None else before_tax(charged, invoice.taxed)


def _taxed(obj: dict[str, Any]) -> tuple[int, int] | None:
    """A Stripe invoice's (``total``, ``total_excluding_tax``) in cents when it carries tax (the two differ, both
    positive); None otherwise."""
    whole, net = obj.get("total"), obj.get("total_excluding_tax")
    if not all(isinstance(value, int) and not isinstance(value, bool) and value > 0 for value in (whole, net)):
        return None
    return (int(str(whole)), int(str(net))) if whole != net else None


def apply_stripe_event(
    store: LedgerStore,
    publisher: EventPublisher,
    events: StripeEvents,
    pk: str,
    sk: str,
    now: datetime,
    gateway: PaymentGateway | None = None,
    livemode: bool | None = None,
) -> EventOutcome:
    """Bring our records in step with one stored Stripe event. Duplicates and any order are harmless: a status only
    moves along the state machine (a late ``payment_failed`` never undoes ``paid``), amounts only grow, and every
    alert carries an id derived from the processor's event, recorded once published.

    ``checkout.session.completed`` (setup mode) records the card on file and, with a ``gateway``, makes the card the
    customer saved last its default for invoices (Checkout attaches it but does not make it the default); a repeat
    or an older session's event arriving late sets the same, latest card (docs/decisions.md).

    With ``livemode`` (the stage's mode), an event of a Stripe Connect account is not applied (``foreign`` says why,
    D349), and one of the other mode raises ``StripeModeMismatchError``: kept on the queue for a redrive, as the
    stage's setting may be what is wrong (D349 amended)."""
    record = events.get(pk, sk)
    if record is None:
        raise InvoiceNotFoundError(f"stripe event {pk}/{sk} is not stored")
    event = _StripeEvent.parse(record.body)
    refused = event.foreign(livemode) if livemode is not None else None
    if refused is not None:  # ingest refuses these; one stored before, or put on the bus otherwise, is not applied
        code, said = refused
        if code == LIVEMODE_MISMATCH:  # the setting may be wrong, not the event: failed, dead-lettered, redriven
            named = _metadata(event.obj).get("invoice_id")
            raise StripeModeMismatchError(said, event.type, named[:100] if isinstance(named, str) else None)
        return replace(event.outcome(None, False), foreign=said)
    if event.type == "payment_method.attached":
        return _card_attached(publisher, gateway, event, now)
    if event.type == "checkout.session.completed":
        account = _metadata(event.obj).get("account_id") or event.obj.get("client_reference_id")
        if not isinstance(account, str):
            return event.outcome(None, False)
        ledger = store.ledger(account)
        customer = ledger.billing.customer_id or _ref(event.obj.get("customer"))
        if gateway is not None and customer is not None and event.obj.get("mode", "setup") == "setup":
            gateway.default_to_latest_card(customer)  # unavailable: raised, the queue delivers the event again
        store.save_billing(account, card_on_file=True, customer_id=customer)
        return event.outcome(None, True)
    if event.type.startswith("invoice."):
        ledger, invoice = _find(store, [_ref(event.obj.get("id")), _revised(event.obj)], _metadata(event.obj))
        applies, attention = _about_ours(invoice, event)
        if not applies:  # another Stripe invoice than ours: never applied to ours (D343)
            return replace(event.outcome(invoice.invoice_id, False), attention=attention)
        outcome, invoice = _invoice_event(store, publisher, ledger, invoice, event, now)
        payments, misconfigured = _paid_with(gateway, invoice) if event.type == "invoice.paid" else ((), None)
        if _save_with(store, invoice, lambda inv: _with_refs(inv, payments)) != invoice:  # after the status: optional
            outcome = replace(outcome, changed=True)
        return replace(outcome, misconfigured=misconfigured)
    if event.type == "charge.refunded":  # the Charge: its intent (what the invoice's payment names) and its own id
        refs = (_ref(event.obj.get("payment_intent")), _ref(event.obj.get("id")))
        ledger, invoice = _find_payment(store, gateway, refs, _metadata(event.obj))
        charge = _ref(event.obj.get("id")) or ""
        cents = int(event.obj.get("amount_refunded", 0))  # the charge's running total, tax included

        def charge_refunded(inv: InvoiceRecord) -> InvoiceRecord:
            return _charge_refunded(inv, charge, _invoice_money(inv, cents), event.created)

        updated = _save_with(store, invoice, charge_refunded)
        return event.outcome(invoice.invoice_id, updated != invoice)
    if event.type == "refund.created":  # the Refund: its intent and charge; one we made names our request
        if REFUND_METADATA in _metadata(event.obj):  # ours: its charge.refunded and the request's own write count it
            return event.outcome(None, False)
        refs = (_ref(event.obj.get("payment_intent")), _ref(event.obj.get("charge")))
        _, invoice = _find_payment(store, gateway, refs, _metadata(event.obj))
        refund, cents = _ref(event.obj.get("id")) or "", int(event.obj.get("amount", 0))
        updated = _save_with(store, invoice, lambda inv: _refunded_outside(inv, refund, _invoice_money(inv, cents)))
        return event.outcome(invoice.invoice_id, updated != invoice)
    if event.type in _REFUND_FAILED_EVENTS:  # the Refund, failed: its intent and charge; ours names our request
        return _refund_failed_event(store, publisher, gateway, event, now)
    if event.type in _DISPUTE_EVENTS:  # the Dispute: its intent and charge
        return _dispute_event(store, publisher, gateway, event, now)
    return event.outcome(None, False)


# ``refund.failed`` (current API versions) and the Refund's updates that may carry the same failure (``refund.updated``,
# ``charge.refund.updated`` on older endpoints): any of them, in any order and repeated, records it once
_REFUND_FAILED_EVENTS: Final = frozenset({"refund.failed", "refund.updated", "charge.refund.updated"})
_REFUND_NOT_MADE: Final = frozenset({"failed", "canceled"})  # Stripe returns the funds to our balance


def _refund_failed_event(
    store: LedgerStore,
    publisher: EventPublisher,
    gateway: PaymentGateway | None,
    event: _StripeEvent,
    now: datetime,
) -> EventOutcome:
    """A card refund the processor made and then failed (or canceled): the money is back in our balance, the
    customer got nothing. Recorded on the invoice once by refund id (``_refund_not_made``) in a write given ``now``:
    the invoice keeps the money again, so what notes recorded as returned meanwhile becomes account credit (D310's
    step, its history naming the failure). ``RefundFailed.v1`` is announced once per refund (marker
    ``refund_failed:<id>``) for the operator and the customer. A Refund update that is not a failure changes nothing
    (D340)."""
    status = event.obj.get("status")
    if status not in _REFUND_NOT_MADE and not (event.type == "refund.failed" and status is None):
        return event.outcome(None, False)
    refs = (_ref(event.obj.get("payment_intent")), _ref(event.obj.get("charge")))
    _, invoice = _find_payment(store, gateway, refs, _metadata(event.obj))
    refund = _ref(event.obj.get("id")) or ""
    cents = int(event.obj.get("amount", 0))  # what Stripe refunded and failed, tax included (its alert says it)
    charged, amount = Decimal(cents).scaleb(-2), _invoice_money(invoice, cents)
    ours = _metadata(event.obj).get(REFUND_METADATA)
    ours_id = ours if isinstance(ours, str) and ours else None
    sent = (_ref(event.obj.get("charge")) or "", event.created)
    before = invoice
    read: list[InvoiceRecord] = [invoice]

    def record(inv: InvoiceRecord) -> InvoiceRecord:  # keeps the invoice each attempt read: the last one won
        read.append(inv)
        return _refund_not_made(inv, refund, amount, ours_id, sent)

    invoice = _save_with(store, invoice, record, now)
    published: tuple[str, ...] = ()
    marker = f"refund_failed:{refund}"
    if refund and amount > 0 and marker not in invoice.announced:
        reason = event.obj.get("failure_reason")
        alert = RefundFailedV1(
            event_id=f"refund-failed:{refund}",
            account_id=invoice.account_id,
            invoice_id=invoice.invoice_id,
            refund_id=refund,
            number=invoice.number,
            amount=money_str(charged),
            reason=reason if isinstance(reason, str) and reason else str(status or "unknown"),
            ours=ours_id is not None,
            occurred_at=_failure_dated(read[-1], refund, event, now),  # every event saying it: one month's key
        )
        publisher.publish(RefundFailedV1.DETAIL_TYPE, alert.model_dump())
        invoice = _mark_announced(store, invoice, marker)
        published = (alert.event_id,)
    return event.outcome(invoice.invoice_id, invoice != before, published)


def _failure_dated(invoice: InvoiceRecord, refund: str, event: _StripeEvent, now: datetime) -> str:
    """``RefundFailed.v1``'s ``occurred_at``: the failure's time stored for ``refund`` on ``invoice`` as read before
    this event's write (``failed_refunds_at``: the first event recording it, written before its publish), else this
    event's own. One failure comes by up to three event types, each with its own ``created``; after a lost marker
    write another of them publishes again, and dated by its own ``created`` either side of a UTC month end it was a
    second text and email. The time as read before the write, not after: a later-handled event created earlier moves
    the stored time back (``_failed_earlier``, for the money), which would move its alert to the other month (D348
    amended, review g2). Read by the write's winning attempt: after a conflict the invoice re-read holds what the
    concurrent event stored, the one read first does not (review rh3)."""
    _, at = dict(invoice.failed_refunds_at).get(refund, ("", 0))
    return _dated(at, now) if at > 0 else event.occurred_at(now)


def _refund_not_made(
    invoice: InvoiceRecord, refund: str, amount: Decimal, ours: str | None, sent: tuple[str, int] = ("", 0)
) -> InvoiceRecord:
    """A refund the processor failed, recorded once by id (``failed_refunds``, with its charge and the failure
    event's time, ``sent``: a charge total sent after it is net of it) and no longer counted as given back
    (``given_back`` takes the failures off its figures). One made outside us is recorded as made too (its
    ``refund.created`` may come after, or never: then it changes nothing); on an item written before D331 whose
    ``refunds_made`` holds refunds made outside us (no request of ours ever made), it is moved from that amount to
    its id, not counted a second time. One of ours whose request is still pending (the processor's answer not
    recorded yet) finishes that request as made when the failed refund is all of it; a failed part of it (an invoice
    paid in several payments) leaves the request pending for the rest: its rerun finds the failed part by the
    request's id and tops up only what was never made (D340 amended). ``refunded`` is stored net of the
    failures, so the failure's amount is taken off it here (it stands for the refunds made, failed ones included)."""
    if not refund or amount <= 0:
        return invoice
    if any(known == refund for known, _ in invoice.failed_refunds):
        return _failed_earlier(invoice, refund, sent)
    current, pending = invoice, invoice.refund_pending
    if ours is not None and pending is not None and pending.refund_id == ours and amount >= pending.amount:
        current = replace(
            current,
            refunded=current.given_back(pending),
            refunds_made=current.refunds_made + pending.amount,
            refund_pending=None,
        )
    if ours is None and not any(known == refund for known, _ in current.outside_refunds):
        legacy = current.refunds_made if current.refunds_requested == 0 else ZERO  # read from ``refunded`` (D331)
        current = replace(
            current,
            outside_refunds=tuple(sorted((*current.outside_refunds, (refund, amount)))),
            refunds_made=legacy - min(legacy, amount) if legacy > 0 else current.refunds_made,
        )
    failed = replace(
        current,
        failed_refunds=tuple(sorted((*current.failed_refunds, (refund, amount)))),
        failed_refunds_at=tuple(sorted((*current.failed_refunds_at, (refund, sent)))),
        refunded=current.refunded - amount,
    )
    return _within_total(_recapped_all(failed))


def _failed_earlier(invoice: InvoiceRecord, refund: str, sent: tuple[str, int]) -> InvoiceRecord:
    """A failure already recorded, said again by another event (``refund.updated`` after ``refund.failed``, in any
    order): it is dated by the earliest event saying it - a later update processed first must not make a charge's
    total sent in between read as still holding it (taken off twice). Its charge is kept, or taken from this event
    when not known; ``refunded`` is read again (a total sent after the earlier time is net of the failure). A time
    not known (0) is never earlier (D340 amended, review 2)."""
    charge, at = sent
    dated = dict(invoice.failed_refunds_at)
    known_charge, known_at = dated.get(refund, ("", 0))
    earlier = at > 0 and (known_at == 0 or at < known_at)
    if not earlier and (known_charge or not charge):
        return invoice
    dated[refund] = (known_charge or charge, at if earlier else known_at)
    moved = replace(invoice, failed_refunds_at=tuple(sorted(dated.items())))
    return _within_total(_recapped_all(moved))


def _refunded_outside(invoice: InvoiceRecord, refund: str, amount: Decimal) -> InvoiceRecord:
    """``refund.created`` of a refund made outside us (no ``REFUND_METADATA``: Stripe's dashboard): recorded on the
    invoice once per refund id, whether or not one of ours is pending, and counted as given back at once - never
    read as part of ours when its ``charge.refunded`` raises ``refunded`` (D302's limit), never twice when it is
    delivered again (D331)."""
    if not refund or amount <= 0 or any(known == refund for known, _ in invoice.outside_refunds):
        return invoice
    outside = replace(invoice, outside_refunds=tuple(sorted((*invoice.outside_refunds, (refund, amount)))))
    return _within_total(outside)


def _charge_refunded(invoice: InvoiceRecord, charge: str, refunded: Decimal, at: int = 0) -> InvoiceRecord:
    """``charge.refunded``: ``refunded`` is the charge's cumulative refunded amount, and an invoice paid in several
    payments has a charge per payment - so it is recorded per charge, and the invoice's refunded amount is the sum
    over its charges (never less than what our own refunds recorded: their webhooks may come later). The charge's
    latest total is kept with ``at``, the time Stripe created its event: a total sent later replaces it even when
    smaller (a refund failed in between: Stripe lowered it), an older one changes nothing; when either time is not
    known (or they are equal) the larger total is kept, as before (D340 amended)."""
    seen, sent = dict(invoice.charge_refunds), dict(invoice.charge_refunds_at)
    stored, stored_at = seen.get(charge), sent.get(charge, 0)
    if stored is not None:
        newer = at > stored_at > 0 or ((at == stored_at or not (at and stored_at)) and refunded > stored)
        if not newer:
            return invoice
    elif refunded <= ZERO:
        return invoice
    seen[charge] = refunded
    sent[charge] = at
    charged = replace(
        invoice,
        charge_refunds=tuple(sorted(seen.items())),
        charge_refunds_at=tuple(sorted((c, t) for c, t in sent.items() if t > 0)),
    )
    return _within_total(_inferred_recapped(charged, charge))


_DISPUTE_EVENTS: Final = frozenset(
    {
        "charge.dispute.created",
        "charge.dispute.closed",
        "charge.dispute.funds_withdrawn",
        "charge.dispute.funds_reinstated",
        "charge.dispute.updated",
    }
)
_DISPUTE_CLOSED: Final = frozenset({"won", "lost", "warning_closed", "prevented"})
_DISPUTE_OPEN: Final = "dispute_open:"  # the marker of each dispute of the invoice still open


def _dispute_event(
    store: LedgerStore,
    publisher: EventPublisher,
    gateway: PaymentGateway | None,
    event: _StripeEvent,
    now: datetime,
) -> EventOutcome:
    """A Dispute's events (its payment intent and charge name the invoice). ``created``/``closed``: the invoice is
    flagged while the dispute is open, the account while any of its invoices is, ``DisputeOpened.v1`` is announced
    once. Money: ``funds_withdrawn`` adds the disputed amount to the invoice's ``charged_back`` and
    ``funds_reinstated`` (a dispute won after the funds were withdrawn) takes it off again, each once per dispute
    (markers ``dispute_withdrawn:``/``dispute_reinstated:``, in either order); a dispute closed ``lost`` whose
    withdrawal we never saw counts as withdrawn, once (``dispute_lost:``, written before these events were handled,
    counts as withdrawn too) - for at most what its charge still holds (the dispute's amount less the charge's
    refunds, never below nothing: "after the payment has been fully refunded, no further funds are withdrawn", the
    SDK's is_charge_refundable), lowered again by the charge's later refunds; a ``funds_withdrawn`` seen after it
    stands as Stripe recorded it, in its place. Any event of it whose payload lists its ``balance_transactions`` (in
    the dispute's currency, objects) says what was withdrawn, no inference; a longer list replaces that figure (the
    list only grows), so the longest wins in any order (``_withdrawn_or_reinstated``, D359 amended (wd3, wd4, wd5)).
    An inquiry closed ``warning_closed`` that escalates under the same id (``updated`` or ``funds_withdrawn`` with an
    open status) is open again, flagged and announced once more (D359 amended (wd6)) - unless its final close
    (``lost``/``won``) is recorded; an inquiry's ``warning_closed`` received after the re-open (wd7), or after any event
    showed the dispute a chargeback (dk3), changes no flag.
    The escalation's alert: once any event showed the dispute an inquiry (``warning_*``) and any other a chargeback
    (an open non-``warning_*`` status), in any order, a close between or not; an inquiry's ``created`` handled after
    that publishes no inquiry alert (D359 amended (dk2))."""
    refs = (_ref(event.obj.get("payment_intent")), _ref(event.obj.get("charge")))
    _, invoice = _find_payment(store, gateway, refs, _metadata(event.obj))
    closing = event.type == "charge.dispute.closed"
    dispute_id = str(event.obj.get("id", ""))
    closed_marker, open_marker = f"dispute_closed:{dispute_id}", f"{_DISPUTE_OPEN}{dispute_id}"
    # the customer's bank takes the payment's funds (or keeps them: a dispute lost), or gives them back
    takes = event.type == "charge.dispute.funds_withdrawn" or (closing and event.obj.get("status") == "lost")
    amount = _invoice_money(invoice, int(event.obj.get("amount", 0)))  # the dispute's, counted before tax
    charge = str(_ref(event.obj.get("charge")) or "")
    listed = _listed_withdrawal(event.obj)
    if listed is not None and invoice.taxed is not None:
        listed = (listed[0], before_tax(listed[1], invoice.taxed))
    status = str(event.obj.get("status") or "")
    inquiry_closed, reopened_marker = f"dispute_inquiry_closed:{dispute_id}", f"dispute_reopened:{dispute_id}"
    # a final close (``lost``/``won``): nothing re-opens the dispute afterwards (D359 amended (wd7))
    final_marker = f"dispute_final:{dispute_id}"
    # an inquiry closed ``warning_closed`` escalating under the same id: open again, once (D359 amended (wd6))
    escalates = (
        event.type in {"charge.dispute.updated", "charge.dispute.funds_withdrawn"}
        and status not in _DISPUTE_CLOSED
        and not status.startswith("warning_")
    )
    if listed is not None and not listed[0] and not closing:  # nothing listed yet: says nothing until it closes
        listed = None
    # what its events showed the dispute to be: an inquiry (a ``warning_*`` status) and, open, a chargeback (any other
    # open status) - both, in any order: an inquiry that escalated, alerted once as such (D359 amended (dk2))
    inquiry_marker, chargeback_marker = f"dispute_inquiry:{dispute_id}", f"dispute_chargeback:{dispute_id}"
    open_status = bool(status) and not closing and status not in _DISPUTE_CLOSED
    shown = {inquiry_marker} if status.startswith("warning_") else {chargeback_marker} if open_status else set[str]()

    def dispute(current: InvoiceRecord) -> InvoiceRecord:
        marks, charged_back, flag = set(current.announced), current.charged_back, current.disputed
        marks.update(shown)
        opens = event.type == "charge.dispute.created" and event.obj.get("status") not in _DISPUTE_CLOSED
        if opens and closed_marker not in marks:  # one arriving after its close (recorded or in it) flags nothing
            marks.add(open_marker)
        # the inquiry's ``warning_closed`` received after its escalation re-opened it (wd7), or after any event showed
        # it a chargeback (sent before the escalation, delivered late): changes no flag (D359 amended (dk3))
        if closing and not (status == "warning_closed" and {reopened_marker, chargeback_marker} & marks):
            marks.discard(open_marker)
            marks.add(closed_marker)
            if status == "warning_closed" and reopened_marker not in marks and final_marker not in marks:
                marks.add(inquiry_closed)
            if status in {"lost", "won"}:
                marks.discard(inquiry_closed)
                marks.add(final_marker)
        reopens = escalates and inquiry_closed in marks and reopened_marker not in marks and final_marker not in marks
        if reopens:
            marks.difference_update({inquiry_closed, closed_marker})
            marks.update({open_marker, reopened_marker})
        if event.type == "charge.dispute.created" or closing or reopens:  # open while any of its disputes is (D345)
            flag = any(mark.startswith(_DISPUTE_OPEN) for mark in marks)
        refunded = _charge_net_refunded(current, charge)
        charged_back += _withdrawn_or_reinstated(
            marks, dispute_id, (event.type, takes, listed), (charge, refunded), amount
        )
        disputed = replace(current, disputed=flag, charged_back=charged_back, announced=frozenset(marks))
        return _within_total(disputed) if disputed.taxed is not None else disputed

    before = invoice
    invoice = _save_with(store, invoice, dispute, now)
    changed = invoice != before
    _flag_disputed(store, invoice.account_id)
    published = _dispute_alerts(store, publisher, invoice, event, now)
    return event.outcome(invoice.invoice_id, changed, published)


_YIELDED: Final = "rounding_yielded:"  # ``announced`` marker: the cents a taxed invoice's chargebacks yielded (D384)


def _within_total(invoice: InvoiceRecord, back: Decimal | None = None) -> InvoiceRecord:
    """``refunded`` read again (``given_back``, or ``back`` when the caller read it with its request), and a taxed
    invoice kept within its total. Its refunds and chargebacks are each counted before tax and rounded half-up on
    their own, each part up to half a cent over its share, so together they can come to cents over the total (20 %
    VAT: 39.09 refunded and 39.15 lost of 78.24 -> 32.58 + 32.63 = 65.21 of 65.20): up to half a cent per part
    (``_rounded_parts``) the refunds yield it, then the chargebacks. More is money given back twice (refunded, then
    charged back as well) and stays. Run after every change of the figures, once inferred losses are re-capped: a
    cent is yielded only while it is over. What the chargebacks yielded is kept apart (marker ``rounding_yielded:``)
    and given back to them first, so a chargeback reinstated later leaves the other's own figure (D384 amended)."""
    refunded = invoice.given_back() if back is None else back
    if invoice.taxed is None:
        return replace(invoice, refunded=refunded)
    yielded = next((mark for mark in invoice.announced if mark.startswith(_YIELDED)), None)
    charged_back = invoice.charged_back + (Decimal(yielded.removeprefix(_YIELDED)) if yielded else ZERO)
    marks = invoice.announced - {yielded} if yielded else invoice.announced
    over = refunded + invoice.refund_owed + charged_back - invoice.total
    if over > ZERO and over * 2 <= CENT * _rounded_parts(invoice):
        from_refunds = min(over, refunded)
        refunded, over = refunded - from_refunds, over - from_refunds
        if ZERO < over <= charged_back:
            charged_back -= over
            marks = marks | {f"{_YIELDED}{over}"}
    return replace(invoice, refunded=refunded, charged_back=charged_back, announced=marks)


def _rounded_parts(invoice: InvoiceRecord) -> int:
    """How many figures of a taxed invoice's refunds and chargebacks were each converted before tax and rounded (at
    most): a refunded total per charge or a refund made outside us per id (whichever figure is the larger count), and
    each dispute counted (withdrawn, lost or listed, not reinstated)."""
    outside = sum(1 for refund, _ in invoice.outside_refunds if not refund.startswith(SHORTFALL))
    marks = invoice.announced
    disputes: set[str] = set()
    for mark in marks:
        kind, _, rest = mark.partition(":")
        dispute_id = rest.split(":", 1)[0]
        taken = kind in {"dispute_withdrawn", "dispute_lost"} and f"dispute_reinstated:{dispute_id}" not in marks
        if taken or (kind == "dispute_settled" and Decimal(rest.rsplit(":", 1)[1]) != ZERO):
            disputes.add(dispute_id)
    return max(len(invoice.charge_refunds), outside) + len(disputes)


def _dispute_alerts(
    store: LedgerStore, publisher: EventPublisher, invoice: InvoiceRecord, event: _StripeEvent, now: datetime
) -> tuple[str, ...]:
    """The ``DisputeOpened.v1`` alerts a dispute's event publishes, ``invoice`` saved with its markers: at its
    ``created`` (an inquiry's: not once the dispute is a chargeback - an escalated inquiry's created handled late, a
    retry or a redrive: "no money withdrawn yet" is wrong by then), and the escalation once the events showed the
    dispute both an inquiry (``warning_*``, its ``warning_closed`` close, its re-open: wd6) and a chargeback, a close
    between or not, by any event but a close (the created too, handled late), unless its final close is recorded
    (wd7) (D359 amended (dk2)). An inquiry's created reads the invoice again before its alert: another handler may
    have escalated it since the save (two at once) - narrows that window, does not close it (D359 amended (dk3))."""
    dispute_id, status = str(event.obj.get("id", "")), str(event.obj.get("status") or "")
    announced, kind = invoice.announced, _opened_kind(status)
    marker, escalated = f"dispute:{dispute_id}", f"dispute_escalated:{dispute_id}"
    reopened, chargeback = f"dispute_reopened:{dispute_id}", f"dispute_chargeback:{dispute_id}"
    over = f"dispute_closed:{dispute_id}" in announced or status in _DISPUTE_CLOSED  # nothing to alert
    over = over or (kind == "inquiry" and bool({chargeback, reopened, escalated} & announced))
    if event.type == "charge.dispute.created" and kind == "inquiry" and marker not in announced and not over:
        # another handler may have escalated it since this one saved (a redrive, two at once): read again (dk3)
        invoice = store.ledger(invoice.account_id).invoices.get(invoice.invoice_id, invoice)
        announced = invoice.announced
        over = bool({chargeback, reopened, escalated, f"dispute_closed:{dispute_id}"} & announced)
    published: tuple[str, ...] = ()
    if event.type == "charge.dispute.created" and marker not in announced and not over:
        published = _dispute_opened(
            store, publisher, invoice, (f"dispute-opened:{dispute_id}", marker), (event, kind), now
        )
    was_inquiry = {f"dispute_inquiry:{dispute_id}", f"dispute_inquiry_closed:{dispute_id}", reopened} & announced
    alerted_or_final = {escalated, f"dispute_final:{dispute_id}"} & announced
    if event.type != "charge.dispute.closed" and was_inquiry and chargeback in announced and not alerted_or_final:
        again = (f"dispute-escalated:{dispute_id}", escalated)
        published = (*published, *_dispute_opened(store, publisher, invoice, again, (event, "escalation"), now))
    return published


def _opened_kind(status: str) -> DisputeKind:
    """What a dispute created with ``status`` is: an inquiry (``warning_needs_response``/``warning_under_review``: the
    bank asked, no funds withdrawn - Stripe's Dispute statuses), else a chargeback (D359 amended (dk))."""
    return "inquiry" if status.startswith("warning_") else "chargeback"


def _dispute_opened(
    store: LedgerStore,
    publisher: EventPublisher,
    invoice: InvoiceRecord,
    keys: tuple[str, str],
    about: tuple[_StripeEvent, DisputeKind],
    now: datetime,
) -> tuple[str, ...]:
    """``DisputeOpened.v1`` for the dispute of the event (``keys``: its event id and the invoice's marker written after
    the publish; ``about``: the event and what the dispute is): at its ``created``, and again once when an inquiry
    closed ``warning_closed`` escalates under the same id (D359 amended (wd6)). Dated by the event, so redelivered
    after a month end it is still the same month's key (D348) - an escalation by the Dispute's own ``created``
    instead: its ``updated`` and ``funds_withdrawn`` may each publish it (a marker write lost after the first), and
    dated each by its own event they could fall in two months, two emails (D359 amended (dk))."""
    event, kind = about
    event_id, marker = keys
    created = event.obj.get("created")
    dispute_created = created if isinstance(created, int) and not isinstance(created, bool) else 0
    dated = _dated(dispute_created, now) if kind == "escalation" and dispute_created > 0 else event.occurred_at(now)
    alert = DisputeOpenedV1(
        event_id=event_id,
        account_id=invoice.account_id,
        invoice_id=invoice.invoice_id,
        dispute_id=str(event.obj.get("id", "")),
        amount=money_str(Decimal(int(event.obj.get("amount", 0))).scaleb(-2)),
        occurred_at=dated,
        kind=kind,
    )
    publisher.publish(DisputeOpenedV1.DETAIL_TYPE, alert.model_dump())
    _mark_announced(store, invoice, marker)
    return (alert.event_id,)


def _withdrawn_or_reinstated(
    marks: set[str],
    dispute_id: str,
    event: tuple[str, bool, tuple[int, Decimal] | None],
    charge: tuple[str, Decimal],
    amount: Decimal,
) -> Decimal:
    """What a dispute's event adds to the invoice's ``charged_back`` (``marks``: the invoice's markers, updated;
    ``event``: its type, whether it ``takes`` - its ``funds_withdrawn``, or a close ``lost`` - and how many items its
    ``balance_transactions`` list holds and what they withdrew, None when unknown (``_listed_withdrawal``; an empty
    list counts only on a close); ``charge``: the disputed charge and what its ``charge.refunded`` recorded refunded).
    A listed figure stands for the dispute, in place of whatever was counted before; a later list with more items
    replaces it, one no longer (or no list) changes nothing (marker ``dispute_settled:<id>:<items>:<amount>``).
    Otherwise ``takes`` counts the withdrawal once;
    a loss whose withdrawal we never saw counts at most what its charge still holds (the dispute's amount less the
    charge's refunded total, never below nothing; marker ``dispute_inferred:<id>:<charge>:<amount>:<counted>``, lowered
    or raised again by the charge's later ``charge.refunded``); a ``funds_withdrawn`` seen after that stands as Stripe
    sent it, in its place; ``funds_reinstated`` takes off what was counted (D359 amended (wd3, wd4, wd5)). The old
    rule's figure counts as items too (a seen withdrawal 1, and its reinstatement 2): a list replaces it only with
    more; a settled figure of 0 items gives way to the old rule when an event that takes has an unknown list (wd6); an
    inferred loss gives way to an empty list only on a close that takes (``lost``), never a ``warning_closed`` (wd7)."""
    event_type, takes, listed = event
    withdrawn_marker, reinstated_marker = f"dispute_withdrawn:{dispute_id}", f"dispute_reinstated:{dispute_id}"
    inferred_prefix, settled_prefix = f"dispute_inferred:{dispute_id}:", f"dispute_settled:{dispute_id}:"
    settled = next((mark for mark in marks if mark.startswith(settled_prefix)), None)
    if settled is not None:  # a longer list replaces the figure (a dispute's list only grows), any other nothing
        items, figure = settled.rsplit(":", 2)[1:]
        if listed is None and int(items) == 0 and takes:
            marks.discard(settled)  # 0 items (0.00): the old rule's one event is more - it counts from here (wd6)
        elif listed is None or listed[0] <= int(items):
            return ZERO
        else:
            marks.discard(settled)
            marks.add(f"{settled_prefix}{listed[0]}:{listed[1]}")
            return listed[1] - Decimal(figure)
    seen = event_type == "charge.dispute.funds_withdrawn"
    was_withdrawn = withdrawn_marker in marks or f"dispute_lost:{dispute_id}" in marks
    inferred = next((mark for mark in marks if mark.startswith(inferred_prefix)), None)
    counted = amount if inferred is None else Decimal(inferred.rsplit(":", 1)[1])
    # the old rule's own item count: a withdrawal seen = 1, withdrawn and reinstated = 2 (an inferred one: 0)
    recorded = (1 if was_withdrawn and inferred is None else 0) + (1 if reinstated_marker in marks else 0)
    if listed is not None and 0 < recorded >= listed[0]:  # a list replaces only with more items than recorded (wd6)
        return ZERO
    if listed is not None and listed[0] == 0 and inferred is not None and not takes:  # only a lost close's [] (wd7)
        return ZERO
    if listed is not None:
        before = counted if was_withdrawn and reinstated_marker not in marks else ZERO
        if inferred is not None:
            marks.discard(inferred)
        marks.add(f"{settled_prefix}{listed[0]}:{listed[1]}")
        return listed[1] - before
    change = ZERO
    if takes and not was_withdrawn:
        marks.add(withdrawn_marker)
        if reinstated_marker not in marks:  # given back first (out of order): nothing is charged back
            change = amount if seen else _still_held(amount, charge[1])
            if not seen:
                marks.add(f"{inferred_prefix}{charge[0]}:{amount}:{change}")
    elif seen and inferred is not None:  # the withdrawal seen after one inferred: Stripe's amount, in its place
        marks.discard(inferred)
        change, counted = amount - counted, amount
    if event_type == "charge.dispute.funds_reinstated" and reinstated_marker not in marks:
        marks.add(reinstated_marker)
        if was_withdrawn:
            change -= counted
        if inferred is not None:
            marks.discard(inferred)
    return change


def _still_held(amount: Decimal, refunded: Decimal) -> Decimal:
    """What a lost dispute of ``amount`` can have withdrawn from its charge when no withdrawal was seen: the charge's
    amount is not stored, so the dispute's amount stands for it, less what the charge's refunds took, >= 0."""
    return max(ZERO, min(amount, amount - refunded))


def _listed_withdrawal(obj: dict[str, Any]) -> tuple[int, Decimal] | None:
    """A dispute payload's ``balance_transactions`` (a list: none, its withdrawal, or withdrawal and reinstatement,
    each ``amount`` in cents, negative for a withdrawal; its ``fee`` apart): how many items it lists and what stays
    withdrawn, -(sum of the amounts). None - unknown, the old rule applies - when the payload has no such list, when
    an item is not an object (an id, not expanded), or when an item's ``currency`` is not the dispute's own (a
    BalanceTransaction's amount is in the account's settlement currency, not the charge's; D359 amended (wd5))."""
    listed, currency = obj.get("balance_transactions"), str(obj.get("currency") or "").lower()
    if not isinstance(listed, list) or not all(isinstance(item, dict) for item in listed):
        return None
    if not currency or any(str(item.get("currency") or "").lower() != currency for item in listed):
        return None
    cents = sum(int(item.get("amount", 0)) for item in listed)
    return len(listed), Decimal(-cents).scaleb(-2)


def _charge_net_refunded(invoice: InvoiceRecord, charge: str) -> Decimal:
    """What ``charge``'s refunds took from it, net of its refunds that failed: its ``charge.refunded`` total less each
    failure of that charge the total is not already net of (one Stripe created at or after the total's event, or
    either time unknown - as ``given_back`` reads them), never below nothing (D359 amended (wd6))."""
    stored = dict(invoice.charge_refunds).get(charge, ZERO)
    sent, amounts = dict(invoice.charge_refunds_at).get(charge, 0), dict(invoice.failed_refunds)
    failed = total(
        [
            amounts.get(refund, ZERO)
            for refund, (of_charge, at) in invoice.failed_refunds_at
            if of_charge == charge and not (0 < at < sent)
        ]
    )
    return max(ZERO, stored - failed)


def _recapped_all(invoice: InvoiceRecord) -> InvoiceRecord:
    """A refund failed (or its failure was re-dated): every charge with an inferred loss is re-capped (D359 amended
    (wd6): the 40.00 back with us after a failed refund can be withdrawn again)."""
    charges = {mark.rsplit(":", 3)[1] for mark in invoice.announced if mark.startswith("dispute_inferred:")}
    for charge in sorted(charges):
        invoice = _inferred_recapped(invoice, charge)
    return invoice


def _inferred_recapped(invoice: InvoiceRecord, charge: str) -> InvoiceRecord:
    """A charge's refunded total changed (or one of its refunds failed): each lost dispute of that charge whose
    withdrawal was inferred counts what the charge still holds now (``_still_held`` of its refunds net of the failed
    ones, ``_charge_net_refunded``), ``charged_back`` moved by the difference (D359 amended (wd4, wd6))."""
    refunded = _charge_net_refunded(invoice, charge)
    marks, charged_back = set(invoice.announced), invoice.charged_back
    for mark in sorted(invoice.announced):
        if not mark.startswith("dispute_inferred:"):
            continue
        head, of_charge, amount, counted = mark.rsplit(":", 3)
        if of_charge != charge:
            continue
        now = _still_held(Decimal(amount), refunded)
        marks.discard(mark)
        marks.add(f"{head}:{of_charge}:{amount}:{now}")
        charged_back += now - Decimal(counted)
    if charged_back == invoice.charged_back:
        return invoice
    return replace(invoice, charged_back=charged_back, announced=frozenset(marks))


def _flag_disputed(store: LedgerStore, account_id: str) -> None:
    """The account is disputed while any of its invoices is: recomputed from the ledger by every dispute event, also
    a redelivered one (an earlier delivery that saved the invoice may have failed before this write), and written
    on the flag's revision read; another dispute event's write in between (its invoice saved after this read)
    conflicts, and the flag is recomputed from the ledger again (D299). The billing item sorts before the
    invoices, so one ledger read takes the revision before the invoices it counts. Written even when unchanged: the
    new revision makes a writer that read before this one's invoice recompute rather than overwrite it."""
    for _ in range(LEDGER_ATTEMPTS):
        ledger = store.ledger(account_id)
        still = any(inv.disputed for inv in ledger.invoices.values())
        try:
            store.save_dispute_flag(account_id, still, ledger.billing.dispute_revision)
            return
        except LedgerConflictError:
            continue
    raise LedgerConflictError(f"{account_id}: dispute flag kept conflicting")


_FINGERPRINT: Final = re.compile(r"[^#\s]{1,200}")


def _card_attached(
    publisher: EventPublisher,
    gateway: PaymentGateway | None,
    event: _StripeEvent,
    now: datetime,
) -> EventOutcome:
    """``payment_method.attached`` (a card saved through Checkout, the Billing Portal or the API): announce
    ``PaymentMethodAttached.v1`` with the card's fingerprint (the same for the same card number across customers) for
    the abuse signals. The account is the one the customer's metadata names (``ensure_customer``), read through the
    gateway - one Stripe call per card saved. A card of a customer that is not ours, or without a fingerprint, is
    nothing to announce. Published at least once with the id ``payment-method:<pm id>``: consumers count it once."""
    card = event.obj.get("card")
    fingerprint = card.get("fingerprint") if isinstance(card, dict) else None
    method_id, customer = _ref(event.obj.get("id")), _ref(event.obj.get("customer"))
    if event.obj.get("type") != "card" or not isinstance(fingerprint, str) or not _FINGERPRINT.fullmatch(fingerprint):
        return event.outcome(None, False)
    if method_id is None or customer is None or gateway is None:
        return event.outcome(None, False)
    account = gateway.customer_account(customer)  # unavailable: raised, the queue delivers the event again
    if account is None:
        return event.outcome(None, False)
    attached = PaymentMethodAttachedV1(
        event_id=f"payment-method:{method_id}",
        account_id=account,
        method="card",
        fingerprint=fingerprint,
        occurred_at=now.isoformat(),
    )
    publisher.publish(PaymentMethodAttachedV1.DETAIL_TYPE, attached.model_dump())
    return event.outcome(None, True, (attached.event_id,))


_INVOICE_TARGETS: Final = {
    "invoice.finalized": InvoiceStatus.OPEN,
    "invoice.paid": InvoiceStatus.PAID,
    "invoice.payment_failed": InvoiceStatus.PAYMENT_FAILED,
    "invoice.payment_action_required": InvoiceStatus.PAYMENT_FAILED,
    "invoice.marked_uncollectible": InvoiceStatus.UNCOLLECTIBLE,
    "invoice.voided": InvoiceStatus.VOID,
}


def _revised(obj: dict[str, Any]) -> str | None:
    """The Stripe invoice ``obj`` is a revision of (its ``from_invoice``, action ``revision``: Stripe's "Edit
    invoice"), if it is one."""
    source = obj.get("from_invoice")
    if isinstance(source, dict) and source.get("action") == "revision":
        return _ref(source.get("invoice"))
    return None


def _about_ours(invoice: InvoiceRecord, event: _StripeEvent) -> tuple[bool, str | None]:
    """Whether an invoice event found for ``invoice`` (by our metadata, which Stripe copies to revisions and
    duplicates, or by a processor id) is applied to it, and what it tells an operator (D343). Applied: an
    event of the Stripe invoice we recorded (or of one, while we have recorded none), or of a revision of it - ours
    follows the revision. Not applied, quietly: an event of an earlier Stripe invoice of ours that a revision
    replaced (it is void; its late events are spent), but its ``invoice.paid``. Anything else - a duplicate, another
    invoice carrying our metadata - is not applied and is said."""
    found = _ref(event.obj.get("id"))
    if invoice.gateway_id is None or found is None or found == invoice.gateway_id:
        return True, None
    if _revised(event.obj) == invoice.gateway_id:
        return True, None
    if found in invoice.gateway_refs and event.type != "invoice.paid":
        return False, None
    return False, (
        f"{event.type} of Stripe invoice {found}, which is not {invoice.invoice_id}'s ({invoice.gateway_id}) nor a "
        f"revision of it: not applied; check it in Stripe (a duplicate paid is refunded there)"
    )


def _followed(current: InvoiceRecord, event: _StripeEvent) -> str | None:
    """The Stripe invoice ours moves to (D343): a revision of the one we recorded, by the revision's own
    event, or by the original's ``invoice.voided`` naming its ``latest_revision`` - whichever comes first."""
    found = _ref(event.obj.get("id"))
    if current.gateway_id is None or found is None:
        return None
    if found != current.gateway_id and _revised(event.obj) == current.gateway_id:
        return found
    latest = _ref(event.obj.get("latest_revision"))
    if event.type == "invoice.voided" and found == current.gateway_id and latest and latest != found:
        return latest
    return None


def _revision_differs(invoice: InvoiceRecord, event: _StripeEvent, notes: Iterable[CreditNote]) -> str | None:
    """What to tell an operator of a revision of ours asking another amount than a revision of ours should: ours'
    total - Stripe's ``total`` is before credit notes (a note made on the revision lowers what it collects, never what
    it asks), and a revision copies the lines, not the notes made on the original. Ours follows it all the same
    (D343). Lowered by exactly our notes made on another Stripe invoice (or on one other than its source), they are
    read as carried over - not credited again, the source's notes credited (``_carried_over``); lowered by anything
    else, the difference is a shortfall when paid and our notes are credited as well (D350, amended in reviews
    4 and 5)."""
    source = _revised(event.obj)
    asks = event.obj.get("total_excluding_tax", event.obj.get("total"))
    here = _ref(event.obj.get("id"))
    if source is None or source not in (invoice.gateway_id, *invoice.gateway_refs) or not isinstance(asks, int):
        return None
    notes = list(notes)
    asked = Decimal(asks).scaleb(-2)
    if asked == invoice.total:
        return None
    made = _made_elsewhere(invoice, here, notes)
    elsewhere = total([note.to_due for note in made])
    carried = _carried_over(invoice, event.obj, notes)
    if carried:
        kept = total([note.to_due for note in made if note.credit_id in carried])
        then = f"read as our notes made before the revision ({money_str(kept)}) carried over: not credited"
        if kept != elsewhere:
            then += f"; {money_str(elsewhere - kept)} of our notes made on {source} credited"
    elif elsewhere > 0:
        then = f"our notes made before the revision ({money_str(elsewhere)}) are credited as well"
    else:
        then = "ours follows it"
    return (
        f"Stripe invoice {here}, a revision of {source}, asks {money_str(asked)} (before tax) where "
        f"{money_str(invoice.total)} is expected ({invoice.invoice_id}'s total: Stripe's is before credit notes): "
        f"{then}; check the revision"
    )


def _made_elsewhere(invoice: InvoiceRecord, here: str | None, notes: Iterable[CreditNote]) -> list[CreditNote]:
    """``invoice``'s done notes made at Stripe on another of its Stripe invoices than ``here`` (a revision copies
    none): what ``_credit_revision_paid`` credits, earliest first."""
    return sorted(
        (
            note
            for note in notes
            if note.invoice_id == invoice.invoice_id
            and note.status is CreditNoteStatus.DONE
            and note.to_due > 0
            and not note.out_of_band
            and note.asked_on != here
        ),
        key=lambda note: note.credit_id,
    )


def _carried_over(invoice: InvoiceRecord, obj: dict[str, Any], notes: Iterable[CreditNote]) -> tuple[str, ...]:
    """The notes (ids) a revision made in Stripe (``obj``) carries over by hand. Stripe's ``total`` is before credit
    notes (a note made on the revision never lowers it), so it is compared with ours' total: asking (before tax)
    exactly that less every note made on another of ours' Stripe invoices, the operator is read as having taken them
    all off it; else exactly that less the notes made on Stripe invoices other than the revision's source (a
    revision of a revision copies the source's lines - an earlier hand edit with them - not the notes made on the
    source), those are carried and the source's credited. Carried notes took that off what it asked, and are not
    credited again when it is paid (D350, amended in reviews 4 and 5). Any other amount: none (a discount of
    its own)."""
    here, source = _ref(obj.get("id")), _revised(obj)
    asks = obj.get("total_excluding_tax", obj.get("total"))
    if here is None or source is None or not isinstance(asks, int) or isinstance(asks, bool):
        return ()
    elsewhere = _made_elsewhere(invoice, here, notes)
    asked = Decimal(asks).scaleb(-2)
    for carried in (elsewhere, [note for note in elsewhere if note.asked_on != source]):
        if carried and asked == invoice.total - total([note.to_due for note in carried]):
            return tuple(note.credit_id for note in carried)
    return ()


def _paid_short(invoice: InvoiceRecord, obj: dict[str, Any], notes: Iterable[CreditNote]) -> tuple[Decimal, Decimal]:
    """(received, short): what ``invoice.paid`` says Stripe collected before tax (``amount_paid``; with Stripe Tax,
    in the proportion of the invoice's ``total_excluding_tax`` to its ``total``), and how much less that is than
    ours asks - its total less our own notes' reductions (D344) made at Stripe: a note still pending took nothing
    off what Stripe asked unless it was asked on this very Stripe invoice (``asked_on``: made there, its answer
    lost, D344 amended, review i) - one never asked, or waiting on a revision's original, is credited later as
    paid there, and taken off here too it counted twice (D344 amended, review 2). On a revision made in Stripe,
    which copies the original's lines and not the notes made on it, a note done on another Stripe invoice took
    nothing off what it asked either: only notes asked on the revision count (the others are credited in the paid
    write, ``_credit_revision_paid``; D350) - unless the revision asks exactly what ours asks after them: the
    operator carried them over by hand (``_carried_over``, review 4). An invoice an operator marked
    paid outside Stripe (``paid_out_of_band``) is taken as paid in full: that is the operator's own statement."""
    paid, whole, net = obj.get("amount_paid"), obj.get("total"), obj.get("total_excluding_tax")
    here = _ref(obj.get("id"))
    revision = here is not None and _revised(obj) is not None
    notes = list(notes)
    carried = _carried_over(invoice, obj, notes)
    due = amount_due(
        invoice,
        [
            note
            for note in notes
            if (here is not None and note.asked_on == here)
            or (note.status is not CreditNoteStatus.PENDING and not revision)
            or note.credit_id in carried
        ],
    )
    if not isinstance(paid, int) or isinstance(paid, bool) or obj.get("paid_out_of_band") is True:
        return due, ZERO
    received = Decimal(paid).scaleb(-2)
    if isinstance(whole, int) and isinstance(net, int) and whole > 0 and net > 0 and net != whole:
        received = before_tax(received, (whole, net))
    return received, max(ZERO, due - received)


_FAILED_MARKER: Final = "payment_failed:"
_ACTION_REQUIRED: Final = ":action_required"


def _attempt(obj: dict[str, Any]) -> int | None:
    """The invoice's ``attempt_count`` (Stripe: the first attempt and each automatic retry; a manual attempt after the
    first does not count), if it names one."""
    count = obj.get("attempt_count")
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else None


def _failed_markers(invoice: InvoiceRecord, event: _StripeEvent) -> tuple[str, ...]:
    """The markers of the ``PaymentFailed`` alert this failed or action-required event announces (the first names
    the alert: ``payment-failed:<what follows the prefix>``), or none when its attempt is announced already
    (D348). One payment attempt needing 3-D Secure brings both events (other ids, any order), announced per
    (Stripe invoice, ``attempt_count``) and the event's own kind: the failed event's alert is always
    ``payment_failed:<in_...>:<n>``, the action-required event's always ``...:<n>:action_required`` - so two
    deliveries handled at once, or a marker write lost after the publish, cost at most one extra alert, never the
    one that says what to do under an id already sent (D348 amended). The action-required wording wins as a
    shortcut read from what is marked: announced first, it marks both, and the failed event after it adds nothing.
    Without an ``attempt_count``, one alert per event id (``payment_failed:<evt_...>``), the marker of every alert
    before D348: an event announced under it is not announced again."""
    announced = invoice.announced
    legacy = f"{_FAILED_MARKER}{event.id}"
    attempt, stripe_id = _attempt(event.obj), _ref(event.obj.get("id"))
    if legacy in announced:
        return ()
    if attempt is None or stripe_id is None:
        return (legacy,)
    marker = f"{_FAILED_MARKER}{stripe_id}:{attempt}"
    action = marker + _ACTION_REQUIRED
    if event.type != "invoice.payment_action_required":
        return () if marker in announced else (marker,)
    if action in announced:
        return ()
    return (action,) if marker in announced else (action, marker)


def _invoice_event(
    store: LedgerStore,
    publisher: EventPublisher,
    ledger: AccountLedger,
    invoice: InvoiceRecord,
    event: _StripeEvent,
    now: datetime,
) -> tuple[EventOutcome, InvoiceRecord]:
    """The invoice event applied: its outcome and the invoice as stored. Ours follows a revision made in Stripe
    (``_followed``: the old id kept among the refs for payment and refund lookups, the pages' links the revision's);
    the original's ``invoice.voided`` naming its ``latest_revision`` does not void ours (D343). A card
    ``invoice.paid`` collecting less than ours asks records the shortfall as given back outside us, once
    (D344); both are said to the operator (``attention``). ``invoice.paid`` of an invoice notes found
    unpaid credits, with the status, what they recorded as not collected (``_save_with``, D339)."""
    target = _INVOICE_TARGETS.get(event.type)
    if target is None:
        return event.outcome(invoice.invoice_id, False), invoice
    notes = list(ledger.credit_notes.values())
    said = [_revision_differs(invoice, event, notes)]
    revised_away = event.type == "invoice.voided" and _ref(event.obj.get("latest_revision")) is not None
    paid = event.type == "invoice.paid" and invoice.method is BillingMethod.CARD
    received, short = _paid_short(invoice, event.obj, notes) if paid else (ZERO, ZERO)
    counted = _counted_by(event.obj, notes) if paid else ()  # marked with the paid write
    decided: list[tuple[bool, str | None]] = []  # ``_about_ours`` on the copy each try wrote from: the last decides

    def change(current: InvoiceRecord) -> InvoiceRecord:
        # asked again of what is stored: a concurrent delivery may have moved ours to a revision since the read
        # (D343 amended); not ours any more, nothing is written
        decided.append(_about_ours(current, event))
        if not decided[-1][0]:
            return current
        updated = _recorded_ids(current, event)
        follows = _followed(current, event)
        if follows is not None and current.gateway_id is not None:  # the old invoice's pages are void ones
            refs = _with_refs(updated, [current.gateway_id]).gateway_refs
            updated = replace(updated, gateway_id=follows, gateway_refs=refs, hosted_url=None, pdf_url=None)
        if revised_away:  # the original voided by its revision: ours is the revision's now, not void
            return updated
        if event.obj.get("hosted_invoice_url") and not updated.hosted_url:
            updated = replace(updated, hosted_url=str(event.obj["hosted_invoice_url"]))
        if event.obj.get("invoice_pdf") and not updated.pdf_url:
            updated = replace(updated, pdf_url=str(event.obj["invoice_pdf"]))
        if (
            current.status is InvoiceStatus.DRAFT
            and target is not InvoiceStatus.OPEN
            and can_move(InvoiceStatus.OPEN, target)
        ):
            updated = updated.moved(InvoiceStatus.OPEN, now)  # paid/failed before we saw it finalized
        if can_move(updated.status, target):
            updated = updated.moved(target, now)
        if counted and updated.status is InvoiceStatus.PAID and current.status is not InvoiceStatus.PAID:
            updated = replace(updated, announced=updated.announced | set(counted))  # the payment's reading, once
        if short > 0 and updated.status is InvoiceStatus.PAID:  # once: by the paid invoice's id
            updated = _refunded_outside(updated, f"{SHORTFALL}{updated.gateway_id}", short)
        return updated

    before = invoice
    revision = _ref(event.obj.get("id")) if paid and _revised(event.obj) is not None else None
    carried = _carried_over(invoice, event.obj, notes) if revision is not None else ()
    # paid: notes' not-collected part credited with it; on a revision, what notes on its original took off (D344)
    invoice = _save_with(store, invoice, change, now, revision_paid=None if revision is None else (revision, carried))
    applied, said_not = decided[-1]
    if not applied:  # found another Stripe invoice's on the re-read: said as the first look would have
        return replace(event.outcome(invoice.invoice_id, False), attention=said_not), invoice
    if short > 0 and any(refund.startswith(SHORTFALL) for refund, _ in invoice.outside_refunds):
        said.append(
            f"Stripe invoice {_ref(event.obj.get('id'))} was paid {money_str(received)} (before tax) where "
            f"{invoice.invoice_id} asks {money_str(received + short)}: {money_str(short)} recorded as given back "
            f"outside us (a credit note or discount made in Stripe?)"
        )
    published: tuple[str, ...] = ()
    failed = event.type in ("invoice.payment_failed", "invoice.payment_action_required")
    markers = _failed_markers(invoice, event) if failed else ()
    if markers and invoice.status is InvoiceStatus.PAYMENT_FAILED:
        alert = PaymentFailedV1(
            event_id=f"payment-failed:{markers[0].removeprefix(_FAILED_MARKER)}",
            account_id=invoice.account_id,
            invoice_id=invoice.invoice_id,
            total=money_str(_tried(invoice, event, ledger.credit_notes.values())),
            reason="action_required" if event.type.endswith("action_required") else "payment_failed",
            hosted_url=invoice.hosted_url,
            occurred_at=event.occurred_at(now),  # redelivered after a month end: still the same month's key
        )
        publisher.publish(PaymentFailedV1.DETAIL_TYPE, alert.model_dump())
        invoice = _mark_announced(store, invoice, *markers)
        published = (alert.event_id,)
    attention = "; ".join(reason for reason in said if reason) or None
    return replace(event.outcome(invoice.invoice_id, invoice != before, published), attention=attention), invoice


def _recorded_ids(current: InvoiceRecord, event: _StripeEvent) -> InvoiceRecord:
    """What ours learns of its Stripe invoice from an invoice event of it: the Stripe id while it has none, and (a
    card invoice) the Stripe Tax figures (``taxed``: ``total``, ``total_excluding_tax``), the paid event's standing
    over earlier ones (D384)."""
    updated, found = current, _ref(event.obj.get("id"))
    if current.gateway_id is None and found:
        updated = replace(updated, gateway_id=found)
    taxed = _taxed(event.obj) if current.method is BillingMethod.CARD else None
    if taxed is not None and (event.type == "invoice.paid" or current.taxed is None):
        updated = replace(updated, taxed=taxed)
    return updated


def _tried(invoice: InvoiceRecord, event: _StripeEvent, notes: Iterable[CreditNote]) -> Decimal:
    """``PaymentFailed.v1``'s total: what ours still asks after notes; with Stripe Tax on the failed invoice, what
    Stripe tried to collect (its ``amount_due``, tax included): the customer's bank declined that figure (D384)."""
    due = event.obj.get("amount_due")
    if _taxed(event.obj) is not None and isinstance(due, int) and not isinstance(due, bool) and due > 0:
        return Decimal(due).scaleb(-2)
    return amount_due(invoice, notes)


def voided(before: InvoiceRecord, after: InvoiceRecord) -> bool:
    return after.status is InvoiceStatus.VOID and before.status is not InvoiceStatus.VOID


def _save_with(
    store: LedgerStore,
    invoice: InvoiceRecord,
    change: Callable[[InvoiceRecord], InvoiceRecord],
    now: datetime | None = None,
    seq_read: int | None = None,
    revision_paid: tuple[str, tuple[str, ...]] | None = None,
) -> InvoiceRecord:
    """Write ``change(invoice)``, conditioned on the revision (and status) read; on a conflict - another writer got
    there first - re-read and apply ``change`` again to what is stored (it decides whether it still applies).
    Returns the invoice as stored. With ``now`` (a dispute's events, a pending refund dropped), a paid invoice that
    keeps more than before (``kept_less_pending``: its funds reinstated, the refund never made) credits what its
    credit notes could not, in the same transaction (D131 amended, D310); and an invoice moving to PAID from a
    status that collected nothing (an ``invoice.paid`` of an open, failed or written-off invoice) credits what notes
    recorded as not collected and the payment now holds (``credit_collected``), in the same transaction, or else
    still moves the refunds' fence, so a close that read it unpaid composes again (D339); either write needs
    the invoice sequence read, so a close that wrote a note since makes it read again (D347). With
    ``seq_read`` (a refund: the account's invoice sequence read with ``invoice``), the write also needs no close
    since, and marks the refund for the closes that read before it (``refund_rev``); a re-read takes the sequence
    again (D283). With ``revision_paid`` (a revision's id and the notes it carried over by hand, ``_carried_over``),
    an invoice moving to PAID on that revision also credits what the other notes made on its original took off and
    the revision collected again (``_credit_revision_paid``), in the same transaction (D344 amended). Any other write
    that changes what the invoice keeps (``kept_less_pending``: a dispute's funds, a refund made outside us) takes the
    sequence just read and moves ``refund_rev`` alike (D308, D309)."""
    for _ in range(LEDGER_ATTEMPTS):
        updated = change(invoice)
        if updated == invoice:
            return invoice
        try:
            if voided(invoice, updated):  # the credit a void invoice consumed goes back, once: with the move to void,
                ledger = store.ledger(invoice.account_id)  # less what its credit notes gave already (D132)
                restored = void_credit(ledger, updated)
                if restored != 0:
                    return store.update_invoice_and_credit(
                        updated, invoice.status, CreditMove(ledger.billing.credit, restored)
                    )
            if now is not None and paid_since(invoice, updated):  # collected after notes said not: once (D339)
                ledger = store.ledger(invoice.account_id)
                notes = credit_collected(ledger, updated, now)
                if revision_paid is not None and updated.gateway_id == revision_paid[0]:
                    merged = {note.credit_id: note for note in notes}
                    read = replace(ledger, credit_notes={**ledger.credit_notes, **merged})
                    for note in _credit_revision_paid(read, updated, now, revision_paid[1]):  # one version on
                        merged[note.credit_id] = replace(note, version=ledger.credit_notes[note.credit_id].version + 1)
                    notes = tuple(merged.values())
                if not notes:  # still moves the refunds' fence: a close that read it unpaid composes again
                    return store.update_invoice(updated, invoice.status, ledger.billing.seq)
                # and no close since the read: one may have written another note this payment credits
                move = notes_credit(ledger, notes, seq_read=ledger.billing.seq)  # D347
                return store.update_invoice_and_credit(updated, invoice.status, move)
            if now is not None and updated.kept_less_pending > invoice.kept_less_pending:  # once: notes moved on
                ledger = store.ledger(invoice.account_id)
                notes = credit_reinstated(ledger, updated, now)
                if notes:  # bounded by the period's invoices as read: no refund since (D308)
                    # and no close since the read: one may have written a note this credits (D339 amended)
                    move = notes_credit(ledger, notes, seq_read=ledger.billing.seq)
                    return store.update_invoice_and_credit(updated, invoice.status, move)
            if updated.kept_less_pending != invoice.kept_less_pending and seq_read is None:
                # every write that changes what it keeps (a dispute's funds, a refund made outside: its
                # ``charge.refunded``) moves the refunds' fence - notes' bounds read it - so a close that read
                # before composes again (D308, D309)
                return store.update_invoice(updated, invoice.status, store.ledger(invoice.account_id).billing.seq)
            if seq_read is not None:
                return store.update_invoice(updated, invoice.status, seq_read)
            return store.update_invoice(updated, invoice.status)
        except LedgerConflictError:
            ledger = store.ledger(invoice.account_id)
            stored = ledger.invoices.get(invoice.invoice_id)
            if stored is None:
                raise
            invoice = stored
            seq_read = None if seq_read is None else ledger.billing.seq
    raise LedgerConflictError(f"{invoice.invoice_id}: kept conflicting")


# --- an operator's void of a month-end draft (D338) -------------------------------------------------------------


def void_draft(
    store: LedgerStore, gateway: PaymentGateway, account_id: str, period: Period, now: datetime, reason: str
) -> DraftVoided:
    """Void the stored month-end invoice of ``period`` while it is still our draft - one whose issue the processor
    refuses for good, which holds every later close of the account behind it (D336) - so later closes proceed (a void
    one is through). Anything but a draft is refused, naming its status. A card draft the processor holds an invoice
    for: an open one is voided there first, a processor draft deleted there first (D338 amended); a paid or
    written-off one is refused (the close records it).
    Ours moves to void through the ledger's conditional write (revision and status read; ``_save_with``: the account
    credit it applied goes back, D132), recording the operator's ``reason`` on it; a run that meanwhile issued it
    wins, and this says so."""
    if not reason.strip():
        raise ValueError("a reason must say why the draft is voided")
    ledger = store.ledger(account_id)
    invoice = ledger.invoices.get(invoice_id(account_id, period))
    if invoice is None:
        raise InvoiceNotFoundError(f"{account_id} has no month-end invoice for {period}")
    if invoice.status is not InvoiceStatus.DRAFT:
        raise ValueError(f"invoice {invoice.number} is {invoice.status.value}: only a draft is voided here")
    processor: str | None = None
    named: str | None = None  # the processor's invoice, recorded on ours
    if invoice.method is BillingMethod.CARD:
        found = gateway.find_invoice(invoice.invoice_id)
        if found is not None:
            named = found.gateway_id
            if found.status == "open":
                gateway.void(found.gateway_id)
                processor = f"Stripe invoice {found.gateway_id} voided"
            elif found.status == "void":
                processor = f"Stripe invoice {found.gateway_id} already void"
            elif found.status == "draft":  # never finalized: nothing asked of the customer; deleted, not voided
                held = gateway.delete_draft(found.gateway_id)
                named = None  # no id of an invoice Stripe no longer holds
                processor = f"Stripe draft invoice {found.gateway_id} deleted" + (
                    "" if held else " (Stripe no longer held it: an earlier try's answer lost)"
                )
            else:  # paid or uncollectible: Stripe's state refuses it, not the operator's input (review rh3)
                raise GatewayRejectedError(
                    f"Stripe's invoice {found.gateway_id} for {invoice.number} is {found.status}; "
                    f"`kilo-billing invoice run` records it",
                    found.status,
                )

    def void(current: InvoiceRecord) -> InvoiceRecord:
        moved = current.moved(InvoiceStatus.VOID, now)
        return replace(moved, gateway_id=current.gateway_id or named, void_reason=reason.strip())

    stored = _save_with(store, invoice, _while_draft(void))
    if stored.status is not InvoiceStatus.VOID:
        raise ValueError(f"invoice {invoice.number} became {stored.status.value} meanwhile: not voided")
    ahead = [line.kind == CARRIED or (line.kind in FEE_KINDS and line.period != stored.period) for line in stored.lines]
    kept = [line.amount for line, later in zip(stored.lines, ahead, strict=True) if not later and line.kind != CREDIT]
    again = [line.amount for line, later in zip(stored.lines, ahead, strict=True) if later]
    return DraftVoided(stored, processor, total(kept), total(again))


# --- refunds ---------------------------------------------------------------------------------------------------


def refund_invoice(
    store: LedgerStore,
    gateway: PaymentGateway,
    account_id: str,
    invoice_ref: str,
    amount: Decimal | None,
    *,
    to_failed_card: bool = False,
) -> InvoiceRecord:
    """Refund all (``amount`` None) or part of a paid invoice. Card: the request is recorded on the invoice first
    (``<invoice id>/refund/<n>``, the processor call's idempotency anchor), then the processor refunds it, then the
    refunded amount is recorded. A run that stopped in between left the request pending: the next run for the
    invoice finishes that request (the same id: never a second refund) - and if it asked for a different amount,
    says so instead of refunding again (``EarlierRefundFinishedError``: not bad input, money may have moved).
    Crypto: the amount is recorded as a refund owed, which an operator settles (``settle_crypto_refund``). Refunds
    made and disputes lost bound what is left to refund. An ``amount`` that is not whole cents is refused before
    anything is read or written (the ledger stores money in whole cents; a refund moves no account credit, so
    ``CreditMove``'s own check never sees it). A card payment whose bank returned a refund of
    it gets no new money unless ``to_failed_card`` (the operator's explicit word, for this run only: not stored on
    the request - a rerun finishing it without the flag refuses that part again, D340 amended)."""
    if amount is not None and not is_whole_cents(amount):
        raise ValueError(f"refund must be whole cents, got {amount}")
    ledger = store.ledger(account_id)
    invoice = ledger.invoices.get(invoice_ref) or next(
        (inv for inv in ledger.invoices.values() if inv.number == invoice_ref), None
    )
    if invoice is None:
        raise InvoiceNotFoundError(f"{account_id} has no invoice {invoice_ref!r}")
    if invoice.status is not InvoiceStatus.PAID:
        raise ValueError(f"invoice {invoice.number} is {invoice.status.value}: only paid invoices are refunded")
    pending = invoice.refund_pending
    if pending is not None:
        return _finish_pending(store, gateway, invoice, pending, amount, to_failed_card)
    # credit notes gave it back already: taken off the amount due (never paid) or given as account credit (D131);
    # a note against the period may have credited what an early invoice of it billed (D166)
    most = refundable(ledger, invoice)
    wanted = most if amount is None else amount
    if wanted <= 0 or wanted > most:
        raise ValueError(f"refund must be more than 0.00 and at most {money_str(most)}, got {money_str(wanted)}")

    applied = 0

    def bounded(current: InvoiceRecord) -> None:
        """Bounded again on the invoice as stored, by the same rule: a change re-applied after a conflict (another
        refund landed, or a close wrote notes since the read: the fence's sequence moved) - never past what the
        notes' account credit already gave back (D279), with the ledger read again, after the conflict's (D283)."""
        nonlocal applied
        applied += 1
        read = ledger if applied == 1 else store.ledger(account_id)
        left = refundable(replace(read, invoices={**read.invoices, current.invoice_id: current}), current)
        if left < wanted:
            raise ValueError(f"refund must be at most {money_str(left)}, got {money_str(wanted)}")

    def owe(current: InvoiceRecord) -> InvoiceRecord:
        bounded(current)
        return replace(current, refund_owed=current.refund_owed + wanted)

    if invoice.method is BillingMethod.CRYPTO:
        return _save_with(store, invoice, owe, seq_read=ledger.billing.seq)
    if invoice.gateway_id is None:
        raise ValueError(f"invoice {invoice.number} has no processor invoice to refund")

    def request(current: InvoiceRecord) -> InvoiceRecord:
        if current.refund_pending is not None:
            raise ValueError(f"invoice {current.number}: another refund is being made; run again when it is done")
        bounded(current)
        number = current.refunds_requested + 1
        failed = total([amount for _, amount in current.failed_refunds])  # ``refunded`` is net of them
        # a taxed invoice giving back all it keeps asks for all that is left of its payments: exact (D384)
        whole = current.taxed is not None and wanted == current.kept_less_pending
        asked = RefundRequest(f"{current.invoice_id}/refund/{number}", wanted, current.refunded, failed, whole)
        return replace(current, refunds_requested=number, refund_pending=asked)

    invoice = _save_with(store, invoice, request, seq_read=ledger.billing.seq)
    pending = invoice.refund_pending
    if pending is None:
        raise AssertionError("the refund request was just recorded")
    return _finish_refund(store, gateway, invoice, pending, to_failed_card)


def _finish_pending(
    store: LedgerStore,
    gateway: PaymentGateway,
    invoice: InvoiceRecord,
    pending: RefundRequest,
    amount: Decimal | None,
    to_failed_card: bool,
) -> InvoiceRecord:
    """A run finding an earlier request pending finishes it (the same id: never a second refund); asked another
    amount, it says so instead of refunding again (``_finished_instead``)."""
    # the flag is the operator's word for the refund asked now: it finishes an earlier request only when this run
    # asks the same (its amount, or all); asked for another amount, the earlier one is finished without it - its
    # failed card's part refused, never sent there on another refund's word (D357)
    same = amount is None or amount == pending.amount
    try:
        done = _finish_refund(store, gateway, invoice, pending, to_failed_card and same)
    except GatewayRejectedError as exc:
        if not to_failed_card or same:
            raise
        said = _flag_not_for_pending(
            store.ledger(invoice.account_id).invoices[invoice.invoice_id], pending, amount, exc
        )
        if isinstance(exc, GatewayPartlyRefundedError):
            raise GatewayPartlyRefundedError(said, exc.refunded) from exc
        raise GatewayRejectedError(said, exc.status, exc.revision) from exc
    if (amount is not None and amount != pending.amount) or (amount is None and done.kept > 0):
        said = _finished_instead(done, pending, amount, flag_left=to_failed_card and not same)
        raise EarlierRefundFinishedError(said)
    return done


def _finished_instead(
    done: InvoiceRecord, pending: RefundRequest, amount: Decimal | None, *, flag_left: bool = False
) -> str:
    """What a run that finished an earlier pending request (instead of the refund it asked) says: what the invoice
    has refunded and keeps now, and what was not refunded. Running again is invited only for money that is not a
    failed refund's: a new request refuses to send that to the card whose bank returned it unless told to (D340
    amended, review 2 and failed card). ``flag_left``: --to-failed-card was given for the amount asked now and not
    used on the earlier request (D357)."""
    asked = "the rest" if amount is None else f"the {money_str(amount)}"
    failed = total([refunded for _, refunded in done.failed_refunds])
    flag = " (--to-failed-card was not used on it: it was given for the amount asked now)" if flag_left else ""
    said = (
        f"an earlier refund of {money_str(pending.amount)} on invoice {done.number} ({pending.refund_id}) had not "
        f"finished; it is now done{flag}: {money_str(done.refunded)} refunded and {money_str(done.kept)} kept; "
        f"{asked} asked now was not refunded"
    )
    if flag_left:
        return f"{said}: run again to refund it (with --to-failed-card to send it to that card)"
    if failed <= 0:
        return f"{said}: run again to refund it"
    back = min(failed, done.kept)
    return (
        f"{said}. Of the {money_str(done.kept)} kept, {money_str(back)} came back from refunds that failed (the "
        "RefundFailed alarm names Stripe's "
        "reason): if the card's bank returned it, a new refund is not sent to that card (refused, unless "
        "--to-failed-card) - contact the customer and return it another way; if it failed for another reason (our "
        "Stripe balance, a dispute), run again to refund it"
    )


def _flag_not_for_pending(
    current: InvoiceRecord, pending: RefundRequest, amount: Decimal | None, refused: GatewayRejectedError
) -> str:
    """What a run given --to-failed-card for another amount says when the earlier pending request it finished
    without the flag was refused (in part): where each went - the earlier request's part made (if any) and its
    refusal, and that the amount asked now was not refunded (D357)."""
    asked = "the rest" if amount is None else f"the {money_str(amount)}"
    return (
        f"an earlier refund of {money_str(pending.amount)} on invoice {current.number} ({pending.refund_id}) had not "
        f"finished; --to-failed-card was given for {asked} asked now, not for it, so it was finished without it: "
        f"{refused}. Now {money_str(current.refunded)} refunded and {money_str(current.kept)} kept, nothing pending; "
        f"{asked} asked now was not refunded: run again to refund it (with --to-failed-card to send it to that card)"
    )


def _finish_refund(
    store: LedgerStore,
    gateway: PaymentGateway,
    invoice: InvoiceRecord,
    pending: RefundRequest,
    to_failed_card: bool = False,
) -> InvoiceRecord:
    """Ask the processor for the recorded refund (idempotent on its id), then record it as refunded. A refusal for
    good drops the request (nothing was refunded: notes that recorded it as returned credit it, D310); a refusal after
    part was refunded (several payments, one refused) records that part as refunded and says the rest was refused
    (D329); an outage leaves it pending for the next run. Not bounded again:
    while it is pending every bound counts it as given back already (``kept_less_pending``, D302), so nothing
    else (a note's credit, another refund) was given the same money meanwhile."""
    if invoice.gateway_id is None:
        raise ValueError(f"invoice {invoice.number} has no processor invoice to refund")

    def settled_with(current: InvoiceRecord, made: Decimal) -> InvoiceRecord:
        """The request finished with ``made`` of its amount given back (all of it, or the part made before a
        refusal); its webhook may be first: counted once (``given_back``, D331)."""
        if current.refund_pending != pending:
            return current
        refunded = current.given_back(replace(pending, amount=made))
        made_now = replace(current, refunds_made=current.refunds_made + made, refund_pending=None)
        return _within_total(made_now, refunded)

    def dropped(current: InvoiceRecord) -> InvoiceRecord:
        # refunds made outside us meanwhile are on the invoice already, counted as given back (D331)
        return replace(current, refund_pending=None) if current.refund_pending == pending else current

    taxed = invoice.taxed
    # charge money: with Stripe Tax the customer gets the tax back too - all that is left, or ours tax included
    charged = pending.amount if taxed is None else None if pending.whole else with_tax(pending.amount, taxed)
    try:
        gateway.refund(invoice.gateway_id, charged, pending.refund_id, to_failed_card)
    except GatewayPartlyRefundedError as exc:
        # the part made is money the processor gave back: recorded as refunded; the rest it keeps again, which credits
        # what notes recorded as returned (D310), bounded by what it keeps (D329)
        made = exc.refunded if taxed is None else before_tax(exc.refunded, taxed)
        _save_with(store, invoice, lambda current: settled_with(current, made), utc_now())
        raise
    except GatewayRejectedError:
        # it keeps the money again: what notes recorded as returned meanwhile is credited, as a won dispute's (D310)
        _save_with(store, invoice, dropped, utc_now())
        raise
    return _save_with(store, invoice, lambda current: settled_with(current, pending.amount))


def settle_crypto_refund(store: LedgerStore, account_id: str, invoice_ref: str, transaction_id: str) -> InvoiceRecord:
    """An operator sent the crypto refund owed (``transaction_id``): what was owed when read becomes refunded, once
    per transaction. A rerun with the same transaction changes nothing, and a refund recorded after the read (the
    write conflicts and is tried again on the stored invoice) stays owed: the transaction did not send it."""
    if not transaction_id.strip():
        raise ValueError("a transaction id is required")
    ledger = store.ledger(account_id)
    invoice = ledger.invoices.get(invoice_ref)
    if invoice is None:
        raise InvoiceNotFoundError(f"{account_id} has no invoice {invoice_ref!r}")
    marker = f"crypto_refund:{transaction_id}"
    if marker in invoice.announced:
        return invoice  # recorded already (a rerun whose answer was lost)
    owed = invoice.refund_owed
    if owed <= 0:
        raise ValueError(f"invoice {invoice.number} owes no refund")

    def sent(current: InvoiceRecord) -> InvoiceRecord:
        if marker in current.announced:
            return current
        if current.refund_owed < owed:  # another transaction settled it meanwhile
            raise ValueError(
                f"invoice {current.number} now owes {money_str(current.refund_owed)}, not the "
                f"{money_str(owed)} read: another settlement landed first; check the transactions and run again"
            )
        return replace(
            current,
            refunded=current.refunded + owed,
            refund_owed=current.refund_owed - owed,
            announced=current.announced | {marker},
        )

    return _save_with(store, invoice, sent)


def utc_now() -> datetime:
    return datetime.now(UTC)
