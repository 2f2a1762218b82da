"""Adapters of the core's ports: the crypto table on DynamoDB (settlement's store, wallets and nonces, the watchers'
cursors) and the exchange spot-price source over HTTP (stdlib ``urllib``; Coinbase's ``/v2/prices/<A>-USD/spot``
shape). botocore failures are mapped once, in ``kilo_billing.aws``; a failed condition becomes the port's error."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from typing import Any

from kilo_billing.aws import ConditionFailedError, InvalidRequestError, call, paged_items, put_if
from kilo_billing.items import Item, from_item, to_item
from kilo_crypto_watch import items
from kilo_crypto_watch.model import Asset, Bill, BillStatus, Cursor, Payment, PaymentStatus, Quote, RateReading
from kilo_crypto_watch.ports import (
    AlreadyExistsError,
    ChangeRefusedError,
    ConflictError,
    CursorConflictError,
    PriceUnavailableError,
    SettlementChange,
)


class DynamoCryptoStore:
    """``SettlementStore`` plus the wallet links and sign-in nonces, on the crypto table (items.py)."""

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def _get(self, pk: str, sk: str) -> Item | None:
        response = call(self._client.get_item, TableName=self._table, Key=items.key(pk, sk), ConsistentRead=True)
        item: Item | None = response.get("Item")
        return item

    def _query(self, **request: Any) -> list[Item]:
        return list(paged_items(self._client.query, TableName=self._table, **request))

    # bills and quotes
    def bill(self, invoice_id: str) -> Bill | None:
        item = self._get(items.bill_pk(invoice_id), "BILL")
        return items.bill_from_item(item) if item else None

    def quotes(self, invoice_id: str) -> Sequence[Quote]:
        found = self._query(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :q)",
            ExpressionAttributeValues=to_item({":pk": items.bill_pk(invoice_id), ":q": "QUOTE#"}),
            ConsistentRead=True,
        )
        return [items.quote_from_item(item) for item in found]

    def create_bill(self, bill: Bill) -> bool:
        return put_if(self._client, self._table, items.bill_to_item(bill))

    def unpaid_bills(self, account_id: str) -> Sequence[Bill]:
        found = self._query(
            IndexName="account",
            KeyConditionExpression="gsi2pk = :a AND begins_with(gsi2sk, :b)",
            ExpressionAttributeValues=to_item({":a": items.account_pk(account_id), ":b": "BILL#"}),
        )
        bills = [items.bill_from_item(item) for item in found]
        return [bill for bill in bills if bill.status is not BillStatus.PAID]

    def add_quote(self, quote: Quote) -> None:
        writes: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": items.quote_to_item(quote),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {  # the bill must exist (a quote for nothing would be a payment address for nothing)
                "ConditionCheck": {
                    "TableName": self._table,
                    "Key": items.key(items.bill_pk(quote.invoice_id), "BILL"),
                    "ConditionExpression": "attribute_exists(pk)",
                }
            },
        ]
        if quote.reference is not None:
            writes.append(
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": items.reference_to_item(quote),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                }
            )
        try:
            call(self._client.transact_write_items, TransactItems=writes)
        except ConditionFailedError as exc:
            raise ConflictError(f"quote {quote.quote_id} not stored: {exc}") from exc

    def quote_by_reference(self, reference: str) -> Quote | None:
        ref = self._get(f"REF#{reference}", "REF")
        if ref is None:
            return None
        values = from_item(ref)
        item = self._get(items.bill_pk(str(values["invoice_id"])), f"QUOTE#{values['quote_id']}")
        return items.quote_from_item(item) if item else None

    def expiring_quotes(self, chain: str, until: datetime) -> Sequence[Quote]:
        found = self._query(
            IndexName="watch",
            KeyConditionExpression="gsi1pk = :e AND gsi1sk <= :until",
            ExpressionAttributeValues=to_item(
                {":e": items.expiring_pk(chain), ":until": until.astimezone(UTC).isoformat() + "#~"}
            ),
        )
        return [items.quote_from_item(item) for item in found]

    def retire_expiring(self, quote: Quote) -> None:
        call(
            self._client.update_item,
            TableName=self._table,
            Key=items.key(items.bill_pk(quote.invoice_id), f"QUOTE#{quote.quote_id}"),
            UpdateExpression="SET expiring_announced = :t REMOVE gsi1pk, gsi1sk",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues=to_item({":t": True}),
        )

    def watched_references(self, chain: str, now: datetime, expired_after: datetime | None = None) -> Sequence[str]:
        values = {":w": f"WATCH#{chain}", ":now": now.astimezone(UTC).isoformat()}
        request: dict[str, Any] = {"IndexName": "watch", "KeyConditionExpression": "gsi1pk = :w AND gsi1sk > :now"}
        if expired_after is not None:
            request["FilterExpression"] = "attribute_not_exists(expires_at) OR expires_at > :cut"
            values[":cut"] = expired_after.astimezone(UTC).isoformat()
        found = self._query(**request, ExpressionAttributeValues=to_item(values))
        return [str(from_item(item)["reference"]) for item in found]

    # payments
    def payment(self, payment_id: str) -> Payment | None:
        item = self._get(items.payment_pk(payment_id), "PAY")
        return items.payment_from_item(item) if item else None

    def transaction_payments(self, chain: str, tx_id: str) -> Sequence[Payment]:
        links = self._query(
            KeyConditionExpression="pk = :t",
            ExpressionAttributeValues=to_item({":t": items.transaction_pk(chain, tx_id)}),
        )
        found = (self.payment(str(from_item(link)["payment_id"])) for link in links)
        return [payment for payment in found if payment is not None]

    def attributed_payments_page(
        self, start: Item | None = None, limit: int = 100
    ) -> tuple[list[Payment], Item | None]:
        """One page of a Scan of the table (``limit`` items read; the attributed payments among them) and the key the
        next page starts after (``None``: the scan is done) - the transaction links' backfill (D155), an operator's
        command: no index holds every attributed payment."""
        request: dict[str, Any] = {
            "TableName": self._table,
            "Limit": limit,
            "FilterExpression": "#k = :p AND attribute_exists(invoice_id)",
            "ExpressionAttributeNames": {"#k": "kind"},
            "ExpressionAttributeValues": to_item({":p": "payment"}),
            "ConsistentRead": True,
        }
        if start is not None:
            request["ExclusiveStartKey"] = start
        page = call(self._client.scan, **request)
        payments = [items.payment_from_item(item) for item in page.get("Items", [])]
        following: Item | None = page.get("LastEvaluatedKey")
        return payments, following

    def has_transaction_link(self, payment: Payment) -> bool:
        transfer = payment.transfer
        pk = items.transaction_pk(transfer.chain, transfer.tx_id)
        return self._get(pk, f"PAY#{payment.payment_id}") is not None

    def add_transaction_link(self, payment: Payment) -> bool:
        """Put ``payment``'s transaction link unless it is there (True: written now)."""
        return put_if(self._client, self._table, items.transaction_link_to_item(payment))

    def pending_payments(self, chain: str) -> Sequence[Payment]:
        found = self._query(
            IndexName="watch",
            KeyConditionExpression="gsi1pk = :p",
            ExpressionAttributeValues=to_item({":p": f"PENDING#{chain}"}),
        )
        return [items.payment_from_item(item) for item in found]

    def unattributed(self) -> Sequence[Payment]:
        """The operator's list: payments nobody claims, except ORPHANED ones (items.listed_for; the filter leaves out
        those orphaned before their write took them off the index)."""
        found = self._query(
            IndexName="account",
            KeyConditionExpression="gsi2pk = :u",
            FilterExpression="#s <> :orphaned",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues=to_item({":u": items.UNATTRIBUTED, ":orphaned": "ORPHANED"}),
        )
        return [items.payment_from_item(item) for item in found]

    def reviewed_payments(self) -> Sequence[Payment]:
        """A filtered Scan (an operator's command, rare; payments in review are few): no index is kept for them."""
        found = paged_items(
            self._client.scan,
            TableName=self._table,
            FilterExpression="#k = :p AND (#r = :t OR #o = :t)",
            ExpressionAttributeNames={"#k": "kind", "#r": "review", "#o": "refund_owed"},
            ExpressionAttributeValues=to_item({":p": "payment", ":t": True}),
            ConsistentRead=True,
        )
        payments = [items.payment_from_item(item) for item in found]
        return sorted(payments, key=lambda payment: (payment.seen_at, payment.payment_id))

    def save(self, change: SettlementChange) -> None:
        payment_put: dict[str, Any] = {"TableName": self._table, "Item": items.payment_to_item(change.payment)}
        if change.payment_expected is None:
            payment_put["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            condition = "#s = :expected"
            values: dict[str, Any] = {":expected": change.payment_expected.value}
            if change.was_unattributed:
                condition += " AND attribute_not_exists(invoice_id)"
            if change.block_expected is not None:
                condition += " AND block_hash = :block"
                values[":block"] = change.block_expected
            # the whole item is put: a copy read before an operator's refund must not drop it (D341);
            # one carrying a refund goes over none or the same one (a refund is never changed), one dropping a refund
            # over the very one it read
            if change.refund_read is not None:
                condition += " AND refund_tx = :refund"
                values[":refund"] = change.refund_read
            elif change.payment.refund_tx is not None:
                condition += " AND (attribute_not_exists(refund_tx) OR refund_tx = :refund)"
                values[":refund"] = change.payment.refund_tx
            else:
                condition += " AND attribute_not_exists(refund_tx)"
            payment_put["ConditionExpression"] = condition
            payment_put["ExpressionAttributeNames"] = {"#s": "status"}
            payment_put["ExpressionAttributeValues"] = to_item(values)
        writes: list[dict[str, Any]] = [{"Put": payment_put}]
        if change.bill is not None:
            writes.append(
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": items.bill_to_item(change.bill),
                        "ConditionExpression": "version = :v",
                        "ExpressionAttributeValues": to_item({":v": change.bill.version - 1}),
                    }
                }
            )
        if change.payment.attributed:
            writes.append({"Put": {"TableName": self._table, "Item": items.transaction_link_to_item(change.payment)}})
        if change.moved is not None and change.moved_expected is not None:
            writes.append(
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": items.payment_to_item(change.moved),
                        "ConditionExpression": "#s = :moved AND attribute_not_exists(moved_to)",
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": to_item({":moved": change.moved_expected.value}),
                    }
                }
            )
        for quote in change.quotes:
            writes.append(
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": items.key(items.bill_pk(quote.invoice_id), f"QUOTE#{quote.quote_id}"),
                        "UpdateExpression": "SET #s = :s",
                        "ConditionExpression": "attribute_exists(pk)",
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": to_item({":s": quote.status.value}),
                    }
                }
            )
        try:
            if len(writes) == 1:
                call(self._client.put_item, **payment_put)
            else:
                call(self._client.transact_write_items, TransactItems=writes)
        except ConditionFailedError as exc:
            raise ConflictError(f"payment {change.payment.payment_id}: {exc}") from exc
        except InvalidRequestError as exc:
            raise ChangeRefusedError(
                f"payment {change.payment.payment_id}: the table refused the change: {exc}"
            ) from exc

    def record_refund(self, refunded: Payment, expected: PaymentStatus) -> None:
        # an update of the refund (and the listing it ends) alone: a concurrent write of the payment's other
        # attributes (a rebase to another block, say) is never reverted by it; with the transaction's link, so that
        # the credit re-mined at another index finds the refund (D168)
        if refunded.refund_tx is None:
            raise ValueError(f"payment {refunded.payment_id}: no refund to record")
        update = {
            "TableName": self._table,
            "Key": items.key(items.payment_pk(refunded.payment_id), "PAY"),
            "UpdateExpression": "SET refund_tx = :refund REMOVE gsi2pk, gsi2sk",
            "ConditionExpression": (
                "#s = :expected AND attribute_not_exists(invoice_id) AND attribute_not_exists(refund_tx)"
            ),
            "ExpressionAttributeNames": {"#s": "status"},
            "ExpressionAttributeValues": to_item({":refund": refunded.refund_tx, ":expected": expected.value}),
        }
        link = {"TableName": self._table, "Item": items.transaction_link_to_item(refunded)}
        try:
            call(self._client.transact_write_items, TransactItems=[{"Update": update}, {"Put": link}])
        except ConditionFailedError as exc:
            raise ConflictError(
                f"payment {refunded.payment_id}: changed before its refund was recorded: {exc}"
            ) from exc

    def claim_seen(self, payment_id: str, event_id: str) -> str:
        # one update, kept by the first writer (if_not_exists): a payment is claimed by one event only; on a stored
        # payment only (an update would otherwise create a bare row that no reader can map)
        try:
            response = call(
                self._client.update_item,
                TableName=self._table,
                Key=items.key(items.payment_pk(payment_id), "PAY"),
                UpdateExpression="SET seen_event = if_not_exists(seen_event, :e)",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues=to_item({":e": event_id}),
                ReturnValues="UPDATED_NEW",
            )
        except ConditionFailedError as exc:
            raise ConflictError(f"payment {payment_id} is not stored: it cannot be claimed for {event_id}") from exc
        return str(from_item(response["Attributes"])["seen_event"])

    def mark_payment_announced(self, payment_id: str) -> None:
        call(
            self._client.update_item,
            TableName=self._table,
            Key=items.key(items.payment_pk(payment_id), "PAY"),
            UpdateExpression="SET announced = :t",
            ExpressionAttributeValues=to_item({":t": True}),
        )

    def mark_bill_announced(self, invoice_id: str, credit_usd: Decimal, written_off_usd: Decimal | None = None) -> None:
        # the version moves too, so a writer holding the unmarked bill re-reads instead of un-marking it; the bill
        # leaves the announcement list only while its credit (and write-off) is still the one announced (one
        # changed meanwhile keeps it there for the sweep)
        values: dict[str, Any] = {":t": True, ":credit": credit_usd, ":one": 1}
        marked = "SET settled_announced = :t, credit_announced_usd = :credit"
        condition = "credit_usd = :credit"
        if written_off_usd is not None:
            values[":wo"] = written_off_usd
            marked += ", written_off_announced_usd = :wo"
            condition += " AND written_off_usd = :wo"
        marked += " ADD version :one"
        request: dict[str, Any] = {
            "TableName": self._table,
            "Key": items.key(items.bill_pk(invoice_id), "BILL"),
            "ExpressionAttributeValues": to_item(values),
        }
        try:
            call(
                self._client.update_item,
                UpdateExpression=marked + " REMOVE gsi1pk, gsi1sk",
                ConditionExpression=condition,
                **request,
            )
        except ConditionFailedError:
            call(self._client.update_item, UpdateExpression=marked, **request)

    def mark_reopen_said(self, invoice_id: str, owed: str) -> None:
        # on the version read (it moves, as mark_bill_announced's: a writer holding the bill re-reads instead of
        # owing the notice again); the list entry by its index, checked to still be the one said
        bill = self.bill(invoice_id)
        if bill is None or owed not in bill.reopens_owed:
            return
        index = bill.reopens_owed.index(owed)
        left = replace(bill, reopens_owed=tuple(o for o in bill.reopens_owed if o != owed))
        removed = f"reopens_owed[{index}]" + ("" if items.announcement_due(left) else ", gsi1pk, gsi1sk")
        try:
            call(
                self._client.update_item,
                TableName=self._table,
                Key=items.key(items.bill_pk(invoice_id), "BILL"),
                UpdateExpression=f"REMOVE {removed} ADD version :one",
                ConditionExpression=f"version = :v AND reopens_owed[{index}] = :owed",
                ExpressionAttributeValues=to_item({":v": bill.version, ":owed": owed, ":one": 1}),
            )
        except ConditionFailedError:
            return  # another writer moved the bill first: left owed, the sweep tells it again (same event id)

    def bills_to_announce(self) -> Sequence[Bill]:
        found = self._query(
            IndexName="watch",
            KeyConditionExpression="gsi1pk = :a",
            ExpressionAttributeValues=to_item({":a": items.ANNOUNCE_PK}),
        )
        return [items.bill_from_item(item) for item in found]

    # wallets and nonces
    def wallet_owner(self, chain_kind: str, address: str, chain: str | None = None) -> str | None:
        """One consistent Query over the address's links: its key's link (every chain) first, else its contract
        link on ``chain``."""
        found = self._query(
            KeyConditionExpression="pk = :p AND begins_with(sk, :w)",
            ExpressionAttributeValues=to_item({":p": items.wallet_pk(chain_kind, address), ":w": items.wallet_sk()}),
            ConsistentRead=True,
        )
        owners = {str(from_item(item)["sk"]): str(from_item(item)["account_id"]) for item in found}
        owner = owners.get(items.wallet_sk())
        if owner is None and chain is not None:
            owner = owners.get(items.wallet_sk(chain))
        return owner

    def link_wallet(
        self, kind: str, address: str, account_id: str, chain: str, now: datetime, contract: bool = False
    ) -> None:
        """Link ``address`` to ``account_id`` (``contract``: an ERC-1271 wallet, on ``chain`` only); AlreadyExistsError
        when another account holds it - for a contract wallet also when another account holds the address's key."""
        mine = {
            "ConditionExpression": "attribute_not_exists(pk) OR account_id = :a",
            "ExpressionAttributeValues": to_item({":a": account_id}),
        }
        item = items.wallet_to_item(kind, address, account_id, chain, now, contract)
        try:
            if not contract:
                call(self._client.put_item, TableName=self._table, Item=item, **mine)
            else:
                key_link = items.key(items.wallet_pk(kind, address), items.wallet_sk())
                writes = [
                    {"ConditionCheck": {"TableName": self._table, "Key": key_link, **mine}},
                    {"Put": {"TableName": self._table, "Item": item, **mine}},
                ]
                call(self._client.transact_write_items, TransactItems=writes)
        except ConditionFailedError as exc:
            raise AlreadyExistsError(f"wallet {address} is linked to another account") from exc

    def wallets(self, account_id: str) -> list[dict[str, Any]]:
        found = self._query(
            IndexName="account",
            KeyConditionExpression="gsi2pk = :a AND begins_with(gsi2sk, :w)",
            ExpressionAttributeValues=to_item({":a": items.account_pk(account_id), ":w": "WALLET#"}),
        )
        return [from_item(item) for item in found]

    def put_nonce(self, nonce: str, account_id: str, expires_at: datetime) -> None:
        if not put_if(self._client, self._table, items.nonce_to_item(nonce, account_id, expires_at)):
            raise AlreadyExistsError("nonce exists")

    def take_nonce(self, nonce: str) -> tuple[str, datetime] | None:
        """Delete the nonce and return (account, expiry); None when unknown or already used (single use)."""
        try:
            response = call(
                self._client.delete_item,
                TableName=self._table,
                Key=items.key(f"NONCE#{nonce}", "NONCE"),
                ConditionExpression="attribute_exists(pk)",
                ReturnValues="ALL_OLD",
            )
        except ConditionFailedError:
            return None
        values = from_item(response["Attributes"])
        return str(values["account_id"]), datetime.fromisoformat(str(values["expires_at"]))

    def account_history(self, account_id: str) -> tuple[Sequence[Bill], Sequence[Quote], Sequence[Payment]]:
        found = self._query(
            IndexName="account",
            KeyConditionExpression="gsi2pk = :a",
            ExpressionAttributeValues=to_item({":a": items.account_pk(account_id)}),
        )
        bills: list[Bill] = []
        quotes: list[Quote] = []
        payments: list[Payment] = []
        for item in found:
            kind = from_item({"kind": item["kind"]})["kind"] if "kind" in item else ""
            if kind == "bill":
                bills.append(items.bill_from_item(item))
            elif kind == "quote":
                quotes.append(items.quote_from_item(item))
            elif kind == "payment":
                payments.append(items.payment_from_item(item))
        return bills, quotes, payments


