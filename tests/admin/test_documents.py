"""Mappings as files: ``crmsync mappings export`` and ``apply`` through the installed
command — the round trip export → edit → apply --dry-run → apply → check, refusals that name
the place in the document, pruning, and the shipped defaults being such a document."""

from __future__ import annotations

import tomllib
from pathlib import Path

from tests.admin.conftest import Admin
from worker.sample.defaults import default_document

NEW_MAPPING = """
[mappings.VENDOR]
local_table = "erp.vendor"
local_key = "id"
business_key_column = "no"
entity_set = "accounts"
remote_key = "accountid"
direction = "from_integration"
remote_filter = "statecode eq 0 and customertypecode eq 10"
depends_on = ["CURRENCY"]

[[mappings.VENDOR.fields]]
local_column = "no"
remote_property = "accountnumber"
use_for_matching = true

[[mappings.VENDOR.fields]]
local_column = "name"
remote_property = "name"

[[mappings.VENDOR.entries]]
description = "VENDOR - vendors from the CRM"
run_interval = "1 hour"
run_on_weekdays = [1, 2, 3, 4, 5]
starting_time = "06:00"
ending_time = "20:00"
time_zone = "Europe/Berlin"
"""


def _export(admin: Admin, path: Path, *names: str) -> str:
    admin.ok("mappings", "export", *names, "--entries", "--output", str(path))
    return path.read_text()


def test_export_apply_edit_round_trip(defaults: Admin, tmp_path: Path) -> None:
    admin = defaults
    document = tmp_path / "mappings.toml"
    text = _export(admin, document)
    parsed = tomllib.loads(text)
    assert list(parsed["mappings"]) == ["CURRENCY", "SALESPEOPLE", "UNITOFMEASURE", "CUSTOMER",
                                        "CONTACTS", "RESOURCE-PRODUCT", "ITEM-PRODUCT"]
    assert parsed["mappings"]["CUSTOMER"]["depends_on"] == ["CURRENCY", "SALESPEOPLE"]
    assert parsed["mappings"]["CUSTOMER"]["entries"][0]["run_interval"] == "30 minutes"
    assert admin.ok("mappings", "apply", str(document)).strip() == "no changes"

    # Edit: a filter, a field removed, a schedule, and a mapping of our own for a new table.
    admin.sql("CREATE TABLE erp.vendor (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
              "no varchar(20) UNIQUE, name varchar(100))")
    edited = (text.replace('remote_filter = "statecode eq 0 and customertypecode eq 3"',
                           'remote_filter = "statecode eq 0 and customertypecode eq 3 and '
                           "address1_country ne 'XX'\"")
              .replace('[[mappings.CUSTOMER.fields]]\nlocal_column = "home_page"\n'
                       'remote_property = "websiteurl"\n\n', "")
              .replace('run_interval = "30 minutes"\ninactivity_timeout = "12 hours"\n'
                       'category_code = "CRM-CUST"', 'run_interval = "5 minutes"\n'
                       'inactivity_timeout = "12 hours"\ncategory_code = "CRM-CUST"', 1)
              + NEW_MAPPING)
    document.write_text(edited)
    before = admin.sql("SELECT count(*) FROM crmsync.integration_field_mappings")[0][0]

    dry = admin.ok("mappings", "apply", str(document), "--dry-run")
    assert "~ mapping CUSTOMER: remote_filter:" in dry
    assert "- field CUSTOMER home_page <-> websiteurl" in dry
    assert "~ entry CUSTOMER entries[0]: run_interval: '30 minutes' -> '5 minutes'" in dry
    assert "+ mapping VENDOR" in dry and "+ dependency VENDOR -> CURRENCY" in dry
    assert "+ entry VENDOR entries[0]" in dry
    assert "dry run: 8 changes, nothing written" in dry
    assert admin.sql("SELECT count(*) FROM crmsync.integration_field_mappings")[0][0] == before

    applied = admin.ok("mappings", "apply", str(document))
    assert "applied 8 changes" in applied
    assert admin.sql("SELECT count(*) FROM crmsync.integration_field_mappings")[0][0] \
        == before - 1 + 2
    entry = admin.sql("SELECT run_interval::text, starting_time::text, time_zone, "
                      "run_on_weekdays FROM crmsync.job_queue_entries "
                      "WHERE mapping_name = 'VENDOR'")
    assert entry == [("01:00:00", "06:00:00", "Europe/Berlin", [1, 2, 3, 4, 5])]
    assert admin.ok("mappings", "apply", str(document)).strip() == "no changes"
    # What was applied exports back the same: the document is the configuration.
    assert _export(admin, tmp_path / "again.toml") == edited.replace(NEW_MAPPING, "") + \
        _export(admin, tmp_path / "vendor.toml", "VENDOR").split("format = 1\n", 1)[1]
    assert "every enabled mapping is valid" in admin.ok("check")


