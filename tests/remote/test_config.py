"""Connection settings: TOML file, CRMSYNC_<NAME>_<SETTING> overrides, secrets from
files and systemd credentials, and error messages that name the setting."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest

from worker.errors import ConfigurationError
from worker.remote.config import PUBLIC_AUTHORITY, load_connection
from worker.remote.secrets import Secret

URL = "http://127.0.0.1:8080/api/data/v9.2"
CLIENT = "11111111-1111-1111-1111-111111111111"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "crmsync.toml"
    path.write_text(text)
    return path


def test_environment_only_with_defaults() -> None:
    s = load_connection(env={"CRMSYNC_CRM_URL": URL + "/"})
    assert s.name == "crm"
    assert s.url == URL
    assert s.auth == "none"
    assert (s.page_size, s.batch_size, s.concurrency, s.max_retries) == (5000, 100, 4, 5)
    assert s.timeout == (10.0, 120.0)
    assert s.dialect.name == "dataverse"
    assert s.dialect.create_method == "patch"
    assert s.dialect.batch is True


def test_file_then_environment_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, f"""
[connections.crm]
url = "{URL}"
page_size = 500
batch_size = 200
read_timeout = 30.5
concurrency = 8

[connections.other]
url = "http://127.0.0.1:9/odata"
dialect = "odata"
""")
    s = load_connection("crm", path, env={"CRMSYNC_CRM_PAGE_SIZE": "250"})
    assert (s.page_size, s.batch_size, s.read_timeout, s.concurrency) == (250, 200, 30.5, 8)
    other = load_connection("other", path, env={})
    assert other.url == "http://127.0.0.1:9/odata"
    assert other.dialect.create_method == "post"
    assert other.dialect.batch is False


def test_config_path_from_crmsync_config(tmp_path: Path) -> None:
    path = write(tmp_path, f'[connections.crm]\nurl = "{URL}"\nmax_retries = 2\n')
    s = load_connection(env={"CRMSYNC_CONFIG": str(path)})
    assert s.max_retries == 2


def test_dialect_settings_override_the_preset(tmp_path: Path) -> None:
    path = write(tmp_path, f"""
