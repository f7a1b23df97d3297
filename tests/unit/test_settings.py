"""Settings: flags beat DBQUOTA_* variables beat defaults; bad values fail clearly.

Checks that every knob has a unique flag and variable, that the CLI table documents each
of them, and that the README lists every flag (docs that match the code). Every number
has a range: a flag or variable out of it, or lease durations out of order, stop
``dbquota run`` with one usage line naming the flag, the range and the value (exit 2),
before anything starts; ``--help`` shows defaults as typed and each range.
"""

from __future__ import annotations

import argparse
import faulthandler
from pathlib import Path

import pytest

from dbquota import cli, settings
from dbquota.kits import logs

README = Path(__file__).resolve().parents[2] / "README.md"


def parse(argv: list[str], environ: dict[str, str]) -> settings.Settings:
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser, environ)
    return settings.from_namespace(parser.parse_args(argv))


def test_defaults_without_flags_or_environment() -> None:
    cfg = parse([], {})
    assert cfg == settings.Settings()
    assert cfg.breaker.failure_threshold == 5
    assert cfg.webhook.dev is False


def test_environment_overrides_default_and_flag_overrides_environment() -> None:
    env = {"DBQUOTA_BILLING_URL": "http://env:1", "DBQUOTA_BREAKER_FAILURE_THRESHOLD": "9"}
    cfg = parse([], env)
    assert cfg.billing.url == "http://env:1"
    assert cfg.breaker.failure_threshold == 9
    cfg = parse(["--billing-url", "http://flag:2", "--dev-webhook"], env)
    assert cfg.billing.url == "http://flag:2"
    assert cfg.webhook.dev is True
    assert cfg.breaker.failure_threshold == 9


def test_boolean_and_path_values_from_environment() -> None:
    cfg = parse([], {"DBQUOTA_DEV_WEBHOOK": "true", "DBQUOTA_BILLING_TOKEN_FILE": "/t"})
    assert cfg.webhook.dev is True
    assert cfg.billing.token_file == Path("/t")


def test_webhook_client_authentication_and_timeout_settings() -> None:
    cfg = parse(
        [
            "--webhook-client-ca=/etc/ca.pem",
            "--webhook-client-names",
            " a, b ,,",
            "--webhook-timeout=30",
        ],
        {},
    )
    assert cfg.webhook.client_ca == Path("/etc/ca.pem")
    assert cfg.webhook.client_names == ("a", "b")
    assert cfg.webhook.timeout == 30
    defaults = parse([], {}).webhook
    assert (defaults.client_ca, defaults.client_names, defaults.timeout) == (None, (), 10)
    with pytest.raises(argparse.ArgumentTypeError, match="from 1 to 30"):
        parse([], {"DBQUOTA_WEBHOOK_TIMEOUT": "31"})


@pytest.mark.parametrize(("text", "age"), [(None, 60.0), ("0", 0.0), ("1", 1.0), ("300.5", 300.5)])
def test_webhook_max_connection_age_is_0_or_at_least_a_second(text: str | None, age: float) -> None:
    argv = [] if text is None else [f"--webhook-max-connection-age={text}"]
    assert parse(argv, {}).webhook.max_connection_age == age


@pytest.mark.parametrize("text", ["0.5", "-1", "inf", "nan", "soon", ""])
def test_a_webhook_max_connection_age_out_of_range_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="0 or at least 1"):
        parse([], {"DBQUOTA_WEBHOOK_MAX_CONNECTION_AGE": text})


def test_bad_environment_value_names_the_problem() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected Admit or Deny"):
        parse([], {"DBQUOTA_NO_QUOTA_POLICY": "Maybe"})
    with pytest.raises(argparse.ArgumentTypeError, match="expected seconds above 0, got 'soon'"):
        parse([], {"DBQUOTA_REQUEST_TIMEOUT": "soon"})


def test_bad_flag_value_exits_with_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--breaker-failure-threshold", "many"])
    assert exc.value.code == 2
    assert "--breaker-failure-threshold" in capsys.readouterr().err


