"""A rotated CRM secret takes effect at the next run of a running process, without a
restart: the connection's settings (its secret file too) are read again at every run, while
the process' one client per connection is kept as long as they stay the same."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from worker.app import App
from worker.emulator import start_emulator
from worker.errors import CrmsyncError
from worker.sample.data import load_sample_data
from worker.sample.defaults import setup_defaults


def test_a_new_secret_in_the_secret_file_is_used_at_the_next_run(
        engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    crm = start_emulator(port=0, client_id="crmsync", client_secret="rotated")
    secret = tmp_path / "crm-secret"
    secret.write_text("expired\n")
    monkeypatch.setenv("CRMSYNC_CRM_URL", crm.base_url)
    monkeypatch.setenv("CRMSYNC_CRM_TOKEN_URL", crm.token_url)
    monkeypatch.setenv("CRMSYNC_CRM_CLIENT_ID", "crmsync")
    monkeypatch.setenv("CRMSYNC_CRM_CLIENT_SECRET_FILE", str(secret))
    load_sample_data(engine, customers=3)
    setup_defaults(engine)
    app = App(engine)
    try:
        with pytest.raises(CrmsyncError, match="(?i)secret"):
            app.sync.run_mapping("CURRENCY")  # the CRM was given the new secret first
        secret.write_text("rotated\n")
        summary = app.sync.run_mapping("CURRENCY")
        assert summary.error is None and summary.counts["inserted"] > 0
    finally:
        app.close()
        crm.stop()
