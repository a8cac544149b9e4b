"""Finding, for CRM records with no counterpart yet, the local records that hold the same
values in the use-for-matching fields (NAV's match-based coupling): the database narrows
the candidates by the first field, ``decide.match_key`` decides."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.engine import Connection

from worker.sync import couplings as coupling_store
from worker.sync.decide import match_key, unique_matches
from worker.sync.local import LocalTable
from worker.sync.model import FieldMapping


def match_records(conn: Connection, local: LocalTable, mapping: str,
                  fields: Sequence[FieldMapping], records: Sequence[dict[str, Any]],
                  rid: Callable[[dict[str, Any]], str]) -> list[tuple[str, str]]:
    """(local id, remote id) of the unique matches among uncoupled local records."""
    first = fields[0]
    assert first.local_column and first.remote_property
    given = [r.get(first.remote_property) for r in records]
    narrow = [v for v in given if v not in (None, "")]
    narrow += [v.strip() for v in narrow if isinstance(v, str) and v.strip() != v]
    if not narrow:
        return []
    found = local.find_by(conn, first.local_column, narrow, first.case_sensitive_matching)
    keys = list(dict.fromkeys(k for ks in found.values() for k in ks))
    taken = set(coupling_store.by_local_ids(conn, mapping, keys))
    rows = local.fetch(conn, [k for k in keys if k not in taken])
    candidates = {key: match_key(fields, [row[f.local_column] for f in fields])
                  for key, row in rows.items()}
    wanted = {rid(r): match_key(fields, [r.get(f.remote_property or "") for f in fields])
              for r in records}
    pairs, _ = unique_matches(wanted, candidates)
    return [(local_id, remote_id) for remote_id, local_id in pairs]