def test_every_knob_has_a_unique_flag_and_variable() -> None:
    knobs = list(settings.knobs())
    assert len({k.flag for k in knobs}) == len(knobs)
    assert len({k.env for k in knobs}) == len(knobs)
    assert all(k.env == "DBQUOTA_" + k.flag[2:].replace("-", "_").upper() for k in knobs)


def test_settings_command_prints_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["settings"]) == 0
    table = capsys.readouterr().out
    for knob in settings.knobs():
        assert f"`{knob.flag}`" in table
        assert f"`{knob.env}`" in table


def test_readme_documents_every_flag() -> None:
    text = README.read_text()
    missing = [k.flag for k in settings.knobs() if f"`{k.flag}`" not in text]
    switches = [k for k in settings.knobs() if isinstance(k.default, bool)]
    missing += [f"--no-{k.flag[2:]}" for k in switches if f"`--no-{k.flag[2:]}`" not in text]
    assert not missing, f"README.md lacks {missing}; paste `dbquota settings` into it"


def test_a_switch_is_documented_as_it_is_typed(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse takes no value after a switch (``--leader-election=false`` exits 2): the
    table names its ``--no-`` form, and its default as the variable takes it."""
    assert cli.main(["settings"]) == 0
    rows = {line.split(" | ")[1]: line for line in capsys.readouterr().out.splitlines()[2:]}
    row = rows["`DBQUOTA_LEADER_ELECTION`"]
    assert row.startswith("| `--leader-election`, `--no-leader-election` |")
    assert "| `true` |" in row
    parser = cli.build_parser()
    assert parser.parse_args(["run", "--no-leader-election"]).leases_leader_election is False
    (knob,) = [k for k in settings.knobs() if k.flag == "--leader-election"]
    assert knob.parse(row.split(" | ")[2].strip("`")) is True


def test_bad_environment_variable_stops_the_cli_with_a_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DBQUOTA_SYNC_INTERVAL", "often")
    assert cli.main(["settings"]) == 2
    assert "bad environment variable" in capsys.readouterr().err


def test_claim_kinds_are_checked_against_the_registry() -> None:
    assert parse([], {}).enforcement.claim_kinds == ("databaseclaims",)
    cfg = parse(["--claim-kinds", "cnpg, rds,cnpg"], {})
    assert cfg.enforcement.claim_kinds == ("cnpg", "rds")
    with pytest.raises(argparse.ArgumentTypeError, match="unknown claim kind 'mysql'; known"):
        parse([], {"DBQUOTA_CLAIM_KINDS": "databaseclaims,mysql"})
    with pytest.raises(argparse.ArgumentTypeError, match="no claim kind enabled"):
        parse([], {"DBQUOTA_CLAIM_KINDS": " , "})


def test_run_turns_on_faulthandler_before_the_operator_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dbquota.handlers import operating  # noqa: PLC0415 - as cli imports it, only for run

    calls: list[str] = []
    monkeypatch.setattr(faulthandler, "enable", lambda: calls.append("faulthandler"))
    monkeypatch.setattr(operating, "run", lambda _: calls.append("operator"))
    assert cli.main(["run"]) == 0
    # so that a segfault in a C extension leaves every thread's stack in the pod's log
    assert calls == ["faulthandler", "operator"]


def test_log_format_is_text_or_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse([], {}).log_format == "text"
    assert parse([], {"DBQUOTA_LOG_FORMAT": "json"}).log_format == "json"
    assert parse(["--log-format=text"], {"DBQUOTA_LOG_FORMAT": "json"}).log_format == "text"
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--log-format=xml"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --log-format: expected text or json, got 'xml'" in err


def test_a_bad_environment_variable_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DBQUOTA_LOG_FORMAT", "xml")
    assert cli.main(["settings"]) == 2
    err = capsys.readouterr().err
    assert "DBQUOTA_LOG_FORMAT: expected text or json, got 'xml'" in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [(["run"], "text"), (["run", "--log-format=json"], "json"), (["settings"], "text")],
)
def test_the_cli_sets_up_logging_in_the_format_asked_for(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], expected: str
) -> None:
    from dbquota.handlers import operating  # noqa: PLC0415 - as cli imports it, only for run

    asked: list[str] = []
    monkeypatch.setattr(logs, "setup", lambda log_format, **_: asked.append(log_format))
    monkeypatch.setattr(operating, "run", lambda _: None)
    monkeypatch.setattr(faulthandler, "enable", lambda: None)
    assert cli.main(argv) == 0
    assert asked == [expected]


def run_fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The error line of ``dbquota run ARGV``, which must exit 2 with usage, no traceback."""
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: dbquota run")
    assert "Traceback" not in err
    return err.splitlines()[-1]


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--request-timeout", "0", "seconds above 0"),
        ("--request-timeout", "nan", "seconds above 0"),
        ("--connect-timeout", "-1", "seconds above 0"),
        ("--rate-limit", "-5", "a number at least 0"),
        ("--max-concurrency", "0", "a whole number at least 1"),
        ("--sync-interval", "0", "seconds above 0"),
        ("--sync-interval", "inf", "seconds above 0"),
        ("--retry-attempts", "0", "a whole number at least 1"),
        ("--retry-timeout", "-1", "seconds at least 0"),
        ("--page-size", "0", "a whole number at least 1"),
        ("--page-size", "1.5", "a whole number at least 1"),
        ("--breaker-failure-threshold", "0", "a whole number at least 1"),
        ("--breaker-recovery-timeout", "0", "seconds above 0"),
        ("--breaker-window-size", "0", "a whole number at least 1"),
        ("--breaker-minimum-calls", "0", "a whole number at least 1"),
        ("--breaker-failure-rate", "7", "a number above 0 and at most 1"),
        ("--breaker-failure-rate", "0", "a number above 0 and at most 1"),
        ("--breaker-slow-call-duration", "0", "seconds above 0"),
        ("--breaker-slow-call-rate", "1.5", "a number above 0 and at most 1"),
        ("--breaker-slow-call-rate", "0", "a number above 0 and at most 1"),
        ("--cache-retention", "0", "seconds above 0"),
        ("--price-window", "-1", "seconds above 0"),
        ("--webhook-port", "65536", "a whole number from 0 to 65535"),
        ("--webhook-timeout", "0", "whole seconds from 1 to 30"),
        ("--reservation-grace", "0", "seconds above 0"),
        ("--max-reservations", "-1", "a whole number at least 0"),
        ("--resync-interval", "0", "seconds above 0"),
        ("--escrow-share", "1", "a number from 0 to below 1"),
        ("--lease-duration", "0", "seconds above 0"),
        ("--lease-renew-deadline", "-1", "seconds above 0"),
        ("--lease-retry-period", "0", "seconds above 0"),
        ("--shutdown-delay", "-1", "seconds at least 0"),
        ("--shutdown-delay", "inf", "seconds at least 0"),
        ("--metrics-port", "99999", "a whole number from 0 to 65535"),
        ("--metrics-port", "http", "a whole number from 0 to 65535"),
    ],
)
def test_a_number_out_of_range_stops_run_with_one_usage_line(
    capsys: pytest.CaptureFixture[str], flag: str, value: str, expected: str
) -> None:
    line = run_fails([f"{flag}={value}"], capsys)
    assert line == f"dbquota run: error: argument {flag}: expected {expected}, got {value!r}"