def test_field_ids_survive_a_change(defaults: Admin, tmp_path: Path) -> None:
    admin = defaults
    document = tmp_path / "customer.toml"
    text = _export(admin, document, "CUSTOMER")
    ids = dict(admin.sql("SELECT local_column, id FROM crmsync.integration_field_mappings "
                         "WHERE mapping_name = 'CUSTOMER' AND local_column IS NOT NULL"))
    document.write_text(text.replace('local_column = "city"\nremote_property = "address1_city"',
                                     'local_column = "city"\nremote_property = "address1_city"\n'
                                     'direction = "from_integration"'))
    assert "~ field CUSTOMER fields[3] (city <-> address1_city): direction" in \
        admin.ok("mappings", "apply", str(document))
    assert dict(admin.sql("SELECT local_column, id FROM crmsync.integration_field_mappings "
                          "WHERE mapping_name = 'CUSTOMER' AND local_column IS NOT NULL")) == ids


def test_a_bad_document_is_refused_whole_with_its_paths(defaults: Admin,
                                                        tmp_path: Path) -> None:
    admin = defaults
    document = tmp_path / "bad.toml"
    text = _export(admin, document, "CUSTOMER")
    bad = (text.replace('local_column = "city"\nremote_property = "address1_city"',
                        'local_column = "city"\nremote_propertyy = "address1_city"')
           .replace('local_column = "phone_no"', 'local_column = "phone_number"')
           .replace('direction = "bidirectional"', 'direction = "both"', 1))
    document.write_text(bad)
    done = admin.run("mappings", "apply", str(document))
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert f"crmsync: error: {document}: mappings.CUSTOMER.direction: 'both' is not one of " \
           "to_integration, from_integration, bidirectional" in lines
    assert any(line.startswith(f"crmsync: error: {document}: mappings.CUSTOMER.fields[3]."
                               "remote_propertyy: unknown key") for line in lines)
    assert lines[-1] == f"crmsync: error: {document}: 2 problem(s); nothing applied"

    # Structurally sound, but check's rules find the column missing: still nothing written.
    document.write_text(text.replace('local_column = "phone_no"',
                                     'local_column = "phone_number"'))
    done = admin.run("mappings", "apply", str(document))
    assert done.returncode == 2
    assert f"{document}: mappings.CUSTOMER.fields[6]: local_column 'phone_number' is not a " \
           "column of erp.customer" in done.stderr
    assert admin.sql("SELECT count(*) FROM crmsync.integration_field_mappings "
                     "WHERE local_column = 'phone_number'") == [(0,)]

    document.write_text("[mappings.X\n")
    done = admin.run("mappings", "apply", str(document))
    assert done.returncode == 2 and "not valid TOML" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 2
    document.write_text(NEW_MAPPING.replace('depends_on = ["CURRENCY"]',
                                            'depends_on = ["CURENCY"]'))
    done = admin.run("mappings", "apply", str(document))
    assert "mappings.VENDOR.depends_on[0]: no mapping 'CURENCY'" in done.stderr
    assert admin.run("mappings", "export", "NOSUCH").returncode == 2

    # A value only the database can judge: the constraint, at its place in the document.
    document.write_text(_export(admin, document, "CUSTOMER").replace(
        'category_code = "CRM-CUST"', 'category_code = "CRM-CUST"\ntime_zone = "Mars/Base"'))
    done = admin.run("mappings", "apply", str(document))
    assert done.returncode == 2
    assert f"{document}: mappings.CUSTOMER.entries[0]: " in done.stderr
    assert "job_queue_entries_time_zone_must_be_iana_name" in done.stderr

    currency = _export(admin, document, "CURRENCY")
    document.write_text(currency.replace("depends_on = []", 'depends_on = ["CONTACTS"]'))
    done = admin.run("mappings", "apply", str(document))
    assert done.returncode == 2
    assert "mappings.CURRENCY.depends_on: mapping dependency cycle: " in done.stderr


