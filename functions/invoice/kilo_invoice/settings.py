"""Settings of the invoice functions (pydantic-settings: read once from the environment, validated, cached). Names,
URLs and the grace window only; the Stripe API key is read from Secrets Manager at runtime (the secret it names)."""

from __future__ import annotations

from datetime import timedelta
from functools import cache

from pydantic import Field, field_validator

from kilo_billing.events import stage_livemode
from kilo_billing.settings import FunctionSettings


class InvoiceSettings(FunctionSettings):
    """The base's AWS call budget (a close is a few calls; the worker's timeout holds a batch of 10) and secret reuse
    (the Stripe API key), and:"""

    usage_table_name: str  # profiles, rating's aggregates, our invoices (docs/decisions.md, invoices in the account)
    event_bus_name: str = ""  # InvoiceIssued.v1, PaymentFailed.v1, DisputeOpened.v1
    events_table_name: str = ""  # the payment-status handler reads the verified Stripe event stored by ingest
    invoice_close_queue_url: str = ""  # the starter puts one close job per account on it
    # a period closes this long after it ends (late LiveKit webhooks, rating catching up)
    invoice_grace_hours: int = Field(default=6, ge=0, le=240)
    # Secrets Manager: JSON {"api_key": "sk_live_..." | "rk_live_..."[, "api_base": "<stand-in URL>"]}
    stripe_api_key_secret_name: str = ""
    # the stage's Stripe mode (the template's StripeLiveMode): the payment-status handler applies no event of the
    # other mode nor of a Stripe Connect account (D349)
    stripe_livemode: bool = False  # exactly "true" or "false", as ingest reads it (``stage_livemode``)
    stripe_automatic_tax: bool = False  # Stripe Tax on invoices (the customer's address comes from Checkout)
    stripe_max_network_retries: int = Field(default=2, ge=0, le=5)
    # each Stripe attempt's timeout (the SDK's default, 80 s, outlasts the functions' 60 s and 120 s): 3 attempts of
    # 10 s and the SDK's back-off (0.5 s, 1 s) are 31.5 s at worst (the template sets it per function)
    stripe_timeout_seconds: float = Field(default=10, gt=0, le=30)
    # the queue-driven handlers (close jobs, payment events) start a job of a batch only with this much of the
    # invocation left (the first always): one Stripe call at worst (31.5 s) and the AWS calls around it
    job_reserve_seconds: float = Field(default=35, gt=0, le=60)

    @field_validator("stripe_livemode", mode="before")
    @classmethod
    def _stage_livemode(cls, value: object) -> object:
        return stage_livemode(value) if isinstance(value, str) else value

    @property
    def grace(self) -> timedelta:
        return timedelta(hours=self.invoice_grace_hours)


@cache
def settings() -> InvoiceSettings:
    return InvoiceSettings()  # values come from the environment
