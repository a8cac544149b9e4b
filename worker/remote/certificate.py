"""A client certificate for signing in to Entra ID: one PEM holding the private key and
its X.509 certificate (an optional passphrase decrypts the key), read once and checked
before anything is sent, so that a wrong file, a wrong passphrase or an expired certificate
is one line naming where the PEM came from, never its content."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from worker.errors import ConfigurationError
from worker.remote.secrets import Secret

_CERTIFICATE = re.compile(
    r"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----")


@dataclass(frozen=True)
class ClientCertificate:
    """The private key (never shown by ``repr``) and the public certificate it signs for.
    ``sha1`` / ``sha256`` are the certificate's thumbprints as Entra shows them (upper-case
    hex); ``x5t_s256`` is the SHA-256 one as a JWT header carries it."""

    key: rsa.RSAPrivateKey = field(repr=False)
    certificate_pem: str
    sha1: str
    sha256: str
    not_before: datetime
    not_after: datetime

    @property
    def x5t_s256(self) -> str:
        return base64.urlsafe_b64encode(bytes.fromhex(self.sha256)).decode().rstrip("=")

    def describe(self) -> str:
        """Thumbprint and validity, for messages (public facts only)."""
        return (f"thumbprint {self.sha1}, valid {self.not_before:%Y-%m-%d %H:%M} to "
                f"{self.not_after:%Y-%m-%d %H:%M} UTC")


def load_client_certificate(
    pem: Secret,
    passphrase: Secret | None,
    where: str,
    passphrase_where: str,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ClientCertificate:
    """The certificate and key of ``pem``. Raises ConfigurationError naming ``where`` (and
    ``passphrase_where``) when the PEM lacks either part, the passphrase is missing or
    wrong, the key is not the certificate's, or the certificate is not valid now."""
    text = pem.reveal()
    found = _CERTIFICATE.search(text)
    if found is None:
        raise ConfigurationError(
            f"{where}: no certificate in it; the PEM must hold the private key and the "
            "certificate (-----BEGIN CERTIFICATE-----)")
    try:
        certificate = x509.load_pem_x509_certificate(found.group(0).encode())
    except ValueError:
        raise ConfigurationError(f"{where}: the certificate in it cannot be read") from None
    key = _private_key(text, passphrase, where, passphrase_where)
    if key.public_key().public_numbers() != _rsa_public(certificate, where).public_numbers():
        raise ConfigurationError(
            f"{where}: the private key does not belong to the certificate in it")
    loaded = ClientCertificate(
        key=key, certificate_pem=found.group(0),
        sha1=certificate.fingerprint(hashes.SHA1()).hex().upper(),
        sha256=certificate.fingerprint(hashes.SHA256()).hex().upper(),
        not_before=certificate.not_valid_before_utc, not_after=certificate.not_valid_after_utc)
    moment = now()
    if moment >= loaded.not_after:
        raise ConfigurationError(
            f"{where}: the certificate expired on {loaded.not_after:%Y-%m-%d %H:%M} UTC "
            f"({loaded.describe()}); Entra ID refuses it (AADSTS700027): create a new one "
            "and upload it to the app registration")
    if moment < loaded.not_before:
        raise ConfigurationError(
            f"{where}: the certificate is not valid before "
            f"{loaded.not_before:%Y-%m-%d %H:%M} UTC ({loaded.describe()})")
    return loaded


def _private_key(text: str, passphrase: Secret | None, where: str,
                 passphrase_where: str) -> rsa.RSAPrivateKey:
    block = re.search(r"-----BEGIN ((?:ENCRYPTED |RSA )?PRIVATE KEY)-----.+?"
                      r"-----END \1-----", text, re.S)
    if block is None:
        raise ConfigurationError(
            f"{where}: no private key in it; the PEM must hold the private key and the "
            "certificate (-----BEGIN PRIVATE KEY-----)")
    encrypted = block.group(1) == "ENCRYPTED PRIVATE KEY" or "Proc-Type: 4,ENCRYPTED" in (
        block.group(0))
    if encrypted and passphrase is None:
        raise ConfigurationError(
            f"{where}: the private key is encrypted; set its passphrase ({passphrase_where})")
    password = passphrase.reveal().encode() if encrypted and passphrase else None
    try:
        key = serialization.load_pem_private_key(block.group(0).encode(), password)
    except (ValueError, TypeError):
        # The library's message says nothing about the key's content; ours names the place.
        reason = "the passphrase is wrong" if encrypted else "the private key cannot be read"
        raise ConfigurationError(
            f"{where}: {reason}" + (f" ({passphrase_where})" if encrypted else "")) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigurationError(
            f"{where}: the private key is not an RSA key; Entra ID takes RSA certificates")
    return key


def _rsa_public(certificate: x509.Certificate, where: str) -> rsa.RSAPublicKey:
    public = certificate.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        raise ConfigurationError(
            f"{where}: the certificate's key is not an RSA key; Entra ID takes RSA "
            "certificates")
    return public
