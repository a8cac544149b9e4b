"""The mapping document's format without a database: reading, the faults it names, what a
plan changes, and a writer whose output TOML reads back to the same values."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.sample.defaults import default_document
from worker.sync import documents, tomlwrite
from worker.sync.document_plan import plan
from worker.sync.documents import DocumentInvalid, format_interval, parse_interval


def test_the_shipped_defaults_render_back_to_their_own_values() -> None:
    docs = documents.parse(default_document())
    assert [d.name for d in docs][:3] == ["CURRENCY", "SALESPEOPLE", "UNITOFMEASURE"]
    again = documents.parse(documents.render(docs))
    assert again == docs
    assert plan(docs, again).empty


def test_every_fault_is_named_by_its_path() -> None:
    text = """
format = 1
[mappings.A]
local_table = "erp.a"
entity_set = "as"
direction = "sideways"
colour = "blue"
[[mappings.A.fields]]
local_column = "x"
[[mappings.A.fields]]
local_column = "x"
remote_property = 7
[[mappings.A.entries]]
run_interval = "soon"
run_on_weekdays = [8]
"""
    with pytest.raises(DocumentInvalid) as caught:
        documents.parse(text)
    paths = [path for path, _ in caught.value.problems]
    assert paths == ["mappings.A.colour", "mappings.A.remote_key", "mappings.A.direction",
                     "mappings.A.fields[1].remote_property", "mappings.A.entries[0].run_interval",
                     "mappings.A.entries[0].run_on_weekdays",
                     "mappings.A.fields[0].constant_value", "mappings.A.fields[1].local_column"]


def test_a_plan_keeps_field_ids_and_lists_removals_first() -> None:
    base = documents.parse("""
[mappings.A]
local_table = "erp.a"
entity_set = "as"
remote_key = "id"
[[mappings.A.fields]]
local_column = "x"
remote_property = "px"
[[mappings.A.fields]]
local_column = "y"
remote_property = "py"
""")
    stored = [documents.MappingDoc(
        d.name, d.columns, d.depends_on,
        tuple({**f, "_id": n + 10} for n, f in enumerate(d.fields)), d.entries) for d in base]
    wanted = documents.parse("""
[mappings.A]
local_table = "erp.a"
entity_set = "as"
remote_key = "id"
[[mappings.A.fields]]
local_column = "x2"
remote_property = "px"
[[mappings.A.fields]]
local_column = "z"
remote_property = "pz"
""")
    changes = plan(stored, wanted).changes
    assert [(c.op, c.kind, c.row_id) for c in changes] == [
        ("-", "field", 11), ("~", "field", 10), ("+", "field", None)]
    assert changes[1].describe() == "~ field A fields[0] (x2 <-> px): local_column: 'x' -> 'x2'"


@pytest.mark.parametrize(("text", "value"), [
    ("30 minutes", timedelta(minutes=30)), ("1 day 2 hours", timedelta(days=1, hours=2)),
    ("90 seconds", timedelta(seconds=90)), ("00:30:00", timedelta(minutes=30)),
    ("1 week", timedelta(days=7))])
def test_intervals(text: str, value: timedelta) -> None:
    assert parse_interval(text) == value
    assert parse_interval(format_interval(value)) == value


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400)))
def test_every_interval_formats_back_to_itself(value: timedelta) -> None:
    assert parse_interval(format_interval(value)) == value


_SCALARS = (st.text() | st.booleans() | st.integers(-2**63, 2**63 - 1)
            | st.floats(allow_nan=False, allow_infinity=False))
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(), inner, max_size=3), max_leaves=8)


@given(st.dictionaries(st.text(min_size=1), _VALUES, max_size=5))
def test_the_writer_reads_back_to_the_same_values(items: dict[str, object]) -> None:
    text = "\n".join(tomlwrite.table(("mappings", "odd name.x"), items))
    assert tomllib.loads(text) == {"mappings": {"odd name.x": items}}


def test_the_writer_handles_dates_and_times() -> None:
    items = {"at": datetime(2027, 1, 1, 6, 0, tzinfo=UTC), "time": time(6, 30)}
    assert tomllib.loads("\n".join(tomlwrite.assignments(items))) == items


def test_a_key_ending_in_a_newline_is_quoted() -> None:
    """A found example: "$" in a bare-key pattern also matches before a final newline."""
    text = "\n".join(tomlwrite.table(("mappings", "M"), {"0\n": [], "a-b": 1}))
    assert tomllib.loads(text) == {"mappings": {"M": {"0\n": [], "a-b": 1}}}
