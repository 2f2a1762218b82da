"""An invoice id's slash-free form, for URL paths.

Invoice ids are ``<account>/<YYYY-MM>[/<part>]`` (``kilo_billing.invoicing.invoice_id``). API Gateway HTTP APIs
URL-decode the request path before they match routes, so ``%2F`` becomes a path separator and a route's
``{invoice}`` parameter can never hold a slash. In paths an invoice is therefore named by its **key**: the id with
each ``/`` written ``~`` (``acct-1~2026-11``, ``acct-1~2026-11~early-1``). ``~`` is in neither the account-id
grammar nor a period key nor a part, and it is an unreserved URL character (RFC 3986: never percent-encoded), so the
key is the same in every client and maps back to exactly one id. Answers always name the real invoice id.
"""

from __future__ import annotations

import re
from typing import Final

from kilo_billing.accounts import ACCOUNT_ID_PATTERN

SEPARATOR: Final = "~"
PART_PATTERN: Final = r"[A-Za-z0-9_.-]{1,32}"
INVOICE_KEY_PATTERN: Final = rf"{ACCOUNT_ID_PATTERN}~[0-9]{{4}}-(?:0[1-9]|1[0-2])(?:~{PART_PATTERN})?"
_KEY: Final = re.compile(INVOICE_KEY_PATTERN)
EXAMPLE: Final = "acct-1~2026-11"


class MalformedInvoiceKeyError(ValueError):
    """The path's invoice key does not follow ``<account>~<YYYY-MM>[~<part>]``."""


def invoice_key(invoice_id: str) -> str:
    """The path form of ``invoice_id``."""
    return invoice_id.replace("/", SEPARATOR)


def invoice_id_from_key(key: str) -> str:
    """The invoice id a path's key names; ``MalformedInvoiceKeyError`` (naming the expected form) otherwise."""
    if not _KEY.fullmatch(key):
        raise MalformedInvoiceKeyError(
            f"invoice must be an invoice id with each '/' written '~' (<account>~<YYYY-MM>[~<part>], e.g. "
            f"{EXAMPLE}), not {key[:160]!r}"
        )
    return key.replace(SEPARATOR, "/")
