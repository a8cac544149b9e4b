"""A chunk's ids sent as one joined array literal (worker.db.engine.text_array) reach
PostgreSQL as the very texts given, whatever they hold, and a chunk's rows and couplings
are found by them as before: ERP keys of text, UUID in any form uuid.UUID reads, or
integers."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.db.engine import text_array
from worker.sync import couplings
from worker.sync.local import LocalTable
from worker.sync.model import CouplingState

AWKWARD = ["plain", "", "NULL", "a,b", "{x}", 'say "hi"', "back\\slash", "\\\"", " lead",
           "trail ", "é€😀", "tab\there", "new\nline"]


def test_the_server_reads_the_texts_given(engine: Engine) -> None:
    with engine.connect() as conn:
        for values in ([], ["one"], AWKWARD):
            got = conn.scalar(sa.text("SELECT CAST(:a AS text[])"), {"a": text_array(values)})
            assert got == values


def test_couplings_and_rows_are_found_by_awkward_keys(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(
            "CREATE TABLE public.t_text (k varchar(40) PRIMARY KEY, v int);"
            "CREATE TABLE public.t_uuid (k uuid PRIMARY KEY, v int);"
            "CREATE TABLE public.t_int (k integer PRIMARY KEY, v int);"
            "INSERT INTO crmsync.integration_table_mappings (name, local_table, entity_set, "
            "remote_key, direction) VALUES ('M', 'public.t_text', 'accounts', 'accountid', "
            "'to_integration')"))
        for n, key in enumerate(AWKWARD):
            conn.execute(sa.text("INSERT INTO public.t_text VALUES (:k, :v)"), {"k": key, "v": n})
        ids = [uuid.uuid4() for _ in range(3)]
        for n, key in enumerate(ids):
            conn.execute(sa.text("INSERT INTO public.t_uuid VALUES (:k, :v)"), {"k": key, "v": n})
        conn.execute(sa.text("INSERT INTO public.t_int VALUES (7, 1), (-3, 2)"))
        made = couplings.add_intents(conn, "M", [(k, f"r{k}") for k in AWKWARD],
                                     CouplingState.CREATING_REMOTE)

        text = LocalTable(conn, "public.t_text", "k")
        assert {k: r["v"] for k, r in text.fetch(conn, AWKWARD + ["absent"]).items()} \
            == {k: n for n, k in enumerate(AWKWARD)}
        assert set(couplings.by_local_ids(conn, "M", AWKWARD)) == set(AWKWARD)
        assert {c.id for c in couplings.by_remote_ids(conn, "M", [f"r{k}" for k in AWKWARD])
                .values()} == {c.id for c in made.values()}

        table = LocalTable(conn, "public.t_uuid", "k")
        forms = [str(ids[0]).upper(), "{" + str(ids[1]) + "}", ids[2].hex]
        assert {k: r["v"] for k, r in table.fetch(conn, forms).items()} \
            == {str(ids[0]): 0, str(ids[1]): 1, str(ids[2]): 2}
        assert set(table.fetch(conn, [str(i) for i in ids])) == {str(i) for i in ids}

        ints = LocalTable(conn, "public.t_int", "k")
        assert {k: r["v"] for k, r in ints.fetch(conn, ["7", "-3", "8"]).items()} \
            == {"7": 1, "-3": 2}


def test_a_fetch_goes_by_the_where_it_is_given(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE public.t_where (k uuid PRIMARY KEY, v int)"))
        ids = [uuid.uuid4() for _ in range(4)]
        for n, key in enumerate(ids):
            conn.execute(sa.text("INSERT INTO public.t_where VALUES (:k, :v)"), {"k": key, "v": n})
        table = LocalTable(conn, "public.t_where", "k")
        keys = [str(i) for i in ids]
        low, high = table.table.c.v < 2, table.table.c.v >= 2
        for _ in range(2):  # and again, with the statements it has kept
            assert set(table.fetch(conn, keys, low)) == set(keys[:2])
            assert set(table.fetch(conn, keys, high)) == set(keys[2:])
            assert set(table.fetch(conn, keys)) == set(keys)
            assert set(table.fetch(conn, keys[1:2], low)) == {keys[1]}
