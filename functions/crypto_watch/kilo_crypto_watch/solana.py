"""The Solana watcher and fast-path inspector: pure logic over the ``SolanaRpc`` port (ports.py).

Each run (scheduled every minute, idempotent):

1. ``getLatestBlockhash(confirmed)`` -> ``head`` (its context slot) and the head's blockhash. The run covers the
   slots ``(floor, head]`` where ``floor`` is the cursor's slot. A load-balanced provider may answer a later query
   from a server behind the one that gave the head, so every ``getSignaturesForAddress`` page is asked with
   ``minContextSlot`` = ``head``: a server that has not reached it refuses (-32016); the page is asked again, up to
   ``BEHIND_ASKS`` (3) times ``behind_pause`` (0.4 s, a slot) apart, and refused every time the run reads nothing,
   leaves its cursor and reports ``behind`` (``caught_up=False``; the handler counts ``SolanaListingBehind``,
   alarmed after 10 minutes of it in a row); the next run lists again (D91, amended). The cursor keeps the head's
   blockhash beside its slot (the conditional write compares both; Solana needs no reorg check of the cursor:
   finality is read per signature).
2. For each recent Solana Pay reference (``ReferenceSource.recent_references``: its quote not expired, or expired
   less than ``reference_margin`` ago; at most ``max_references`` a run, in a rotation that moves on each minute; read
   after step 1: a quote made later can only be paid in a later slot), ``getSignaturesForAddress(reference)``; then a
   sweep of the merchant's own signatures (``until`` the
   cursor's ``last_signature``) and of its USDC associated token account (an SPL transfer names the token account, not
   the wallet), to catch wallets that drop the reference. Only signatures in ``(floor, head]`` are new.
3. ``getTransaction`` for each new signature, oldest first, at most ``max_transactions`` per run (the cursor then
   stops at the last whole slot done and the next run resumes), and only while the run has time left: with
   ``time_left`` (the handler's Lambda context) below ``TIME_MARGIN`` (30 s) at the start of a slot, the batch ends
   on the last whole slot read, what was read is recorded and the cursor moves there (``RunReport.out_of_time``;
   D91, amended (s3)). Each transaction is validated by ``credits``: the
   merchant's lamport delta (SOL) and the merchant's token-balance delta for the configured mint (USDC; any other
   mint is not a payment; only in a transaction naming the wallet or its USDC associated token account - what the
   sweeps list, D324; USDC into another token account of the wallet, read all the same through a reference, is a
   ``stray`` credit: reported, never matched to a bill, kept for an operator, D341), the transfer
   instruction's index, sender and reference keys, the memo; several transfers of one asset whose amounts add up to
   the delta are a credit each, with their own index, sender, amount and references (D91, amended (sp)). A failed
   transaction (``meta.err``) gives its intended transfers with ``succeeded=False`` (recorded FAILED, never credited).
4. Finality of SEEN payments (``PaymentSink.pending``): ``getSignatureStatuses`` (256 per call) -> ``finalized``
   commitment -> ``PaymentSink.finalized``; an error -> ``orphaned``; unknown although the ``finalized`` slot has
   passed the payment's slot -> ``orphaned`` only on proof: ``getTransaction`` does not serve it and a backend shows
   the finalized block at its slot without it (``getBlock``, ``finalized``, its signatures), or shows its slot
   skipped: the first finalized block after it (``getBlocks``) has a ``parentSlot`` before it. Empty answers alone
   come from a backend behind as well: unproven, the payment stays pending (``RunReport.unproven``), named
   ``stuck`` once the finalized slot is ``UNPROVEN_ALARM_SLOTS`` (750, ~5 minutes) past its slot, and reported
   ``PaymentSink.stalled`` once it is ``STALL_SLOTS`` (1,920, ~768 s as on EVM chains, D418) past it (it stops
   holding its bill: its write-off, D398, and the rest asked of a bill short beyond its band, D419); a listed
   signature not served is skipped as vanished on the same proof only (D91). A payment recorded FAILED stays pending
   until its failure is finalized (then final); a status without the error means it landed again and succeeded:
   ``getTransaction`` and its credits are reported again.
5. ``getBlocks`` (``finalized``) of the ``FINAL_WINDOW_SLOTS`` slots up to the cursor -> ``RunReport.final_through``:
   the slot of the finalized block ``LANDING_BLOCKS`` (151) blocks below the last one there. A payment dropped from a
   slot at or below it cannot land any more (its blockhash expired on the final chain, in blocks the watcher listed):
   the sweep tells its customer then (``Settlement.announce_due``, D449).

Calls per run: 1 + min(recent references, ``max_references``) + 2 sweeps (+1 per further page of 1,000; +1 per ask
again of a page refused by a server behind) + new transactions (at most ``max_transactions``) + one ``getBlock`` per
slot with a credit (+1 ``getBlockTime`` per such slot whose ``getTransaction`` answer had no block time, D397) +
ceil(pending / 256) (+1 ``getSlot(finalized)`` when a status is unknown; + ``getTransaction`` and
``getBlock(finalized)`` per payment unknown past its final slot, + ``getBlocks`` and ``getBlock(finalized)`` of the
next block where that block is not shown) + 1 ``getBlocks`` (step 5).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Literal, TypeVar

from solders.pubkey import Pubkey
from solders.token.associated import get_associated_token_address

from kilo_crypto_watch.model import ChainConfig, Cursor, ObservedTransfer, PendingPayment, RunReport
from kilo_crypto_watch.ports import (
    SIGNATURES_PAGE,
    ChainTransaction,
    CursorStore,
    PaymentSink,
    ReferenceSource,
    SignatureInfo,
    SolanaNodeBehindError,
    SolanaRpc,
    SolanaRpcError,
    TransactionNotFoundError,
    record_alone,
    settle_alone,
)

T = TypeVar("T")

SYSTEM_PROGRAM = "11111111111111111111111111111111"
TOKEN_PROGRAM = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"  # noqa: S105 - a program id, not a secret
MEMO_PROGRAMS = frozenset(
    {"MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr", "Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo"}
)
SYSTEM_TRANSFER = 2  # u32 little-endian instruction tag, then u64 lamports
TOKEN_TRANSFER = 3  # u8 tag, u64 amount; accounts: source, destination, authority
TOKEN_TRANSFER_CHECKED = 12  # u8 tag, u64 amount, u8 decimals; accounts: source, mint, destination, authority
STATUS_BATCH = 256  # getSignatureStatuses's maximum
# a payment whose slot is final, unknown to getSignatureStatuses and not proven gone by a finalized block, is named
# ``stuck`` (alarmed) once the finalized slot is this far past its slot: 750 slots, about 5 minutes at 400 ms a slot
UNPROVEN_ALARM_SLOTS = 750
# such a payment is reported ``PaymentSink.stalled`` (it stops holding its bill, D398 and D419) only once the finalized
# slot is this far past its slot: 768 s, the EVM watcher's wait (D418), at 400 ms a slot - ceil(768 / 0.4) = 1,920.
# A slot is a unit of time on Solana (the leader schedule's, ticks of proof of history; a skipped slot passes all the
# same), not a block count: slots run ~400 ms or slower, so 1,920 slots are at least ~768 s (D418, amended (cw2))
STALL_SLOTS = 1920
# a transaction lands only in a block at most this many blocks above the block of its recent blockhash: Agave takes a
# blockhash at most MAX_PROCESSING_AGE (150) blocks older than the landing block's parent. Blocks, not slots: a
# skipped slot registers no blockhash (so no count of slots bounds it) - D449
LANDING_BLOCKS = 151
# the slots up to the run's cursor whose finalized blocks are listed (one getBlocks) to find the final slot for drops
# (``SolanaWatcher._final_through``): room for 152 blocks with finality up to ~800 slots (~5 minutes) behind the
# cursor; farther behind (finality stalled), no final slot this run - a drop's notice waits
FINAL_WINDOW_SLOTS = 1000
# a listing page refused by a server behind the run's head (-32016) is asked this many times in all, ``behind_pause``
# apart (a slot is ~400 ms: a server a slot behind has reached the head by the next ask), before the run gives up
BEHIND_ASKS = 3
# at most this many asks again in one run (20 x 0.4 s = 8 s of pauses: the run stays well inside its Lambda timeout
# however many of its up to 102 pages are refused once); past it a refused page makes the run behind at once
BEHIND_ASKS_AGAIN_PER_RUN = 20
# seconds a run keeps for what follows its transaction loop: record_batch, the cursor's write and finality (one
# getSignatureStatuses per 256 pending, plus proofs); less left at a slot's start ends the batch (D91, amended (s3))
TIME_MARGIN = 30.0


@dataclass(frozen=True, slots=True)
class Merchant:
    """The merchant's receiving accounts on one Solana chain."""

    chain: str
    wallet: str
    usdc_mint: str

    @property
    def usdc_account(self) -> str:
        """The wallet's associated token account for USDC (where Solana Pay sends SPL transfers)."""
        return str(get_associated_token_address(Pubkey.from_string(self.wallet), Pubkey.from_string(self.usdc_mint)))

    @classmethod
    def of(cls, config: ChainConfig) -> Merchant:
        return cls(chain=config.key, wallet=config.merchant_address, usdc_mint=config.usdc)


