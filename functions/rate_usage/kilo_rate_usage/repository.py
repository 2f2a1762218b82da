"""Compatibility for devtools/kilo_dev/demo.py only, to be deleted at merge: the demo imports
``kilo_rate_usage.repository.DynamoUsageRepository`` and calls ``put_profile``. The adapter now lives in
``kilo_rate_usage.adapters`` and profiles are registered through ``kilo_billing.account_store.DynamoAccountDirectory``.
"""

from __future__ import annotations

from typing import Any

from kilo_billing.account_store import DynamoAccountDirectory
from kilo_billing.accounts import AccountProfile
from kilo_rate_usage import adapters


class DynamoUsageRepository(adapters.DynamoUsageRepository):
    def __init__(self, client: Any, usage_table: str, events_table: str) -> None:
        super().__init__(client, usage_table, events_table)
        self._profiles = DynamoAccountDirectory(client, usage_table)

    def put_profile(self, profile: AccountProfile) -> None:
        self._profiles.register(profile)
