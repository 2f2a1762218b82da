"""`kilo-billing` CLI: the documented outputs and the exit status 2 on bad input."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kilo_billing.aws import StorageUnavailableError
from kilo_billing_cli import accounts, arguments
from kilo_billing_cli.main import main
from tests.conftest import Stack


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_given_team_and_60000_video_minutes_when_estimating_then_10000_billable_at_0_00072(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = run_json(capsys, "estimate", "--tier", "team", "--video-minutes", "60000", "--period", "2026-11")
    assert isinstance(result, dict)
    assert result["tier"] == "team"
    assert result["fee"] == "29.00"
    assert result["total"] == "36.20"
    assert result["currency"] == "USD"
    video = next(line for line in result["lines"] if line["meter"] == "video")
    assert video == {
        "meter": "video",
        "used": "60000",
        "included": "50000",
        "billable": "10000",
        "unit_price": "0.00072",
        "amount": "7.20",
    }
    assert [line["meter"] for line in result["lines"]] == ["video", "audio", "messages", "data_transfer"]


def test_given_no_tier_when_estimating_then_all_tiers_side_by_side_and_cheapest_recommended(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = run_json(capsys, "estimate", "--video-minutes", "60000", "--data-gb", "1.234")
    assert isinstance(result, dict)
    totals = {estimate["tier"]: estimate["total"] for estimate in result["estimates"]}
    # personal: 55000 x 0.00072 = 39.60; team: 29 + 7.20; enterprise: 99
    assert totals == {"personal": "39.60", "team": "36.20", "enterprise": "99.00"}
    assert result["recommended"] == "team"
    data = next(line for line in result["estimates"][0]["lines"] if line["meter"] == "data_transfer")
    assert data["used"] == "1.24"  # 1.234 GB rounds up to the next 0.01 GB


def test_given_light_usage_when_comparing_then_free_tier_recommended(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_json(capsys, "estimate", "--audio-minutes", "100")
    assert isinstance(result, dict)
    assert result["recommended"] == "personal"
    enterprise = next(estimate for estimate in result["estimates"] if estimate["tier"] == "enterprise")
    assert all(line["included"] is None for line in enterprise["lines"])


@pytest.mark.parametrize(
    ("users", "mix", "overage", "expected"),
    [
        ("100", "personal=60,team=30,enterprise=10", "200", "2060.00"),
        ("1000", "personal=60,team=30,enterprise=10", "2000", "20600.00"),
    ],
)
def test_given_the_policy_projections_then_revenue_reproduces(
    capsys: pytest.CaptureFixture[str], users: str, mix: str, overage: str, expected: str
) -> None:
    result = run_json(capsys, "projections", "--users", users, "--mix", mix, "--overage-usd", overage)
    assert isinstance(result, dict)
    assert result["total"] == expected


def test_given_projection_without_json_then_table_shows_the_total(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["projections", "--users", "100", "--mix", "personal=60,team=30,enterprise=10", "--overage-usd", "200"])
        == 0
    )
    assert "2060.00" in capsys.readouterr().out


def test_given_catalog_json_then_prices_are_derived_strings(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_json(capsys, "catalog")
    assert isinstance(result, dict)
    assert result["markup"] == "1.2"
    assert {m["meter"]: m["unit_price"] for m in result["meters"]} == {
        "video": "0.00072",
        "audio": "0.00036",
        "messages": "0.00012",
        "data_transfer": "0.00012",
    }
    assert [tier["id"] for tier in result["tiers"]] == ["personal", "team", "enterprise"]


def test_given_human_output_then_tables_render(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["catalog"]) == 0
    assert main(["estimate", "--tier", "enterprise", "--video-minutes", "5"]) == 0
    out = capsys.readouterr().out
    assert "0.00072" in out
    assert "unlimited" in out
    assert "$99.00" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["estimate", "--tier", "gold"], "unknown tier 'gold'"),
        (["estimate", "--video-minutes", "-5"], "--video-minutes must be >= 0"),
        (["estimate", "--audio-minutes", "ten"], "--audio-minutes must be a whole number"),
        (["estimate", "--messages", "1.5"], "--messages must be a whole number"),
        (["estimate", "--data-gb", "abc"], "--data-gb must be a number"),
        (["estimate", "--data-gb", "-0.5"], "--data-gb must be >= 0"),
        (["estimate", "--data-gb", "nan"], "--data-gb must be a finite number"),
        (["estimate", "--period", "2026-13"], "month must be 1..12"),
        (["projections", "--users", "10", "--mix", "personal=60,team=30"], "tier mix must sum to 100, got 90"),
        (["projections", "--users", "10", "--mix", "personal=50,gold=50"], "unknown tier 'gold'"),
        (["projections", "--users", "10", "--mix", "personal"], "mix entries look like tier=percent"),
        (["projections", "--users", "10", "--mix", "personal=x,team=100"], "share of personal must be a number"),
        (["projections", "--users", "-1", "--mix", "personal=100"], "--users must be >= 0"),
        (
            ["projections", "--users", "10", "--mix", "personal=100", "--overage-usd", "-3"],
            "--overage-usd must be >= 0",
        ),
        (["projections", "--mix", "personal=100"], "--users"),
        (["projections", "--users", "1000", "--mix", "personal=600,team=300,enterprise=100"], "must sum to 100"),
        (["rating", "replay", "--queue-url", "q", "--max-messages", "0"], "--max-messages must be >= 1, got 0"),
        (["rating", "replay", "--queue-url", "q", "--window-margin-minutes", "x"], "must be a whole number, got 'x'"),
    ],
)
def test_given_bad_input_then_exit_status_2_names_the_problem(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1e30", "1E+30 is too large for an amount (more than 28 digits in cents)"),  # before: InvalidOperation
        ("1.005", "amount must be positive whole cents, got '1.005'"),
        ("NaN", "amount must be positive whole cents, got 'NaN'"),
        ("-Infinity", "amount must be positive whole cents, got '-Infinity'"),
        ("0", "amount must be positive whole cents, got '0'"),
        ("ten", "amount must be a number of dollars, got 'ten'"),
    ],
)
def test_given_an_amount_option_that_is_not_positive_whole_cents_then_its_error_names_it(
    text: str, message: str
) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=f"^{re.escape(message)}$"):
        arguments.money(text)


def test_given_an_amount_option_with_a_huge_exponent_then_the_cli_refuses_it_promptly() -> None:
    # arguments.money before: is_whole_cents did not finish in 15 s on either
    code = (
        "import argparse; from kilo_billing_cli import arguments\n"
        "for text in ('1e-99999999', '1e99999999'):\n"
        "    try:\n"
        "        arguments.money(text)\n"
        "    except argparse.ArgumentTypeError as exc:\n"
        "        print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=10, check=True)
    assert done.stdout.splitlines() == [
        "amount must be positive whole cents, got '1e-99999999'",
        "1E+99999999 is too large for an amount (more than 28 digits in cents)",
    ]


def test_given_an_amount_option_in_whole_cents_then_it_reads_as_dollars_and_cents() -> None:
    assert [str(arguments.money(text)) for text in ("1E+2", "2.5", "0.01")] == ["100.00", "2.50", "0.01"]


def test_given_the_installed_console_script_then_it_runs() -> None:
    script = Path(sys.executable).with_name("kilo-billing")
    result = subprocess.run(
        [str(script), "estimate", "--tier", "team", "--video-minutes", "60000", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["total"] == "36.20"
    bad = subprocess.run([str(script), "estimate", "--tier", "gold"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2
    assert "unknown tier" in bad.stderr


def _pending_line(refunded: str, made: str) -> str:
    """``invoice refund``'s exit-4 line: acct-a's March 65.20 asked (request ``acct-a/2026-03/refund/1``, 0.00 refunded
    when it was made), Stripe down after making ``made`` of it; our invoice now records ``refunded``."""
    from kilo_billing_cli.invoices import _unavailable  # noqa: PLC0415
    from kilo_invoice.ports import GatewayPartlyUnavailableError  # noqa: PLC0415

    pending = SimpleNamespace(amount=Decimal("65.20"), refunded_before=Decimal("0.00"), refund_id=REQUEST)
    after: Any = SimpleNamespace(refunded=Decimal(refunded), refund_pending=pending)
    return _unavailable(GatewayPartlyUnavailableError("down", Decimal(made)), after, Decimal(made), None)


REQUEST = "acct-a/2026-03/refund/1"
FINISH = (
    f"run again to finish it - the same request ({REQUEST}), so what Stripe made of it is counted and nothing is sent "
    "twice"
)


@pytest.mark.parametrize(
    "refunded",
    [
        "0.00",  # nothing recorded since the request (the 25.20 not recorded yet)
        "25.20",  # the 25.20's charge.refunded recorded meanwhile
        "30.00",  # a 30.00 dashboard refund recorded meanwhile, our 25.20 not: 30.00 - 0.00 >= 25.20 said "recorded"
    ],
)
def test_given_part_of_a_pending_refund_made_when_stripe_fails_then_the_line_says_it_made_without_guessing_recorded(
    refunded: str,
) -> None:
    """Review rh3 (D358 amended): "not recorded yet" or not was read from refunded - refunded_before, which an outside
    refund or a failure recorded meanwhile moves too. Now the line says what Stripe said it made (25.20) and nothing of
    whether our invoice has recorded it, whatever it records."""
    assert _pending_line(refunded, "25.20") == (
        "Stripe could not be reached (down): the refund of 65.20 is pending (Stripe made 25.20 of it before the "
        f"failure); {FINISH}"
    )


@pytest.mark.parametrize(
    "refunded",
    [
        "0.00",  # before: 0.00 - 0.00 >= 0.00, "Stripe made 0.00 of it"
        "-25.20",  # a made part's failure recorded meanwhile: before, "0.00 of it made ..., not recorded yet"
    ],
)
def test_given_nothing_of_a_pending_refund_made_when_stripe_fails_then_the_line_names_no_made_part(
    refunded: str,
) -> None:
    """Review rh3 (D358 amended): Stripe made 0.00 of the request (a part made then failed at the bank is named by the
    error's own words): the line says nothing of a made part."""
    assert (
        _pending_line(refunded, "0.00")
        == f"Stripe could not be reached (down): the refund of 65.20 is pending; {FINISH}"
    )


def test_given_a_table_that_does_not_exist_then_exit_2_naming_the_setting_not_4_rerun(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review v2c (2): `--usage-table kilo-typo` (no such table: ResourceNotFoundException) exited 4 "storage
    unavailable: ...; rerun", and a script retrying on 4 looped for ever. A rerun fails the same way: exit 2, one
    line naming the setting, no "rerun"."""
    code = main(["account", "budget", "--account", "acct_a", "--hard-limit-usd", "100", "--usage-table", "kilo-typo"])
    assert code == 2
    assert capsys.readouterr().err == (
        "kilo-billing: a table or event bus this command uses does not exist (--usage-table 'kilo-typo'): "
        "ResourceNotFoundException; fix the name, then rerun\n"
    )


@pytest.mark.parametrize(
    ("code", "exit_code", "line"),
    [
        (
            "AccessDeniedException: not authorized",
            2,
            "access denied to a table or event bus this command uses (--usage-table 'kilo-usage'): "
            "AccessDeniedException; fix the credentials' permissions",
        ),
        ("ThrottlingException", 4, "storage unavailable: ThrottlingException; rerun"),
    ],
)
def test_given_access_denied_then_exit_2_while_throttling_still_exits_4_rerun(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, code: str, exit_code: int, line: str
) -> None:
    """Access denied is configuration too (the credentials' policy): exit 2; a throttled or failing AWS still 4."""

    def refused(_args: argparse.Namespace, _catalog: object) -> None:
        raise StorageUnavailableError(code)

    monkeypatch.setattr(accounts, "run", refused)
    assert main(["account", "budget", "--account", "acct_a", "--hard-limit-usd", "100", "--usage-table",
                 "kilo-usage"]) == exit_code  # fmt: skip
    assert capsys.readouterr().err == f"kilo-billing: {line}\n"


class _EventsRefusing:
    """An ``events`` client whose ``put_events`` raises the AWS error ``code`` (as botocore does)."""

    def __init__(self, code: str) -> None:
        self.code = code

    def put_events(self, **_: object) -> dict[str, Any]:
        from botocore.exceptions import ClientError  # noqa: PLC0415

        raise ClientError({"Error": {"Code": self.code, "Message": "x"}}, "PutEvents")


def _not_published(code: str, capsys: pytest.CaptureFixture[str], **command: str) -> tuple[int, str]:
    """The exit status and stderr line of ``main`` for a ``PublishError`` raised by the real publisher on ``code``."""
    return _published_on(_EventsRefusing(code), "bad bus!", capsys, **command)


def test_given_a_bus_name_aws_rejects_then_a_publish_failure_exits_2_fix_the_bus_not_4_wait(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Review r2 (2): a bus name AWS rejects (``ValidationException``) arrives as ``InvalidRequestError``; the code
    read was "InvalidRequestError", so it exited 4 "wait until the bus answers" - no wait fixes a bad name: exit 2,
    "fix --event-bus" (D362 amended)."""
    status, err = _not_published(
        "ValidationException", capsys, command="crypto", crypto_command="resolve", payment_id="p"
    )
    assert status == 2
    assert "fix --event-bus 'bad bus!'" in err
    assert "wait until the bus answers" not in err


def test_given_rating_replay_apply_failing_to_publish_then_the_line_says_rerun_after_15_minutes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Review r2 (3): ``rating replay --apply`` receives up to --max-messages at once, each hidden 900 s; the line said
    "then rerun", but a rerun within 900 s = 15 minutes finds none of them and exits 0. The line says when."""
    status, err = _not_published("ThrottlingException", capsys, command="rating", rating_command="replay")
    assert status == 4
    assert "rerun after 15 minutes" in err  # 900 s / 60 = 15 min, the visibility timeout of --apply
    assert "then rerun" not in err


_RESOLVE = {"command": "crypto", "crypto_command": "resolve", "payment_id": "ethereum:0xlate:0"}
# the line for ``crypto resolve ethereum:0xlate:0`` around the reason and the fix (main._not_published_line)
_RESOLVE_LINE = (
    "kilo-billing: crypto resolve ethereum:0xlate:0: saved; its event was not sent ({reason}): a rerun is refused (not "
    "in review); the next crypto watcher run announces the paid bill (CryptoBillSettled.v1) - {fix} before the next "
    "command\n"
)
# the line for ``crypto resolve ethereum:0xlate:0`` when EventBridge refused the event's content (main._refused_line)
_RESOLVE_REFUSED_LINE = (
    "kilo-billing: crypto resolve ethereum:0xlate:0: saved; its event was not sent ({reason}): a rerun is refused (not "
    "in review); EventBridge refused the event itself, not the bus name, and refuses it each time it is sent (the "
    "crypto watcher's runs too): nothing re-sends it - report it\n"
)


def _published_on(
    client: Any, bus: str, capsys: pytest.CaptureFixture[str], source: str = "kilo.crypto", **command: str
) -> tuple[int, str]:
    """The exit status and stderr line of ``main`` for the real publisher's ``PublishError`` on ``client``, for
    ``command`` (default: ``crypto resolve ethereum:0xlate:0``)."""
    from kilo_billing.publisher import EventBridgePublisher, PublishError  # noqa: PLC0415
    from kilo_billing_cli import main as cli  # noqa: PLC0415

    with pytest.raises(PublishError) as raised:
        EventBridgePublisher(client, bus, source).publish("CryptoBillSettled.v1", {"invoice_id": "inv-1"})
    namespace = argparse.Namespace(event_bus=bus, **(command or _RESOLVE))
    return cli._not_published("kilo-billing", raised.value, namespace), capsys.readouterr().err


def _stubbed_events() -> tuple[Any, Any]:
    """A botocore ``events`` client and its active Stubber (moto checks no entry size and never answers
    SerializationException: ``moto/events/models.py`` ``put_events``)."""
    import boto3  # noqa: PLC0415
    from botocore.stub import Stubber  # noqa: PLC0415

    client = boto3.client("events", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    stubber = Stubber(client)
    stubber.activate()
    return client, stubber


@pytest.mark.parametrize(
    ("code", "message"),
    [
        # an entry over EventBridge's size limit: the request refused as a whole
        ("ValidationException", "Total size of the entries in the request is over the limit."),
        # the body not the JSON PutEvents takes (AWS's JSON-protocol wording)
        ("SerializationException", "Start of structure or map found where not expected."),
    ],
)
def test_given_eventbridge_refusing_the_event_itself_then_the_line_names_its_code_and_message_not_fix_the_bus(
    capsys: pytest.CaptureFixture[str], code: str, message: str
) -> None:
    """Review cl (b): every ``InvalidRequestError`` cause read "fix --event-bus" - but 'kilo-billing-test' is a valid
    bus name (the model's pattern ``[\\.\\-_A-Za-z0-9]+``): the event itself was refused. Exit 2 still (no rerun sends
    it, D362), with EventBridge's own code and message."""
    client, stubber = _stubbed_events()
    stubber.add_client_error("put_events", code, message, http_status_code=400)
    status, err = _published_on(client, "kilo-billing-test", capsys)
    assert status == 2
    assert err == _RESOLVE_REFUSED_LINE.format(reason=f"{code}: {message}")


def test_given_eventbridge_failing_the_entry_with_a_non_retryable_code_then_exit_2_naming_it_not_4_wait(
    aws: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review cl (b): moto fails an entry without a Source (``InvalidArgument``, one of the ``PutEventsResultEntry``
    codes botocore's model documents as non-retryable). Before: exit 4 "wait until the bus answers", code only."""
    import boto3  # noqa: PLC0415

    status, err = _published_on(boto3.client("events"), "kilo-billing-test", capsys, source="")
    assert status == 2
    reason = "InvalidArgument: Parameter Source is not valid. Reason: Source is a required argument."
    assert err == _RESOLVE_REFUSED_LINE.format(reason=reason)


def test_given_eventbridge_failing_the_entry_with_a_retryable_code_then_exit_4_wait_with_its_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``InternalFailure`` in an entry is retryable (botocore's model): exit 4 as before, the message now named."""
    client, stubber = _stubbed_events()
    failed = {"ErrorCode": "InternalFailure", "ErrorMessage": "Internal service error."}
    stubber.add_response("put_events", {"FailedEntryCount": 1, "Entries": [failed]})
    status, err = _published_on(client, "kilo-billing-test", capsys)
    assert status == 4
    reason = "InternalFailure: Internal service error."
    assert err == _RESOLVE_LINE.format(reason=reason, fix="wait until the bus answers")


def test_given_a_bus_that_does_not_exist_then_fix_the_bus_with_exit_2(
    aws: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """moto's ``ResourceNotFoundException`` for a bus never created, should PutEvents answer it: exit 2 "fix
    --event-bus". Only moto answers so: real EventBridge has been reported to answer success for a bus that does not
    exist (``FailedEntryCount`` 0, an ``EventId``: aws/aws-cli#9186, aws/aws-sdk#186), so this line is not what
    protects a typo - the commands ask for the bus (``DescribeEventBus``) before they write (kilo_billing_cli/bus.py;
    tests/integration/test_crypto_core_cli.py)."""
    import boto3  # noqa: PLC0415

    status, err = _published_on(boto3.client("events"), "kilo-typo-bus", capsys)
    assert status == 2
    assert err == _RESOLVE_LINE.format(reason="ResourceNotFoundException", fix="fix --event-bus 'kilo-typo-bus'")


@pytest.mark.parametrize("unreadable", ["service model", "shape"])
def test_given_botocore_model_not_read_as_expected_then_a_validation_exception_falls_back_to_fix_the_bus(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, unreadable: str
) -> None:
    """Review cl2 (1): the bus-name rule was read from botocore's shape ``NonPartnerEventBusNameOrArn`` unguarded;
    botocore floats within 1.44.x, and a renamed shape made the handler itself raise (a traceback, exit 1) after the
    command wrote. Any failure reading the model now answers as before the model was read: exit 2 "fix --event-bus"."""
    import botocore.session  # noqa: PLC0415
    from botocore.model import NoShapeFoundError  # noqa: PLC0415

    class _Model:
        def shape_for(self, name: str) -> Any:
            raise NoShapeFoundError(name)

    class _Session:
        def get_service_model(self, service: str) -> Any:
            if unreadable == "service model":
                raise RuntimeError(f"no model for {service}")
            return _Model()

    client, stubber = _stubbed_events()
    stubber.add_client_error("put_events", "ValidationException", "Total size is over the limit.", 400)
    monkeypatch.setattr(botocore.session, "get_session", _Session)
    status, err = _published_on(client, "kilo-billing-test", capsys)
    assert status == 2
    assert err == (
        "kilo-billing: crypto resolve ethereum:0xlate:0: saved; its event was not sent (ValidationException): a rerun "
        "is refused (not in review); the next crypto watcher run announces the paid bill (CryptoBillSettled.v1) - fix "
        "--event-bus 'kilo-billing-test' before the next command\n"
    )


_ASSIGN = {"command": "crypto", "crypto_command": "assign", "payment_id": "ethereum:0xabc:0"}
_REPLAY = {"command": "rating", "rating_command": "replay"}


@pytest.mark.parametrize(
    ("command", "seen_sent", "line"),
    [
        (
            _RESOLVE,
            None,
            "crypto resolve ethereum:0xlate:0: saved; its event was not sent (MalformedDetail: Detail is malformed.): "
            "a rerun is refused (not in review); EventBridge refused the event itself, not the bus name, and refuses "
            "it each time it is sent (the crypto watcher's runs too): nothing re-sends it - report it",
        ),
        (
            _ASSIGN,
            True,
            "crypto assign ethereum:0xabc:0: saved; its CryptoPaymentSeen.v1 was sent, the paid bill's event "
            "(CryptoBillSettled.v1 or CryptoCreditAdded.v1) was not (MalformedDetail: Detail is malformed.): a rerun "
            "is refused (already attributed); EventBridge refused the event itself, not the bus name, and refuses it "
            "each time it is sent (the crypto watcher's runs too): nothing re-sends it - report it",
        ),
        (
            _ASSIGN,
            False,
            "crypto assign ethereum:0xabc:0: saved; its event was not sent (MalformedDetail: Detail is malformed.), "
            "nor the paid bill's (CryptoBillSettled.v1 or CryptoCreditAdded.v1) if it paid one: a rerun is refused "
            "(already attributed); EventBridge refused the event itself, not the bus name, and refuses it each time "
            "it is sent: nothing re-sends the CryptoPaymentSeen.v1 - report it, tell the customer; the next crypto "
            "watcher run sends the bill's",
        ),
        (
            _ASSIGN,
            None,
            "crypto assign ethereum:0xabc:0: saved; an event was not sent (MalformedDetail: Detail is malformed.) and "
            "the payment could not be read back to say which: a rerun is refused (already attributed); EventBridge "
            "refused the event itself, not the bus name, and refuses it each time it is sent: either the "
            "CryptoPaymentSeen.v1 (nothing re-sends it - tell the customer; the next crypto watcher run sends the "
            "paid bill's event, if any) or, that one sent, the paid bill's event (CryptoBillSettled.v1 or "
            "CryptoCreditAdded.v1: the crypto watcher's runs are refused too) - report it",
        ),
        (
            _REPLAY,
            None,
            "an event was not sent (MalformedDetail: Detail is malformed.): what was written before it stays; "
            "EventBridge refused the event itself, not the bus name, and refuses it each time it is sent (a rerun "
            "too): nothing re-sends it - report it; its message stays on the queue (not deleted), and a run skips it "
            "and replays the others; the other messages received and not replayed are visible on the queue again "
            "after 15 minutes: rerun then for them",
        ),
    ],
)
def test_given_eventbridge_refusing_the_content_then_no_line_says_a_rerun_or_the_watcher_sends_it(
    capsys: pytest.CaptureFixture[str], command: dict[str, str], seen_sent: bool | None, line: str
) -> None:
    """Review cl2 (2): an event refused for its content (here an entry's ``MalformedDetail``) is refused again each
    time it is sent, yet the lines said "rerun after 15 minutes" / "the next crypto watcher run sends it". Exit 2,
    and the line says nothing re-sends it: report it. (The retryable paths keep their wording: the tests above.)
    Review rclx: the replay run stops at that message - it stays on the queue (``kilo_rate_usage.replay`` deletes a
    message only once rated, and its rerun re-publishes the refused event) - and the other messages received stay
    hidden ``900 s // 60 = 15`` minutes: "rerun after 15 minutes" is true for them; an assignment whose payment was
    not read back (``seen_sent`` None) does not know which event was refused, so it names both cases."""
    from kilo_billing.publisher import EventBridgePublisher, PublishError  # noqa: PLC0415
    from kilo_billing_cli import crypto  # noqa: PLC0415
    from kilo_billing_cli import main as cli  # noqa: PLC0415

    client, stubber = _stubbed_events()
    failed = {"ErrorCode": "MalformedDetail", "ErrorMessage": "Detail is malformed."}
    stubber.add_response("put_events", {"FailedEntryCount": 1, "Entries": [failed]})
    with pytest.raises(PublishError) as raised:
        EventBridgePublisher(client, "kilo-billing-test", "kilo.crypto").publish("CryptoBillSettled.v1", {"a": 1})
    error = raised.value if seen_sent is None else crypto.AssignmentNotPublishedError(raised.value, seen_sent)
    namespace = argparse.Namespace(event_bus="kilo-billing-test", **command)
    assert cli._not_published("kilo-billing", error, namespace) == 2
    assert capsys.readouterr().err == f"kilo-billing: {line}\n"


@pytest.mark.parametrize("code", ["NotAuthorizedForSourceException", "NotAuthorizedForDetailTypeException"])
def test_given_an_entry_not_authorized_for_its_source_then_the_access_denied_wording_not_the_event_itself(
    capsys: pytest.CaptureFixture[str], code: str
) -> None:
    """Review cl2 (3): an IAM ``events:source``/``events:detail-type`` condition refusing the entry is a permission of
    the credentials, not the event's content: D362's access-denied wording (fix the credentials' permissions), exit 2
    still; the crypto watcher's own role re-sends the bill's event, so that part of the line stays."""
    client, stubber = _stubbed_events()
    failed = {"ErrorCode": code, "ErrorMessage": "Not authorized."}
    stubber.add_response("put_events", {"FailedEntryCount": 1, "Entries": [failed]})
    status, err = _published_on(client, "kilo-billing-test", capsys)
    assert status == 2
    fix = "fix the credentials' permissions to send to --event-bus 'kilo-billing-test'"
    assert err == _RESOLVE_LINE.format(reason=f"{code}: Not authorized.", fix=fix)
