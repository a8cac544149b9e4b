"""The ids crmsync chooses for records it creates in the CRM: random GUIDs of version 4, as
``uuid.uuid4`` makes them, in their canonical text form."""

from __future__ import annotations

import uuid

from worker.sync.context import new_id


def test_new_ids_are_canonical_random_guids() -> None:
    ids = [new_id() for _ in range(20000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        guid = uuid.UUID(text)
        assert str(guid) == text  # lower case, dashed, 36 characters
        assert guid.version == 4 and guid.variant == uuid.RFC_4122
    # Every hex digit outside the fixed version and variant bits varies.
    digits = {i: {text[i] for text in ids} for i in range(36) if ids[0][i] != "-"}
    assert all(len(seen) == 16 for i, seen in digits.items() if i not in (14, 19))
    assert digits[14] == {"4"} and digits[19] == set("89ab")
