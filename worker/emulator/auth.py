"""An OAuth2 client-credentials token endpoint shaped like Microsoft Entra ID's, and the
Bearer check on data requests.

Off unless a client id and secret are configured. Tokens are opaque random strings kept in
memory with their expiry; neither secrets nor tokens are ever logged."""

from __future__ import annotations

import base64
import hmac
import math
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote

from worker.emulator.protocol import Response, json_response

TOKEN_PATH = "/oauth2/v2.0/token"


class TokenIssuer:
    """Issues Bearer tokens for one configured client and checks them on data requests.

    With no client configured, ``required`` is False: any credentials get a token and data
    requests need none, so a client set up for authentication also works against an
    emulator started without it."""

    def __init__(self, client_id: str | None = None, client_secret: str | None = None,
                 lifetime: float = 3600, clock: Callable[[], float] = time.monotonic) -> None:
        if (client_id is None) != (client_secret is None):
            raise ValueError("client id and client secret go together")
        self.client_id = client_id
        self._secret = client_secret
        self.lifetime = lifetime
        self._clock = clock
        self._tokens: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def required(self) -> bool:
        return self.client_id is not None

    def issue(self, body: bytes, authorization: str | None) -> Response:
        """The token endpoint: a form-encoded client-credentials request."""
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        if authorization and authorization.lower().startswith("basic "):
            form.update(_basic_credentials(authorization))
        refusal = self._refusal(form)
        if refusal is not None:
            return refusal
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = self._clock()
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
            self._tokens[token] = now + self.lifetime
        seconds = math.ceil(self.lifetime)
        return json_response(200, {"token_type": "Bearer", "expires_in": seconds,
                                   "ext_expires_in": seconds, "access_token": token},
                             [("Cache-Control", "no-store, no-cache")],
                             content_type="application/json; charset=utf-8")

    def _refusal(self, form: Mapping[str, str]) -> Response | None:
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
        if not self.required:
            return None
        if not hmac.compare_digest(form["client_id"], self.client_id or ""):
            return _entra_error(400, "unauthorized_client", 700016,
                                f"Application with identifier '{form['client_id']}' was not "
                                "found in the directory.")
        if not form.get("client_secret"):
            return _entra_error(401, "invalid_client", 7000216,
                                "'client_assertion', 'client_secret' or 'request' is required "
                                "for the 'client_credentials' grant type.")
        if not hmac.compare_digest(form["client_secret"].encode(),
                                   (self._secret or "").encode()):
            return _entra_error(401, "invalid_client", 7000215,
                                "Invalid client secret provided. Ensure the secret being sent "
                                "in the request is the client secret value, not the client "
                                "secret ID.")
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


def _basic_credentials(header: str) -> dict[str, str]:
    try:
        decoded = base64.b64decode(header.split(" ", 1)[1]).decode()
    except (ValueError, IndexError):
        return {}
    client_id, _, secret = decoded.partition(":")
    return {"client_id": unquote(client_id), "client_secret": unquote(secret)}


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
