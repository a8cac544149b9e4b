"""The files under deploy/ agree with the code they deploy.

What an operator would notice: a dashboard panel or alert that queries a metric (or a label)
crmsync does not export shows nothing and never fires; a cluster gauge summed over workers
is off by the number of workers; an example config whose "defaults" are not the defaults, or
that names a variable crmsync never reads; a unit whose credential name crmsync does not look
for, whose watchdog kills a healthy worker or whose stop timeout cuts the graceful shutdown
short. The external checkers (promtool, systemd-analyze) run when installed and are skipped
otherwise; nothing here installs them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine

import worker.metrics
from worker import __version__, settings
from worker.app import App
from worker.cli import build_parser
from worker.metrics import REGISTRY
from worker.queue.manager import QueueManager
from worker.remote.config import DEFAULT_CONNECTION, env_prefix, load_connection, setting_names
from worker.runtime.http import StatusServer
from worker.sample.defaults import setup_defaults

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "crmsync.service"
ENV_EXAMPLE = DEPLOY / "systemd" / "crmsync.env.example"
TOML_EXAMPLE = DEPLOY / "config" / "crmsync.toml.example"
RULES = DEPLOY / "prometheus" / "crmsync-rules.yml"
RULES_TESTS = DEPLOY / "prometheus" / "crmsync-rules.test.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml.example"
DASHBOARD = DEPLOY / "grafana" / "crmsync-dashboard.json"
OPERATIONS = ROOT / "docs" / "operations.md"

METRIC = re.compile(r"\bcrmsync_[a-z0-9_]+\b")
# Labels every scraped series has, whatever the worker exports.
TARGET_LABELS = frozenset({"job", "instance"})
AGGREGATIONS = frozenset({"sum", "min", "max", "avg", "count", "group", "stddev", "stdvar",
                          "topk", "bottomk", "quantile", "count_values"})
SECRETS = ("client_secret", "client_certificate", "client_certificate_passphrase", "token",
           "webhook_secret")

# (series name -> label names, names of the cluster gauges)
Scraped = tuple[dict[str, frozenset[str]], frozenset[str]]


# ---------------------------------------------------------------------------- helpers

def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries() -> list[str]:
    """Every PromQL text of the dashboard: panel targets and query variables."""
    doc = dashboard()
    queries = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    queries += [v["query"] for v in doc["templating"]["list"] if v["type"] == "query"]
    return queries


def rule_exprs() -> list[str]:
    # The rules file keeps every expression on one line, so no YAML parser is needed.
    return re.findall(r"^\s*expr:\s*(.+?)\s*$", RULES.read_text(), re.MULTILINE)


def unit_settings() -> dict[str, list[str]]:
    """Key -> values of the unit file (comments dropped; keys may repeat)."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key, []).append(value)
    return settings


