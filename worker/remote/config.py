"""Connection settings: named connections from a TOML file and ``CRMSYNC_<NAME>_<SETTING>``
environment variables (the environment wins), validated into a frozen
:class:`ConnectionSettings`.

    # crmsync.toml
    [connections.crm]
    url = "https://contoso.crm4.dynamics.com/api/data/v9.2"
    auth = "oauth2"
    tenant = "00000000-0000-0000-0000-000000000000"
    client_id = "11111111-1111-1111-1111-111111111111"
    client_secret_file = "/etc/crmsync/crm-secret"

Secrets (``client_secret``, ``client_certificate`` and its passphrase, ``token``) are read
from ``CRMSYNC_<NAME>_<SECRET>``, from the file named by ``…_FILE`` / ``<secret>_file``, or
from the systemd credential ``$CREDENTIALS_DIRECTORY/<name>_<secret>``; a config file may
name a secret file but may not hold a secret itself. docs/remote.md lists every setting.

Which sign-in a connection uses: ``auth = "oauth2"`` with ``tenant`` signs in to Entra ID
through msal (a client secret or a certificate); ``auth = "oauth2"`` with ``token_url``
uses the small generic client (a client secret, in the body or by HTTP Basic);
``auth = "managed_identity"`` asks the Azure host for a token.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from worker.errors import ConfigurationError
from worker.remote.filters import KeyType
from worker.remote.retry import RetryPolicy
from worker.remote.secrets import Secret, credential_path, read_secret_file

AuthKind = Literal["none", "bearer", "oauth2", "managed_identity"]
TokenEndpointAuthMethod = Literal["client_secret_post", "client_secret_basic"]
CreateMethod = Literal["patch", "post"]
BulkMode = Literal["auto", "on", "off"]

DEFAULT_CONNECTION = "crm"
PUBLIC_AUTHORITY = "login.microsoftonline.com"
MAX_PAGE_SIZE = 5000
MAX_BATCH_SIZE = 1000
MAX_BULK_SIZE = 5000


@dataclass(frozen=True)
class Dialect:
    """How one OData v4 service behaves where services differ.

    ``create_method``: ``"patch"`` creates with ``PATCH set(id)`` + ``If-None-Match: *``
    (Dataverse; 412 = the record already exists); ``"post"`` POSTs to the set with the key
    in the body (409 = already exists). ``batch``: the service takes ``$batch``.
    ``prefer_maxpagesize``: it honours ``Prefer: odata.maxpagesize``. ``change_tracking``:
    it answers ``Prefer: odata.track-changes`` with delta links. ``return_representation``:
    writes ask for the written record back (its etag and modified-on). ``key_type``: how a
    key is written in a URL or filter (``guid`` unquoted, ``string`` quoted, ``int``).
    ``annotations``: value of ``Prefer: odata.include-annotations`` (None: not sent).
    ``bulk_messages``: whether the service has Dataverse's ``CreateMultiple`` /
    ``UpdateMultiple`` / ``UpsertMultiple`` (``auto``: when ``$metadata`` declares them).
    ``count_reads``: a pass's read of modified records asks for ``$count=true`` (one figure
    on its first page, the progress total; Dataverse stops counting at 5,000).
    """

    name: str = "dataverse"
    create_method: CreateMethod = "patch"
    batch: bool = True
    prefer_maxpagesize: bool = True
    change_tracking: bool = False
    return_representation: bool = True
    key_type: KeyType = "guid"
    annotations: str | None = None
    bulk_messages: BulkMode = "auto"
    count_reads: bool = True


DIALECTS: dict[str, Dialect] = {
    "dataverse": Dialect(),
    # $count is not required of a minimal OData service: asked for only when configured.
    "odata": Dialect(name="odata", create_method="post", batch=False, bulk_messages="off",
                     count_reads=False),
}


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything the OData client needs to talk to one service. Secrets are
    :class:`Secret`; ``repr()`` of the settings is safe to log."""

    name: str
    url: str
    auth: AuthKind = "none"
    tenant: str | None = None
    authority: str = PUBLIC_AUTHORITY
    token_url: str | None = None
    token_endpoint_auth_method: TokenEndpointAuthMethod = "client_secret_post"
    client_id: str | None = None
    client_secret: Secret | None = None
    client_certificate: Secret | None = None
    client_certificate_passphrase: Secret | None = None
    scope: str | None = None
    token: Secret | None = None
    page_size: int = MAX_PAGE_SIZE
    batch_size: int = 100
    bulk_size: int = 500
    key_chunk_size: int = 50
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    concurrency: int = 4
    follow_service_hints: bool = True
    rate_limit_window: float = 300.0
    max_retries: int = 5
    retry_base: float = 0.5
    retry_cap: float = 60.0
    max_retry_after: float = 300.0
    max_pages: int = 100_000
    max_reply_mib: int = 64
    allow_http: bool = False
    dialect: Dialect = field(default_factory=Dialect)
    # Push (Dataverse webhooks): off unless ``webhook = true`` and a webhook secret is set.
    webhook: bool = False
    webhook_header: str = "x-crmsync-webhook-key"
    webhook_secret: Secret | None = None
    # Where each setting came from (``CRMSYNC_CRM_CLIENT_ID``, ``crmsync.toml
    # [connections.crm] tenant``, ``$CREDENTIALS_DIRECTORY/crm_client_secret`` …), so that
    # an error names the place to fix.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def uses_entra(self) -> bool:
        """Signs in to Entra ID through msal (a tenant and no explicit token_url)."""
        return self.auth == "oauth2" and self.token_url is None

    def source(self, key: str) -> str:
        """Where ``key`` was set, or the environment variable that would set it."""
        return self.sources.get(key) or env_prefix(self.name) + key.upper()

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.max_retries + 1,
            base=self.retry_base,
            cap=self.retry_cap,
            max_retry_after=self.max_retry_after,
        )

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout, self.read_timeout)

    @property
    def max_reply_bytes(self) -> int:
        return self.max_reply_mib * 1024 * 1024


