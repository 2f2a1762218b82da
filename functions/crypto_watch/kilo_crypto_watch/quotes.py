"""Quotes: "pay this bill's remaining USD with asset X on chain Y" - the locked rate, the atomic amount rounded up,
the pay-to address, expiry and monitoring window, and the payment URI the customer's wallet opens.

URIs: EIP-681 on EVM chains (native ``ethereum:<merchant>@<chain id>?value=<wei>``; ERC-20
``ethereum:<token>@<chain id>/transfer?address=<merchant>&uint256=<units>``); a Solana Pay transfer request on Solana
(``solana:<merchant>?amount=<decimal>&spl-token=<mint>&reference=<key>&label=..&message=..&memo=..``) with a fresh
``reference`` public key per quote (the watcher finds the payment by it). Pure: ids, reference keys and time come in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from urllib.parse import quote as url_quote

from kilo_billing.money import decimal_str
from kilo_crypto_watch.model import DECIMALS, Asset, Bill, BillStatus, ChainConfig, LockedRate, Quote, QuoteStatus
from kilo_crypto_watch.settlement import asset_amount, quote_status, remaining_usd


class QuoteRefusedError(Exception):
    """No quote can be made for this bill, chain and asset (the message says why)."""


@dataclass(frozen=True, slots=True)
class QuotePolicy:
    expiry: timedelta = timedelta(minutes=30)
    monitoring: timedelta = timedelta(hours=72)
    label: str = "Kilo Billing"
    # a request while an ACTIVE quote of the same chain and asset asks the bill's remaining USD with at least this
    # long to run gets that quote back, not a new one (D285)
    reuse_min_left: timedelta = timedelta(minutes=10)
    # the quotes a bill holds inside their monitoring window: a new one beyond them is refused (D285)
    max_monitored_quotes: int = 50


def atomic_amount(usd: Decimal, rate: Decimal, asset: Asset) -> int:
    """USD at ``rate`` USD per whole unit, in the asset's smallest unit, rounded UP (paying it covers ``usd``)."""
    exact = Fraction(usd) / Fraction(rate) * 10 ** DECIMALS[asset]
    whole, remainder = divmod(exact.numerator, exact.denominator)
    return int(whole) + (1 if remainder else 0)


def eip681_uri(chain: ChainConfig, asset: Asset, atomic: int) -> str:
    if asset == chain.native:
        return f"ethereum:{chain.merchant_address}@{chain.chain_id}?value={atomic}"
    return f"ethereum:{chain.usdc}@{chain.chain_id}/transfer?address={chain.merchant_address}&uint256={atomic}"


def solana_pay_url(
    chain: ChainConfig, asset: Asset, atomic: int, reference: str, label: str, message: str, memo: str
) -> str:
    params = [("amount", decimal_str(asset_amount(atomic, asset)))]
    if asset != chain.native:
        params.append(("spl-token", chain.usdc))
    params += [("reference", reference), ("label", label), ("message", message), ("memo", memo)]
    query = "&".join(f"{name}={url_quote(value, safe='')}" for name, value in params)
    return f"solana:{chain.merchant_address}?{query}"


def make_quote(
    bill: Bill,
    chain: ChainConfig,
    asset: Asset,
    rate: LockedRate,
    now: datetime,
    quote_id: str,
    reference: str | None,
    policy: QuotePolicy | None = None,
) -> Quote:
    """A quote for the bill's remaining USD (total less payments seen or final) at ``rate``."""
    policy = policy or QuotePolicy()
    remaining = quotable_usd(bill)
    if asset not in (chain.native, "USDC"):
        raise QuoteRefusedError(f"{asset} is not accepted on {chain.key} (accepted: {chain.native}, USDC)")
    if rate.asset != asset:
        raise QuoteRefusedError(f"rate is for {rate.asset}, not {asset}")
    atomic = atomic_amount(remaining, rate.price, asset)
    memo = f"Kilo invoice {bill.number}" if bill.number else f"Kilo invoice {bill.invoice_id}"
    if chain.kind == "solana":
        if reference is None:
            raise QuoteRefusedError("a Solana quote needs a reference key")
        uri = solana_pay_url(chain, asset, atomic, reference, policy.label, memo, memo)
    else:
        reference = None
        uri = eip681_uri(chain, asset, atomic)
    return Quote(
        quote_id=quote_id,
        invoice_id=bill.invoice_id,
        account_id=bill.account_id,
        chain=chain.key,
        asset=asset,
        amount_usd=remaining,
        rate=rate,
        atomic_amount=atomic,
        pay_to=chain.merchant_address,
        created_at=now,
        expires_at=now + policy.expiry,
        monitor_until=now + policy.expiry + policy.monitoring,
        payment_uri=uri,
        reference=reference,
        memo=memo if chain.kind == "solana" else None,
    )


def quotable_usd(bill: Bill) -> Decimal:
    """What a new quote of ``bill`` asks for (``remaining_usd``); ``QuoteRefusedError`` when there is nothing to ask:
    the bill is paid, or covered by payments awaiting finality. Checked before a rate is locked (a paid bill is a
    409 whatever the price sources say)."""
    if bill.status is BillStatus.PAID:
        raise QuoteRefusedError(f"bill {bill.invoice_id} is paid")
    remaining = remaining_usd(bill)
    if remaining <= 0:
        raise QuoteRefusedError(f"bill {bill.invoice_id} is covered by payments awaiting finality")
    return remaining


def reusable_quote(
    bill: Bill, quotes: Sequence[Quote], chain: str, asset: Asset, now: datetime, policy: QuotePolicy
) -> Quote | None:
    """The quote a new request for ``chain`` and ``asset`` gets instead of a new one: the newest that is ACTIVE (as
    computed from the bill's payments: nothing paid to it, not expired), asks the bill's remaining USD and has at
    least ``reuse_min_left`` to run; None when there is none (D285)."""
    remaining = remaining_usd(bill)
    fitting = [
        quote
        for quote in quotes
        if quote.chain == chain
        and quote.asset == asset
        and quote.amount_usd == remaining
        and quote.expires_at - now >= policy.reuse_min_left
        and quote_status(quote, bill.payments, now) is QuoteStatus.ACTIVE
    ]
    return max(fitting, key=lambda quote: (quote.created_at, quote.quote_id), default=None)


def check_quote_room(bill: Bill, quotes: Sequence[Quote], now: datetime, policy: QuotePolicy) -> None:
    """``QuoteRefusedError`` when the bill holds ``max_monitored_quotes`` quotes still inside their monitoring window:
    each is read by every settlement step of the bill and watched by the Solana watcher (D285)."""
    monitored = sorted(quote.monitor_until for quote in quotes if quote.monitor_until >= now)
    if len(monitored) >= policy.max_monitored_quotes:
        raise QuoteRefusedError(
            f"bill {bill.invoice_id} holds {len(monitored)} quotes still monitored, the most it takes: pay one of "
            f"them, or ask again after {monitored[0].isoformat()} (when the oldest leaves monitoring)"
        )


def new_reference() -> str:
    """A fresh Solana Pay reference: the public key of a new ed25519 keypair (the secret is never kept)."""
    from solders.keypair import Keypair  # noqa: PLC0415 - only the crypto function loads solders

    return str(Keypair().pubkey())
