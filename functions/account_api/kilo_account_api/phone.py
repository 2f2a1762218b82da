"""Proving the account's SMS number (pure; D160): a short code is sent to the number (``CodeSender``), stored only
as an HMAC under the server's key and a salt (``PhoneChallenges``), and confirmed within ``code_ttl`` in at most
``tries`` guesses; an account gets at most ``codes_per_window`` codes per ``window`` and ``codes_per_day`` a day, a
number at most ``codes_per_number_per_day`` codes per UTC day from all accounts together. Confirming marks the
profile's number verified (``kilo_billing.accounts.mark_phone_verified``); alerts text only a verified number.
Numbers are texted only in the regions of ``PhoneVerificationPolicy.regions`` (``SMS_REGIONS``, D212, D221):
a number is checked against them when it is saved (``check_sms_region``) and again before each code is sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from kilo_account_api.model import ConflictError, InvalidRequestError, PhoneChallenge, UnavailableError
from kilo_account_api.ports import CodeSender, PhoneChallenges
from kilo_billing.accounts import AccountDirectory, AccountProfile, InvalidContactError, mark_phone_verified
from kilo_billing.aws import StorageUnavailableError

CODE_DIGITS = 6


def _default_regions() -> frozenset[str]:
    from kilo_billing.sms_regions import DEFAULT_SMS_REGIONS  # noqa: PLC0415

    return DEFAULT_SMS_REGIONS


@dataclass(frozen=True, slots=True)
class PhoneVerificationPolicy:
    code_ttl: timedelta = timedelta(minutes=10)
    tries: int = 5
    codes_per_window: int = 3
    window: timedelta = timedelta(hours=1)
    codes_per_day: int = 10  # per account over the last 24 h, whatever the numbers
    day: timedelta = timedelta(days=1)  # also how long the account's send times are kept
    codes_per_number_per_day: int = 3  # per number and UTC day, whatever the accounts
    # ISO regions whose numbers are texted (SMS_REGIONS; the layer's default, read when none is given: the sign-in
    # trigger imports this module's package and must not load kilo_billing.sms_regions for it)
    regions: frozenset[str] = field(default_factory=_default_regions)


def check_sms_region(number: str, regions: frozenset[str]) -> None:
    """``InvalidRequestError`` naming ``phone`` unless libphonenumber gives ``number`` one of ``regions`` and a mobile
    type (toll fraud: a code or an alert texted to any country's premium ranges is paid by us; D221 amended).
    The message names the number's region and the setting, or its type."""
    from kilo_billing.sms_regions import sms_region_refusal  # noqa: PLC0415  # a number checked: not on cold paths

    refusal = sms_region_refusal(number, regions)
    if refusal is not None:
        raise InvalidRequestError("phone", f"{refusal.reason(number)}: {refusal.advice}")


def random_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def code_hash(key: bytes, salt: str, phone: str, code: str) -> str:
    """HMAC-SHA256 under the server's key (Secrets Manager, not in the table: reading the table alone does not give
    a pending code away, there being only 10^6 codes) of the code's salt, number and code."""
    return hmac.new(key, bytes.fromhex(salt) + f"\x00{phone}\x00{code}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class PhoneCodes:
    """What sending and checking codes works with: the challenges' store, the SMS sender, the server's HMAC key (read
    on use: ``UnavailableError`` when it cannot be), the policy, and how a new code is drawn (tests fix it)."""

    challenges: PhoneChallenges
    sender: CodeSender
    key: Callable[[], bytes]
    policy: PhoneVerificationPolicy
    new_code: Callable[[], str] = random_code


def sms_text(code: str, policy: PhoneVerificationPolicy) -> str:
    minutes = int(policy.code_ttl.total_seconds() // 60)
    return f"Kilo Billing: your code is {code}. It confirms this number for billing alerts; expires in {minutes} min."


def send_code(profile: AccountProfile, codes: PhoneCodes, now: datetime) -> PhoneChallenge:
    """Send a new code to the account's (unverified) number; the previous code stops working. ``ConflictError``
    when the number is verified already or the account had its codes for this window."""
    challenges, sender, policy = codes.challenges, codes.sender, codes.policy
    if not profile.phone:
        raise InvalidRequestError("phone", "the account has no phone number: save one first")
    if profile.phone_verified:
        raise ConflictError(f"phone {profile.phone!r} is verified already")
    check_sms_region(profile.phone, policy.regions)  # again: the list may have changed since the number was saved
    previous = challenges.current(profile.account_id)
    today = tuple(at for at in (previous.sent_at if previous else ()) if at > now - policy.day)
    for limit, span in ((policy.codes_per_window, policy.window), (policy.codes_per_day, policy.day)):
        recent = [at for at in today if at > now - span]
        if len(recent) >= limit:
            raise ConflictError(
                f"{len(recent)} codes were sent in the last {_duration(span)}; ask again after "
                f"{min(recent) + span:%Y-%m-%d %H:%M:%S} UTC"
            )
    if sender.opted_out(profile.phone):  # checked before anything is stored or counted
        raise InvalidRequestError(
            "phone", f"{profile.phone} opted out of SMS (replied STOP): no code can be texted to it"
        )
    secret = codes.key()  # read before anything is stored or counted (UnavailableError: no code now)
    day = now.astimezone(UTC).date()
    if not challenges.take_number_code(profile.phone, day, policy.codes_per_number_per_day):
        raise ConflictError(
            f"{profile.phone} was sent {policy.codes_per_number_per_day} codes today; ask again after "
            f"{day + timedelta(days=1):%Y-%m-%d} 00:00:00 UTC"
        )
    code = codes.new_code()
    salt = secrets.token_hex(16)
    challenge = PhoneChallenge(
        account_id=profile.account_id,
        phone=profile.phone,
        salt=salt,
        code_hash=code_hash(secret, salt, profile.phone, code),
        code_expires_at=now + policy.code_ttl,
        tries_left=policy.tries,
        sent_at=(*today, now),
    )
    try:
        challenges.replace(challenge, previous)  # stored before it is sent: the code works as soon as it arrives
    except Exception:
        _give_back(challenges, profile.phone, day)
        raise
    try:
        sender.send(profile.phone, sms_text(code, policy))
    except Exception:
        # nothing was texted: the previous challenge comes back, or none pending and nothing counted (a code never
        # delivered neither counts nor blocks the next ask); unless another request stored a code meanwhile or the
        # table is out too (then this one counts)
        with contextlib.suppress(ConflictError, StorageUnavailableError):
            challenges.replace(previous or _nothing_pending(challenge), challenge)
        _give_back(challenges, profile.phone, day)
        raise
    return challenge


def _give_back(challenges: PhoneChallenges, phone: str, day: date) -> None:
    """The number's code for ``day`` was taken but none went out: it no longer counts (unless the table is out)."""
    with contextlib.suppress(StorageUnavailableError):
        challenges.give_back_number_code(phone, day)


def confirm_code(
    accounts: AccountDirectory, profile: AccountProfile, codes: PhoneCodes, code: str, now: datetime
) -> AccountProfile:
    """Check ``code`` against the pending one for the account's number (each guess spends a try first); when it
    matches, the number is verified (and the code used up). ``InvalidRequestError`` naming ``code`` otherwise."""
    challenges = codes.challenges
    if profile.phone_verified:
        return profile
    challenge = challenges.current(profile.account_id)
    if challenge is None or not profile.phone or challenge.phone != profile.phone or challenge.tries_left <= 0:
        raise InvalidRequestError("code", "no code is pending for the account's number: ask for a new one")
    if now >= challenge.code_expires_at:
        raise InvalidRequestError("code", "the code has expired: ask for a new one")
    secret = codes.key()  # before the try is spent: a key that cannot be read costs no guess
    challenges.spend_try(challenge)
    if not hmac.compare_digest(code_hash(secret, challenge.salt, challenge.phone, code), challenge.code_hash):
        left = challenge.tries_left - 1
        hint = f"{left} {'try' if left == 1 else 'tries'} left" if left else "no tries left: ask for a new one"
        raise InvalidRequestError("code", f"the code is wrong; {hint}")
    try:
        verified = mark_phone_verified(accounts, profile.account_id, challenge.phone)
    except InvalidContactError as exc:  # the number changed between the read and the save
        raise InvalidRequestError("phone", str(exc)) from exc
    # used up, kept for the rate window; a code sent meanwhile stays pending (the number is verified all the same)
    with contextlib.suppress(ConflictError):
        challenges.replace(replace(challenge, tries_left=0), challenge)
    return verified


@dataclass(frozen=True, slots=True)
class SavedNumberCode:
    """What saving the alert preferences did about the number's code: ``sent`` (a new code), ``pending`` (the code
    sent before still works), ``not_sent`` (``reason`` says why: the account's limit, SNS refused the number or was
    unreachable; the save stands, the person asks for a code later)."""

    status: Literal["sent", "pending", "not_sent"]
    reason: str = ""


def code_for_saved_number(profile: AccountProfile, codes: PhoneCodes, now: datetime) -> SavedNumberCode | None:
    """After the alert preferences were saved: send a code to an unverified number unless one for that number is
    still pending (saving the form again sends nothing new). Never raises for the code: the preferences are saved
    already, so a code that could not be sent is an outcome (``not_sent``), not the save's error. ``None`` when
    there is no number or it is verified."""
    if not profile.phone or profile.phone_verified:
        return None
    try:
        pending = codes.challenges.current(profile.account_id)
        if pending and pending.phone == profile.phone and pending.tries_left > 0 and now < pending.code_expires_at:
            return SavedNumberCode("pending")
        send_code(profile, codes, now)
    except (ConflictError, InvalidRequestError) as exc:
        return SavedNumberCode("not_sent", str(exc))
    except (UnavailableError, StorageUnavailableError):
        return SavedNumberCode("not_sent", "the SMS service could not be reached; ask for a new code later")
    return SavedNumberCode("sent")


def _nothing_pending(challenge: PhoneChallenge) -> PhoneChallenge:
    """The stored stand-in for "no code pending, none sent" (written over a challenge whose code was never sent)."""
    return replace(challenge, phone="", code_hash="", tries_left=0, sent_at=())


def _duration(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    return f"{minutes // 60} h" if minutes % 60 == 0 else f"{minutes} min"
