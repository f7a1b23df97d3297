"""The command line of ``kubectl dbquota``: flags, help, exit codes for bad input.

Checks that kubectl's flags work before or after the command name (kubectl hands the
plugin everything after ``dbquota``) without one overwriting the other; that the help
names every command and the exit codes; that ``-o`` takes table, json or yaml only and
``--events`` a whole number, 0 or more; and that a file that is not a DatabaseClaim, or a
missing kubeconfig, exits 2 with one ``error:`` line and no traceback, before anything is
sent to a cluster.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dbquota.plugin import main


def parse(*argv: str) -> dict[str, object]:
    return vars(main.build_parser().parse_args(argv))


def test_flags_before_or_after_the_command() -> None:
    after = parse("top", "-n", "team-a", "-o", "json", "--context", "prod")
    before = parse("-n", "team-a", "-o", "json", "--context", "prod", "top")
    for args in (after, before):
        assert (args["namespace"], args["output"], args["context"]) == ("team-a", "json", "prod")
    assert parse("top")["output"] == "table"
    assert parse("top", "-A")["all_namespaces"] is True
    assert parse("-A", "top")["all_namespaces"] is True
    assert parse("top")["all_namespaces"] is False
    status = parse("status", "team-a", "--events", "5")
    assert (status["quota"], status["events"], status["namespace"]) == ("team-a", 5, None)
    assert parse("explain", "-f", "a.yaml", "-f", "-")["filename"] == ["a.yaml", "-"]


def test_help_names_the_commands_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main.main(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for word in ("explain", "top", "status", "exit codes", "1  explain: at least one claim"):
        assert word in text


def test_bad_flags_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main.main(["top", "-o", "wide"])
    assert exited.value.code == 2
    assert "invalid choice: 'wide'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main.main(["explain"])
    assert exited.value.code == 2


@pytest.mark.parametrize("events", ["-1", "many"])
def test_a_negative_or_non_number_of_events_exits_2(
    capsys: pytest.CaptureFixture[str], events: str
) -> None:
    assert parse("status", "q", "--events", "0")["events"] == 0  # no Events shown
    with pytest.raises(SystemExit) as exited:
        main.main(["status", "q", "--events", events])
    assert exited.value.code == main.ERROR
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        "kubectl dbquota status: error: argument --events: expected a whole number, 0 or "
        f"more, got {events!r}"
    )
    assert "Traceback" not in err


def test_a_file_that_is_not_a_claim_exits_2_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "quota.yaml"
    path.write_text("apiVersion: dbquota.io/v1alpha1\nkind: DatabaseQuota\nmetadata: {name: q}\n")
    nowhere = str(tmp_path / "no-kubeconfig")
    assert main.main(["explain", "-f", str(path), "--kubeconfig", nowhere]) == main.ERROR
    err = capsys.readouterr().err
    assert err == (
        f"error: {path}, document 1 is a DatabaseQuota (dbquota.io/v1alpha1), not a "
        "kind dbquota prices: explain takes DatabaseClaim (dbquota.io/v1alpha1), Cluster "
        "(postgresql.cnpg.io/v1), postgresql (acid.zalan.do/v1), Instance "
        "(rds.aws.upbound.io/v1beta1) (to see a quota, use kubectl dbquota status NAME)\n"
    )


def test_no_kubeconfig_exits_2_saying_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main.main(["top", "--kubeconfig", str(tmp_path / "none")]) == main.ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: no kubeconfig found")
    assert "Traceback" not in err
