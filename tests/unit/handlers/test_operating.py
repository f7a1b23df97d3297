"""Start-up helpers of ``dbquota run``: dev certificates and log hygiene.

Checks that dev certificates are made once and reused (so a restart keeps the caBundle
kopf registered), that they serve the webhook host, and that kopf's ERROR record for a
webhook denial is logged at INFO as a denial, while other errors stay errors.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cryptography import x509

from dbquota.handlers import operating


def test_dev_certificates_are_made_once_for_the_host(tmp_path: Path) -> None:
    ca, cert, key = operating.ensure_dev_certificates(cert_dir=tmp_path, host="10.1.2.3")
    first = cert.read_bytes()
    again = operating.ensure_dev_certificates(cert_dir=tmp_path, host="10.1.2.3")
    assert again == (ca, cert, key)
    assert cert.read_bytes() == first
    leaf = x509.load_pem_x509_certificate(first)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "10.1.2.3" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    assert key.stat().st_mode & 0o077 == 0


def test_denials_are_logged_as_info_and_other_errors_stay_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("kopf.objects.test")
    logger.addFilter(operating.DenialsAreNotErrors())
    with caplog.at_level(logging.DEBUG, logger="kopf.objects.test"):
        logger.error("Webhook 'validate-claims' failed permanently: denied by DatabaseQuota q")
        logger.error("Handler 'first_status' failed permanently: boom")
    (denial, failure) = caplog.records
    assert denial.levelno == logging.INFO
    assert denial.getMessage() == "Webhook 'validate-claims' denied: denied by DatabaseQuota q"
    assert failure.levelno == logging.ERROR
