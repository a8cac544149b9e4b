"""Deterministic sample data: what a real organisation's CRM holds before any sync — system
users, and accounts and contacts that are not the ERP's customers (vendors, a competitor,
inactive records, a private person), which NAV's default filters keep out of the ERP."""

from __future__ import annotations

import uuid

from worker.emulator.paths import EntityRef
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


# Accounts that are not customers (customertypecode: 3 customer, 10 vendor, 1 competitor,
# 5 partner; statecode 1 = inactive) and contacts a sync of customers must leave alone.
SAMPLE_ACCOUNTS: tuple[dict[str, object], ...] = (
    {"name": "Northwind Supplies GmbH", "accountnumber": "V10010", "customertypecode": 10,
     "address1_city": "Hamburg"},
    {"name": "Blue Yonder Freight B.V.", "accountnumber": "V10020", "customertypecode": 10,
     "address1_city": "Rotterdam"},
    {"name": "Fabrikam Rivals Ltd", "customertypecode": 1, "address1_city": "Manchester"},
    {"name": "Adatum Partners AB", "customertypecode": 5, "address1_city": "Malmö"},
    {"name": "Closed Customer Oy", "accountnumber": "C99990", "customertypecode": 3,
     "address1_city": "Turku", "statecode": 1, "statuscode": 2},
)
SAMPLE_CONTACTS: tuple[dict[str, object], ...] = (
    {"firstname": "Inge", "lastname": "Inactive", "emailaddress1": "inge@closed.example",
     "statecode": 1, "statuscode": 2, "_parent": 4},
    {"firstname": "Piet", "lastname": "Private", "emailaddress1": "piet@home.example"},
)


def sample_record_id(set_name: str, index: int) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{set_name}/{index}"))


def seed_sample_users(store: Store, count: int) -> None:
    """Create ``count`` system users and, when there are any, the sample accounts and
    contacts that are not customers (skipping ones that exist, so it can run again)."""
    with store.atomic():
        for index in range(count):
            key = sample_user_id(index)
            if store.get("systemusers", key) is None:
                store.create("systemusers", Changes(values=sample_user(index), key=key))
        if count:
            _seed_other_records(store)


def _seed_other_records(store: Store) -> None:
    for index, values in enumerate(SAMPLE_ACCOUNTS):
        key = sample_record_id("accounts", index)
        if store.get("accounts", key) is None:
            store.create("accounts", Changes(values=dict(values), key=key))
    for index, values in enumerate(SAMPLE_CONTACTS):
        key = sample_record_id("contacts", index)
        if store.get("contacts", key) is None:
            fields = {k: v for k, v in values.items() if k != "_parent"}
            changes = Changes(values=fields, key=key)
            if "_parent" in values:
                parent = sample_record_id("accounts", int(str(values["_parent"])))
                # Named by navigation property, which both server profiles share.
                lookup, _ = store.schema["contacts"].navigation["parentcustomerid_account"]
                changes.binds[lookup.attribute] = ("accounts", EntityRef("accounts", parent))
            store.create("contacts", changes)