# -- validation: one transaction -> the merchant's credits ---------------------------------------------------------


def credits(
    tx: ChainTransaction, merchant: Merchant, block_hash: str = "", watched: frozenset[str] = frozenset()
) -> list[ObservedTransfer]:
    """The credits to ``merchant`` in ``tx``, per asset (SOL, USDC): one per transfer instruction to the merchant
    when each is identifiable - several of them, and (succeeded) their amounts add up to the merchant's balance
    delta, or (failed) what they meant to send - each with its own index, sender, amount and references (one
    transaction paying two bills, each by its reference); else at most one, amount from the balance delta (what the
    merchant really received: a CPI, the merchant also paying), index, sender and references of the first transfer
    instruction (D91, amended (sp)); for a failed transaction, what its instructions meant to send.

    ``watched``: active references; any of them among the transaction's keys counts as the credit's reference even
    where a wallet put it on another instruction - unless it is another credit's own reference (on that credit's
    transfer instruction) and this credit has a watched one of its own, or another sender: then it is that credit's,
    not this one's (a transfer with no watched reference beside a referenced one from the same sender is the same
    payment's other part and carries it; one another signer sent does not, D91 amended (sp3)). In a split, a
    0-amount transfer's own references go with every credit (D91, amended (sp2)) of its sender when the credits have
    several senders; so does a watched key on no transfer - with the credits of the signer of an instruction naming
    it, else the fee payer's (D91, amended (sp4)), else - or when the signers naming it have none (a relayer signing
    the memo, sp6) - the first paying signer's (a relayer's transaction); a
    program's credit (no transfer instruction) is no sender of its own (D91, amended (sp5)).
    """
    found = [*_sol(tx, merchant), *_usdc(tx, merchant)]
    memo = _memo(tx)
    keys_watched = tuple(key for key in tx.account_keys if key in watched)
    # credits from two or more senders: a key on no paying transfer (a memo, another program's instruction, a
    # 0-amount transfer whose sender pays nothing) goes only with the credits its instruction's signer sent - the fee
    # payer's for a key no signer's instruction names (D91, amended (sp4)), the first signer with a credit when the fee
    # payer has none (a relayer, D91 amended (sp5)); from one sender, with every credit. Only a transfer instruction
    # names a sender: a program's credit (index -1, its sender guessed as the fee payer) is no party (sp5)
    paying = tuple(dict.fromkeys(f[2] for f in found if f[1] >= 0))
    parties = len(paying) > 1
    reported: list[ObservedTransfer] = []
    for position, (asset, index, sender, amount, references, stray) in enumerate(found):
        # the senders of the other credits each key is on (their own references)
        owners: dict[str, set[str]] = {}
        for n, other in enumerate(found):
            if n != position:
                for key in other[4]:
                    owners.setdefault(key, set()).add(other[2])
        # another credit's own reference is that credit's - unless this one has no WATCHED key of its own (a
        # 0-amount transfer's unwatched keys do not count) and that credit's sender is this one's: then it is the same
        # payment's other part (one bill paid in two transfers, the reference on the first only) and carries it; a
        # transfer another signer sent beside it is another party's (D91, amended (sp3))
        unreferenced = not any(key in watched for key in references)
        keys = tuple(
            key
            for key in keys_watched
            if key in references
            or (key not in owners and (not parties or sender in _signing(tx, key, paying)))
            or (unreferenced and owners.get(key) == {sender})
        )
        reported.append(
            ObservedTransfer(
                chain=merchant.chain,
                asset=asset,
                tx_id=tx.signature,
                index=index,
                block_number=tx.slot,
                block_hash=block_hash,
                sender=sender,
                recipient=merchant.wallet,
                atomic_amount=amount,
                succeeded=not tx.failed,
                references=tuple(dict.fromkeys((*references, *keys))),
                memo=memo,
                block_time=tx.block_time,
                stray=stray,
            )
        )
    return reported