# ---------------------------------------------------------------------------- parsers
# Each parser takes the raw value (a str from the environment, or a TOML value) and the
# place it came from, and returns the typed value or raises ConfigurationError naming it.

Parser = Callable[[Any, str], Any]


def _integer(lo: int, hi: int) -> Parser:
    def parse(raw: Any, where: str) -> int:
        value: int | None = None
        if isinstance(raw, int) and not isinstance(raw, bool):
            value = raw
        elif isinstance(raw, str) and re.fullmatch(r"\s*[+-]?\d+\s*", raw):
            value = int(raw)
        if value is None or not lo <= value <= hi:
            raise ConfigurationError(f"{where}: expected an integer {lo}-{hi}, got {raw!r}")
        return value

    return parse


def _number(lo: float, hi: float, *, positive: bool = False) -> Parser:
    def parse(raw: Any, where: str) -> float:
        value: float | None = None
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            value = float(raw)
        elif isinstance(raw, str):
            try:
                value = float(raw)
            except ValueError:
                value = None
        ok = value is not None and lo <= value <= hi and not (positive and value <= 0)
        if not ok:
            bounds = f"> {lo:g} and <= {hi:g}" if positive else f"{lo:g}-{hi:g}"
            raise ConfigurationError(
                f"{where}: expected a number of seconds {bounds}, got {raw!r}")
        assert value is not None
        return value

    return parse


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _boolean(raw: Any, where: str) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
        return raw.strip().lower() in _TRUE
    raise ConfigurationError(f"{where}: expected true or false, got {raw!r}")


def _choice(*options: str) -> Parser:
    def parse(raw: Any, where: str) -> str:
        if isinstance(raw, str) and raw.strip().lower() in options:
            return raw.strip().lower()
        raise ConfigurationError(f"{where}: expected one of {', '.join(options)}, got {raw!r}")

    return parse


def _text(raw: Any, where: str) -> str | None:
    if not isinstance(raw, str):
        raise ConfigurationError(f"{where}: expected a string, got {raw!r}")
    return raw.strip() or None


def _http_url(raw: Any, where: str) -> str:
    text = _text(raw, where)
    parts = urlsplit(text or "")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(f"{where}: expected an http(s) URL, got {raw!r}")
    if parts.query or parts.fragment:
        raise ConfigurationError(f"{where}: the URL must not have a query or fragment")
    return (text or "").rstrip("/")


def _authority_host(raw: Any, where: str) -> str:
    """An authority host (``login.microsoftonline.us``), also written as an https URL."""
    text = (_text(raw, where) or "").rstrip("/")
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme != "https" or parts.path or parts.query or parts.fragment:
            raise ConfigurationError(
                f"{where}: expected an authority host such as login.microsoftonline.us "
                f"(https only, no path), got {raw!r}")
        text = parts.netloc
    if not re.fullmatch(r"[A-Za-z0-9.-]+(:\d{1,5})?", text):
        raise ConfigurationError(
            f"{where}: expected an authority host such as login.microsoftonline.us, "
            f"got {raw!r}")
    return text.lower()


def _header_name(raw: Any, where: str) -> str:
    if isinstance(raw, str) and re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", raw.strip()):
        return raw.strip().lower()
    raise ConfigurationError(f"{where}: expected an HTTP header name, got {raw!r}")