class DynamoCursorStore:
    """``CursorStore``: one item per chain, moved only from the cursor the run started with (conditional put)."""

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def get(self, chain: str) -> Cursor | None:
        key = items.key(f"CURSOR#{chain}", "CURSOR")
        response = call(self._client.get_item, TableName=self._table, Key=key, ConsistentRead=True)
        item = response.get("Item")
        return items.cursor_from_item(item) if item else None

    def put(self, cursor: Cursor, expected: Cursor | None) -> None:
        request: dict[str, Any] = {"TableName": self._table, "Item": items.cursor_to_item(cursor)}
        if expected is None:
            request["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            condition = "block_number = :n AND block_hash = :h"
            values: dict[str, Any] = {":n": expected.block_number, ":h": expected.block_hash}
            if expected.last_signature is None:
                condition += " AND attribute_not_exists(last_signature)"
            else:
                condition += " AND last_signature = :s"
                values[":s"] = expected.last_signature
            request["ConditionExpression"] = condition
            request["ExpressionAttributeValues"] = to_item(values)
        try:
            call(self._client.put_item, **request)
        except ConditionFailedError as exc:
            raise CursorConflictError(f"cursor of {cursor.chain} moved by another run") from exc


class ExchangeSpotPrice:
    """``PriceSource``: an exchange's spot price over HTTP. ``url`` has an ``{asset}`` placeholder; the answer is
    Coinbase's shape ``{"data": {"base": "ETH", "currency": "USD", "amount": "3012.34"}}``; its time is the response's
    ``Date`` header (the API gives none in the body), else now."""

    def __init__(
        self, url: str, source: str = "exchange:coinbase", timeout: float = 3.0, heartbeat_seconds: int = 120
    ) -> None:
        if not url.startswith(("https://", "http://")):
            raise ValueError(f"exchange price URL must be http(s): {url!r}")
        self._url = url
        self._source = source
        self._timeout = timeout
        self._heartbeat = heartbeat_seconds

    def read(self, asset: Asset) -> RateReading:
        url = self._url.format(asset=asset)
        headers = {"Accept": "application/json", "User-Agent": "kilo-billing"}
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 - scheme checked in __init__
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:  # noqa: S310 - configured URL
                body = json.loads(response.read())
                date = response.headers.get("Date")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise PriceUnavailableError(f"{self._source} did not answer for {asset} ({type(exc).__name__})") from exc
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise PriceUnavailableError(f"{self._source} answered without a data object for {asset}")
        if str(data.get("base", asset)).upper() != asset or str(data.get("currency", "USD")).upper() != "USD":
            pair = f"{data.get('base')}-{data.get('currency')}"
            raise PriceUnavailableError(f"{self._source} answered {pair}, not {asset}-USD")
        try:
            price = Decimal(str(data["amount"]))
        except (KeyError, InvalidOperation) as exc:
            raise PriceUnavailableError(f"{self._source} answered no amount for {asset}") from exc
        if not price.is_finite() or price <= 0:
            raise PriceUnavailableError(f"{self._source} answered an unusable price {price} for {asset}")
        try:
            updated = parsedate_to_datetime(date) if date else datetime.now(UTC)
        except (TypeError, ValueError):
            updated = datetime.now(UTC)
        return RateReading(
            source=self._source, asset=asset, price=price, updated_at=updated, heartbeat_seconds=self._heartbeat
        )


ERC1271_MAGIC = bytes.fromhex("1626ba7e")
ERC1271_ABI: list[dict[str, Any]] = [
    {
        "name": "isValidSignature",
        "type": "function",
        "stateMutability": "view",
        "inputs": [{"name": "hash", "type": "bytes32"}, {"name": "signature", "type": "bytes"}],
        "outputs": [{"name": "magicValue", "type": "bytes4"}],
    }
]


class Web3ContractSignatures:
    """``ContractSignatureVerifier`` (ERC-1271) with web3.py against the chain's RPC: a contract wallet accepts a
    signature when ``isValidSignature(hash, signature)`` returns the magic value ``0x1626ba7e``. An address without
    code, a revert or an RPC failure: not accepted. web3 loads only when a sign-in needs it."""

    def __init__(self, timeout: float = 5.0) -> None:
        self._timeout = timeout

    def is_valid_signature(self, chain: Any, address: str, message_hash: bytes, signature: bytes) -> bool:
        from web3 import HTTPProvider, Web3  # noqa: PLC0415

        if not chain.rpc_url:
            return False
        web3 = Web3(HTTPProvider(chain.rpc_url, request_kwargs={"timeout": self._timeout}))
        try:
            target = Web3.to_checksum_address(address)
            if not web3.eth.get_code(target):
                return False
            contract = web3.eth.contract(address=target, abi=ERC1271_ABI)
            result = contract.functions.isValidSignature(message_hash, signature).call()
        except Exception:
            return False
        return bytes(result)[:4] == ERC1271_MAGIC
