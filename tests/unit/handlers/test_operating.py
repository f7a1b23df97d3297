"""Start-up helpers of ``dbquota run``: dev certificates and log hygiene.

Checks that dev certificates are made once and reused (so a restart keeps the caBundle
kopf registered), that they serve the webhook host; that kopf's ERROR record for a
webhook denial is logged at INFO as a denial, while other errors stay errors; and that an
admitted review logs nothing at INFO (no access line, no "succeeded" line) while denials,
other handlers' lines and everything at debug level stay.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
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


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root, access, objects = (logging.getLogger(n) for n in ("", "aiohttp.access", "kopf.objects"))
    saved = (root.level, access.level, list(objects.filters))
    yield
    root.setLevel(saved[0])
    access.setLevel(saved[1])
    objects.filters[:] = saved[2]


def _passes(logger: str, level: int, message: str) -> bool:
    record = logging.LogRecord(logger, level, __file__, 1, message, None, None)
    return logging.getLogger(logger).isEnabledFor(level) and logging.getLogger(logger).filter(
        record
    )


@pytest.mark.usefixtures("restore_logging")
def test_admission_requests_log_nothing_at_info_but_denials_and_other_handlers_still_do() -> None:
    logging.getLogger().setLevel(logging.INFO)
    operating.quiet_admission_logs()
    operating.quiet_admission_logs()  # idempotent: configure runs once per start-up
    assert not _passes("aiohttp.access", logging.INFO, '127.0.0.1 "POST /validate-claims" 200')
    assert _passes("aiohttp.access", logging.WARNING, "something is wrong")
    assert not _passes("kopf.objects", logging.INFO, "Webhook 'validate-claims' succeeded.")
    assert _passes("kopf.objects", logging.INFO, "Handler 'first_status' succeeded.")
    denied = "Webhook 'validate-claims' failed permanently: denied by DatabaseQuota q"
    assert _passes("kopf.objects", logging.ERROR, denied)
    assert len(logging.getLogger("kopf.objects").filters) == 1


@pytest.mark.usefixtures("restore_logging")
def test_debug_logging_keeps_every_admission_line() -> None:
    logging.getLogger().setLevel(logging.DEBUG)
    operating.quiet_admission_logs()
    assert _passes("aiohttp.access", logging.INFO, '127.0.0.1 "POST /validate-claims" 200')
    assert _passes("kopf.objects", logging.INFO, "Webhook 'validate-claims' succeeded.")