# setting name -> parser. Secrets are handled apart (see _load_secret).
_SETTINGS: dict[str, Parser] = {
    "url": _http_url,
    "auth": _choice("none", "bearer", "oauth2", "managed_identity"),
    "tenant": _text,
    "authority": _authority_host,
    "token_url": _http_url,
    "token_endpoint_auth_method": _choice("client_secret_post", "client_secret_basic"),
    "client_id": _text,
    "scope": _text,
    "page_size": _integer(1, MAX_PAGE_SIZE),
    "batch_size": _integer(1, MAX_BATCH_SIZE),
    "bulk_size": _integer(1, MAX_BULK_SIZE),
    "key_chunk_size": _integer(1, 500),
    "connect_timeout": _number(0, 300, positive=True),
    "read_timeout": _number(0, 3600, positive=True),
    "concurrency": _integer(1, 256),
    "follow_service_hints": _boolean,
    "rate_limit_window": _number(0, 86400, positive=True),
    "max_retries": _integer(0, 50),
    "retry_base": _number(0, 60),
    "retry_cap": _number(0, 3600),
    "max_retry_after": _number(0, 86400),
    "max_pages": _integer(1, 100_000_000),
    "max_reply_mib": _integer(1, 16384),
    "allow_http": _boolean,
    "webhook": _boolean,
    "webhook_header": _header_name,
}
_DIALECT_SETTINGS: dict[str, Parser] = {
    "create_method": _choice("patch", "post"),
    "batch": _boolean,
    "prefer_maxpagesize": _boolean,
    "change_tracking": _boolean,
    "return_representation": _boolean,
    "key_type": _choice("guid", "string", "int"),
    "annotations": _text,
    "bulk_messages": _choice("auto", "on", "off"),
    "count_reads": _boolean,
}
_SECRETS = ("client_secret", "client_certificate", "client_certificate_passphrase", "token",
            "webhook_secret")
_FILE_KEYS = {"dialect", *_SETTINGS, *_DIALECT_SETTINGS, *(f"{s}_file" for s in _SECRETS)}


# ---------------------------------------------------------------------------- process mode

_foreground = False


def set_foreground(on: bool) -> None:
    """Mark this process as a foreground command (``check``, ``sync``, ``couple`` …): a
    refused or unresolvable address then fails at once instead of being retried with
    backoff, which only the long-running worker needs."""
    global _foreground
    _foreground = on


def foreground() -> bool:
    return _foreground


# ---------------------------------------------------------------------------- the file

# Top-level tables a configuration file may have; anything else (a typo such as
# ``[connection.crm]``) is refused.
SECTIONS = {"connections": "[connections.<name>]: one table per remote service"}


