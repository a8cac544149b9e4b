"""The two managed-identity endpoints an Azure host offers, as msal's managed-identity
client talks to them: the instance metadata service of a VM
(``GET /metadata/identity/oauth2/token``, header ``Metadata: true``) and the identity
endpoint of App Service / Functions (``GET $IDENTITY_ENDPOINT``, header
``X-IDENTITY-HEADER: $IDENTITY_HEADER``). Point msal at them with
``AZURE_POD_IDENTITY_AUTHORITY_HOST=<root>`` and ``IDENTITY_ENDPOINT=<root>/msi/token``.

Identities are named by client id; ``SYSTEM_ASSIGNED`` stands for the host's own
identity. A token they hand out is an ordinary token of the emulator's issuer."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Collection, Mapping

from worker.emulator.protocol import Response, json_response

IMDS_PATH = "/metadata/identity/oauth2/token"
APP_SERVICE_PATH = "/msi/token"
SYSTEM_ASSIGNED = "system"


class IdentityEndpoints:
    """Answers token requests for the configured identities; ``grant(lifetime)`` is the
    issuer's, returning a new token."""

    def __init__(self, identities: Collection[str], header: str | None,
                 grant: Callable[[], tuple[str, float]],
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.identities = set(identities)
        self.header = header
        self._grant = grant
        self._wall_clock = wall_clock

    def handle(self, path: str, query: Mapping[str, str],
               headers: Mapping[str, str]) -> Response:
        if path == IMDS_PATH:
            return self._imds(query, headers)
        return self._app_service(query, headers)

    def _identity(self, query: Mapping[str, str]) -> str | None:
        wanted = query.get("client_id") or SYSTEM_ASSIGNED
        return wanted if wanted in self.identities else None

    def _imds(self, query: Mapping[str, str], headers: Mapping[str, str]) -> Response:
        if headers.get("metadata", "").lower() != "true":
            return _imds_error("Required metadata header not specified")
        if not query.get("resource"):
            return _imds_error("Required audience parameter not specified")
        identity = self._identity(query)
        if identity is None:
            return _imds_error("Identity not found")
        token, lifetime = self._grant()
        seconds = int(lifetime)
        now = int(self._wall_clock())
        # IMDS writes its numbers as strings.
        return json_response(200, {
            "access_token": token, "client_id": identity, "expires_in": str(seconds),
            "expires_on": str(now + seconds), "ext_expires_in": str(seconds),
            "not_before": str(now), "resource": query["resource"], "token_type": "Bearer"})

    def _app_service(self, query: Mapping[str, str], headers: Mapping[str, str]) -> Response:
        offered = headers.get("x-identity-header", "")
        if self.header is None or not hmac.compare_digest(offered, self.header):
            return json_response(401, {"statusCode": 401,
                                       "message": "Unauthorized: X-IDENTITY-HEADER is "
                                                  "missing or wrong."})
        if not query.get("resource"):
            return json_response(400, {"statusCode": 400,
                                       "message": "No resource parameter was provided."})
        identity = self._identity(query)
        if identity is None:
            return json_response(400, {"statusCode": 400,
                                       "message": "No managed identity found for the "
                                                  "specified client id."})
        token, lifetime = self._grant()
        return json_response(200, {
            "access_token": token, "expires_on": str(int(self._wall_clock() + lifetime)),
            "resource": query["resource"], "token_type": "Bearer", "client_id": identity})


def _imds_error(description: str) -> Response:
    return json_response(400, {"error": "invalid_request", "error_description": description})
