"""The JSON work of a sync, by the json module and by orjson as crmsync uses it: a write's
body (``wire.dumps``), a record in a reply (``wire.loads``, exact numbers: orjson would
have to read a body again when it holds a fraction, so replies stay with the json
module), a chunk's snapshot rows for ``jsonb_to_recordset`` and a coupling's snapshot
read from jsonb.

    python bench/json_bench.py

Prints microseconds per call and the ratio; the load average beside them.
"""

from __future__ import annotations

import json
import os
import timeit
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson

from worker.db.engine import _no_float, jsonb_loads
from worker.remote import wire
from worker.sync import couplings


def _record() -> dict[str, Any]:
    return {"@odata.etag": 'W/"123456"', "accountid": str(uuid.uuid4()),
            "name": "Customer 1234 Ltd", "accountnumber": "C01234",
            "address1_line1": "12 High Street", "address1_city": "Leeds",
            "address1_postalcode": "LS1 1AA", "telephone1": "+44 113 000",
            "emailaddress1": "c1234@example.com", "customertypecode": 3,
            "modifiedon": "2026-12-07T00:00:00Z", "versionnumber": 123456,
            "_transactioncurrencyid_value": str(uuid.uuid4())}


def _orjson_loads(body: bytes) -> Any:
    """What reading replies with orjson would cost: orjson, and the json module again
    when the body holds a float (orjson has no Decimal). Not used: see wire.loads."""
    doc = orjson.loads(body)
    return doc if _no_float(doc) else wire.loads(body)


def _old_dumps(values: dict[str, Any]) -> bytes:
    return wire._json_dumps(values)


def _snapshot() -> dict[str, Any]:
    return {side: {str(k): f"value {k}" for k in range(10)} for side in ("l", "r")}


def _rows() -> list[dict[str, Any]]:
    return [{"l": f"C{i:05d}", "r": str(uuid.uuid4()), "v": _snapshot()} for i in range(500)]


def per_call(fn: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=3)) / number * 1e6


def main() -> int:
    record = _record()
    reply = json.dumps(record).encode()
    with_amount = json.dumps({**record, "creditlimit": 1234.5}).encode()
    body = {k: v for k, v in record.items() if not k.startswith("@")}
    body["creditlimit"] = Decimal("1234.50")
    rows = _rows()
    snapshot = json.dumps(_snapshot())
    cases = [
        ("write body (wire.dumps)", lambda: _old_dumps(body), lambda: wire.dumps(body),
         20000),
        ("reply record, no fraction (orjson alone)",
         lambda: wire.loads(reply), lambda: _orjson_loads(reply), 20000),
        ("reply record with a fraction (orjson, then json)",
         lambda: wire.loads(with_amount), lambda: _orjson_loads(with_amount), 20000),
        ("500 snapshot rows for jsonb_to_recordset",
         lambda: json.dumps(rows, default=str), lambda: couplings._rows(rows), 50),
        ("a coupling's snapshot from jsonb", lambda: json.loads(snapshot),
         lambda: jsonb_loads(snapshot), 20000),
    ]
    print(f"JSON: json module vs orjson as crmsync uses it; load average "
          f"{os.getloadavg()[0]:.2f}")
    for what, old, new, number in cases:
        assert old() == new() or what.startswith("write") or what.startswith("500")
        before, after = per_call(old, number), per_call(new, number)
        print(f"  {what:48s} {before:9.1f} µs → {after:8.1f} µs  ({before / after:.1f}×)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
