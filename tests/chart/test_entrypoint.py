"""The image's entrypoint plus the chart's arguments make a command that ``dbquota`` accepts.

These checks need no container engine (``e2e/test_image.py`` builds the image with podman
and runs it as the chart does): the Dockerfile's ``ENTRYPOINT`` is read, checked to be
``dbquota run`` (a console script this package installs), and run with ``--help``; then,
for every variant of the matrix, the container's arguments are parsed by
``dbquota.cli.build_parser()``, so a flag the chart passes that the operator lacks fails
here, and the parsed settings are checked against the values that produced them (a
``logFormat`` other than text or json is refused by the schema); every value that becomes
a numeric flag is bounded in the schema as the flag is (a port, narrower: not 0), so that
``helm install`` refuses what ``dbquota run`` would (``rateLimit: 0`` is no cap, as the
flag's 0); the webhook client CA is
mounted where ``--webhook-client-ca`` reads it, from a ConfigMap or a Secret (not both),
with its allowed names, and nothing is asked for without one. Also
checks the Dockerfile's non-negotiables: multi-stage on one slim base (by default; the
``BASE`` build argument), a numeric non-root user, and the port numbers the chart expects.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dbquota import cli, settings
from tests.chart.conftest import CHART, MATRIX, REPO, HelmError, Manifests

DOCKERFILE = REPO / "Dockerfile"


def entrypoint() -> list[str]:
    (line,) = [ln for ln in DOCKERFILE.read_text().splitlines() if ln.startswith("ENTRYPOINT")]
    argv: list[str] = json.loads(line.removeprefix("ENTRYPOINT"))
    return argv


def container_argv(manifests: Manifests) -> list[str]:
    container = manifests.container()
    assert "command" not in container, "the chart relies on the image's entrypoint"
    return [*entrypoint(), *container["args"]]


def parse(argv: list[str]) -> settings.Settings:
    assert argv[0] == "dbquota"
    args = cli.build_parser().parse_args(argv[1:])
    assert args.command == "run"
    return settings.from_namespace(args)


def test_entrypoint_is_dbquota_run_and_answers_help() -> None:
    assert entrypoint() == ["dbquota", "run"]
    script = Path(sys.executable).parent / "dbquota"
    result = subprocess.run(
        [str(script), "run", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "--webhook-cert-dir" in result.stdout


def test_every_argument_the_chart_passes_is_a_flag_of_dbquota_run(variant: Manifests) -> None:
    cfg = parse(container_argv(variant))
    assert cfg.webhook.dev is False  # the chart owns the ValidatingWebhookConfiguration


def test_parsed_settings_match_the_values(render: Callable[..., Manifests]) -> None:
    cfg = parse(container_argv(render(MATRIX["everything"])))
    assert cfg.billing.url == "http://billing:8089"
    assert cfg.billing.token_file == Path("/var/run/secrets/dbquota/billing/t")
    assert cfg.namespace == "team-b"
    assert cfg.enforcement.no_quota == "Deny"
    assert cfg.log_format == "json"
    assert cfg.billing.max_concurrency == 4
    assert cfg.leases.leader_election is True
    assert cfg.leases.leader_lease == "dbq-dbquota-leader"
    assert cfg.leases.namespace == "dbquota-system"
    assert cfg.cache.path.parent == Path("/var/cache/dbquota")

    cfg = parse(
        container_argv(
            render(
                {
                    "billing": {
                        "rateLimit": 7.5,
                        "requestTimeout": 3,
                        "connectTimeout": 1,
                        "syncInterval": 90,
                        "breaker": {"failureThreshold": 9, "recoveryTimeout": 45},
                    },
                    "leaderElection": {
                        "enabled": False,
                        "leaseDuration": 20,
                        "renewDeadline": 12,
                        "retryPeriod": 3,
                    },
                    "replicaCount": 1,
                }
            )
        )
    )
    assert cfg.billing.rate_limit == 7.5
    assert cfg.billing.request_timeout == 3
    assert cfg.billing.connect_timeout == 1
    assert cfg.billing.sync_interval == 90
    assert cfg.breaker.failure_threshold == 9
    assert cfg.breaker.recovery_timeout == 45
    assert cfg.leases.leader_election is False
    assert (cfg.leases.duration, cfg.leases.renew_deadline, cfg.leases.retry_period) == (20, 12, 3)
    assert cfg.billing.url == settings.BillingSettings().url  # empty value: operator default
    assert cfg.log_format == "text"  # the chart's default, the operator's too


def test_a_log_format_other_than_text_or_json_is_refused(
    render: Callable[..., Manifests],
) -> None:
    with pytest.raises(HelmError, match="logFormat"):
        render({"logFormat": "xml"})


SCHEMA = json.loads((CHART / "values.schema.json").read_text())
FLAG_OF_VALUE = {
    "leaderElection.leaseDuration": "--lease-duration",
    "leaderElection.renewDeadline": "--lease-renew-deadline",
    "leaderElection.retryPeriod": "--lease-retry-period",
    "billing.rateLimit": "--rate-limit",
    "billing.requestTimeout": "--request-timeout",
    "billing.connectTimeout": "--connect-timeout",
    "billing.syncInterval": "--sync-interval",
    "billing.breaker.failureThreshold": "--breaker-failure-threshold",
    "billing.breaker.recoveryTimeout": "--breaker-recovery-timeout",
    "webhook.port": "--webhook-port",
    "metrics.port": "--metrics-port",
    "shutdownDelay": "--shutdown-delay",
}
"""The chart's values that become a numeric flag of ``dbquota run`` (``dbquota.args``)."""
NARROWER = {"webhook.port": {"minimum": 1}, "metrics.port": {"minimum": 1}}
"""Where the chart takes less than the flag: 0 (any free port, no metrics server) leaves
the Service, the probes and the NetworkPolicy nothing to point at."""


