"""Errors the emulator answers with, in Dataverse's JSON shape.

Dataverse puts its own hexadecimal error code in the body; the HTTP status is separate, and
clients are expected to look at both. The codes below are the ones Dataverse uses for the same
situations, so a client's error handling can be exercised against the emulator."""

from __future__ import annotations

from typing import Any

# Dataverse error codes (the "code" of the error body), by situation.
OBJECT_DOES_NOT_EXIST = "0x80040217"
DUPLICATE_RECORD = "0x80040237"
VERSION_MISMATCH = "0x80060882"
QUERY_SYNTAX = "0x80060888"
RESOURCE_NOT_FOUND = "0x8006088a"
PAYLOAD_ERROR = "0x80048d19"
STRING_TOO_LONG = "0x80044331"
THROTTLED = "0x80072322"
UNEXPECTED = "0x80040216"
SERVICE_UNAVAILABLE = "0x80040265"
EXPIRED_VERSION_STAMP = "0x80044352"


class ODataError(Exception):
    """A request the emulator refuses; becomes ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


def not_found(entity_type: str, key: str) -> ODataError:
    return ODataError(404, OBJECT_DOES_NOT_EXIST, f"{entity_type} With Id = {key} Does Not Exist")


def no_segment(segment: str) -> ODataError:
    return ODataError(404, RESOURCE_NOT_FOUND, f"Resource not found for the segment '{segment}'.")


def bad_query(message: str) -> ODataError:
    return ODataError(400, QUERY_SYNTAX, message)


def bad_payload(message: str) -> ODataError:
    return ODataError(400, PAYLOAD_ERROR, message)


def unknown_property(name: str, entity_type: str) -> ODataError:
    return ODataError(
        400, QUERY_SYNTAX,
        f"The property '{name}' does not exist on type 'Microsoft.Dynamics.CRM.{entity_type}'. "
        "Make sure to only use property names that are defined by the type.")


def duplicate(entity_type: str) -> ODataError:
    return ODataError(412, DUPLICATE_RECORD,
                      f"A record with matching key values already exists ({entity_type}).")


def version_mismatch() -> ODataError:
    return ODataError(412, VERSION_MISMATCH,
                      "The version of the existing record doesn't match the RowVersion "
                      "property provided.")


def precondition_required() -> ODataError:
    return ODataError(428, "428", "Precondition required: send If-Match with the record's "
                                  "ETag to change or delete it.")


def change_token_expired() -> ODataError:
    """A ``$deltatoken`` past the change-tracking retention (or not from this service).

    Dataverse reports it as ExpiredVersionStamp; the status is 410 Gone, which is what
    OData clients (crmsync's among them) take as "start again with a full read"."""
    return ODataError(410, EXPIRED_VERSION_STAMP,
                      "Version stamp associated with the client has expired: the change "
                      "tracking token has expired. Please perform a full sync.")


def not_with_change_tracking(option: str) -> ODataError:
    return ODataError(400, QUERY_SYNTAX, f'The "{option}" query parameter isn\'t supported '
                                         "when Change Tracking is enabled.")
