"""Deterministic sample data: the system users a real organisation has before any sync."""

from __future__ import annotations

import uuid

from worker.emulator.store import Store
from worker.emulator.values import Changes

_NAMESPACE = uuid.UUID("6f1c1f9e-5d7a-4bb6-8a53-7d0e2c5a9f10")
_FIRST = ("Alex", "Maria", "Jonas", "Sofia", "Liam", "Emma", "Noah", "Olivia", "Lukas", "Mia",
          "Elias", "Hannah", "Finn", "Lea", "Ben", "Clara", "Paul", "Ida", "Leon", "Nora",
          "Felix", "Anna", "Jakob", "Lena", "David", "Sara", "Tom", "Julia", "Max", "Eva")
_LAST = ("Schmidt", "Garcia", "Nielsen", "Rossi", "Dubois", "Novak", "Jansen", "Kowalski",
         "Berg", "Silva", "Fischer", "Moreau", "Larsen", "Weber", "Costa", "Hansen", "Meyer",
         "Lopez", "Wagner", "Bauer", "Fontaine", "Keller", "Horvat", "Peters", "Lindqvist",
         "Romano", "Vogel", "Brandt", "Svensson", "Marino")
_TITLES = ("Salesperson", "Account Manager", "Sales Manager", "Key Account Manager")
DOMAIN = "contoso.example"


def sample_user_id(index: int) -> str:
    """The stable id of the ``index``-th sample user (0-based)."""
    return str(uuid.uuid5(_NAMESPACE, f"systemuser/{index}"))


def sample_user(index: int) -> dict[str, str]:
    """Name, e-mail and title of the ``index``-th sample user; names repeat only after 900."""
    first = _FIRST[index % len(_FIRST)]
    last = _LAST[(index // len(_FIRST) + index) % len(_LAST)]
    suffix = "" if index < len(_FIRST) * len(_LAST) else str(index)
    email = f"{first}.{last}{suffix}@{DOMAIN}".lower()
    return {"firstname": first, "lastname": last, "internalemailaddress": email,
            "domainname": email, "title": _TITLES[index % len(_TITLES)]}


def seed_sample_users(store: Store, count: int) -> None:
    """Create ``count`` system users (skipping ones that exist, so it can run again)."""
    with store.atomic():
        for index in range(count):
            key = sample_user_id(index)
            if store.get("systemusers", key) is None:
                store.create("systemusers", Changes(values=sample_user(index), key=key))
