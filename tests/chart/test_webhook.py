"""The webhook as rendered: scoped to DatabaseClaims, wired to the pods, with a valid chain.

Checks, for every variant: a webhook for dbquota.io/v1alpha1 databaseclaims CREATE and
UPDATE only, beside one for UPDATEs of their status by anyone but the operator's
ServiceAccount (``matchConditions``), to the same path; ``sideEffects: NoneOnDryRun``,
AdmissionReview v1, the operator's webhook path ``/validate-claims``, through the webhook
Service to the container port the operator listens on (``--webhook-port``);
``failurePolicy`` defaults to Fail and ``timeoutSeconds`` and the policy are configurable,
within the schema's bounds. Self-signed mode: the caBundle is a CA that really signed the
mounted serving certificate, whose names cover the Service and whose key matches.
cert-manager mode: no generated Secrets, a Certificate for the Service's names writing
the mounted Secret, and CA injection from it.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.chart.conftest import MATRIX, NAMESPACE, Doc, HelmError, Manifests


def the_webhook(manifests: Manifests, name: str = "validate-claims.dbquota.io") -> Doc:
    hooks = manifests.one("ValidatingWebhookConfiguration")["webhooks"]
    (webhook,) = [hook for hook in hooks if hook["name"] == name]
    result: Doc = webhook
    return result


def test_claims_status_is_guarded_but_for_the_operators_own_writes(variant: Manifests) -> None:
    status = the_webhook(variant, "claim-status.dbquota.io")
    assert status["rules"] == [
        {
            "apiGroups": ["dbquota.io"],
            "apiVersions": ["v1alpha1"],
            "resources": ["databaseclaims/status"],
            "operations": ["UPDATE"],
            "scope": "Namespaced",
        }
    ]
    account = variant.workload()["spec"]["template"]["spec"]["serviceAccountName"]
    assert status["matchConditions"] == [
        {
            "name": "not-dbquota",
            "expression": (
                f'request.userInfo.username != "system:serviceaccount:{NAMESPACE}:{account}"'
            ),
        }
    ]
    assert (status["sideEffects"], status["failurePolicy"]) == ("None", "Fail")
    assert status["clientConfig"] == the_webhook(variant)["clientConfig"]


def test_webhook_is_scoped_to_claims_with_none_on_dry_run(variant: Manifests) -> None:
    assert not variant.of_kind("MutatingWebhookConfiguration")
    webhook = the_webhook(variant)
    assert webhook["rules"] == [
        {
            "apiGroups": ["dbquota.io"],
            "apiVersions": ["v1alpha1"],
            "resources": ["databaseclaims"],
            "operations": ["CREATE", "UPDATE"],
            "scope": "Namespaced",
        }
    ]
    assert webhook["sideEffects"] == "NoneOnDryRun"
    assert webhook["admissionReviewVersions"] == ["v1"]
    assert webhook["failurePolicy"] == "Fail"
    assert 1 <= webhook["timeoutSeconds"] <= 30


def test_webhook_reaches_the_port_the_operator_listens_on(variant: Manifests) -> None:
    service_ref = the_webhook(variant)["clientConfig"]["service"]
    assert service_ref["path"] == "/validate-claims"
    assert service_ref["namespace"] == NAMESPACE
    service = variant.one("Service", service_ref["name"])
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == service_ref["port"]]
    container = variant.container()
    (container_port,) = [p for p in container["ports"] if p["name"] == port["targetPort"]]
    assert f"--webhook-port={container_port['containerPort']}" in container["args"]
    pod_labels = variant.workload()["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_failure_policy_and_timeout_are_configurable(render: Callable[..., Manifests]) -> None:
    webhook = the_webhook(render({"webhook": {"failurePolicy": "Ignore", "timeoutSeconds": 12}}))
    assert webhook["failurePolicy"] == "Ignore"
    assert webhook["timeoutSeconds"] == 12


@pytest.mark.parametrize(
    "webhook", [{"failurePolicy": "Sometimes"}, {"timeoutSeconds": 31}, {"timeoutSeconds": 0}]
)
def test_schema_refuses_a_bad_failure_policy_or_timeout(
    render: Callable[..., Manifests], webhook: Doc
) -> None:
    with pytest.raises(HelmError, match="webhook"):
        render({"webhook": webhook})


ONLY_TEAM_A = {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a"]}


def test_one_watched_namespace_limits_the_webhook_to_it(render: Callable[..., Manifests]) -> None:
    webhook = the_webhook(render(MATRIX["one-namespace"]))
    assert webhook["namespaceSelector"] == {"matchExpressions": [ONLY_TEAM_A]}
    selector = {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["apps"]}]}
    webhook = the_webhook(render({"webhook": {"namespaceSelector": selector}}))
    assert webhook["namespaceSelector"] == selector


def test_a_selector_and_a_watched_namespace_both_apply(render: Callable[..., Manifests]) -> None:
    """The operator counts only watchNamespace's claims: a selector that also matched other
    namespaces would send it reviews it decides without their quota."""
    tier = {"key": "tier", "operator": "In", "values": ["apps"]}
    selector = {"matchLabels": {"team": "a"}, "matchExpressions": [tier]}
    manifests = render({"watchNamespace": "team-a", "webhook": {"namespaceSelector": selector}})
    configuration = manifests.one("ValidatingWebhookConfiguration")
    for webhook in configuration["webhooks"]:
        assert webhook["namespaceSelector"] == {
            "matchLabels": {"team": "a"},
            "matchExpressions": [tier, ONLY_TEAM_A],
        }
        assert webhook["timeoutSeconds"] == 5


def test_the_status_webhook_waits_as_long_as_the_claims_one(
    render: Callable[..., Manifests],
) -> None:
    configuration = render({"webhook": {"timeoutSeconds": 12}}).one(
        "ValidatingWebhookConfiguration"
    )
    assert [w["timeoutSeconds"] for w in configuration["webhooks"]] == [12, 12]


def pem_certs(data: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(data)


def secret_bytes(secret: Doc, key: str) -> bytes:
    return base64.b64decode(secret["data"][key])


def test_self_signed_ca_bundle_signed_the_mounted_serving_certificate(
    render: Callable[..., Manifests],
) -> None:
    manifests = render()
    container = manifests.container()
    volumes = manifests.workload()["spec"]["template"]["spec"]["volumes"]
    (certs_volume,) = [v for v in volumes if v["name"] == "webhook-certs"]
    mounted = manifests.one("Secret", certs_volume["secret"]["secretName"])
    assert mounted["type"] == "kubernetes.io/tls"
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "webhook-certs"]
    assert "subPath" not in mount  # a subPath mount would never see a renewed certificate
    assert f"--webhook-cert-dir={mount['mountPath']}" in container["args"]

    (ca,) = pem_certs(base64.b64decode(the_webhook(manifests)["clientConfig"]["caBundle"]))
    (leaf,) = pem_certs(secret_bytes(mounted, "tls.crt"))
    leaf.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca

    service = the_webhook(manifests)["clientConfig"]["service"]
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{service['name']}.{service['namespace']}.svc" in names.get_values_for_type(
        x509.DNSName
    )

    key = serialization.load_pem_private_key(secret_bytes(mounted, "tls.key"), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    signature = key.sign(b"probe", padding.PKCS1v15(), leaf.signature_hash_algorithm)  # type: ignore[arg-type]
    leaf_key = leaf.public_key()
    assert isinstance(leaf_key, rsa.RSAPublicKey)
    leaf_key.verify(signature, b"probe", padding.PKCS1v15(), leaf.signature_hash_algorithm)  # type: ignore[arg-type]


def test_the_ca_key_is_not_mounted_into_the_pods(render: Callable[..., Manifests]) -> None:
    manifests = render()
    mounted = {
        v["secret"]["secretName"]
        for v in manifests.workload()["spec"]["template"]["spec"]["volumes"]
        if "secret" in v
    }
    for secret in manifests.of_kind("Secret"):
        if "ca.key" in secret["data"]:
            assert secret["metadata"]["name"] not in mounted


def test_cert_manager_issues_the_mounted_secret_and_injects_the_ca(
    render: Callable[..., Manifests],
) -> None:
    manifests = render(MATRIX["cert-manager"])
    assert not manifests.of_kind("Secret")
    vwc = manifests.one("ValidatingWebhookConfiguration")
    assert "caBundle" not in the_webhook(manifests)["clientConfig"]
    namespace, name = vwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].split("/")
    certificate = manifests.one("Certificate", name)
    assert namespace == NAMESPACE
    volumes = manifests.workload()["spec"]["template"]["spec"]["volumes"]
    (certs_volume,) = [v for v in volumes if v["name"] == "webhook-certs"]
    assert certificate["spec"]["secretName"] == certs_volume["secret"]["secretName"]
    service = the_webhook(manifests)["clientConfig"]["service"]
    assert f"{service['name']}.{service['namespace']}.svc" in certificate["spec"]["dnsNames"]
    issuer = certificate["spec"]["issuerRef"]
    ca_issuer = manifests.one("Issuer", issuer["name"])
    ca_certificate = manifests.one("Certificate", ca_issuer["spec"]["ca"]["secretName"])
    assert ca_certificate["spec"]["isCA"] is True


def test_cert_manager_with_an_existing_issuer_creates_no_issuer(
    render: Callable[..., Manifests],
) -> None:
    manifests = render(MATRIX["cert-manager-issuer"])
    assert not manifests.of_kind("Issuer")
    (certificate,) = manifests.of_kind("Certificate")
    assert certificate["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer"}


def test_without_lookup_every_render_makes_new_certificates(
    render: Callable[..., Manifests],
) -> None:
    """`helm template` has no cluster to look up; stability is proven in e2e/test_chart.py."""
    first = the_webhook(render(fresh=True))["clientConfig"]["caBundle"]
    second = the_webhook(render(fresh=True))["clientConfig"]["caBundle"]
    assert first != second