[connections.erp]
url = "{URL}"
dialect = "odata"
batch = true
key_type = "int"
""")
    s = load_connection("erp", path, env={"CRMSYNC_ERP_PREFER_MAXPAGESIZE": "no",
                                          "CRMSYNC_ERP_CHANGE_TRACKING": "1",
                                          "CRMSYNC_ERP_CREATE_METHOD": "PATCH"})
    d = s.dialect
    assert (d.name, d.batch, d.key_type, d.prefer_maxpagesize, d.change_tracking,
            d.create_method) == ("odata", True, "int", False, True, "patch")


def test_connection_names_map_to_variable_prefixes() -> None:
    s = load_connection("crm-test", env={"CRMSYNC_CRM_TEST_URL": URL})
    assert s.name == "crm-test"


@pytest.mark.parametrize(("var", "value", "message"), [
    ("CRMSYNC_CRM_PAGE_SIZE", "abc",
     "CRMSYNC_CRM_PAGE_SIZE: expected an integer 1-5000, got 'abc'"),
    ("CRMSYNC_CRM_PAGE_SIZE", "5001", "expected an integer 1-5000, got '5001'"),
    ("CRMSYNC_CRM_BATCH_SIZE", "0", "CRMSYNC_CRM_BATCH_SIZE: expected an integer 1-1000"),
    ("CRMSYNC_CRM_READ_TIMEOUT", "0", "CRMSYNC_CRM_READ_TIMEOUT: expected a number of seconds"),
    ("CRMSYNC_CRM_CONNECT_TIMEOUT", "x", "CRMSYNC_CRM_CONNECT_TIMEOUT"),
    ("CRMSYNC_CRM_AUTH", "kerberos", "CRMSYNC_CRM_AUTH: expected one of none, bearer, oauth2"),
    ("CRMSYNC_CRM_BATCH", "maybe", "CRMSYNC_CRM_BATCH: expected true or false"),
    ("CRMSYNC_CRM_DIALECT", "soap", "CRMSYNC_CRM_DIALECT: expected one of dataverse, odata"),
    ("CRMSYNC_CRM_URL", "ftp://x/y", "CRMSYNC_CRM_URL: expected an http(s) URL"),
    ("CRMSYNC_CRM_KEY_TYPE", "uuid", "CRMSYNC_CRM_KEY_TYPE"),
])
def test_bad_environment_values_name_the_variable(var: str, value: str, message: str) -> None:
    env = {"CRMSYNC_CRM_URL": URL, var: value}
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        load_connection(env=env)


def test_bad_file_values_name_file_section_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, f'[connections.crm]\nurl = "{URL}"\npage_size = "lots"\n')
    with pytest.raises(ConfigurationError,
                       match=re.escape(f"{path} [connections.crm] page_size: expected an integer")):
        load_connection(config_path=path, env={})


def test_unknown_file_settings_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, f'[connections.crm]\nurl = "{URL}"\npagesize = 10\n')
    with pytest.raises(ConfigurationError, match="unknown setting 'pagesize'"):
        load_connection(config_path=path, env={})


def test_missing_url_and_missing_file() -> None:
    with pytest.raises(ConfigurationError, match="set CRMSYNC_CRM_URL"):
        load_connection(env={})
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_connection(config_path="/nonexistent/crmsync.toml", env={})


def test_broken_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[connections.crm\nurl=")
    with pytest.raises(ConfigurationError, match="crmsync.toml"):
        load_connection(config_path=path, env={})


def test_oauth2_from_environment_with_tenant_default_url_and_scope() -> None:
    s = load_connection(env={
        "CRMSYNC_CRM_URL": "https://contoso.crm4.dynamics.com/api/data/v9.2",
        "CRMSYNC_CRM_TENANT": "contoso.onmicrosoft.com",
        "CRMSYNC_CRM_CLIENT_ID": CLIENT,
        "CRMSYNC_CRM_CLIENT_SECRET": "s3cr3t-value",
    })
    assert s.auth == "oauth2"
    assert s.uses_entra and s.token_url is None and s.authority == PUBLIC_AUTHORITY
    assert s.scope == "https://contoso.crm4.dynamics.com/.default"
    assert s.client_secret == Secret("s3cr3t-value")
    assert "s3cr3t-value" not in repr(s) and "s3cr3t-value" not in str(s)


def test_oauth2_needs_its_settings() -> None:
    env = {"CRMSYNC_CRM_URL": URL, "CRMSYNC_CRM_AUTH": "oauth2"}
    with pytest.raises(ConfigurationError, match="client id"):
        load_connection(env=env)
    env["CRMSYNC_CRM_CLIENT_ID"] = CLIENT
    with pytest.raises(ConfigurationError, match="CRMSYNC_CRM_CLIENT_SECRET"):
        load_connection(env=env)
    env["CRMSYNC_CRM_CLIENT_SECRET"] = "x"
    with pytest.raises(ConfigurationError, match="token_url or tenant"):
        load_connection(env=env)
    env["CRMSYNC_CRM_TOKEN_URL"] = "http://127.0.0.1:1/token"
    assert load_connection(env=env).token_url == "http://127.0.0.1:1/token"


def test_bearer_needs_a_token() -> None:
    with pytest.raises(ConfigurationError, match="CRMSYNC_CRM_TOKEN"):
        load_connection(env={"CRMSYNC_CRM_URL": URL, "CRMSYNC_CRM_AUTH": "bearer"})
    s = load_connection(env={"CRMSYNC_CRM_URL": URL, "CRMSYNC_CRM_TOKEN": "abc"})
    assert s.auth == "bearer"
    assert s.token is not None and s.token.reveal() == "abc"


def test_secret_from_file_in_env_and_config(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-file\n")
    env = {"CRMSYNC_CRM_URL": URL, "CRMSYNC_CRM_CLIENT_ID": CLIENT,
           "CRMSYNC_CRM_TOKEN_URL": "http://127.0.0.1:1/token",
           "CRMSYNC_CRM_CLIENT_SECRET_FILE": str(secret_file)}
    s = load_connection(env=env)
    assert s.client_secret is not None and s.client_secret.reveal() == "from-file"
    path = write(tmp_path, f'[connections.crm]\nclient_secret_file = "{secret_file}"\n')
    del env["CRMSYNC_CRM_CLIENT_SECRET_FILE"]
    s = load_connection(config_path=path, env=env)
    assert s.client_secret is not None and s.client_secret.reveal() == "from-file"
    # the environment's secret wins over the file's secret file
    s = load_connection(config_path=path, env={**env, "CRMSYNC_CRM_CLIENT_SECRET": "env"})
    assert s.client_secret is not None and s.client_secret.reveal() == "env"


def test_secret_and_secret_file_both_in_env_is_an_error(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("x")
    with pytest.raises(ConfigurationError, match="not both"):
        load_connection(env={"CRMSYNC_CRM_URL": URL, "CRMSYNC_CRM_TOKEN": "a",
                             "CRMSYNC_CRM_TOKEN_FILE": str(secret_file)})


def test_missing_or_empty_secret_files(tmp_path: Path) -> None:
    env = {"CRMSYNC_CRM_URL": URL, "CRMSYNC_CRM_TOKEN_FILE": str(tmp_path / "nope")}
    with pytest.raises(ConfigurationError,
                       match="CRMSYNC_CRM_TOKEN_FILE: secret file .* does not exist"):
        load_connection(env=env)
    (tmp_path / "empty").write_text("\n")
    env["CRMSYNC_CRM_TOKEN_FILE"] = str(tmp_path / "empty")
    with pytest.raises(ConfigurationError, match="is empty"):
        load_connection(env=env)


def test_secrets_are_not_allowed_in_the_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, f'[connections.crm]\nurl = "{URL}"\nclient_secret = "oops-leaked"\n')
    with pytest.raises(ConfigurationError, match="must not hold secrets") as info:
        load_connection(config_path=path, env={})
    assert "oops-leaked" not in str(info.value)


def test_systemd_credentials(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "crm_client_secret").write_text("from-systemd")
    env = {"CRMSYNC_CRM_URL": URL, "CRMSYNC_CRM_CLIENT_ID": CLIENT,
           "CRMSYNC_CRM_TOKEN_URL": "http://127.0.0.1:1/token",
           "CREDENTIALS_DIRECTORY": str(creds)}
    s = load_connection(env=env)
    assert s.auth == "oauth2"
    assert s.client_secret is not None and s.client_secret.reveal() == "from-systemd"
    # an explicit environment variable still wins
    s = load_connection(env={**env, "CRMSYNC_CRM_CLIENT_SECRET": "env"})
    assert s.client_secret is not None and s.client_secret.reveal() == "env"


def test_bad_values_do_not_echo_secrets() -> None:
    with pytest.raises(ConfigurationError) as info:
        load_connection(env={"CRMSYNC_CRM_URL": URL, "CRMSYNC_CRM_AUTH": "oauth2",
                             "CRMSYNC_CRM_CLIENT_SECRET": "top-secret-value"})
    assert "top-secret-value" not in str(info.value)


def test_secret_wrapper() -> None:
    s = Secret("hunter2")
    assert repr(s) == str(s) == f"{s}" == f"{s!r}" == "***"
    assert s.reveal() == "hunter2"
    assert s == Secret("hunter2") and s != Secret("other")
    assert "hunter2" not in repr({"s": s, "l": [s]})
    with pytest.raises(TypeError):
        pickle.dumps(s)


ENTRA = {"CRMSYNC_CRM_URL": "https://contoso.crm4.dynamics.com/api/data/v9.2",
         "CRMSYNC_CRM_TENANT": "contoso.onmicrosoft.com", "CRMSYNC_CRM_CLIENT_ID": CLIENT}


def test_certificate_from_environment_file_or_systemd_credential(tmp_path: Path) -> None:
    pem = "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n"
    s = load_connection(env={**ENTRA, "CRMSYNC_CRM_CLIENT_CERTIFICATE": pem})
    assert s.client_certificate == Secret(pem) and s.client_secret is None
    assert s.source("client_certificate") == "CRMSYNC_CRM_CLIENT_CERTIFICATE"
    assert "abc" not in repr(s)
    cert_file = tmp_path / "crm.pem"
    cert_file.write_text(pem)
    path = write(tmp_path, f'[connections.crm]\nclient_certificate_file = "{cert_file}"\n'
                           'client_certificate_passphrase_file = "/nonexistent"\n')
    with pytest.raises(ConfigurationError, match="client_certificate_passphrase_file: secret "
                                                 "file '/nonexistent' does not exist"):
        load_connection(config_path=path, env=ENTRA)
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "crm_client_certificate").write_text(pem)
    (creds / "crm_client_certificate_passphrase").write_text("pass\n")
    s = load_connection(env={**ENTRA, "CREDENTIALS_DIRECTORY": str(creds)})
    assert s.client_certificate_passphrase == Secret("pass")
    assert s.source("client_certificate") == "$CREDENTIALS_DIRECTORY/crm_client_certificate"


def test_certificate_not_in_the_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[connections.crm]\nclient_certificate = "-----BEGIN"\n')
    with pytest.raises(ConfigurationError, match="must not hold secrets"):
        load_connection(config_path=path, env=ENTRA)


def test_credential_rules() -> None:
    with pytest.raises(ConfigurationError, match="either a client secret .* or a certificate"):
        load_connection(env={**ENTRA, "CRMSYNC_CRM_CLIENT_SECRET": "x",
                             "CRMSYNC_CRM_CLIENT_CERTIFICATE": "y"})
    with pytest.raises(ConfigurationError, match="CRMSYNC_CRM_CLIENT_CERTIFICATE_FILE"):
        load_connection(env=ENTRA)  # neither: both ways are named
    with pytest.raises(ConfigurationError, match="signs in to Entra ID only"):
        load_connection(env={**ENTRA, "CRMSYNC_CRM_TOKEN_URL": "https://idp.example/token",
                             "CRMSYNC_CRM_CLIENT_CERTIFICATE": "y"})
    with pytest.raises(ConfigurationError, match="a passphrase without a certificate"):
        load_connection(env={**ENTRA, "CRMSYNC_CRM_CLIENT_SECRET": "x",
                             "CRMSYNC_CRM_CLIENT_CERTIFICATE_PASSPHRASE": "p"})
    with pytest.raises(ConfigurationError, match="applies to a token_url endpoint"):
        load_connection(env={**ENTRA, "CRMSYNC_CRM_CLIENT_SECRET": "x",
                             "CRMSYNC_CRM_TOKEN_ENDPOINT_AUTH_METHOD": "client_secret_basic"})


def test_generic_token_endpoint_auth_method() -> None:
    env = {"CRMSYNC_CRM_URL": URL, "CRMSYNC_CRM_CLIENT_ID": CLIENT,
           "CRMSYNC_CRM_CLIENT_SECRET": "x", "CRMSYNC_CRM_TOKEN_URL": "https://idp.example/t"}
    assert load_connection(env=env).token_endpoint_auth_method == "client_secret_post"
    s = load_connection(env={**env,
                             "CRMSYNC_CRM_TOKEN_ENDPOINT_AUTH_METHOD": "client_secret_basic"})
    assert s.token_endpoint_auth_method == "client_secret_basic" and not s.uses_entra
    with pytest.raises(ConfigurationError, match="expected one of client_secret_post, "
                                                 "client_secret_basic"):
        load_connection(env={**env, "CRMSYNC_CRM_TOKEN_ENDPOINT_AUTH_METHOD": "private_key_jwt"})


@pytest.mark.parametrize(("raw", "host"), [
    ("login.microsoftonline.us", "login.microsoftonline.us"),
    ("https://login.partner.microsoftonline.cn/", "login.partner.microsoftonline.cn"),
    ("127.0.0.1:8443", "127.0.0.1:8443"),
])
def test_authority_host(raw: str, host: str) -> None:
    s = load_connection(env={**ENTRA, "CRMSYNC_CRM_CLIENT_SECRET": "x",
                             "CRMSYNC_CRM_AUTHORITY": raw})
    assert s.authority == host


@pytest.mark.parametrize("raw", ["http://login.microsoftonline.com",
                                 "https://login.microsoftonline.com/tenant", "a b"])
def test_bad_authority(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="CRMSYNC_CRM_AUTHORITY: expected an "
                                                 "authority host"):
        load_connection(env={**ENTRA, "CRMSYNC_CRM_CLIENT_SECRET": "x",
                             "CRMSYNC_CRM_AUTHORITY": raw})


def test_managed_identity_settings() -> None:
    env = {"CRMSYNC_CRM_URL": "https://contoso.crm.dynamics.com/api/data/v9.2",
           "CRMSYNC_CRM_AUTH": "managed_identity"}
    s = load_connection(env=env)
    assert s.auth == "managed_identity" and s.client_id is None
    assert s.scope == "https://contoso.crm.dynamics.com/.default"
    assert load_connection(env={**env, "CRMSYNC_CRM_CLIENT_ID": CLIENT}).client_id == CLIENT
    with pytest.raises(ConfigurationError, match="CRMSYNC_CRM_CLIENT_SECRET: a managed "
                                                 "identity signs in without client_secret"):
        load_connection(env={**env, "CRMSYNC_CRM_CLIENT_SECRET": "x"})
