"""Credentials never travel in clear text by accident: a connection that sends a token (or
a client secret to its token URL) refuses plain http unless the host is loopback or the
configuration says ``allow_http = true``."""

from __future__ import annotations

import pytest

from worker.errors import ConfigurationError
from worker.remote.config import load_connection

TOKEN = {"CRMSYNC_CRM_TOKEN": "t0ken"}


@pytest.mark.parametrize("env", [
    {"CRMSYNC_CRM_URL": "http://crm.example.com/api", **TOKEN},
    {"CRMSYNC_CRM_URL": "http://10.0.0.5:8080/api", **TOKEN},
    {"CRMSYNC_CRM_URL": "https://crm.example.com/api", "CRMSYNC_CRM_CLIENT_ID": "c",
     "CRMSYNC_CRM_CLIENT_SECRET": "s", "CRMSYNC_CRM_TOKEN_URL": "http://login.example.com/t"},
])
def test_plain_http_with_credentials_is_refused(env: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError, match="plain http") as caught:
        load_connection(env=env)
    assert "CRMSYNC_CRM_ALLOW_HTTP" in str(caught.value)
    assert "t0ken" not in str(caught.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/api", "http://[::1]:80/api",
                                 "http://localhost/api", "https://crm.example.com/api"])
def test_loopback_or_https_is_accepted(url: str) -> None:
    assert load_connection(env={"CRMSYNC_CRM_URL": url, **TOKEN}).url == url


def test_allow_http_says_so_explicitly() -> None:
    settings = load_connection(env={"CRMSYNC_CRM_URL": "http://crm.lan/api",
                                    "CRMSYNC_CRM_ALLOW_HTTP": "true", **TOKEN})
    assert settings.allow_http
    # Without credentials there is nothing to protect.
    assert load_connection(env={"CRMSYNC_CRM_URL": "http://crm.lan/api"}).auth == "none"