def run_defaults(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> dict[str, object]:
    """``crmsync run``'s parsed options with only ``env`` as CRMSYNC_ environment."""
    for name in [n for n in os.environ if n.startswith("CRMSYNC_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = build_parser().parse_args(["run"])
    settings.resolve(args, settings.WORKER)  # flag, else variable, else default
    return vars(args)


def blank_strings(expr: str) -> str:
    """The expression with the content of string literals blanked (same length), so that
    parentheses inside label values do not count."""
    return re.sub(r'"[^"]*"', lambda m: '"' + " " * (len(m.group()) - 2) + '"', expr)


def first_aggregation(expr: str, position: int) -> str | None:
    """The aggregation operator that first encloses the selector at ``position``, looking
    outward through function calls (``rate``, ``delta``, ``histogram_quantile`` …)."""
    text = blank_strings(expr)
    depth = 0
    for i in range(position - 1, -1, -1):
        if text[i] == ")":
            depth += 1
        elif text[i] == "(" and depth:
            depth -= 1
        elif text[i] == "(":
            head = re.sub(r"\b(by|without)\s*\([^()]*\)\s*$", "", text[:i].rstrip()).rstrip()
            name = re.search(r"([a-z_]+)$", head)
            if name and name.group(1) in AGGREGATIONS:
                return name.group(1)
    return None


def label_problems(expr: str, exported: dict[str, frozenset[str]]) -> list[str]:
    """Metric names and label names in ``expr`` that crmsync does not export."""
    problems = [f"unknown metric {name}" for name in METRIC.findall(expr)
                if name not in exported]
    known = [name for name in METRIC.findall(expr) if name in exported]
    for name, matchers in re.findall(r"\b(crmsync_[a-z0-9_]+)\{([^}]*)\}", expr):
        for label in re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", blank_strings(matchers)):
            if name in exported and label not in exported[name] | TARGET_LABELS:
                problems.append(f"{name} has no label {label!r}")
    usable = TARGET_LABELS.union(*(exported[name] for name in known))
    for clause in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        for label in filter(None, (part.strip() for part in clause.split(","))):
            if known and label not in usable:
                problems.append(f"grouping by {label!r}, a label of none of {known}")
    for name, label in re.findall(r"label_values\((crmsync_[a-z0-9_]+)[^,]*,\s*(\w+)\)", expr):
        if name in exported and label not in exported[name] | TARGET_LABELS:
            problems.append(f"label_values: {name} has no label {label!r}")
    return problems


def aggregation_problems(expr: str, cluster: frozenset[str]) -> list[str]:
    """Cluster gauges must be aggregated with max (every worker reports the same value),
    per-process counters and histogram buckets with sum."""
    problems = []
    for match in METRIC.finditer(expr):
        name = match.group()
        if name in cluster:
            wanted = "max"
        elif name.endswith(("_total", "_bucket")):
            wanted = "sum"
        else:
            continue
        found = first_aggregation(expr, match.start())
        if found != wanted:
            problems.append(f"{name} aggregated with {found or 'nothing'}, not {wanted}")
    return problems


# ------------------------------------------------------------- what crmsync exports

def _touch_labelled_metrics() -> list[tuple[MetricWrapperBase, tuple[str, ...]]]:
    """One child of every labelled metric of worker.metrics, so that a scrape shows the
    label names (a labelled metric without children exports no sample)."""
    touched = []
    for metric in vars(worker.metrics).values():
        names = getattr(metric, "_labelnames", ()) if isinstance(
            metric, MetricWrapperBase) else ()
        if names:
            values = tuple("deploy-test" for _ in names)
            metric.labels(*values)
            touched.append((metric, values))
    return touched


@pytest.fixture
def scraped(engine: Engine) -> Iterator[Scraped]:
    """(series name -> label names, cluster gauge names) from a real /metrics scrape of the
    worker's registry plus a cluster collector on a migrated database holding the default
    mappings and one registered worker (so every cluster gauge has a sample)."""
    setup_defaults(engine)
    with engine.begin() as conn:  # one successful run, so the last-success series exists
        conn.execute(sa.text(
            "INSERT INTO crmsync.job_queue_log_entries (entry_id, job_kind, mapping_name, "
            "worker_id, scheduled_for, finished_at, status) SELECT id, job_kind, "
            "mapping_name, 'deploy-test:1:1', now(), now(), 'success' "
            "FROM crmsync.job_queue_entries ORDER BY id LIMIT 1"))
    QueueManager(engine).heartbeat(
        "deploy-test:1:1", {"hostname": "deploy-test", "pid": 1, "version": __version__,
                            "concurrency": 1}, timedelta(seconds=60), [])
    collector = App(engine).cluster_collector(cache_seconds=0)
    cluster = frozenset(family.name for family in collector.collect())
    touched = _touch_labelled_metrics()
    REGISTRY.register(collector)
    server = StatusServer("127.0.0.1:0", lambda: {"ok": True}, lambda: {"ok": True}).start()
    try:
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
            text = response.read().decode()
    finally:
        server.stop()
        REGISTRY.unregister(collector)
        for metric, values in touched:
            metric.remove(*values)
    exported: dict[str, set[str]] = {}
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    for family in text_string_to_metric_families(text):
        labels = {label for sample in family.samples for label in sample.labels}
        names = {sample.name for sample in family.samples}
        names |= {family.name + s for s in suffixes.get(family.type, ("",))}
        for name in names:
            exported.setdefault(name, set()).update(labels)
    yield {name: frozenset(labels) for name, labels in exported.items()}, cluster


def test_the_scrape_shows_every_kind_of_metric(scraped: Scraped) -> None:
    exported, cluster = scraped
    assert {"crmsync_job_queue_entries", "crmsync_sync_lag_seconds",
            "crmsync_skipped_couplings", "crmsync_worker_heartbeat_age_seconds",
            "crmsync_workers"} <= cluster
    assert cluster <= exported.keys()
    assert "crmsync_job_runs_total" in exported
    assert "crmsync_job_run_duration_seconds_bucket" in exported
    assert {"mapping", "outcome", "job_kind"} <= exported["crmsync_job_runs_total"]


@pytest.mark.parametrize("source", ["dashboard", "alert rules", "docs/operations.md"])
def test_every_metric_and_label_used_is_exported(scraped: Scraped, source: str) -> None:
    exported, _ = scraped
    texts = {"dashboard": dashboard_queries, "alert rules": rule_exprs,
             "docs/operations.md": lambda: [OPERATIONS.read_text()]}[source]()
    assert texts
    problems = {text: p for text in texts if (p := label_problems(text, exported))}
    assert not problems, problems


@pytest.mark.parametrize("source", ["dashboard", "alert rules"])
def test_cluster_gauges_max_counters_sum(scraped: Scraped, source: str) -> None:
    _, cluster = scraped
    texts = dashboard_queries() if source == "dashboard" else rule_exprs()
    texts = [t for t in texts if not t.startswith("label_values(")]  # Grafana, not PromQL
    problems = {text: p for text in texts if (p := aggregation_problems(text, cluster))}
    assert not problems, problems


def test_the_aggregation_check_catches_a_summed_cluster_gauge() -> None:
    cluster = frozenset({"crmsync_sync_lag_seconds"})
    assert aggregation_problems('sum(crmsync_sync_lag_seconds{job="x"})', cluster)
    assert aggregation_problems("crmsync_sync_lag_seconds > 900", cluster)
    assert aggregation_problems("max(rate(crmsync_job_runs_total[5m]))", cluster)
    assert not aggregation_problems(
        'max by (mapping) (delta(crmsync_sync_lag_seconds{job="(x)"}[1h])) > 0', cluster)
    assert not aggregation_problems(
        "histogram_quantile(0.9, sum by (le) (rate(crmsync_a_bucket[5m])))", cluster)


# ------------------------------------------------------------------------ dashboard

def test_dashboard_is_importable_and_uses_the_datasource_variable() -> None:
    doc = dashboard()
    assert doc["schemaVersion"] >= 36
    assert doc["uid"] and doc["title"]
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    # Enabled mappings only (a series cleanup entries, with mapping="", never have), and
    # an empty value filtered out all the same.
    assert re.match(r"label_values\(crmsync_sync_lag_seconds\b.*,\s*mapping\)",
                    variables["mapping"]["query"])
    assert variables["mapping"]["regex"] == ".+"
    reference = {"type": "prometheus", "uid": "${datasource}"}
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == reference, variable["name"]
    panels = [p for p in doc["panels"] if p["type"] != "row"]
    assert panels
    for panel in panels:
        assert panel["datasource"] == reference, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == reference, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_dashboard_has_the_mappings_table_and_a_memory_panel() -> None:
    panels = {p["title"]: p for p in dashboard()["panels"]}
    table = panels["Mappings"] if panels["Mappings"]["type"] == "table" else None
    assert table is not None
    exprs = " ".join(t["expr"] for t in table["targets"])
    for metric in ("crmsync_job_queue_entry_status", "crmsync_sync_lag_seconds",
                   "crmsync_job_queue_entry_last_success_timestamp_seconds",
                   "crmsync_skipped_couplings", "crmsync_sync_records_total"):
        assert metric in exprs
    assert all(t["format"] == "table" and t["instant"] for t in table["targets"])
    renamed = table["transformations"][1]["options"]["renameByName"].values()
    assert {"Mapping", "Entry status", "Since last success", "Sync lag", "Skipped",
            "Failed records (24 h)"} <= set(renamed)
    assert "process_resident_memory_bytes" in panels["Memory per process"]["targets"][0]["expr"]


def test_dashboard_panels_have_unique_ids_and_do_not_overlap() -> None:
    panels = dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    taken: dict[tuple[int, int], str] = {}
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


# -------------------------------------------------------------------- alert rules

def test_every_alert_has_for_severity_summary_and_description() -> None:
    blocks = re.split(r"^\s*- alert:", RULES.read_text(), flags=re.MULTILINE)[1:]
    assert len(blocks) == len(rule_exprs()) >= 8
    for block in blocks:
        name = block.split()[0]
        for pattern in (r"^\s*expr: ", r"^\s*for: \d+[smh]\s*$",
                        r"^\s*severity: (critical|warning)\s*$", r"^\s*summary: ",
                        r"^\s*description: "):
            assert re.search(pattern, block, re.MULTILINE), f"{name}: no {pattern}"


def test_freshness_is_on_the_dashboard_and_alerted_on_its_p95() -> None:
    """crmsync_change_to_sync_seconds: a panel of its quantiles, an alert on its p95."""
    metric = "crmsync_change_to_sync_seconds_bucket"
    panels = [p for p in dashboard()["panels"]
              if any(metric in t["expr"] for t in p.get("targets", []))]
    assert panels and any("histogram_quantile(0.95" in t["expr"]
                          for t in panels[0]["targets"])
    alerts = [e for e in rule_exprs() if metric in e]
    assert len(alerts) == 1 and alerts[0].startswith("histogram_quantile(0.95")
    assert "direction" in alerts[0] and "mapping" in alerts[0]


PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")


def promtool(*args: str, cwd: Path = ROOT) -> None:
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_accepts_the_rules_and_the_scrape_config() -> None:
    promtool("check", "rules", str(RULES))
    promtool("check", "config", str(PROMETHEUS_CONFIG))


@needs_promtool
def test_promtool_rule_unit_tests_pass() -> None:
    promtool("test", "rules", RULES_TESTS.name, cwd=RULES_TESTS.parent)


@needs_promtool
def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """Each panel query, its Grafana variables filled in, as a recording rule."""
    values = {"$__rate_interval": "2m", "$__interval": "1m", "$__range": "1d",
              "$job": "crmsync", "$mapping": ".*"}
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for number, expr in enumerate(q for q in dashboard_queries()
                                  if not q.startswith("label_values")):
        for variable, value in values.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        lines += [f"      - record: dashboard:query_{number}", f"        expr: {json.dumps(expr)}"]
    rules = tmp_path / "dashboard-rules.yml"
    rules.write_text("\n".join(lines) + "\n")
    promtool("check", "rules", str(rules))


# ------------------------------------------------------------------ systemd unit

def test_unit_runs_the_worker_with_notify_watchdog_and_graceful_stop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    unit = unit_settings()
    defaults = run_defaults(monkeypatch, {})
    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["main"]
    (start,), (pre,) = unit["ExecStart"], unit["ExecStartPre"]
    binary = start.split()[0]
    assert Path(binary).is_absolute()
    assert start == f"{binary} run"
    assert pre == f"{binary} db upgrade"
    # The worker pings the watchdog on every heartbeat (lease / 4) while healthy: the
    # watchdog must let a healthy worker miss a couple of them.
    lease = float(str(defaults["lease_seconds"]))
    watchdog = float(unit["WatchdogSec"][0])
    assert watchdog >= lease >= 2 * (lease / 4)
    # systemd must not SIGKILL a worker that is still within its graceful shutdown.
    assert float(unit["TimeoutStopSec"][0]) >= float(str(defaults["shutdown_timeout"])) + 10
    assert unit["KillSignal"] == ["SIGTERM"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["MemoryDenyWriteExecute"] == ["yes"]


def test_unit_state_directory_is_crmsync_home() -> None:
    unit = unit_settings()
    environment = dict(value.partition("=")[::2] for value in unit["Environment"])
    assert environment["CRMSYNC_HOME"] == "/var/lib/" + unit["StateDirectory"][0]
    assert environment["XDG_RUNTIME_DIR"] == "/run/" + unit["RuntimeDirectory"][0]
    assert unit["DynamicUser"] == ["yes"]


def test_the_credential_of_the_unit_is_the_one_crmsync_reads(tmp_path: Path) -> None:
    """The unit's LoadCredential name, placed in $CREDENTIALS_DIRECTORY as systemd does,
    completes the connection of the example config file: no other setting needed."""
    (credential,) = unit_settings()["LoadCredential"]
    name, _, source = credential.partition(":")
    assert source.startswith("/etc/crmsync/")
    (tmp_path / name).write_text("the-client-secret\n")
    settings = load_connection(DEFAULT_CONNECTION, TOML_EXAMPLE,
                               env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert settings.auth == "oauth2"
    assert settings.client_secret is not None
    assert settings.client_secret.reveal() == "the-client-secret"


def _verified_copy(tmp_path: Path) -> Path:
    """The unit with its crmsync path pointing at the installed command (systemd-analyze
    checks that ExecStart= binaries exist)."""
    installed = shutil.which("crmsync") or str(Path(sys.executable).with_name("crmsync"))
    if not Path(installed).exists():
        pytest.skip("the crmsync command is not installed")
    binary = unit_settings()["ExecStart"][0].split()[0]
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(binary, installed))
    return copy


def _systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60)


def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    probe = tmp_path / "probe" / "probe.service"
    probe.parent.mkdir()
    probe.write_text("[Service]\nType=oneshot\nExecStart=/bin/true\n")
    if _systemd_analyze("verify", str(probe)).returncode != 0:
        pytest.skip("systemd-analyze verify cannot run here")
    copy = _verified_copy(tmp_path)
    done = _systemd_analyze("verify", str(copy))
    output = done.stdout + done.stderr
    # verify exits 0 on unknown keys and bad values, only printing them: read the output.
    assert done.returncode == 0, output
    assert UNIT.name not in output, output


def test_systemd_analyze_security_rates_the_unit_ok(tmp_path: Path) -> None:
    copy = _verified_copy(tmp_path)
    # --threshold is on the internal 0-100 scale: 20 is an overall exposure of 2.0 ("OK").
    done = _systemd_analyze("security", "--offline=yes", "--threshold=20", str(copy))
    if "--offline" in done.stderr or "unrecognized option" in done.stderr:
        pytest.skip("this systemd-analyze cannot rate unit files offline")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr


MDWE_WRAPPER = """
import ctypes, mmap, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:   # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(77)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit(78)                       # not enforced: the check below would prove nothing
except PermissionError:
    pass
os.execv(sys.argv[1], sys.argv[1:])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
def test_crmsync_works_with_memory_deny_write_execute(database_url: str) -> None:
    """MemoryDenyWriteExecute=yes, approximated by the kernel's PR_SET_MDWE (inherited
    across exec): crmsync imports every command and talks to PostgreSQL."""
    installed = shutil.which("crmsync") or str(Path(sys.executable).with_name("crmsync"))
    env = {**os.environ, "CRMSYNC_DATABASE_URL": database_url}
    done = subprocess.run([sys.executable, "-c", MDWE_WRAPPER, installed, "db", "current"],
                          env=env, capture_output=True, text=True, timeout=120)
    if done.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux >= 6.3)")
    assert done.returncode != 78, "PR_SET_MDWE did not refuse a writable+executable mapping"
    assert done.returncode == 0, done.stdout + done.stderr
    assert "expected:" in done.stdout


# ------------------------------------------------------------ config examples

def assignments(text: str, commented: bool) -> dict[str, str]:
    pattern = r"^#(CRMSYNC_[A-Z0-9_]+)=(.*)$" if commented else r"^(CRMSYNC_[A-Z0-9_]+)=(.*)$"
    return dict(re.findall(pattern, text, re.MULTILINE))


def test_env_example_sets_every_process_setting_crmsync_reads() -> None:
    text = ENV_EXAMPLE.read_text()
    named = assignments(text, commented=False) | assignments(text, commented=True)
    read = set()
    for module in ("worker/commands/run.py", "worker/settings.py", "worker/cli.py"):
        read |= set(re.findall(r"[\"'](CRMSYNC_[A-Z0-9_]+)[\"']", (ROOT / module).read_text()))
    assert {"CRMSYNC_DATABASE_URL", "CRMSYNC_CONCURRENCY", "CRMSYNC_CONFIG"} <= read
    assert read - named.keys() == set()
    # Nothing that crmsync does not read (a typo would be silently ignored).
    prefix = env_prefix(DEFAULT_CONNECTION)
    connection = {prefix + s.upper() for s in setting_names()}
    assert named.keys() - read - connection == set()


def test_env_example_documents_every_connection_setting_and_holds_no_secret() -> None:
    text = ENV_EXAMPLE.read_text()
    prefix = env_prefix(DEFAULT_CONNECTION)
    for setting in setting_names():
        assert re.search(rf"\b{prefix}{setting.upper()}\b", text), setting
    named = assignments(text, commented=False) | assignments(text, commented=True)
    for secret in SECRETS:
        # Neither the secret nor a *_FILE (which would win over the systemd credential).
        assert prefix + secret.upper() not in named
        assert prefix + secret.upper() + "_FILE" not in named


def test_env_example_commented_values_are_the_defaults(
        monkeypatch: pytest.MonkeyPatch) -> None:
    commented = assignments(ENV_EXAMPLE.read_text(), commented=True)
    prefix = env_prefix(DEFAULT_CONNECTION)
    process = {k: v for k, v in commented.items() if not k.startswith(prefix)}
    # An empty value means "unset" (crmsync falls back to the default for it).
    uncommented = {k: None if v == "" else v
                   for k, v in run_defaults(monkeypatch, process).items()}
    assert uncommented == run_defaults(monkeypatch, {})
    url = {prefix + "URL": "https://crm.example.com/api/data/v9.2"}
    connection = {k: v for k, v in commented.items() if k.startswith(prefix)}
    assert len(connection) >= 10
    assert load_connection(env={**url, **connection}) == load_connection(env=url)


def test_toml_example_loads_and_documents_every_setting(tmp_path: Path) -> None:
    text = TOML_EXAMPLE.read_text()
    doc = tomllib.loads(text)
    section = doc["connections"][DEFAULT_CONNECTION]
    assert not set(SECRETS) & section.keys()
    for setting in setting_names():
        # A secret is documented in prose (it may not be a key); every other setting as a key.
        pattern = rf"\b{setting}\b" if setting in SECRETS else rf"^#?\s*{setting}\s*="
        assert re.search(pattern, text, re.MULTILINE), setting
    # `# key = value` lines show defaults: uncommenting all of them changes nothing.
    uncommented = tmp_path / "uncommented.toml"
    uncommented.write_text(re.sub(r"^# ([a-z_]+ = )", r"\1", text, flags=re.MULTILINE))
    assert len(tomllib.loads(uncommented.read_text())["connections"]["crm"]) >= 20
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / f"{DEFAULT_CONNECTION}_client_secret").write_text("x")
    env = {"CREDENTIALS_DIRECTORY": str(credentials)}
    assert load_connection(config_path=uncommented, env=env) == load_connection(
        config_path=TOML_EXAMPLE, env=env)


def test_env_example_points_at_the_toml_example_install_path() -> None:
    configured = assignments(ENV_EXAMPLE.read_text(), commented=False)["CRMSYNC_CONFIG"]
    assert configured in TOML_EXAMPLE.read_text().splitlines()[0]
    assert unit_settings()["EnvironmentFile"][0] in ENV_EXAMPLE.read_text().splitlines()[0]