# asset, instruction index, sender, atomic amount, references, stray (into a token account not the payment address)
_Found = tuple[Literal["SOL", "USDC"], int, str, int, tuple[str, ...], bool]


def _signing(tx: ChainTransaction, key: str, paying: Sequence[str]) -> set[str]:
    """Who put ``key`` in ``tx``: the signers among the accounts of each instruction naming it (a memo's signer, a
    0-amount transfer's sender); when no signer's instruction names it, or none that names it has a credit (a
    relayer signing the memo, D91 amended (sp6)), the first signer among ``paying`` (the credits' senders): the fee
    payer when it pays, else - a relayer paying only the fee - the first paying signer, so that one party's credits,
    never every party's, carry the key (D91, amended (sp5))."""
    signers = tx.account_keys[: tx.signer_count]
    named = {account for ix in tx.instructions if key in ix.accounts for account in ix.accounts if account in signers}
    if named.intersection(paying):
        return named
    return {next((signer for signer in signers if signer in paying), tx.account_keys[0])}


def _shared(zero: Sequence[tuple[str, tuple[str, ...]]], senders: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The 0-amount transfers' own references (``zero``: each one's sender and keys) each paying sender's credits
    carry in a split: all of them when one sender paid them all; else only those its own 0-amount transfers name
    (another party's reference is not its money's, D91 amended (sp4))."""
    one = len(set(senders)) == 1
    return {
        sender: tuple(key for source, keys in zero if one or source == sender for key in keys) for sender in senders
    }


def _extra(tx: ChainTransaction, accounts: Sequence[str]) -> tuple[str, ...]:
    """Solana Pay references: read-only non-signer keys appended after an instruction's own accounts."""
    signers = set(tx.account_keys[: tx.signer_count])
    return tuple(key for key in accounts if key not in signers)


