"""Exact numbers through the client over real HTTP: what the client sends is what the
emulator stores and what a read returns, digit for digit, alone and in a $batch."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from worker.emulator.server import EmulatorServer
from worker.remote import wire
from worker.remote.batch import Operation

from .helpers import client_for

LIMITS = ["999999999999999.9999", "-922337203685477.5808", "99999999999999.99", "0.0001",
          "12.5"]


@pytest.mark.parametrize("amount", LIMITS)
def test_money_at_its_limits_comes_back_with_every_digit(emulator: EmulatorServer,
                                                         amount: str) -> None:
    with client_for(emulator) as client:
        accounts = client.entity_set("accounts", "accountid")
        key = str(uuid.uuid4())
        accounts.create(key, {"name": "Exact", "revenue": Decimal(amount)})
        record = accounts.get(key)
        assert record is not None
        assert isinstance(record["revenue"], Decimal)
        assert record["revenue"] == Decimal(amount)


def test_integers_at_the_int32_and_int64_limits(emulator: EmulatorServer) -> None:
    with client_for(emulator) as client:
        accounts = client.entity_set("accounts", "accountid")
        key = str(uuid.uuid4())
        accounts.create(key, {"numberofemployees": 2**31 - 1,
                              "new_externalsequence": 2**63 - 1})
        record = accounts.get(key)
        assert record is not None
        assert (record["numberofemployees"], record["new_externalsequence"]) == (
            2**31 - 1, 2**63 - 1)


def test_a_batch_keeps_digits_and_fails_only_the_amount_that_does_not_fit(
        emulator: EmulatorServer) -> None:
    with client_for(emulator) as client:
        accounts = client.entity_set("accounts", "accountid")
        keys = [str(uuid.uuid4()) for _ in range(3)]
        amounts = [Decimal("9999999999999.99"), Decimal("9999999999999999.99"),
                   Decimal("0.01")]
        ops = [Operation("create", accounts, k, {"name": f"B{n}", "creditlimit": a}, ref=n)
               for n, (k, a) in enumerate(zip(keys, amounts, strict=True))]
        results = client.batch(ops)
        assert [r.ok for r in results] == [True, False, True]
        assert "creditlimit" in str(results[1].error)
        stored = {r["accountid"]: r["creditlimit"] for r in accounts.read_by_keys(
            [keys[0], keys[2]], select=["accountid", "creditlimit"])}
        assert stored == {keys[0]: amounts[0], keys[2]: amounts[2]}


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-32-le"])
def test_a_reply_in_any_json_encoding_is_read_with_exact_numbers(encoding: str) -> None:
    body = '{"name":"Müller","creditlimit":1000.50,"n":7}'.encode(encoding)
    assert wire.loads(body) == {"name": "Müller", "creditlimit": Decimal("1000.50"), "n": 7}
    assert str(wire.loads(body)["creditlimit"]) == "1000.50"


def test_a_text_reply_starting_with_a_byte_order_mark_is_not_json() -> None:
    with pytest.raises(ValueError):
        wire.loads('\ufeff{"a":1}')