def test_every_number_has_a_range_that_holds_its_default() -> None:
    for knob in settings.knobs():
        if isinstance(knob.default, bool) or not isinstance(knob.default, int | float):
            continue
        if knob.flag == "--webhook-max-connection-age":  # 0 or at least 1: its own parser
            assert knob.bounds is None
            continue
        assert knob.bounds is not None, f"{knob.flag} has no range: give _knob minimum= etc."
        assert knob.default in knob.bounds, knob.flag
        assert knob.parse(str(knob.default)) == knob.default, knob.flag


def test_the_ends_of_each_range_are_taken() -> None:
    argv = [
        "--rate-limit=0",  # no cap
        "--rate-limit=0.5",  # one request every 2 s
        "--webhook-port=0",
        "--metrics-port=65535",
        "--breaker-failure-rate=1",
        "--breaker-slow-call-rate=1",
        "--escrow-share=0",
        "--max-reservations=0",
        "--retry-timeout=0",
        "--shutdown-delay=0",  # stop at once
    ]
    cfg = parse(argv, {})
    assert (cfg.billing.rate_limit, cfg.webhook.port, cfg.metrics_port) == (0.5, 0, 65535)
    assert (cfg.breaker.failure_rate_threshold, cfg.breaker.slow_call_rate_threshold) == (1, 1)
    assert (cfg.enforcement.escrow_share, cfg.enforcement.max_reservations) == (0, 0)
    assert cfg.shutdown_delay == 0