def _sol(tx: ChainTransaction, merchant: Merchant) -> list[_Found]:
    if merchant.wallet not in tx.account_keys:
        return []
    position = tx.account_keys.index(merchant.wallet)
    delta = tx.post_balances[position] - tx.pre_balances[position]
    transfers = [
        (index, ix)
        for index, ix in enumerate(tx.instructions)
        if ix.program_id == SYSTEM_PROGRAM
        and len(ix.data) >= 12
        and struct.unpack_from("<I", ix.data)[0] == SYSTEM_TRANSFER
        and len(ix.accounts) >= 2
        and ix.accounts[1] == merchant.wallet
    ]
    amounts = [struct.unpack_from("<Q", ix.data, 4)[0] for _, ix in transfers]
    intended = sum(amounts)
    paid = [(index, ix, lamports) for (index, ix), lamports in zip(transfers, amounts, strict=True) if lamports > 0]
    if len(paid) > 1 and (tx.failed or intended == delta):  # each transfer identifiable: one credit each
        # a 0-lamport transfer's own references are no paying transfer's in particular: they go with every credit
        # of its sender (of every sender when one paid them all)
        zero = [
            (ix.accounts[0], _extra(tx, ix.accounts[2:]))
            for (_, ix), lamports in zip(transfers, amounts, strict=True)
            if lamports == 0
        ]
        shared = _shared(zero, [ix.accounts[0] for _, ix, _ in paid])
        return [
            (
                "SOL",
                index,
                ix.accounts[0],
                lamports,
                tuple(dict.fromkeys((*_extra(tx, ix.accounts[2:]), *shared[ix.accounts[0]]))),
                False,
            )
            for index, ix, lamports in paid
        ]
    amount = intended if tx.failed else delta
    if amount <= 0:
        return []
    if transfers:
        index, first = transfers[0]
        return [("SOL", index, first.accounts[0], amount, _extra(tx, first.accounts[2:]), False)]
    return [("SOL", -1, tx.account_keys[0], amount, (), False)]  # credited by a program (CPI): the fee payer sent it


def _usdc(tx: ChainTransaction, merchant: Merchant) -> list[_Found]:
    """The merchant's USDC credit: the net delta of every USDC token account its wallet owns (a move between its own
    accounts nets 0), counted only in a transaction that names its associated token account or its wallet - what the
    every-run sweeps list. A transfer into another account the wallet owns (anyone can create one) is no payment on
    any path: neither Solana Pay's (which pays the ATA) nor one the sweeps would see, so counting it would depend on
    whether its reference happened to be looked up (D324). Where such a transaction is read all the same (a
    reference's lookup, the fast path) and succeeded, its net delta is returned as a stray credit: reported, never
    matched to a bill, kept for an operator - the customer's money is in our account (D341). Several transfers whose
    amounts add up to the delta (or, failed, all of them) are one credit each, as in ``_sol`` (D91, amended (sp))."""
    stray = merchant.usdc_account not in tx.account_keys and merchant.wallet not in tx.account_keys
    if stray and tx.failed:
        return []  # nothing moved, and it was never a payment: nothing for an operator either
    ours = {
        balance.account_index
        for balance in (*tx.pre_token_balances, *tx.post_token_balances)
        if balance.owner == merchant.wallet and balance.mint == merchant.usdc_mint
    }
    destinations = {tx.account_keys[index] for index in ours} | {merchant.usdc_account}
    delta = sum(
        sign * balance.amount
        for sign, balances in ((1, tx.post_token_balances), (-1, tx.pre_token_balances))
        for balance in balances
        if balance.account_index in ours
    )
    transfers: list[tuple[int, str, int, tuple[str, ...]]] = []
    for index, ix in enumerate(tx.instructions):
        if ix.program_id != TOKEN_PROGRAM or len(ix.data) < 9:
            continue
        if ix.data[0] == TOKEN_TRANSFER_CHECKED and len(ix.accounts) >= 4:
            if ix.accounts[2] in destinations and ix.accounts[1] == merchant.usdc_mint:
                transfers.append((index, ix.accounts[3], struct.unpack_from("<Q", ix.data, 1)[0], ix.accounts[4:]))
        elif ix.data[0] == TOKEN_TRANSFER and len(ix.accounts) >= 3 and ix.accounts[1] in destinations:
            transfers.append((index, ix.accounts[2], struct.unpack_from("<Q", ix.data, 1)[0], ix.accounts[3:]))
    if tx.failed:
        # unexecuted: an unchecked Transfer's destination mint is only known from the balances
        transfers = [t for t in transfers if tx.instructions[t[0]].data[0] == TOKEN_TRANSFER_CHECKED or ours]
    intended = sum(t[2] for t in transfers)
    paid = [t for t in transfers if t[2] > 0]
    if len(paid) > 1 and (tx.failed or intended == delta):  # each transfer identifiable: one credit each
        zero = [(sender, _extra(tx, extra)) for _, sender, units, extra in transfers if units == 0]  # as in _sol
        shared = _shared(zero, [sender for _, sender, _, _ in paid])
        return [
            ("USDC", index, sender, units, tuple(dict.fromkeys((*_extra(tx, extra), *shared[sender]))), stray)
            for index, sender, units, extra in paid
        ]
    amount = intended if tx.failed else delta
    if amount <= 0:
        return []
    if transfers:
        index, sender, _, extra = transfers[0]
        return [("USDC", index, sender, amount, _extra(tx, extra), stray)]
    return [("USDC", -1, tx.account_keys[0], amount, (), stray)]


