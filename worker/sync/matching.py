"""Match-based coupling (NAV: "Match-Based Coupling"): uncoupled local records are paired
with uncoupled remote records whose use-for-matching fields hold the same values. Unique
matches are coupled; ambiguous ones are listed and left alone; with ``create_missing`` the
records without a match are created in the CRM."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa

from worker.errors import ConfigurationError
from worker.sync import couplings as coupling_store
from worker.sync import joblog, to_remote
from worker.sync.context import PassContext, chunks
from worker.sync.decide import match_key
from worker.sync.engine import SyncEngine
from worker.sync.model import Direction, FieldMapping


@dataclass
class MatchResult:
    coupled: list[tuple[str, str]] = field(default_factory=list)
    ambiguous: list[tuple[str, list[str]]] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    created: Counter[str] = field(default_factory=Counter)
    job_id: int | None = None


def couple_by_match(sync: SyncEngine, name: str, *, create_missing: bool = False) -> MatchResult:
    from worker.sync import mappings as mapping_store

    mapping = mapping_store.load(sync.engine, name)
    fields = mapping.match_fields
    if not fields:
        raise ConfigurationError(
            f"mapping {name}: no field mapping has use_for_matching set")
    job_id = joblog.start(sync.engine, name, Direction.TO_INTEGRATION, None, "coupling")
    px = sync.context(mapping, Direction.TO_INTEGRATION, job_id, lambda: None, None)
    result = MatchResult(job_id=job_id)
    with sync.engine.connect() as conn:
        coupled_local, coupled_remote = coupling_store.coupled_ids(conn, name)
        rows = conn.execute(sa.select(px.local.table).where(px.where)).mappings().all()
    index = _remote_index(px, fields, coupled_remote)
    taken: set[str] = set()
    for row in rows:
        key = str(row[px.local.key.name])
        if key in coupled_local:
            continue
        values = match_key(fields, [row[str(f.local_column)] for f in fields])
        candidates = [r for r in index.get(values, []) if r not in taken] if values else []
        if len(candidates) == 1:
            result.coupled.append((key, candidates[0]))
            taken.add(candidates[0])
        elif candidates:
            result.ambiguous.append((key, candidates))
        else:
            result.unmatched.append(key)
    with sync.engine.begin() as conn:
        for local_id, remote_id in result.coupled:
            coupling_store.add_coupled(conn, name, local_id, remote_id)
        joblog.add(conn, job_id, Counter(coupled=len(result.coupled)), [
            joblog.RecordError(k, ", ".join(c), f"{len(c)} records in {mapping.entity_set} "
                               "match; left uncoupled") for k, c in result.ambiguous])
    if create_missing and result.unmatched:
        result.created = _create(replace(px, mapping=replace(mapping, sync_only_coupled=False)),
                                 result.unmatched)
    joblog.finish(sync.engine, job_id)
    return result


def _remote_index(px: PassContext, fields: tuple[FieldMapping, ...],
                  coupled: set[str]) -> dict[tuple[Any, ...], list[str]]:
    """Uncoupled CRM records by their match key (``decide.match_key``)."""
    mapping = px.mapping
    index: dict[tuple[Any, ...], list[str]] = {}
    select = [mapping.remote_key] + [f.remote_property for f in fields if f.remote_property]
    for record in px.remote.read(select=select, filter=mapping.remote_filter):
        rid = str(record[mapping.remote_key])
        if rid.lower() in coupled:
            continue
        values = match_key(fields, [record.get(f.remote_property or "") for f in fields])
        if values is not None:
            index.setdefault(values, []).append(rid)
    return index


def _create(px: PassContext, keys: list[str]) -> Counter[str]:
    for chunk in chunks(keys):
        to_remote.run_records(px, chunk, force=False, max_lengths={})
    return px.counts