def test_mappings_are_removed_only_with_prune(defaults: Admin, tmp_path: Path) -> None:
    admin = defaults
    document = tmp_path / "products.toml"
    _export(admin, document, "UNITOFMEASURE", "ITEM-PRODUCT")
    kept = admin.ok("mappings", "apply", str(document))
    assert "no changes" in kept and "kept (not in the document; --prune removes them): " \
        "CURRENCY, SALESPEOPLE, CUSTOMER, CONTACTS, RESOURCE-PRODUCT" in kept
    pruned = admin.ok("mappings", "apply", str(document), "--prune", "--dry-run")
    assert "- mapping CONTACTS" in pruned and "- mapping CURRENCY" in pruned
    assert len(admin.sql("SELECT name FROM crmsync.integration_table_mappings")) == 7
    admin.ok("mappings", "apply", str(document), "--prune")
    assert sorted(r[0] for r in admin.sql(
        "SELECT name FROM crmsync.integration_table_mappings")) == ["ITEM-PRODUCT",
                                                                   "UNITOFMEASURE"]


def test_the_defaults_are_a_shipped_document(admin: Admin, tmp_path: Path) -> None:
    admin.ok("sample-data", "--customers", "3", "--salespeople", "2")
    document = tmp_path / "defaults.toml"
    document.write_text(default_document())
    first = admin.ok("mappings", "apply", str(document))
    assert "+ mapping CUSTOMER" in first and "applied" in first
    # setup-defaults writes the same document: nothing left to do after apply.
    assert "nothing changed" in admin.ok("setup-defaults")
    assert admin.ok("mappings", "apply", "-", stdin=default_document()).strip() == "no changes"


def test_a_mapping_that_will_create_nothing_is_pointed_out(defaults: Admin,
                                                           tmp_path: Path) -> None:
    admin = defaults
    admin.sql("CREATE TABLE erp.vendor (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
              "no varchar(20) UNIQUE, name varchar(100))")
    document = tmp_path / "vendor.toml"
    document.write_text(NEW_MAPPING.replace('direction = "from_integration"',
                                            'direction = "from_integration"\n'
                                            "sync_only_coupled = true"))
    out = admin.ok("mappings", "apply", str(document))
    assert "note: mapping VENDOR will create nothing: sync_only_coupled = true and no " \
           "record is coupled" in out
    # crmsync check says so too, whatever else it finds.
    assert "note: mapping VENDOR will create nothing" in admin.run("check").stdout
    assert admin.sql("SELECT column_default FROM information_schema.columns WHERE "
                     "table_name = 'integration_table_mappings' AND "
                     "column_name = 'sync_only_coupled'") == [("false",)]


def _capture_key(admin: Admin) -> list[str]:
    return sorted({r[0].split("\\000")[0] for r in admin.sql(
        "SELECT encode(tgargs, 'escape') FROM pg_trigger "
        "WHERE tgrelid = 'erp.customer'::regclass AND tgname LIKE 'crmsync_capture_%'")})


def test_a_key_change_moves_the_capture_triggers(defaults: Admin, tmp_path: Path) -> None:
    admin = defaults
    admin.ok("mappings", "enable", "CUSTOMER")
    assert _capture_key(admin) == ["id"]
    document = tmp_path / "customer.toml"
    text = _export(admin, document, "CUSTOMER")
    document.write_text(text.replace('local_key = "id"', 'local_key = "no"'))
    out = admin.ok("mappings", "apply", str(document))
    assert "~ mapping CUSTOMER: local_key: 'id' -> 'no'" in out
    assert _capture_key(admin) == ["no"]  # no disable / enable needed
    document.write_text(text)
    admin.ok("mappings", "apply", str(document))
    assert _capture_key(admin) == ["id"]


def test_a_second_mapping_on_accounts_without_a_filter_is_refused(defaults: Admin,
                                                                  tmp_path: Path) -> None:
    admin = defaults
    admin.sql("CREATE TABLE erp.vendor (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
              "no varchar(20) UNIQUE, name varchar(100))")
    document = tmp_path / "vendor.toml"
    document.write_text(NEW_MAPPING.replace(
        'remote_filter = "statecode eq 0 and customertypecode eq 10"\n', ""))
    done = admin.run("mappings", "apply", str(document))
    assert done.returncode == 2
    assert f"{document}: mappings.VENDOR.remote_filter: mapping CUSTOMER reads accounts too" \
        in done.stderr
    assert admin.sql("SELECT count(*) FROM crmsync.integration_table_mappings "
                     "WHERE name = 'VENDOR'") == [(0,)]
