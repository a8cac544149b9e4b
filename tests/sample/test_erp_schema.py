"""Schema ``erp`` in a real database: idempotent creation, number series, the triggers."""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.sample.erp_schema import (
    TABLES,
    catch_up_number_series,
    create_erp_schema,
    erp_schema_exists,
)


def _columns(engine: Engine) -> list[tuple[str, str, str, int | None]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT table_name, column_name, data_type, character_maximum_length "
            "FROM information_schema.columns WHERE table_schema = 'erp' "
            "ORDER BY table_name, ordinal_position"))]


def test_creation_is_idempotent(engine: Engine) -> None:
    assert not erp_schema_exists(engine)
    create_erp_schema(engine)
    first = _columns(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO erp.currency (code) VALUES ('EUR')"))
    create_erp_schema(engine)
    assert erp_schema_exists(engine)
    assert _columns(engine) == first
    with engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM erp.currency")) == 1


def test_every_table_has_id_natural_key_and_last_modified_at(engine: Engine) -> None:
    create_erp_schema(engine)
    columns = _columns(engine)
    for table in TABLES:
        name = table.split(".")[1]
        own = {c[1]: c for c in columns if c[0] == name}
        assert own["id"][2] == "uuid"
        assert own["last_modified_at"][2] == "timestamp with time zone"
        assert ("code" in own) != ("no" in own)
    lengths = {(c[0], c[1]): c[3] for c in columns}
    assert lengths["customer", "no"] == 20 and lengths["customer", "name"] == 100
    assert lengths["contact", "first_name"] == 30 and lengths["currency", "code"] == 10


def test_a_record_without_a_number_gets_the_next_one(engine: Engine) -> None:
    create_erp_schema(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO erp.customer (name) VALUES ('omitted')"))
        conn.execute(sa.text("INSERT INTO erp.customer (no, name) VALUES (NULL, 'null'), "
                             "('', 'blank'), ('C00009', 'explicit')"))
        catch_up_number_series(conn)
        conn.execute(sa.text("INSERT INTO erp.customer (name) VALUES ('after')"))
        conn.execute(sa.text("INSERT INTO erp.item (description) VALUES ('first item')"))
        conn.execute(sa.text("INSERT INTO erp.resource (name) VALUES ('first resource')"))
        conn.execute(sa.text("INSERT INTO erp.contact (surname) VALUES ('first contact')"))
        customers: dict[str, str] = dict(
            conn.execute(sa.text("SELECT name, no FROM erp.customer")).all())
        others = conn.execute(sa.text(
            "SELECT (SELECT no FROM erp.item), (SELECT no FROM erp.resource), "
            "(SELECT no FROM erp.contact)")).one()
    assert customers == {"omitted": "C00001", "null": "C00002", "blank": "C00003",
                         "explicit": "C00009", "after": "C00010"}
    assert tuple(others) == ("1000", "R0001", "CT000001")


def test_catching_up_never_moves_a_sequence_back(engine: Engine) -> None:
    create_erp_schema(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT setval('erp.customer_no_seq', 500)"))
        conn.execute(sa.text("INSERT INTO erp.customer (no) VALUES ('C00007')"))
        catch_up_number_series(conn)
        assert conn.scalar(sa.text("INSERT INTO erp.customer DEFAULT VALUES RETURNING no")) \
            == "C00501"


def test_last_modified_at_moves_on_a_real_change_only(engine: Engine) -> None:
    create_erp_schema(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO erp.unit_of_measure (code, description) "
                             "VALUES ('PCS', 'Piece')"))

    def stamp() -> object:
        with engine.connect() as conn:
            return conn.scalar(sa.text("SELECT last_modified_at FROM erp.unit_of_measure"))

    created = stamp()
    time.sleep(0.01)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE erp.unit_of_measure SET description = 'Piece'"))
    assert stamp() == created
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE erp.unit_of_measure SET description = 'Pieces'"))
    assert stamp() > created  # type: ignore[operator]


def test_contact_name_is_composed_from_its_parts(engine: Engine) -> None:
    create_erp_schema(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO erp.contact (no, first_name, surname) "
                             "VALUES ('CT1', 'Jan', 'de Jong')"))
        conn.execute(sa.text("INSERT INTO erp.contact (no, first_name, surname, name) "
                             "VALUES ('CT2', 'Ann', 'Lee', 'Dr. Ann Lee')"))
        conn.execute(sa.text("UPDATE erp.contact SET middle_name = 'P.' WHERE no = 'CT1'"))
        names: dict[str, str] = dict(
            conn.execute(sa.text("SELECT no, name FROM erp.contact")).all())
    assert names == {"CT1": "Jan P. de Jong", "CT2": "Dr. Ann Lee"}


def test_renaming_a_code_cascades_to_the_records_using_it(engine: Engine) -> None:
    create_erp_schema(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO erp.salesperson (code) VALUES ('OLD')"))
        conn.execute(sa.text("INSERT INTO erp.customer (no, salesperson_code) "
                             "VALUES ('C1', 'OLD')"))
        conn.execute(sa.text("INSERT INTO erp.contact (no, customer_no) VALUES ('CT1', 'C1')"))
        conn.execute(sa.text("UPDATE erp.salesperson SET code = 'NEW'"))
        conn.execute(sa.text("UPDATE erp.customer SET no = 'C2'"))
        assert conn.execute(sa.text(
            "SELECT c.salesperson_code, k.customer_no FROM erp.customer c, erp.contact k")
        ).one() == ("NEW", "C2")
        conn.execute(sa.text("DELETE FROM erp.customer"))
        assert conn.scalar(sa.text("SELECT customer_no FROM erp.contact")) is None
