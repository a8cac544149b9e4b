"""An OAuth2 client-credentials token endpoint shaped like Microsoft Entra ID's, the
OpenID configuration msal reads from an authority, and the Bearer check on data requests.

Off unless a client (with a secret and/or registered certificates) or a managed identity is
configured. A client proves itself with its secret (in the body or by HTTP Basic) or with a
client assertion signed by a registered certificate (assertions.py); managed identities get
tokens from the endpoints of identity.py. Refusals use Entra's error format and codes.
Tokens are opaque random strings kept in memory with their expiry; neither secrets, keys,
assertions nor tokens are ever logged.

msal insists on an https authority: serve the emulator over TLS (``EmulatorServer(tls=…)``)
and let the client trust its certificate (``REQUESTS_CA_BUNDLE``) to sign in through msal."""

from __future__ import annotations

import base64
import hmac
import math
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote_plus

from worker.emulator.identity import APP_SERVICE_PATH, IMDS_PATH, IdentityEndpoints
from worker.emulator.protocol import Request, Response, json_response

if TYPE_CHECKING:
    from worker.emulator.assertions import AssertionVerifier

TOKEN_PATH = "/oauth2/v2.0/token"
_DISCOVERY = re.compile(r"/([A-Za-z0-9.-]+)/v2\.0/\.well-known/openid-configuration")


