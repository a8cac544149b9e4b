"""``apply_on`` in the mapping document and in ``crmsync check``: set through apply, exported
back, an unknown value refused with its path, and a field row the check cannot read named
with its mapping and field — one line each, never a traceback."""

from __future__ import annotations

from pathlib import Path

from tests.admin.conftest import Admin

PHONE = 'local_column = "phone_no"\nremote_property = "telephone1"'


def test_apply_on_round_trip_and_refusal(defaults: Admin, tmp_path: Path) -> None:
    admin = defaults
    document = tmp_path / "customer.toml"
    admin.ok("mappings", "export", "CUSTOMER", "--output", str(document))
    text = document.read_text()
    assert PHONE in text and "apply_on" not in text  # the default is not written
    document.write_text(text.replace(PHONE, PHONE + '\napply_on = "create"'))
    assert "(phone_no <-> telephone1): apply_on: 'always' -> 'create'" in admin.ok(
        "mappings", "apply", str(document))
    assert admin.sql("SELECT apply_on FROM crmsync.integration_field_mappings "
                     "WHERE mapping_name = 'CUSTOMER' AND local_column = 'phone_no'") == [
        ("create",)]
    again = tmp_path / "again.toml"
    admin.ok("mappings", "export", "CUSTOMER", "--output", str(again))
    assert PHONE + '\napply_on = "create"' in again.read_text()

    document.write_text(text.replace(PHONE, PHONE + '\napply_on = "sometimes"'))
    done = admin.run("mappings", "apply", str(document))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "mappings.CUSTOMER.fields[" in done.stderr
    assert "].apply_on: 'sometimes' is not one of always, create" in done.stderr


def test_check_names_a_field_with_an_unknown_apply_on(defaults: Admin) -> None:
    admin = defaults
    # The database refuses such a value; a schema whose constraint was dropped gets a
    # check that names the mapping and the field instead of failing on it.
    admin.sql("ALTER TABLE crmsync.integration_field_mappings "
              "DROP CONSTRAINT field_mappings_apply_on_must_be_known")
    admin.sql("UPDATE crmsync.integration_field_mappings SET apply_on = 'Create' "
              "WHERE mapping_name = 'CUSTOMER' AND local_column = 'phone_no'")
    done = admin.run("check")
    assert done.returncode != 0 and "Traceback" not in done.stdout + done.stderr
    assert "mapping CUSTOMER: mapping: field phone_no <-> telephone1: apply_on 'Create' is " \
           "not one of always, create" in done.stdout + done.stderr
