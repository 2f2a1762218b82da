"""One Logger and one Metrics per function (Powertools); business metrics per outcome."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

SERVICE = "webhook-ingest"
NAMESPACE = "KiloBilling"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


def count(name: str, value: int = 1) -> None:
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


SIGNATURE_CODES = frozenset(
    {
        "missing_signature",
        "bad_signature",
        "unknown_api_key",
        "expired_signature",
        "premature_signature",
        "missing_body_hash",
        "body_hash_mismatch",
        "signature_expired",
        "unknown_client",
        "missing_client",
    }
)


def rejected(source: str, status: int, code: str) -> None:
    """``WebhookRejected`` for every 4xx; ``SignatureRejected`` too when the signature failed (alarmed on spikes)."""
    count("WebhookRejected")
    if code in SIGNATURE_CODES:
        count("SignatureRejected")
    logger.warning("request rejected", extra={"source": source, "status": status, "code": code})