def _memo(tx: ChainTransaction) -> str | None:
    for ix in tx.instructions:
        if ix.program_id in MEMO_PROGRAMS:
            return ix.data.decode("utf-8", "replace")
    return None


# -- the scheduled watcher -------------------------------------------------------------------------------------------


@dataclass
class _Calls:
    count: int = 0
    asked_again: int = 0  # listing pages asked again after a refusal by a server behind (BEHIND_ASKS_AGAIN_PER_RUN)
    times: dict[int, datetime | None] = field(default_factory=dict)  # getBlockTime's answers by slot (D397)


@dataclass
class SolanaWatcher:
    config: ChainConfig
    rpc: SolanaRpc
    cursors: CursorStore
    sink: PaymentSink
    references: ReferenceSource
    max_transactions: int = 500  # bounded work per run (and ``time_left`` below: a slow RPC's run ends in time)
    max_references: int = 100  # references queried on their own per run, in rotation (D290)
    behind_pause: float = 0.4  # seconds between the asks of a page refused by a server behind the head (one slot)
    # seconds the run has left (the handler passes its Lambda context's remaining time); None: no time budget
    time_left: Callable[[], float] | None = None
    time_margin: float = TIME_MARGIN
    _calls: _Calls = field(default_factory=_Calls)

    async def run(self, now: datetime | None = None) -> RunReport:
        self._calls = _Calls()
        merchant = Merchant.of(self.config)
        cursor = self.cursors.get(self.config.key)
        floor = cursor.block_number if cursor is not None else (self.config.start_block or 0)
        latest = await self._call(self.rpc.head())
        head = latest.slot
        watched = frozenset(self.references.active_references(self.config.key))
        stamp = now or datetime.now(UTC)
        queried = rotation(sorted(self.references.recent_references(self.config.key)), self.max_references, stamp)

        listed = await self._listing(merchant, queried, floor, head, cursor.last_signature if cursor else None)
        behind = listed is None  # a listing server behind the head: nothing read, the cursor stays (D91, amended)
        new, wallet_signatures = listed or ({}, set())

        batch, to_slot = _bounded(sorted(new.values(), key=lambda info: info.slot), self.max_transactions, head)
        if behind:
            to_slot = floor
        seen = failed = 0
        hashes: dict[int, str] = {}
        last_signature = cursor.last_signature if cursor else None
        handled: list[tuple[int, str]] = []  # the wallet signatures handled, (slot, signature), oldest slot first
        reported: list[ObservedTransfer] = []  # recorded together after the batch is read (D216)
        stuck: list[str] = []
        out_of_time = False
        for position, info in enumerate(batch):
            starts_slot = position == 0 or batch[position - 1].slot != info.slot
            if starts_slot and self.time_left is not None and self.time_left() < self.time_margin:
                # too little time for another slot and what follows the loop: end on the last whole slot read (as
                # below); killed mid-loop, the run would record nothing and leave the cursor (D91, amended (s3))
                out_of_time = True
                to_slot = info.slot - 1
                earlier = [signature for slot, signature in handled if slot < info.slot]
                last_signature = earlier[-1] if earlier else (cursor.last_signature if cursor else None)
                break
            tx = await self._call(self.rpc.transaction(info.signature))
            if tx is None and not await self._vanished(info, stuck):
                # listed but not served (a node behind another): stop before its slot; the next run reads it again
                to_slot = info.slot - 1
                earlier = [signature for slot, signature in handled if slot < info.slot]
                last_signature = earlier[-1] if earlier else (cursor.last_signature if cursor else None)
                break
            if info.signature in wallet_signatures:
                last_signature = info.signature
                handled.append((info.slot, info.signature))
            if tx is None:
                continue  # vanished since it was listed (a fork that did not survive): nothing to record
            found = await self._dated(tx, credits(tx, merchant, watched=watched))
            if found and tx.slot not in hashes:
                hashes[tx.slot] = await self._call(self.rpc.block_hash(tx.slot))
            for transfer in found:
                reported.append(_with_hash(transfer, hashes[tx.slot]))
                seen += 1
                failed += not transfer.succeeded
        self.sink.record_batch(reported)  # one "payment seen" per bill for the batch, before the cursor moves

        if not behind:
            self.cursors.put(Cursor(self.config.key, to_slot, latest.blockhash, last_signature, stamp), cursor)
        finalized, orphaned, unproven, final_through = await self._finality(merchant, watched, stuck, to_slot)
        return RunReport(
            chain=self.config.key,
            from_block=floor + 1,
            to_block=to_slot,
            transfers_seen=seen,
            finalized=finalized,
            orphaned=orphaned,
            failed=failed,
            rpc_calls=self._calls.count,
            caught_up=to_slot == head,
            lag=max(head - to_slot, 0),
            stuck=tuple(stuck),
            unproven=unproven,
            behind=behind,
            out_of_time=out_of_time,
            final_through=final_through,
        )

    async def _final_through(self, listed: int) -> int | None:
        """The slot through which a payment dropped with its block is final (``RunReport.final_through``, D449): the
        finalized block ``LANDING_BLOCKS`` blocks below the last finalized block L at or below ``listed`` (the
        cursor's slot: every slot up to it listed), from one ``getBlocks`` of the ``FINAL_WINDOW_SLOTS`` slots up to
        it. A transaction dropped from slot S at or below it names the blockhash of a block before S (an ancestor of
        its dead block): on the final chain at least 152 blocks below L, so it can land only in a block below L - all
        final and listed, where the watcher did not see it (seen, it counts again) - or, its blockhash on the dead
        fork, nowhere: it cannot land any more. None - the notice waits - when fewer than 152 finalized blocks are
        shown (finality far behind the cursor) or the read fails (a JSON-RPC error answer, or the node down)."""
        try:
            blocks = await self._call(self.rpc.finalized_blocks(max(listed - FINAL_WINDOW_SLOTS, 0), listed))
        except SolanaRpcError:
            return None  # the run's work is done: a node failing here holds the drops' notices, nothing else
        return None if blocks is None else drop_final_slot(blocks)

    async def _call(self, call: Awaitable[T]) -> T:
        self._calls.count += 1
        return await call

    async def _dated(self, tx: ChainTransaction, found: list[ObservedTransfer]) -> list[ObservedTransfer]:
        """``tx``'s credits with its block's time: ``getTransaction``'s, else ``getBlockTime``'s for its slot (asked
        only then, once a slot a run); None when neither has one - settlement treats the time as unknown (D397)."""
        if not found or tx.block_time is not None:
            return found
        if tx.slot not in self._calls.times:
            self._calls.times[tx.slot] = await self._call(self.rpc.block_time(tx.slot))
        return [replace(transfer, block_time=self._calls.times[tx.slot]) for transfer in found]

    async def _vanished(self, info: SignatureInfo, stuck: list[str]) -> bool:
        """A listed signature ``getTransaction`` does not serve is gone only when the finalized slot has passed its
        slot, ``getSignatureStatuses`` does not know it either and the finalized block at its slot is shown without
        it (``_proven_gone``: its fork did not survive); else it is not served yet (a backend behind the one that
        listed it), which is no reason to move past it. Unproven for ``UNPROVEN_ALARM_SLOTS`` after its slot is
        final, it is named ``stuck`` (the cursor waits before it meanwhile)."""
        finalized_slot = await self._call(self.rpc.slot("finalized"))
        if finalized_slot < info.slot:
            return False
        (status,) = await self._call(self.rpc.statuses([info.signature]))
        if status is not None:
            return False
        if await self._proven_gone(info.signature, info.slot):
            return True
        if finalized_slot - info.slot >= UNPROVEN_ALARM_SLOTS:
            stuck.append(_unproven(info.signature, info.slot, finalized_slot))
        return False

    async def _proven_gone(self, signature: str, slot: int) -> bool:
        """Positive evidence that ``signature`` is not in ``slot`` on the finalized chain: a backend shows the
        finalized block at ``slot`` and the signature is not among its transactions; or, where it shows no block
        there (Agave answers -32007 "skipped" for the slot of a fork that died), the slot is proven skipped: the
        first finalized block after it (``getBlocks``) names a parent before it - the finalized chain
        goes from that parent to that block and holds no block at ``slot``. The parent is the block's own data, so a
        backend whose ledger has a hole (restarted from a snapshot, cleaned up) cannot fake it; "not shown" alone
        proves nothing, nor does an empty status or transaction, which a backend behind answers as well (D91)."""
        shown = await self._call(self.rpc.finalized_signatures(slot))
        if shown is not None:
            return signature not in shown
        later = await self._call(self.rpc.next_finalized_block(slot))
        if later is None or later <= slot:
            return False
        parent = await self._call(self.rpc.finalized_parent(later))
        return parent is not None and parent < slot

    async def _since(self, address: str, floor: int, head: int, until: str | None = None) -> list[SignatureInfo]:
        """The address's signatures in ``(floor, head]``, paging back (1,000 a page) until ``until`` or the floor;
        every page asked at ``minContextSlot`` = ``head``: a server behind the head raises ``SolanaNodeBehindError``
        rather than answer a list short of the slots it has not reached (or an empty page for a ``before`` it does not
        know yet)."""
        found: list[SignatureInfo] = []
        before: str | None = None
        while True:
            page = await self._page(address, before, until, head)
            found.extend(info for info in page if floor < info.slot <= head)
            if len(page) < SIGNATURES_PAGE or page[-1].slot <= floor:
                return found
            before = page[-1].signature

    async def _page(self, address: str, before: str | None, until: str | None, head: int) -> Sequence[SignatureInfo]:
        """One page at ``minContextSlot`` = ``head``, asked up to ``BEHIND_ASKS`` times while a server behind the
        head refuses it (a load balancer sends each ask to any of its backends; one a slot behind reaches the head
        within the pause), at most ``BEHIND_ASKS_AGAIN_PER_RUN`` asks again a run; refused every time (or past that
        budget), ``SolanaNodeBehindError`` goes up (D91, amended (s1b))."""
        for ask in range(1, BEHIND_ASKS + 1):
            try:
                return await self._call(
                    self.rpc.signatures(address, before=before, until=until, limit=SIGNATURES_PAGE, min_slot=head)
                )
            except SolanaNodeBehindError:
                if ask == BEHIND_ASKS or self._calls.asked_again >= BEHIND_ASKS_AGAIN_PER_RUN:
                    raise
                self._calls.asked_again += 1
                await asyncio.sleep(self.behind_pause)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _finality(
        self, merchant: Merchant, watched: frozenset[str], stuck: list[str], listed: int
    ) -> tuple[int, int, int, int | None]:
        """Finalized, orphaned, and unproven (final slot, unknown status, not proven gone: kept pending), and the
        slot through which a drop is final, every slot up to ``listed`` listed (``_final_through``, D449). Each
        pending payment's step is its own (``settle_alone``): one that fails is added to ``stuck`` and the others go
        on."""
        pending = list(self.sink.pending(self.config.key))
        finalized = orphaned = unproven = 0
        finalized_slot: int | None = None
        for start in range(0, len(pending), STATUS_BATCH):
            chunk = pending[start : start + STATUS_BATCH]
            statuses = await self._call(self.rpc.statuses([payment.tx_id for payment in chunk]))
            for payment, status in zip(chunk, statuses, strict=True):
                pid = payment.payment_id
                if payment.failed and status is not None:
                    # recorded FAILED: final once failed at finalized; succeeded where it stands now: read again
                    if status.failed and status.finalized:
                        finalized += settle_alone(stuck, pid, partial(self.sink.finalized, pid, payment.block_hash))
                    elif not status.failed:
                        finalized += await self._reread(payment, merchant, watched, stuck, status.finalized)
                    continue
                if status is not None and status.failed:
                    orphaned += settle_alone(
                        stuck, pid, partial(self.sink.orphaned, pid, payment.block_hash, failed=True)
                    )
                elif status is not None and status.finalized:
                    finalized += settle_alone(stuck, pid, partial(self.sink.finalized, pid, payment.block_hash))
                elif status is None:
                    if finalized_slot is None:
                        finalized_slot = await self._call(self.rpc.slot("finalized"))
                    if finalized_slot < payment.block_number:
                        continue  # not final yet: unknown is ordinary (a backend behind), asked again next run
                    # unknown once its slot is final: gone only on proof - getTransaction does not serve it and the
                    # finalized block at its slot is shown without it (empty answers come from a backend behind as
                    # well, and an ORPHANED payment leaves the pending list: nothing would check it again)
                    if await self._call(self.rpc.transaction(payment.tx_id)) is None and await self._proven_gone(
                        payment.tx_id, payment.block_number
                    ):
                        orphaned += settle_alone(stuck, pid, partial(self.sink.orphaned, pid, payment.block_hash))
                        continue
                    unproven += 1  # kept pending, asked again next run; named stuck once it has waited long enough
                    if finalized_slot - payment.block_number >= UNPROVEN_ALARM_SLOTS:
                        stuck.append(_unproven(pid, payment.block_number, finalized_slot))
                    if finalized_slot - payment.block_number >= STALL_SLOTS:
                        # it no longer holds its bill (D398, D419): a write-off falls, or an OPEN bill asks the rest
                        # again (a double payment becomes credit); still pending, finalized if it shows up
                        settle_alone(stuck, pid, partial(self.sink.stalled, pid, payment.block_hash))
        return finalized, orphaned, unproven, await self._final_through(listed)

    async def _reread(
        self, payment: PendingPayment, merchant: Merchant, watched: frozenset[str], stuck: list[str], final: bool
    ) -> int:
        """A transaction recorded FAILED whose status now says it succeeded (its failing fork did not survive; it
        landed again where it succeeds): its credits are read again and reported (settlement re-reads a FAILED
        payment whose block or outcome changed). Not served yet: the next run asks again. The FAILED payment's own
        credit is recorded last: a record that fails leaves it FAILED and pending, read again next run with the
        transaction's other credits (one the failed version lacked, say); it is named ``stuck`` and the others go on
        (D323, D332).
        No credit at the FAILED payment's index where it succeeded (a failed transaction is a credit per transfer,
        one that succeeded may be one net credit, D91 amended (sp)) and that success ``final``: the FAILED payment is
        closed (``finalized``: FAILED for good, counting nothing; 1 returned) - else it would be read again every run.
        Not final yet, it is read again: the landing could still be undone."""
        tx = await self._call(self.rpc.transaction(payment.tx_id))
        if tx is None or tx.failed:
            return 0
        found = await self._dated(tx, credits(tx, merchant, watched=watched))
        pid = payment.payment_id
        if found:
            block_hash = await self._call(self.rpc.block_hash(tx.slot))
            ordered = sorted(found, key=lambda transfer: transfer.payment_id == pid)  # its own credit last
            record_alone(stuck, self.sink, {pid: [_with_hash(transfer, block_hash) for transfer in ordered]})
        if final and pid not in {transfer.payment_id for transfer in found}:
            return settle_alone(stuck, pid, partial(self.sink.finalized, pid, payment.block_hash))
        return 0

    async def _listing(
        self, merchant: Merchant, queried: Sequence[str], floor: int, head: int, last_signature: str | None
    ) -> tuple[dict[str, SignatureInfo], set[str]] | None:
        """The new signatures in ``(floor, head]`` of the queried references and both sweeps, and those of them the
        wallet sweep listed; None when a page was answered by a server behind the head (-32016): the window is not
        known whole, so the run reads nothing of it and leaves its cursor; the next run lists again."""
        new: dict[str, SignatureInfo] = {}
        wallet_signatures: set[str] = set()
        try:
            for reference in queried:
                new.update({info.signature: info for info in await self._since(reference, floor, head)})
            for info in await self._since(merchant.wallet, floor, head, last_signature):
                new[info.signature] = info
                wallet_signatures.add(info.signature)
            new.update({info.signature: info for info in await self._since(merchant.usdc_account, floor, head)})
        except SolanaNodeBehindError:
            return None
        return new, wallet_signatures


