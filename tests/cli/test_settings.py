"""Process settings: a flag wins over its variable, which wins over the default; a bad value
names where it came from. Pure, no process started."""

from __future__ import annotations

import argparse

import pytest

from worker import settings
from worker.errors import ConfigurationError


def resolved(env: dict[str, str], **flags: str) -> argparse.Namespace:
    args = argparse.Namespace(**{s.dest: None for s in settings.WORKER})
    for name, value in flags.items():
        setattr(args, name, value)
    settings.resolve(args, settings.WORKER, env)
    return args


def test_flag_then_variable_then_default() -> None:
    assert resolved({}).concurrency == 4
    assert resolved({"CRMSYNC_CONCURRENCY": "8"}).concurrency == 8
    assert resolved({"CRMSYNC_CONCURRENCY": "8"}, concurrency="2").concurrency == 2
    assert resolved({"CRMSYNC_LEASE_SECONDS": "90"}).lease_seconds == 90.0


def test_blank_variables() -> None:
    # An empty CRMSYNC_METRICS_ADDRESS turns the endpoint off; other blanks mean "unset".
    assert resolved({"CRMSYNC_METRICS_ADDRESS": ""}).metrics_address == ""
    assert resolved({}).metrics_address == "127.0.0.1:9465"
    assert resolved({"CRMSYNC_WORKER_ID": "", "CRMSYNC_CONCURRENCY": ""}).concurrency == 4


@pytest.mark.parametrize(("env", "flags", "message"), [
    ({"CRMSYNC_CONCURRENCY": "4.5"}, {}, "CRMSYNC_CONCURRENCY: expected a whole number 1-256"),
    ({"CRMSYNC_CONCURRENCY": "8"}, {"concurrency": "0"}, "--concurrency: expected"),
    ({"CRMSYNC_LEASE_SECONDS": "nan"}, {}, "CRMSYNC_LEASE_SECONDS: expected a number"),
    ({"CRMSYNC_POLL_INTERVAL": "inf"}, {}, "CRMSYNC_POLL_INTERVAL: expected a number"),
    ({"CRMSYNC_METRICS_ADDRESS": "9465"}, {}, "CRMSYNC_METRICS_ADDRESS: expected host:port"),
    ({}, {"metrics_address": "[::1]:70000"}, "--metrics-address: expected host:port"),
])
def test_bad_values_name_their_source(env: dict[str, str], flags: dict[str, str],
                                      message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("[", r"\[")):
        resolved(env, **flags)


def test_the_environment_check_covers_logging_and_the_database() -> None:
    settings.check_environment({"CRMSYNC_LOG_LEVEL": "debug", "CRMSYNC_LOG_FORMAT": "JSON"})
    for env, name in (({"CRMSYNC_LOG_LEVEL": "verbose"}, "CRMSYNC_LOG_LEVEL"),
                      ({"CRMSYNC_DATABASE_URL": "sqlite:///x.db"}, "CRMSYNC_DATABASE_URL"),
                      ({"CRMSYNC_DATABASE_URL": "postgresql://u:pw@h:x/db"},
                       "CRMSYNC_DATABASE_URL")):
        with pytest.raises(ConfigurationError, match=name) as info:
            settings.check_environment(env)
        assert "pw" not in str(info.value)
