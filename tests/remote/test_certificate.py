"""Reading a client certificate: the PEM's key and certificate, its passphrase, and each
way it can be wrong as one line naming where the PEM came from, never its content."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support import pki
from worker.errors import ConfigurationError
from worker.remote.certificate import load_client_certificate
from worker.remote.secrets import Secret

WHERE = "CRMSYNC_CRM_CLIENT_CERTIFICATE_FILE '/etc/crmsync/crm.pem'"
PASS_WHERE = "CRMSYNC_CRM_CLIENT_CERTIFICATE_PASSPHRASE"
PAIR = pki.certificate("client")


def load(pem: str, passphrase: str | None = None) -> object:
    return load_client_certificate(Secret(pem), Secret(passphrase) if passphrase else None,
                                   WHERE, PASS_WHERE)


def refusal(pem: str, passphrase: str | None = None) -> str:
    with pytest.raises(ConfigurationError) as info:
        load(pem, passphrase)
    text = str(info.value)
    assert text.startswith(WHERE + ": ") and "\n" not in text
    assert not any(line in text for line in pem.splitlines()[1:-1])  # no PEM content
    assert passphrase is None or passphrase not in text
    return text


def test_key_and_certificate_in_either_order_with_thumbprints() -> None:
    for pem in (PAIR.combined(), PAIR.certificate_pem + PAIR.key_pem):
        loaded = load_client_certificate(Secret(pem), None, WHERE, PASS_WHERE)
        assert len(loaded.sha1) == 40 and len(loaded.sha256) == 64
        assert loaded.sha1 in loaded.describe()
        assert "RSAPrivateKey" not in repr(loaded) and "key=" not in repr(loaded)


def test_encrypted_key_needs_the_right_passphrase() -> None:
    pem = PAIR.combined("open sesame")
    assert load(pem, "open sesame") is not None
    assert "the passphrase is wrong (CRMSYNC_CRM_CLIENT_CERTIFICATE_PASSPHRASE)" in refusal(
        pem, "not it")
    assert "the private key is encrypted; set its passphrase" in refusal(pem)


def test_missing_parts_and_a_foreign_key() -> None:
    assert "no certificate in it" in refusal(PAIR.key_pem)
    assert "no private key in it" in refusal(PAIR.certificate_pem)
    other = pki.certificate("other", key_index=1)
    assert "does not belong to the certificate" in refusal(other.key_pem + PAIR.certificate_pem)
    ec_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    assert "not an RSA key" in refusal(ec_key + PAIR.certificate_pem)


def test_validity_window() -> None:
    expired = pki.certificate("old", valid_from=timedelta(days=-10),
                              valid_until=timedelta(days=-1))
    text = refusal(expired.combined())
    assert "the certificate expired on " in text and "AADSTS700027" in text
    future = pki.certificate("future", valid_from=timedelta(days=2))
    assert "not valid before" in refusal(future.combined())