def rotation(references: Sequence[str], cap: int, now: datetime) -> list[str]:
    """At most ``cap`` of ``references`` (sorted), the window moving on by ``cap`` each minute: every reference is
    queried at least once in ceil(n / cap) minutes of runs, whatever their number (D290)."""
    if len(references) <= cap:
        return list(references)
    start = (int(now.timestamp()) // 60 * cap) % len(references)
    return [references[(start + n) % len(references)] for n in range(cap)]


def _bounded(ordered: list[SignatureInfo], cap: int, head: int) -> tuple[list[SignatureInfo], int]:
    """At most ``cap`` signatures, oldest first, ending on a whole slot; and the slot the cursor may move to."""
    if len(ordered) <= cap:
        return ordered, head
    stop = ordered[cap].slot
    batch = [info for info in ordered if info.slot < stop]
    if not batch:  # one slot holds more than the cap: take that slot whole rather than never move
        batch = [info for info in ordered if info.slot == stop]
        return batch, stop
    return batch, stop - 1


def drop_final_slot(blocks: Sequence[int]) -> int | None:
    """The slot through which a dropped transaction cannot land any more, from consecutive finalized blocks'
    slots (ascending, the last L): the block ``LANDING_BLOCKS`` (151) blocks below L - a transaction dropped from a
    slot at or below it has a blockhash at least 152 blocks below L, so it can land only below L (D449); None with
    fewer blocks (not known)."""
    return blocks[-(LANDING_BLOCKS + 1)] if len(blocks) > LANDING_BLOCKS else None


def _with_hash(transfer: ObservedTransfer, block_hash: str) -> ObservedTransfer:
    return replace(transfer, block_hash=block_hash)


def _unproven(name: str, slot: int, finalized_slot: int) -> str:
    return (
        f"{name}: slot {slot} final for {finalized_slot - slot} slots, status unknown, no finalized block shown to"
        " prove it gone (a backend behind, or a skipped slot): kept pending"
    )


# -- the fast path ---------------------------------------------------------------------------------------------------


async def inspect(
    rpc: SolanaRpc, config: ChainConfig, signature: str, watched: frozenset[str] = frozenset()
) -> list[ObservedTransfer]:
    """The credits to the merchant in one customer-submitted signature (confirmed), as the watcher would record them:
    ``watched``, the active references, count wherever they are among the transaction's keys (D91), so that a claim
    of a payment carrying another bill's reference on another instruction is refused (D112)."""
    tx = await rpc.transaction(signature)
    if tx is None:
        raise TransactionNotFoundError(f"solana transaction {signature} not found (not yet confirmed?)")
    found = credits(tx, Merchant.of(config), watched=watched)
    if not found:
        return []
    if tx.block_time is None:  # as the watcher dates it (SolanaWatcher._dated, D397)
        time = await rpc.block_time(tx.slot)
        found = [replace(transfer, block_time=time) for transfer in found]
    block_hash = await rpc.block_hash(tx.slot)
    return [_with_hash(transfer, block_hash) for transfer in found]
