"""Where the verification secrets come from: Secrets Manager through Powertools Parameters, cached ``max_age``.

Secret shapes (JSON):
- LiveKit keys: ``{"<api key>": "<api secret>", ...}`` - every pair listed is accepted (rotation);
- usage clients: ``{"<client id>": ["<secret>", ...], ...}`` - several secrets per client during rotation;
- Stripe: ``{"webhook_secrets": ["whsec_...", ...]}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class SecretConfigError(RuntimeError):
    """A secret is missing or malformed: an operator must fix it; senders get a 5xx and retry."""


class SecretSource(Protocol):
    def livekit_keys(self) -> Mapping[str, str]: ...

    def usage_secrets(self, client_id: str) -> Sequence[str]: ...

    def stripe_webhook_secrets(self) -> Sequence[str]: ...


def _string_map(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, dict) or not value:
        raise SecretConfigError(f"{what} must be a non-empty JSON object")
    if not all(isinstance(k, str) and isinstance(v, str) and k and v for k, v in value.items()):
        raise SecretConfigError(f"{what} must map non-empty strings to non-empty strings")
    return dict(value)


def _string_list(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise SecretConfigError(f"{what} must be a non-empty list of strings")
    return list(value)


def parse_livekit_keys(value: Any) -> dict[str, str]:
    return _string_map(value, "LiveKit keys secret")


def parse_usage_secrets(value: Any, client_id: str) -> list[str]:
    if not isinstance(value, dict):
        raise SecretConfigError("usage clients secret must be a JSON object")
    secrets = value.get(client_id)
    if secrets is None:
        return []
    return _string_list(secrets, f"usage secrets of client {client_id!r}")


def parse_stripe_secrets(value: Any) -> list[str]:
    if not isinstance(value, dict):
        raise SecretConfigError("Stripe secret must be a JSON object")
    return _string_list(value.get("webhook_secrets"), "Stripe webhook_secrets")


class ParametersSecretSource:
    """Secrets Manager via Powertools Parameters (in-memory cache, refreshed every ``max_age`` seconds)."""

    def __init__(self, livekit: str = "", usage: str = "", stripe: str = "", max_age: int = 300) -> None:
        self._names = {"livekit": livekit, "usage": usage, "stripe": stripe}
        self._max_age = max_age

    def _get(self, which: str) -> Any:
        from aws_lambda_powertools.utilities import parameters  # noqa: PLC0415 - loaded on first secret use

        name = self._names[which]
        if not name:
            raise SecretConfigError(f"no secret name configured for {which}")
        try:
            return parameters.get_secret(name, transform="json", max_age=self._max_age)
        except parameters.exceptions.TransformParameterError as exc:
            raise SecretConfigError(f"secret {name} is not valid JSON") from exc
        except parameters.exceptions.GetParameterError as exc:
            raise SecretConfigError(f"secret {name} could not be read") from exc

    def livekit_keys(self) -> Mapping[str, str]:
        return parse_livekit_keys(self._get("livekit"))

    def usage_secrets(self, client_id: str) -> Sequence[str]:
        return parse_usage_secrets(self._get("usage"), client_id)

    def stripe_webhook_secrets(self) -> Sequence[str]:
        return parse_stripe_secrets(self._get("stripe"))
