"""A real Prometheus (Debian's ``prometheus``, which ``.ci/run`` installs) on loopback,
scraping a running worker every second with the shipped rules: every rule loads and is
evaluated without error, every dashboard query runs and every metric it names exists, and
a healthy run has no alert pending or firing."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.cli.helpers import closed_port
from tests.deploy.test_deploy import RULES, dashboard, dashboard_queries
from tests.support.waiting import wait_for
from worker.app import App
from worker.emulator import EmulatorServer, start_emulator
from worker.metrics import REGISTRY
from worker.runtime.http import StatusServer
from worker.runtime.worker import WorkerConfig
from worker.sample.data import load_sample_data
from worker.sample.defaults import setup_defaults

PROMETHEUS = shutil.which("prometheus")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed")]
NAME = re.compile(r"\b((?:crmsync|process)_[a-z0-9_]+)\b")


@dataclass
class Prometheus:
    url: str

    def get(self, path: str, **params: str) -> object:
        reply = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=30)
        body = reply.json()
        assert body["status"] == "success", (path, params, body)
        return body["data"]


@pytest.fixture
def crm(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    server = start_emulator(port=0, sample_users=5)
    monkeypatch.setenv("CRMSYNC_CRM_URL", server.base_url)
    yield server
    server.stop()


@pytest.fixture
def worker_endpoint(engine: Engine, crm: EmulatorServer) -> Iterator[str]:
    """A worker on the seven default mappings, serving /metrics on a loopback port."""
    load_sample_data(engine, customers=20)
    setup_defaults(engine)
    app = App(engine)
    worker = app.worker(WorkerConfig(poll_interval=0.5, lease=timedelta(seconds=4)))
    collector = app.install_cluster_metrics()
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    status = StatusServer("127.0.0.1:0", worker.health, worker.readiness).start()
    try:
        yield status.address
    finally:
        worker.stop(immediately=True)
        thread.join(20)
        status.stop()
        REGISTRY.unregister(collector)


@pytest.fixture
def prometheus(worker_endpoint: str, tmp_path: Path) -> Iterator[Prometheus]:
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {RULES}\n"
        "scrape_configs:\n  - job_name: crmsync\n"
        f"    static_configs:\n      - targets: ['{worker_endpoint}']\n")
    address = f"127.0.0.1:{closed_port()}"
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [str(PROMETHEUS), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address={address}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT)
    server = Prometheus(f"http://{address}")
    try:
        wait_for(lambda: _ready(server, proc), timeout=60)
        yield server
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def _ready(server: Prometheus, proc: subprocess.Popen) -> bool:
    assert proc.poll() is None, "prometheus exited"
    try:
        return requests.get(f"{server.url}/-/ready", timeout=5).status_code == 200
    except requests.ConnectionError:
        return False


def rule_names() -> set[str]:
    return set(re.findall(r"^\s*- alert:\s*(\S+)", RULES.read_text(), re.MULTILINE))


def grafana_to_promql(expr: str) -> str:
    """The dashboard's variables as Grafana would fill them in for this installation."""
    return (expr.replace("$job", "crmsync").replace("$mapping", ".+")
            .replace("$__rate_interval", "1m"))


def healthy_run(engine: Engine) -> bool:
    with engine.connect() as conn:
        return conn.scalar(sa.text(
            "SELECT count(DISTINCT entry_id) FROM crmsync.job_queue_log_entries "
            "WHERE status = 'success'")) == 7


def run_dashboard_queries(prometheus: Prometheus) -> tuple[dict[str, list[str]], list[str]]:
    """Every dashboard query run as Grafana would: the metrics each names that Prometheus
    has never seen, and the queries that return nothing."""
    known = set(prometheus.get("label/__name__/values"))  # type: ignore[arg-type]
    missing: dict[str, list[str]] = {}
    empty: list[str] = []
    for expr in dashboard_queries():
        if names := set(NAME.findall(expr)) - known:
            missing[expr] = sorted(names)
        variable = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", expr)
        if variable:
            selector, label = variable.groups()
            values = prometheus.get(f"label/{label}/values",
                                    **{"match[]": grafana_to_promql(selector)})
            assert "" not in values, expr  # type: ignore[operator]
            result: object = values
        else:
            result = prometheus.get("query", query=grafana_to_promql(expr))["result"]  # type: ignore[index]
        if not result:
            empty.append(expr)
    return missing, empty


def test_a_real_prometheus_loads_the_rules_and_runs_every_dashboard_query(
        prometheus: Prometheus, engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    wait_for(lambda: healthy_run(engine), timeout=120)  # every mapping ran once
    wait_for(lambda: [t for t in prometheus.get("targets")["activeTargets"]  # type: ignore[index]
                      if t["health"] == "up"], timeout=30)
    started = time.monotonic()
    # Rules: every one loaded, and evaluated without error.
    def evaluated() -> list[dict]:
        rules = [r for g in prometheus.get("rules")["groups"]  # type: ignore[index]
                 for r in g["rules"]]
        return rules if all(r["health"] == "ok" for r in rules) else []
    rules = wait_for(evaluated, timeout=60)
    assert {r["name"] for r in rules} == rule_names()
    assert not [r for r in rules if r.get("lastError")]
    # Let several scrapes and evaluations pass, so that rate() and increase() have samples.
    wait_for(lambda: time.monotonic() - started > 15, timeout=30)

    missing, empty = run_dashboard_queries(prometheus)
    assert not missing, missing
    # A healthy run: nothing pending, nothing firing.
    assert prometheus.get("alerts")["alerts"] == []  # type: ignore[index]
    queries = dashboard_queries()
    with capsys.disabled():
        print(f"\n{len(queries) - len(empty)} of {len(queries)} dashboard queries return data; "
              f"without data: {empty}")
    # The per-mapping table has a line for each of the seven mappings.
    table = next(p for p in dashboard()["panels"] if p["type"] == "table")
    status = prometheus.get("query", query=grafana_to_promql(table["targets"][0]["expr"]))
    assert len(status["result"]) == 7  # type: ignore[index]
