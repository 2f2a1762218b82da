"""The crypto routes' HTTP shapes (pydantic): request bodies validated by Powertools, and the answers as documented in
the customer API's OpenAPI document (the account API serves it, with these routes merged in: ``kilo_dev.openapi``).
The answers themselves are built by ``history`` and ``api_handler``; tests check them against these models. Amounts
in an asset and rates are decimal strings, USD amounts strings with two decimals, never floats (D7)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from kilo_crypto_watch.model import BillFlag, BillStatus, PaymentStatus, QuoteStatus

Money = Annotated[str, Field(pattern=r"^-?[0-9]+\.[0-9]{2}$", examples=["58.00"])]
Amount = Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?$", examples=["0.0217333333"])]
Text = Annotated[str, Field(min_length=1, max_length=4096)]
AssetName = Literal["ETH", "USDC", "SOL"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QuoteIn(_In):
    chain: Text = Field(description="A configured chain key (`ethereum`, `base`, `solana`)")
    asset: Text = Field(description="`USDC` or the chain's native asset (`ETH`, `SOL`)")


class TransactionIn(_In):
    chain: Text
    tx_id: Text = Field(description="The transaction hash (EVM) or signature (Solana) that paid the bill")


class WalletIn(_In):
    chain: Text
    message: Text = Field(description="The SIWE (EIP-4361) or Sign In With Solana message the wallet signed")
    signature: Text


class RateSourceOut(_Out):
    source: str
    price_usd: Amount
    updated_at: datetime


class CryptoQuoteOut(_Out):
    quote_id: str
    invoice_id: str = Field(description="The real invoice id (`<account>/<YYYY-MM>[/<part>]`)")
    chain: str
    asset: AssetName
    amount: Amount
    atomic_amount: str
    amount_usd: Money
    rate_usd: Amount
    rate_locked_at: datetime
    rate_sources: list[RateSourceOut]
    pay_to: str
    payment_uri: str = Field(description="EIP-681 (EVM) or Solana Pay transfer request")
    reference: str | None
    memo: str | None
    created_at: datetime
    expires_at: datetime
    monitor_until: datetime
    status: QuoteStatus


class SubmittedPaymentOut(_Out):
    payment_id: str
    status: PaymentStatus
    asset: AssetName
    amount: Amount
    amount_usd: Money | None
    late: bool
    manual_review: bool


class TransactionOut(_Out):
    invoice_id: str
    payments: list[SubmittedPaymentOut]


class NonceOut(_Out):
    nonce: str = Field(description="The message's `Nonce`, issued to this account; a refused signature uses it up")
    issued_at: datetime = Field(description="The API's clock: the message's `Issued At`")
    expires_at: datetime = Field(description="The message's `Expiration Time`; the nonce is single use")
    domain: str = Field(description="The domain the message must name")
    uri: str = Field(description="The URI the message must name")


class WalletOut(_Out):
    chain: str
    address: str
    method: Literal["eoa", "erc1271", "ed25519"]


class CryptoBillOut(_Out):
    invoice_id: str
    number: str | None
    period: str | None
    total_usd: Money
    status: BillStatus
    flags: list[BillFlag]
    settled_usd: Money
    written_off_usd: Money
    credit_usd: Money
    paid_at: datetime | None


class CryptoPaymentOut(_Out):
    payment_id: str
    invoice_id: str | None
    quote_id: str | None
    chain: str
    asset: AssetName
    amount: Amount
    amount_usd: Money | None
    rate_usd: Amount | None
    status: PaymentStatus
    late: bool
    manual_review: bool
    refund_owed: bool
    stalled: bool  # SEEN, named stuck by its watcher: it no longer covers its bill (D398, D419)
    matched_by: str | None
    tx_id: str
    tx_url: str | None
    sender: str | None
    block_number: int | None
    seen_at: datetime


class CryptoHistoryOut(_Out):
    bills: list[CryptoBillOut]
    quotes: list[CryptoQuoteOut]
    payments: list[CryptoPaymentOut]