def schema_of(path: str) -> dict[str, Any]:
    node: dict[str, Any] = SCHEMA
    for key in path.split("."):
        node = node["properties"][key]
    return node


KEYWORD = {
    "minimum": "minimum",
    "above": "exclusiveMinimum",
    "maximum": "maximum",
    "below": "exclusiveMaximum",
}
"""JSON Schema's name of each part of a knob's ``settings.Bounds``."""


def test_the_schema_bounds_each_value_as_its_flag_is_bounded() -> None:
    knobs = {k.flag: k for k in settings.knobs()}
    for path, flag in FLAG_OF_VALUE.items():
        knob = knobs[flag]
        assert knob.bounds is not None, flag
        expected = {KEYWORD[k]: v for k, v in vars(knob.bounds).items() if v is not None}
        node = schema_of(path)
        bounds = {k: node[k] for k in KEYWORD.values() if k in node}
        assert bounds == expected | NARROWER.get(path, {}), path
        assert node["type"] == ("integer" if isinstance(knob.default, int) else "number"), path


@pytest.mark.parametrize("name", ["defaults", "everything"])
def test_every_numeric_flag_the_chart_passes_comes_from_a_bounded_value(
    render: Callable[..., Manifests], name: str
) -> None:
    knobs = {k.flag: k for k in settings.knobs()}
    extra = {arg.split("=")[0] for arg in MATRIX[name].get("extraArgs", [])}  # unchecked
    passed = {arg.split("=")[0] for arg in render(MATRIX[name]).container()["args"]} - extra
    numeric = {f for f in passed if f in knobs and knobs[f].bounds is not None}
    assert numeric == set(FLAG_OF_VALUE.values())


def test_a_rate_limit_of_0_means_no_cap_and_below_0_is_refused(
    render: Callable[..., Manifests],
) -> None:
    cfg = parse(container_argv(render({"billing": {"rateLimit": 0}})))
    assert cfg.billing.rate_limit == 0  # no cap, as --rate-limit=0
    with pytest.raises(HelmError, match="rateLimit"):
        render({"billing": {"rateLimit": -1}})


