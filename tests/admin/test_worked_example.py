"""docs/mappings.md's worked example, run as written: its SQL and its mapping document,
through the installed command, against the emulator's generic OData v4 profile (keys ``ID``,
``modifiedAt``, POST creates) — from nothing to a first sync and a second one."""

from __future__ import annotations

import json
import re
from pathlib import Path

import requests

from tests.acceptance.conftest import ROOT
from tests.admin.conftest import Admin
from worker.emulator import start_emulator

DOC = ROOT / "docs" / "mappings.md"


def _block(after: str, language: str) -> str:
    """The first fenced block of ``language`` after the heading text ``after``."""
    text = DOC.read_text()
    start = text.index(after)
    found = re.search(rf"```{language}\n(.*?)```", text[start:], re.S)
    assert found, (after, language)
    return found.group(1)


def test_the_worked_example_runs_as_documented(admin: Admin, tmp_path: Path) -> None:
    shop = start_emulator(port=0, profile="odata", sample_users=3)
    admin.env.update({"CRMSYNC_SHOP_URL": shop.base_url, "CRMSYNC_SHOP_DIALECT": "odata",
                      "CRMSYNC_SHOP_AUTH": "none"})
    try:
        admin.sql(_block("**3. The ERP table.**", "sql"))
        document = tmp_path / "supplier.toml"
        document.write_text(_block("**4. The mapping document**", "toml"))
        dry = admin.ok("mappings", "apply", str(document), "--dry-run")
        assert dry.splitlines()[-1] == "dry run: 8 changes, nothing written"
        assert "applied 8 changes" in admin.ok("mappings", "apply", str(document))
        assert "every enabled mapping is valid" in admin.ok("check")
        assert "coupled 1, ambiguous 0, without match 1" in admin.ok(
            "couple", "--match", "SUPPLIER")
        first = admin.ok("sync", "SUPPLIER").splitlines()
        assert first[2].split()[:4] == ["SUPPLIER", "to_integration", "1", "1"]
        assert first[3].split()[:3] == ["SUPPLIER", "from_integration", "1"]
        assert admin.sql("SELECT no, name FROM erp.supplier ORDER BY no") == [
            ("S00100", "Tailspin Parts Ltd"), ("V10010", "Northwind Supplies GmbH"),
            ("V10020", "Blue Yonder Freight B.V.")]
        vendors = requests.get(f"{shop.base_url}/accounts", timeout=10, params={
            "$filter": "customertypecode eq 10", "$select": "ID,accountnumber"}).json()
        assert sorted(v["accountnumber"] for v in vendors["value"]) == [
            "S00100", "V10010", "V10020"]  # Tailspin created once, Northwind not twice
        # An edit on each side flows with the next run; nothing failed.
        admin.sql("UPDATE erp.supplier SET city = 'Bremen' WHERE no = 'V10010'")
        second = admin.ok("sync", "SUPPLIER").splitlines()
        assert second[2].split()[:4] == ["SUPPLIER", "to_integration", "0", "1"]
        assert json.loads(admin.ok("errors", "SUPPLIER", "--json")) == []
        exported = admin.ok("mappings", "export", "SUPPLIER", "--entries")
        document.write_text(exported)
        assert admin.ok("mappings", "apply", str(document)).strip() == "no changes"
    finally:
        shop.stop()