def read_config_file(path: Path) -> dict[str, Any]:
    """The parsed TOML document, its top-level tables checked. Raises ConfigurationError
    naming the file (and line, for a syntax error)."""
    try:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigurationError(f"config file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigurationError(f"config file {str(path)!r} is a directory") from None
    except OSError as exc:
        raise ConfigurationError(f"config file {str(path)!r}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigurationError(
            f"config file {str(path)!r}: not UTF-8 text (byte {exc.start}); "
            "save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"config file {str(path)!r}: {exc}") from None
    for key, value in doc.items():
        if key not in SECTIONS:
            known = ", ".join(SECTIONS.values())
            raise ConfigurationError(
                f"config file {str(path)!r}: unknown section or key {key!r}; expected {known}")
        if not isinstance(value, dict):
            raise ConfigurationError(
                f"config file {str(path)!r}: {key} must be a table ({SECTIONS[key]}), "
                f"got {value!r}")
    return doc


def validate_file(path: str | Path) -> None:
    """Check every connection of the file as far as the file alone allows (keys and
    values; secrets and the environment are looked at when the connection is used)."""
    doc = read_config_file(Path(path))
    for name in doc.get("connections", {}):
        raw = _Raw(name, {})
        raw.read_document(doc, Path(path))
        for key, parser in (*_SETTINGS.items(), *_DIALECT_SETTINGS.items(),
                            ("dialect", _choice(*DIALECTS))):
            if key in raw.values:
                raw.parsed(key, parser)


# ---------------------------------------------------------------------------- loading

def env_prefix(name: str) -> str:
    """``CRMSYNC_CRM_`` for connection ``crm`` (``-`` and ``.`` become ``_``)."""
    return "CRMSYNC_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper() + "_"


def load_connection(
    name: str = DEFAULT_CONNECTION,
    config_path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
) -> ConnectionSettings:
    """The settings of connection ``name`` from ``config_path`` (default
    ``$CRMSYNC_CONFIG``; no file is fine when the environment has everything) overlaid with
    ``CRMSYNC_<NAME>_<SETTING>`` variables. Raises ConfigurationError naming the setting."""
    env = os.environ if env is None else env
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", name):
        raise ConfigurationError(f"connection name {name!r}: use letters, digits, - _ .")
    raw = _Raw(name, env)
    path = config_path if config_path is not None else env.get("CRMSYNC_CONFIG") or None
    if path is not None:
        raw.read_file(Path(path))
    raw.read_env()
    if "url" not in raw.values:
        raise ConfigurationError(
            f"connection {name!r} has no URL: set {raw.prefix}URL"
            + (f" or url in [connections.{name}] of {path}" if path else ""))
    return raw.build()


class _Raw:
    """The raw values of one connection with where each came from, before parsing."""

    def __init__(self, name: str, env: Mapping[str, str]) -> None:
        self.name = name
        self.env = env
        self.prefix = env_prefix(name)
        self.values: dict[str, tuple[Any, str]] = {}
        self.sources: dict[str, str] = {}

    def read_file(self, path: Path) -> None:
        self.read_document(read_config_file(path), path)

    def read_document(self, doc: dict[str, Any], path: Path) -> None:
        section = doc.get("connections", {}).get(self.name)
        if section is None:
            return
        where = f"{path} [connections.{self.name}]"
        if not isinstance(section, dict):
            raise ConfigurationError(f"{where}: expected a table")
        for key, value in section.items():
            if key in _SECRETS:
                raise ConfigurationError(
                    f"{where} {key}: a config file must not hold secrets; use {key}_file, "
                    f"{self.prefix}{key.upper()} or a systemd credential")
            if key not in _FILE_KEYS:
                raise ConfigurationError(f"{where}: unknown setting {key!r}")
            self.values[key] = (value, f"{where} {key}")

    def read_env(self) -> None:
        for key in (*_FILE_KEYS, *_SECRETS):
            var = self.prefix + key.upper()
            if var in self.env:
                self.values[key] = (self.env[var], var)

    def parsed(self, key: str, parser: Parser) -> Any:
        raw, where = self.values[key]
        return parser(raw, where)

    def secret(self, key: str) -> Secret | None:
        direct, from_file = self.values.get(key), self.values.get(f"{key}_file")
        if direct is not None and from_file is not None and from_file[1].startswith("CRMSYNC_"):
            raise ConfigurationError(
                f"{direct[1]}: set either {direct[1]} or {from_file[1]}, not both")
        if direct is not None:
            if not str(direct[0]).strip():
                raise ConfigurationError(f"{direct[1]}: the secret is empty")
            self.sources[key] = direct[1]
            return Secret(str(direct[0]))
        if from_file is not None:
            self.sources[key] = f"{from_file[1]} {str(from_file[0])!r}"
            return read_secret_file(Path(str(from_file[0])).expanduser(), from_file[1])
        credential = f"{self.name}_{key}"
        path = credential_path(credential, self.env)
        if path is not None:
            self.sources[key] = f"$CREDENTIALS_DIRECTORY/{credential}"
            return read_secret_file(path, self.sources[key])
        return None

    def build(self) -> ConnectionSettings:
        kwargs: dict[str, Any] = {"name": self.name}
        for key, parser in _SETTINGS.items():
            if key in self.values:
                kwargs[key] = self.parsed(key, parser)
                self.sources[key] = self.values[key][1]
        for key in _SECRETS:
            kwargs[key] = self.secret(key)
        kwargs["dialect"] = self.dialect()
        if "auth" not in kwargs:
            kwargs["auth"] = ("bearer" if kwargs["token"] else
                              "oauth2" if kwargs.get("client_id") else "none")
        settings = ConnectionSettings(**kwargs, sources=dict(self.sources))
        return self.check(settings)

    def dialect(self) -> Dialect:
        preset = DIALECTS["dataverse"]
        if "dialect" in self.values:
            preset = DIALECTS[self.parsed("dialect", _choice(*DIALECTS))]
        overrides = {key: self.parsed(key, parser)
                     for key, parser in _DIALECT_SETTINGS.items() if key in self.values}
        return replace(preset, **overrides)

    def where(self, key: str) -> str:
        return self.sources.get(key) or self.prefix + key.upper()

    def check(self, s: ConnectionSettings) -> ConnectionSettings:
        """Rules across settings; fills the derived scope."""
        if s.auth != "none" and not s.allow_http:
            for key in ("url", "token_url"):
                refuse_plain_http(getattr(s, key), self.where(key), self.where("allow_http"))
        if s.webhook and s.webhook_secret is None:
            raise ConfigurationError(
                f"{self.where('webhook')}: a webhook needs {self.prefix}WEBHOOK_SECRET, "
                f"{self.prefix}WEBHOOK_SECRET_FILE or the credential {self.name}_webhook_secret")
        if s.auth == "bearer" and s.token is None:
            raise ConfigurationError(
                f"{self.where('auth')}: bearer auth needs {self.prefix}TOKEN, "
                f"{self.prefix}TOKEN_FILE or the credential {self.name}_token")
        if s.client_certificate_passphrase is not None and s.client_certificate is None:
            raise ConfigurationError(
                f"{self.where('client_certificate_passphrase')}: a passphrase without a "
                f"certificate ({self.prefix}CLIENT_CERTIFICATE_FILE, "
                f"{self.prefix}CLIENT_CERTIFICATE or the credential "
                f"{self.name}_client_certificate)")
        if s.auth == "managed_identity":
            self.check_managed_identity(s)
        elif s.auth == "oauth2":
            self.check_oauth2(s)
        else:
            return s
        if s.tenant is not None and not re.fullmatch(r"[A-Za-z0-9.-]+", s.tenant):
            raise ConfigurationError(
                f"{self.where('tenant')}: expected a tenant id or domain, got {s.tenant!r}")
        scope = s.scope
        if scope is None:
            parts = urlsplit(s.url)
            scope = f"{parts.scheme}://{parts.netloc}/.default"
        return replace(s, scope=scope)

    def check_managed_identity(self, s: ConnectionSettings) -> None:
        for key in ("client_secret", "client_certificate", "token_url"):
            if getattr(s, key) is not None:
                raise ConfigurationError(
                    f"{self.where(key)}: a managed identity signs in without {key}; remove "
                    "it (client_id names a user-assigned identity)")

    def check_oauth2(self, s: ConnectionSettings) -> None:
        if not s.client_id:
            raise ConfigurationError(f"{self.where('client_id')}: oauth2 auth needs a client id")
        if s.client_secret is not None and s.client_certificate is not None:
            raise ConfigurationError(
                f"{self.where('client_certificate')}: set either a client secret "
                f"({self.where('client_secret')}) or a certificate, not both")
        secret_sources = (f"{self.prefix}CLIENT_SECRET, {self.prefix}CLIENT_SECRET_FILE or "
                          f"the credential {self.name}_client_secret")
        if s.token_url is not None:  # a generic OAuth2 token endpoint: our own client
            if s.client_certificate is not None:
                raise ConfigurationError(
                    f"{self.where('client_certificate')}: a certificate signs in to Entra ID "
                    "only: set tenant (and authority) instead of token_url")
            if s.client_secret is None:
                raise ConfigurationError(
                    f"{self.where('client_secret')}: oauth2 auth with token_url needs a "
                    f"client secret ({secret_sources})")
            return
        if s.client_secret is None and s.client_certificate is None:
            raise ConfigurationError(
                f"{self.where('client_secret')}: oauth2 auth needs a client secret "
                f"({secret_sources}) or a certificate ({self.prefix}CLIENT_CERTIFICATE_FILE, "
                f"{self.prefix}CLIENT_CERTIFICATE or the credential "
                f"{self.name}_client_certificate)")
        if not s.tenant:
            raise ConfigurationError(
                f"{self.where('token_url')}: oauth2 auth needs token_url or tenant")
        if "token_endpoint_auth_method" in self.sources:
            raise ConfigurationError(
                f"{self.where('token_endpoint_auth_method')}: applies to a token_url "
                "endpoint; Entra ID (tenant) takes the secret or certificate as msal sends it")


def refuse_plain_http(url: str | None, where: str, allow_where: str) -> None:
    """A credential sent over plain http can be read by anyone on the path: refused unless
    the host is this machine (a loopback address) or ``allow_http = true`` says so."""
    if url is None or urlsplit(url).scheme != "http" or is_loopback(urlsplit(url).hostname):
        return
    raise ConfigurationError(
        f"{where}: {url!r} is plain http, and this connection sends credentials; use "
        f"https, or set {allow_where} = true for a network you trust")


def is_loopback(host: str | None) -> bool:
    """``localhost``, ``*.localhost``, 127.0.0.0/8 or ::1."""
    if not host:
        return False
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def setting_names() -> list[str]:
    """Every setting a connection takes, as written in a config file (for documentation
    and ``--help`` texts)."""
    return ["dialect", *_SETTINGS, *_SECRETS, *(f"{s}_file" for s in _SECRETS),
            *_DIALECT_SETTINGS]

