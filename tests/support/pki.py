"""Certificates made in the tests with ``cryptography``: client certificates for signing in
to Entra ID (the emulator), and a self-signed server certificate for serving the emulator
over https on loopback (msal needs an https authority), with the CA bundle a client
points ``REQUESTS_CA_BUNDLE`` at."""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Pair:
    """A private key and its certificate, as PEM text."""

    key_pem: str
    certificate_pem: str

    def combined(self, passphrase: str | None = None) -> str:
        """One PEM with the key (encrypted when a passphrase is given) and the certificate,
        as an administrator would put in a file or a systemd credential."""
        if passphrase is None:
            return self.key_pem + self.certificate_pem
        key = serialization.load_pem_private_key(self.key_pem.encode(), None)
        encrypted = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase.encode())).decode()
        return encrypted + self.certificate_pem


@cache
def _key(index: int) -> rsa.RSAPrivateKey:
    # Key generation is the slow part; a few keys serve every test of a run.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def certificate(name: str = "crmsync test client", *, key_index: int = 0,
                valid_from: timedelta = timedelta(days=-1),
                valid_until: timedelta = timedelta(days=365),
                ip: str | None = None) -> Pair:
    """A self-signed certificate valid from ``now + valid_from`` to ``now + valid_until``
    (negative ``valid_until``: already expired), with ``ip`` as subject alternative name
    for a server certificate."""
    key = _key(key_index)
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now + valid_from).not_valid_after(now + valid_until))
    if ip is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False).add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True)
    cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return Pair(key_pem, cert.public_bytes(serialization.Encoding.PEM).decode())


def server_tls(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A TLS context for a server on 127.0.0.1 and the CA bundle that trusts it."""
    pair = certificate("127.0.0.1", key_index=9, ip="127.0.0.1")
    cert_file, key_file = directory / "server.pem", directory / "server.key"
    cert_file.write_text(pair.certificate_pem)
    key_file.write_text(pair.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, cert_file