def test_token_file_is_where_the_secret_is_mounted(render: Callable[..., Manifests]) -> None:
    manifests = render(MATRIX["billing-token"])
    cfg = parse(container_argv(manifests))
    assert cfg.billing.token_file is not None
    (mount,) = [m for m in manifests.container()["volumeMounts"] if m["name"] == "billing-token"]
    assert cfg.billing.token_file.parent == Path(mount["mountPath"])
    assert mount["readOnly"] is True
    volumes = manifests.workload()["spec"]["template"]["spec"]["volumes"]
    (volume,) = [v for v in volumes if v["name"] == "billing-token"]
    assert volume["secret"]["secretName"] == "billing"
    assert volume["secret"]["items"] == [{"key": "token", "path": cfg.billing.token_file.name}]


@pytest.mark.parametrize(("name", "source"), [("client-ca", "configMap"), ("everything", "secret")])
def test_the_client_ca_is_mounted_where_the_operator_reads_it(
    render: Callable[..., Manifests], name: str, source: str
) -> None:
    manifests = render(MATRIX[name])
    cfg = parse(container_argv(manifests))
    assert cfg.webhook.client_ca is not None
    (mount,) = [
        m for m in manifests.container()["volumeMounts"] if m["name"] == "webhook-client-ca"
    ]
    assert cfg.webhook.client_ca.parent == Path(mount["mountPath"])
    assert mount["readOnly"] is True
    volumes = manifests.workload()["spec"]["template"]["spec"]["volumes"]
    (volume,) = [v for v in volumes if v["name"] == "webhook-client-ca"]
    key = cfg.webhook.client_ca.name
    assert volume[source]["items"] == [{"key": key, "path": key}]
    if source == "configMap":
        assert volume["configMap"]["name"] == "webhook-client-ca"
        assert cfg.webhook.client_names == ("kube-apiserver",)
    else:
        assert (volume["secret"]["secretName"], key) == ("apiserver-ca", "bundle.pem")
        assert cfg.webhook.client_names == ()


def test_without_a_client_ca_no_client_certificate_is_asked_for(
    render: Callable[..., Manifests],
) -> None:
    manifests = render()
    cfg = parse(container_argv(manifests))
    assert (cfg.webhook.client_ca, cfg.webhook.client_names) == (None, ())
    assert "webhook-client-ca" not in {m["name"] for m in manifests.container()["volumeMounts"]}


def test_a_client_ca_from_both_a_config_map_and_a_secret_is_refused(
    render: Callable[..., Manifests],
) -> None:
    with pytest.raises(HelmError, match="configMapName or secretName, not both"):
        render({"webhook": {"clientCA": {"configMapName": "a", "secretName": "b"}}})


def stage_images(text: str) -> list[str]:
    """Each stage's image as a build without ``--build-arg`` sees it: ``${NAME}`` replaced
    by the default of the ``ARG NAME=...`` declared before the first ``FROM``."""
    preamble = text.split("\nFROM", 1)[0]
    defaults = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", preamble, flags=re.MULTILINE))
    stages = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    return [re.sub(r"\$\{(\w+)\}", lambda m: defaults[m[1]], image) for image in stages]


def test_dockerfile_is_multi_stage_with_a_numeric_non_root_user() -> None:
    text = DOCKERFILE.read_text()
    stages = stage_images(text)
    assert len(stages) >= 2
    assert all("slim" in image for image in stages)
    # The virtual environment copied from the builder links to the base's interpreter.
    assert len(set(re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE))) == 1
    (user,) = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    uid = user.split(":")[0]
    assert uid.isdigit()
    assert int(uid) > 0
    assert re.search(r"^COPY --from=builder ", text, flags=re.MULTILINE)
    assert not re.search(r"\b(gcc|build-essential|g\+\+)\b", text)


def test_image_user_and_ports_agree_with_the_chart(render: Callable[..., Manifests]) -> None:
    text = DOCKERFILE.read_text()
    (user,) = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    manifests = render()
    pod = manifests.workload()["spec"]["template"]["spec"]["securityContext"]
    assert user == f"{pod['runAsUser']}:{pod['runAsGroup']}"
    (exposed,) = re.findall(r"^EXPOSE\s+(.+)$", text, flags=re.MULTILINE)
    ports = {p["containerPort"] for p in manifests.container()["ports"]}
    assert {int(p) for p in exposed.split()} == ports