def test_the_shutdown_delay_is_0_unless_set() -> None:
    """0 for the CLI, so that tests and local runs stop at once; the chart sets its own."""
    assert parse([], {}).shutdown_delay == 0
    assert parse([], {"DBQUOTA_SHUTDOWN_DELAY": "5"}).shutdown_delay == 5
    assert parse(["--shutdown-delay=2.5"], {"DBQUOTA_SHUTDOWN_DELAY": "5"}).shutdown_delay == 2.5


def test_a_variable_out_of_range_stops_the_cli_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DBQUOTA_RATE_LIMIT", "-5")
    assert cli.main(["run"]) == 2
    assert capsys.readouterr().err == (
        "dbquota: error: bad environment variable: DBQUOTA_RATE_LIMIT: expected a number at "
        "least 0, got '-5'\n"
    )


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["--lease-renew-deadline=15"],
            "argument --lease-renew-deadline: expected seconds below --lease-duration (15), got 15",
        ),
        (
            ["--lease-duration=8"],
            "argument --lease-renew-deadline: expected seconds below --lease-duration (8), got 10",
        ),
        (
            ["--lease-retry-period=10"],
            "argument --lease-retry-period: expected seconds below --lease-renew-deadline "
            "(10), got 10",
        ),
        (
            ["--lease-duration=30", "--lease-renew-deadline=20", "--lease-retry-period=25"],
            "argument --lease-retry-period: expected seconds below --lease-renew-deadline "
            "(20), got 25",
        ),
    ],
)
def test_lease_durations_out_of_order_stop_run_with_one_usage_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    # client-go's rule: retry period < renew deadline < lease duration
    assert run_fails(argv, capsys) == f"dbquota run: error: {expected}"


def test_lease_durations_in_order_are_taken_and_checked_outside_the_cli_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--lease-duration=30", "--lease-renew-deadline=20", "--lease-retry-period=19.5"]
    leases = parse(argv, {}).leases
    assert (leases.duration, leases.renew_deadline, leases.retry_period) == (30, 20, 19.5)
    with pytest.raises(ValueError, match="below --lease-duration"):
        parse([], {"DBQUOTA_LEASE_RENEW_DEADLINE": "20"})
    with pytest.raises(ValueError, match="below --lease-renew-deadline"):
        settings.LeaseSettings(retry_period=10.0)
    monkeypatch.setenv("DBQUOTA_LEASE_DURATION", "5")  # a variable is checked as a flag is
    assert "below --lease-duration (5), got 10" in run_fails([], capsys)


def test_run_help_shows_each_default_as_typed_and_each_range(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # one line per flag: argparse wraps at the terminal
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "(env DBQUOTA_CACHE_PATH, default dbquota-cache.sqlite3)" in out
    assert "PosixPath" not in out
    assert "(env DBQUOTA_CLAIM_KINDS, default databaseclaims)" in out
    assert "(env DBQUOTA_NAMESPACE, default '')" in out
    assert "[req/s] (at least 0; env DBQUOTA_RATE_LIMIT, default 50.0)" in out
    assert "[0..1] (above 0 and at most 1; env DBQUOTA_BREAKER_FAILURE_RATE, default 0.5)" in out


def test_billing_sim_help_shows_its_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["billing-sim", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # as one line, however argparse wraps
    for entry in [
        "--host HOST address to listen on (default 127.0.0.1)",
        "--port PORT port, 0 = pick a free one (default 8089)",
        "--clusters CLUSTERS clusters to simulate (default 100)",
        "--seed SEED seed of the generated data (default 1)",
        "prices never move (default 60)",
    ]:
        assert entry in out
