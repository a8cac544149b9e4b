"""Client assertions as Entra ID checks them: a JWT signed by the private key of a
certificate registered on the application, found by the thumbprint in its header
(``x5t#S256``, or the SHA-1 ``x5t``), with ``aud`` the token endpoint, ``iss`` and ``sub``
the client id, and ``exp`` in the future. Each failure is Entra's code and wording, so a
client's error handling can be tested against it. Pure apart from the clock."""

from __future__ import annotations

import base64
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass(frozen=True)
class Registered:
    """A certificate on the app registration (its public part only)."""

    certificate: x509.Certificate
    sha1: str
    sha256: str

    @classmethod
    def from_pem(cls, pem: bytes | str) -> Registered:
        data = pem.encode() if isinstance(pem, str) else pem
        certificate = x509.load_pem_x509_certificate(data)
        return cls(certificate,
                   certificate.fingerprint(hashes.SHA1()).hex().upper(),
                   certificate.fingerprint(hashes.SHA256()).hex().upper())


@dataclass(frozen=True)
class Refusal:
    """Why Entra refuses: the OAuth2 error, the AADSTS code and its description."""

    error: str
    code: int
    description: str


class AssertionVerifier:
    """Checks client assertions of one application against its registered certificates."""

    def __init__(self, client_id: str, certificates: Iterable[bytes | str],
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.client_id = client_id
        self.registered = [Registered.from_pem(pem) for pem in certificates]
        self._now = now

    def refusal(self, assertion: str, assertion_type: str,
                audiences: Collection[str]) -> Refusal | None:
        """None when ``assertion`` proves the client, else Entra's refusal."""
        if assertion_type != ASSERTION_TYPE:
            return Refusal("invalid_request", 50027, "JWT token is invalid or malformed: "
                           f"client_assertion_type must be '{ASSERTION_TYPE}'.")
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            return Refusal("invalid_client", 50027, "JWT token is invalid or malformed.")
        thumbprint = _thumbprint(header)
        key = self._registered(thumbprint)
        if key is None:
            return Refusal("invalid_client", 700027,
                           "The certificate with identifier used to sign the client "
                           "assertion is not registered on application. [Reason - The key "
                           f"was not found., Thumbprint of key used by client: "
                           f"'{thumbprint or ''}', Please visit the Azure Portal, Graph "
                           "Explorer or directly use MS Graph to see configured keys for "
                           f"app Id '{self.client_id}'.]")
        end = key.certificate.not_valid_after_utc
        if self._now() >= end:
            start = key.certificate.not_valid_before_utc
            return Refusal("invalid_client", 700027,
                           "Client assertion contains an invalid signature. [Reason - The "
                           f"key used is expired., Thumbprint of key used by client: "
                           f"'{key.sha1}', Found key 'Start={start:%m/%d/%Y %H:%M:%S}, "
                           f"End={end:%m/%d/%Y %H:%M:%S}']")
        return self._claims_refusal(assertion, key, header, audiences)

    def _registered(self, thumbprint: str | None) -> Registered | None:
        if thumbprint is None:
            return None
        return next((r for r in self.registered if thumbprint in (r.sha1, r.sha256)), None)

    def _claims_refusal(self, assertion: str, key: Registered, header: dict[str, object],
                        audiences: Collection[str]) -> Refusal | None:
        algorithm = str(header.get("alg"))
        if algorithm not in ("RS256", "PS256"):
            return Refusal("invalid_client", 5002738,
                           f"Invalid JWT token. '{algorithm}' is not a supported signature "
                           "algorithm. Supported signing algorithms are: 'RS256, PS256'.")
        try:
            claims = jwt.decode(assertion, key.certificate.public_key(),  # type: ignore[arg-type]
                                algorithms=[algorithm], audience=list(audiences),
                                options={"require": ["exp", "aud", "iss", "sub"]},
                                leeway=300)
        except jwt.InvalidSignatureError:
            return Refusal("invalid_client", 700027,
                           "Client assertion contains an invalid signature. [Reason - The "
                           "provided signature value did not match the expected signature "
                           f"value., Thumbprint of key used by client: '{key.sha1}']")
        except jwt.ExpiredSignatureError:
            return Refusal("invalid_client", 700024,
                           "Client assertion is not within its valid time range.")
        except jwt.InvalidAudienceError:
            return Refusal("invalid_client", 700212,
                           "The audience of the client assertion is not this token "
                           f"endpoint; expected one of: {', '.join(sorted(audiences))}.")
        except jwt.PyJWTError as exc:
            return Refusal("invalid_client", 50027,
                           f"JWT token is invalid or malformed ({type(exc).__name__}).")
        if claims.get("iss") != self.client_id or claims.get("sub") != self.client_id:
            return Refusal("invalid_client", 700021,
                           "Client assertion application identifier doesn't match "
                           "'client_id' parameter.")
        return None


def _thumbprint(header: dict[str, object]) -> str | None:
    """The thumbprint in the header as upper-case hex (``x5t#S256`` preferred)."""
    for name in ("x5t#S256", "x5t"):
        value = header.get(name)
        if isinstance(value, str) and value:
            try:
                padded = value + "=" * (-len(value) % 4)
                return base64.urlsafe_b64decode(padded).hex().upper()
            except ValueError:
                return value.upper()
    return None