class TokenIssuer:
    """Issues Bearer tokens for one configured client and for managed identities, and
    checks them on data requests.

    ``certificates``: PEM certificates registered on the client's app registration;
    ``tenants``: the tenants that exist (empty: any); ``managed_identities``: client ids
    of identities the host has (``identity.SYSTEM_ASSIGNED`` for its own);
    ``identity_header``: App Service's ``IDENTITY_HEADER`` value.

    With no client and no identity configured, ``required`` is False: any credentials get
    a token and data requests need none, so a client set up for authentication also works
    against an emulator started without it."""

    def __init__(self, client_id: str | None = None, client_secret: str | None = None,
                 lifetime: float = 3600, clock: Callable[[], float] = time.monotonic, *,
                 certificates: Iterable[bytes | str] = (), tenants: Collection[str] = (),
                 managed_identities: Collection[str] = (),
                 identity_header: str | None = None) -> None:
        registered = list(certificates)
        if client_id is None and (client_secret is not None or registered):
            raise ValueError("a client secret or certificate needs a client id")
        if client_id is not None and client_secret is None and not registered:
            raise ValueError("a client id needs a client secret or a certificate")
        self.client_id = client_id
        self._secret = client_secret
        self.lifetime = lifetime
        self._clock = clock
        self._tokens: dict[str, float] = {}
        self._lock = threading.Lock()
        self.tenants = set(tenants)
        self.assertions: AssertionVerifier | None = None
        if client_id is not None and registered:
            # Imported only here: PyJWT and cryptography are slow to import, and most
            # emulators check no certificate.
            from worker.emulator.assertions import AssertionVerifier

            self.assertions = AssertionVerifier(client_id, registered)
        self.identity = IdentityEndpoints(managed_identities, identity_header, self._grant)

    @property
    def required(self) -> bool:
        return self.client_id is not None or bool(self.identity.identities)

    def _grant(self) -> tuple[str, float]:
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = self._clock()
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
            self._tokens[token] = now + self.lifetime
        return token, self.lifetime

    def issue(self, body: bytes, authorization: str | None, endpoint: str = "") -> Response:
        """The token endpoint: a form-encoded client-credentials request. ``endpoint`` is
        the URL it was sent to (a client assertion's audience)."""
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        if authorization and authorization.lower().startswith("basic "):
            form.update(_basic_credentials(authorization))
        refusal = self._refusal(form, endpoint)
        if refusal is not None:
            return refusal
        token, lifetime = self._grant()
        seconds = math.ceil(lifetime)
        return json_response(200, {"token_type": "Bearer", "expires_in": seconds,
                                   "ext_expires_in": seconds, "access_token": token},
                             [("Cache-Control", "no-store, no-cache")],
                             content_type="application/json; charset=utf-8")

    def route(self, request: Request) -> Response | None:
        """The answer of the sign-in endpoints (token, OpenID configuration, managed
        identity), or None when ``request`` is for none of them."""
        path = request.path
        if path.endswith(TOKEN_PATH) and request.method == "POST":
            return self.issue(request.body, request.headers.get("authorization"),
                              request.root + path)
        if request.method != "GET":
            return None
        if path in (IMDS_PATH, APP_SERVICE_PATH):
            return self.identity.handle(path, request.query, request.headers)
        return self.discovery(request.root, path)

    def discovery(self, root: str, path: str) -> Response | None:
        """The OpenID configuration of ``/<tenant>/v2.0/.well-known/openid-configuration``
        (what msal reads of an authority), or None for another path."""
        found = _DISCOVERY.fullmatch(path)
        if found is None:
            return None
        tenant = found.group(1)
        if self.tenants and tenant not in self.tenants:
            return _entra_error(400, "invalid_tenant", 90002,
                                f"Tenant '{tenant}' not found. Check to make sure you have "
                                "the correct tenant ID and are signing into the correct "
                                "cloud.")
        base = f"{root}/{tenant}"
        return json_response(200, {
            "issuer": f"{base}/v2.0", "token_endpoint": f"{base}{TOKEN_PATH}",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "jwks_uri": f"{root}/{tenant}/discovery/v2.0/keys",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post", "private_key_jwt", "client_secret_basic"],
            "response_types_supported": ["code", "id_token", "code id_token",
                                         "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "tenant_region_scope": None, "cloud_instance_name": "microsoftonline.com"})

    def _refusal(self, form: Mapping[str, str], endpoint: str) -> Response | None:
        if form.get("grant_type") != "client_credentials":
            return _entra_error(400, "unsupported_grant_type", 70003,
                                "The app requested an unsupported grant type "
                                f"'{form.get('grant_type', '')}'.")
        for name in ("client_id", "scope"):
            if not form.get(name):
                return _entra_error(400, "invalid_request", 900144,
                                    f"The request body must contain the following parameter: "
                                    f"'{name}'.")
        if not form["scope"].endswith("/.default"):
            return _entra_error(400, "invalid_scope", 1002012,
                                f"The provided value for scope {form['scope']} is not valid. "
                                "Client credential flows must have a scope value with "
                                "/.default suffixed to the resource identifier.")
        tenant = _tenant_of(endpoint)
        if self.tenants and tenant is not None and tenant not in self.tenants:
            return _entra_error(400, "invalid_tenant", 90002,
                                f"Tenant '{tenant}' not found.")
        if not self.required or self.client_id is None:
            return None
        if not hmac.compare_digest(form["client_id"], self.client_id):
            return _entra_error(400, "unauthorized_client", 700016,
                                f"Application with identifier '{form['client_id']}' was not "
                                "found in the directory.")
        return self._credential_refusal(form, endpoint)

    def _credential_refusal(self, form: Mapping[str, str], endpoint: str) -> Response | None:
        if form.get("client_assertion"):
            if self.assertions is None:
                return _entra_error(401, "invalid_client", 700027,
                                    "The certificate with identifier used to sign the client "
                                    "assertion is not registered on application. [Reason - "
                                    "The key was not found.]")
            audiences = {endpoint, endpoint.replace(TOKEN_PATH, "/v2.0")} - {""}
            refused = self.assertions.refusal(form["client_assertion"],
                                              form.get("client_assertion_type", ""), audiences)
            if refused is None:
                return None
            return _entra_error(401, refused.error, refused.code, refused.description)
        if not form.get("client_secret"):
            return _entra_error(401, "invalid_client", 7000216,
                                "'client_assertion', 'client_secret' or 'request' is required "
                                "for the 'client_credentials' grant type.")
        if not hmac.compare_digest(form["client_secret"].encode(),
                                   (self._secret or "").encode()) or self._secret is None:
            return _entra_error(401, "invalid_client", 7000215,
                                "Invalid client secret provided. Ensure the secret being sent "
                                "in the request is the client secret value, not the client "
                                "secret ID, for a secret added to app "
                                f"'{self.client_id}'.")
        return None

    def check(self, authorization: str | None) -> str | None:
        """None when the request may proceed, else why not (for ``WWW-Authenticate``)."""
        if not self.required:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "Bearer authorization is required"
        with self._lock:
            expires = self._tokens.get(token.strip())
            if expires is None:
                return "The access token is invalid"
            if expires <= self._clock():
                return "The access token is expired"
        return None

    def revoke_all(self) -> None:
        with self._lock:
            self._tokens.clear()


def unauthorized(reason: str, token_url: str) -> Response:
    """Dataverse's 401: no body, the reason in ``WWW-Authenticate``."""
    challenge = (f'Bearer error="invalid_token", error_description="{reason}", '
                 f'authorization_uri="{token_url}"')
    return Response(401, [("WWW-Authenticate", challenge), ("OData-Version", "4.0")])


def _tenant_of(endpoint: str) -> str | None:
    """The tenant segment of ``…/<tenant>/oauth2/v2.0/token``, if there is one."""
    found = re.search(r"/([A-Za-z0-9.-]+)" + re.escape(TOKEN_PATH) + "$", endpoint)
    return found.group(1) if found else None


def _basic_credentials(header: str) -> dict[str, str]:
    try:
        decoded = base64.b64decode(header.split(" ", 1)[1]).decode()
    except (ValueError, IndexError):
        return {}
    client_id, _, secret = decoded.partition(":")
    # RFC 6749 2.3.1: each part is form-encoded ("+" for a space) before joining.
    return {"client_id": unquote_plus(client_id), "client_secret": unquote_plus(secret)}


def _entra_error(status: int, error: str, code: int, description: str) -> Response:
    trace = str(uuid.uuid4())
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    doc: dict[str, Any] = {
        "error": error,
        "error_description": f"AADSTS{code}: {description} Trace ID: {trace} "
                             f"Correlation ID: {trace} Timestamp: {stamp}",
        "error_codes": [code], "timestamp": stamp, "trace_id": trace, "correlation_id": trace,
    }
    return json_response(status, doc, content_type="application/json; charset=utf-8")
