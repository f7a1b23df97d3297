"""Settings: flags beat DBQUOTA_* variables beat defaults; bad values fail clearly.

Checks that every knob has a unique flag and variable, that the CLI table documents each
of them, and that the README lists every flag (docs that match the code).
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
    with pytest.raises(ValueError, match="could not convert"):
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
    assert not missing, f"README.md lacks {missing}; paste `dbquota settings` into it"


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
