"""Entra ID's sign-in error codes (``AADSTS…``): what each means for crmsync's settings.

Entra answers a refused token request with ``error`` (an OAuth2 word such as
``invalid_client``), ``error_codes`` and an ``error_description`` starting
``AADSTS<code>: ``. The description is long and partly generic; what an administrator needs
is the code, which setting to look at, and a sentence saying what is wrong. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_CODE = re.compile(r"AADSTS(\d{5,8})")


@dataclass(frozen=True)
class Meaning:
    """``setting``: the connection setting to fix (a key of ConnectionSettings, or
    ``credential`` for whichever credential is in use); ``text``: what is wrong."""

    setting: str
    text: str


MEANINGS: dict[int, Meaning] = {
    7000215: Meaning("client_secret", "invalid client secret: the value is not a current "
                     "secret of the application (use the secret's Value, not its Secret ID)"),
    7000222: Meaning("client_secret", "the client secret has expired: create a new one on "
                     "the app registration"),
    700027: Meaning("client_certificate", "the certificate is not registered on the "
                    "application, or expired, or its signature does not verify: upload "
                    "the certificate (.cer/.pem, public part) to the app registration"),
    700024: Meaning("client_certificate", "the client assertion is outside its validity "
                    "window: check this machine's clock"),
    7000216: Meaning("credential", "no credential was sent: set a client secret or a "
                     "certificate"),
    700016: Meaning("client_id", "unknown application: no application with this client id "
                    "in the tenant (wrong client_id or tenant, or the app is not consented "
                    "there)"),
    7000112: Meaning("client_id", "the application is disabled in the tenant"),
    90002: Meaning("tenant", "the tenant does not exist (or is not in this cloud: check "
                   "authority)"),
    900023: Meaning("tenant", "the tenant is not a valid tenant id or domain"),
    90014: Meaning("tenant", "a required field of the request is missing"),
    500011: Meaning("scope", "the resource is not in the tenant: check the url / scope of "
                    "the Dataverse environment and that it belongs to this tenant"),
    1002012: Meaning("scope", "the scope is not valid: client credentials need "
                     "'<resource>/.default'"),
    700025: Meaning("client_id", "the application is a public client; crmsync needs a "
                    "confidential client (an app registration with a secret or certificate)"),
    53003: Meaning("client_id", "blocked by a Conditional Access policy of the tenant"),
    7000218: Meaning("credential", "the request needs a client assertion or client "
                     "secret"),
}


def entra_code(doc: dict[str, Any]) -> int | None:
    """The first AADSTS code of an error answer (``error_codes`` or the description)."""
    codes = doc.get("error_codes")
    if isinstance(codes, list) and codes and isinstance(codes[0], int):
        return codes[0]
    found = _CODE.search(str(doc.get("error_description") or ""))
    return int(found.group(1)) if found else None


def code_in_text(text: str) -> int | None:
    """An AADSTS code mentioned anywhere in ``text`` (e.g. a failed discovery's body)."""
    found = _CODE.search(text)
    return int(found.group(1)) if found else None


def meaning_of(code: int | None, error: str | None) -> Meaning:
    """The meaning of ``code``; for a code not in the table, a general one by ``error``."""
    if code is not None and code in MEANINGS:
        return MEANINGS[code]
    if error == "invalid_client":
        return Meaning("credential", "the credential was refused")
    if error in ("unauthorized_client", "invalid_tenant"):
        return Meaning("client_id", "the application or tenant was refused")
    if error == "invalid_scope":
        return Meaning("scope", "the scope was refused")
    return Meaning("credential", "the sign-in was refused")
