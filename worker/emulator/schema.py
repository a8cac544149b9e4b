"""The entity sets the emulator serves, described as data.

Adding an entity set is adding one ``EntitySet(...)`` to ``ENTITY_SETS``: the store, the
query engine, ``$metadata`` and the validation of request bodies all read this description.
Property names, types and maximum lengths follow Dataverse's own metadata for these tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Any

# The annotation naming the entity type a lookup value points to (polymorphic lookups).
LOOKUP_TARGET = "@Microsoft.Dynamics.CRM.lookuplogicalname"


class EdmType(StrEnum):
    """The OData primitive types the emulator stores."""

    GUID = "Edm.Guid"
    STRING = "Edm.String"
    INT32 = "Edm.Int32"
    INT64 = "Edm.Int64"
    DECIMAL = "Edm.Decimal"
    DOUBLE = "Edm.Double"
    BOOLEAN = "Edm.Boolean"
    DATETIME = "Edm.DateTimeOffset"
    DATE = "Edm.Date"

    @property
    def is_numeric(self) -> bool:
        return self in (EdmType.INT32, EdmType.INT64, EdmType.DECIMAL, EdmType.DOUBLE)


@dataclass(frozen=True)
class Property:
    """One column of an entity set.

    ``server_set`` columns (key stamps, versions) are written by the store only;
    ``computed_from`` columns are derived on every write (Dataverse's ``fullname``).
    ``precision`` and ``scale`` bound an ``Edm.Decimal`` (total and fractional digits)."""

    name: str
    type: EdmType
    max_length: int | None = None
    precision: int | None = None
    scale: int | None = None
    default: Any = None
    server_set: bool = False
    computed_from: tuple[str, ...] = ()

    @property
    def writable(self) -> bool:
        return not self.server_set and not self.computed_from


@dataclass(frozen=True)
class Lookup:
    """A single-valued navigation property (a Dataverse lookup column).

    ``attribute`` is the lookup's logical name, readable as ``_<attribute>_value``, or as
    ``read_as`` when that is given (a generic OData service's ``<nav>_ID``).
    ``targets`` maps each navigation property name usable in ``<name>@odata.bind`` to the
    entity set it points to: one entry for an ordinary lookup (named like the attribute),
    several for a polymorphic one (``parentcustomerid_account``, ``parentcustomerid_contact``).
    """

    attribute: str
    targets: Mapping[str, str]
    read_as: str | None = None

    @property
    def value_name(self) -> str:
        return self.read_as or f"_{self.attribute}_value"

    @property
    def annotation_name(self) -> str:
        return self.value_name + LOOKUP_TARGET


def lookup(attribute: str, target_set: str) -> Lookup:
    """An ordinary (single-target) lookup whose navigation property is named like it."""
    return Lookup(attribute, MappingProxyType({attribute: target_set}))


@dataclass(frozen=True)
class EntitySet:
    """An entity set (``accounts``) with its entity type (``account``) and columns.

    The key, ``createdon``, the modified-on stamp (``modified_on``: ``modifiedon`` on
    Dataverse) and ``versionnumber`` are added here so that every set has them.
    ``keeps_microseconds``: date-times written by clients keep their fraction of a second
    (Dataverse drops it)."""

    name: str
    entity_type: str
    key: str
    columns: tuple[Property, ...]
    lookups: tuple[Lookup, ...] = ()
    alternate_keys: tuple[str, ...] = ()
    modified_on: str = "modifiedon"
    keeps_microseconds: bool = False  # Dataverse keeps date-times to the second
    properties: Mapping[str, Property] = field(init=False, repr=False)
    navigation: Mapping[str, tuple[Lookup, str]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        stamps = (
            Property(self.key, EdmType.GUID),
            Property("createdon", EdmType.DATETIME, server_set=True),
            Property(self.modified_on, EdmType.DATETIME, server_set=True),
            Property("versionnumber", EdmType.INT64, server_set=True),
        )
        props = {p.name: p for p in (*stamps, *self.columns)}
        props.update((lk.value_name, Property(lk.value_name, EdmType.GUID, server_set=True))
                     for lk in self.lookups)
        nav = {name: (lk, target) for lk in self.lookups for name, target in lk.targets.items()}
        object.__setattr__(self, "properties", MappingProxyType(props))
        object.__setattr__(self, "navigation", MappingProxyType(nav))

    def blank_record(self) -> dict[str, Any]:
        """A record with every property at its default, before the client's values."""
        return {name: prop.default for name, prop in self.properties.items()}


def _string(name: str, max_length: int) -> Property:
    return Property(name, EdmType.STRING, max_length)


def _int(name: str, default: int | None = None) -> Property:
    return Property(name, EdmType.INT32, default=default)


def _money(name: str) -> Property:
    """Dataverse's money: 19 digits, 4 of them after the point."""
    return Property(name, EdmType.DECIMAL, precision=19, scale=4)


def _decimal(name: str, precision: int, scale: int, default: Decimal | None = None) -> Property:
    return Property(name, EdmType.DECIMAL, default=default, precision=precision, scale=scale)


def _state() -> tuple[Property, Property]:
    return _int("statecode", 0), _int("statuscode", 1)


def _address(prefix: str = "address1") -> tuple[Property, ...]:
    return (
        _string(f"{prefix}_line1", 250), _string(f"{prefix}_line2", 250),
        _string(f"{prefix}_city", 80), _string(f"{prefix}_stateorprovince", 50),
        _string(f"{prefix}_postalcode", 20), _string(f"{prefix}_country", 80),
    )


ENTITY_SETS: tuple[EntitySet, ...] = (
    EntitySet(
        "transactioncurrencies", "transactioncurrency", "transactioncurrencyid",
        columns=(
            _string("isocurrencycode", 5), _string("currencyname", 100),
            _string("currencysymbol", 10), _decimal("exchangerate", 23, 10, Decimal(1)),
            _int("currencyprecision", 2), *_state(),
        ),
        alternate_keys=("isocurrencycode",),
    ),
    EntitySet(
        "systemusers", "systemuser", "systemuserid",
        columns=(
            _string("firstname", 64), _string("lastname", 64),
            Property("fullname", EdmType.STRING, 200, computed_from=("firstname", "lastname")),
            _string("internalemailaddress", 100), _string("domainname", 1024),
            _string("title", 128), _string("mobilephone", 64),
            Property("isdisabled", EdmType.BOOLEAN, default=False),
        ),
    ),
    EntitySet(
        "uomschedules", "uomschedule", "uomscheduleid",
        columns=(
            _string("name", 200), _string("description", 2000), _string("baseuomname", 100),
            *_state(),
        ),
    ),
    EntitySet(
        "uoms", "uom", "uomid",
        columns=(
            _string("name", 100), _decimal("quantity", 23, 5, Decimal(1)),
            Property("isschedulebaseuom", EdmType.BOOLEAN, default=False),
        ),
        lookups=(lookup("uomscheduleid", "uomschedules"), lookup("baseuom", "uoms")),
    ),
    EntitySet(
        "accounts", "account", "accountid",
        columns=(
            _string("name", 160), _string("accountnumber", 20), *_address(),
            _string("telephone1", 50), _string("telephone2", 50), _string("fax", 50),
            _string("emailaddress1", 100), _string("websiteurl", 200),
            _string("description", 2000), _money("creditlimit"), _int("customertypecode"),
            _money("revenue"), _int("numberofemployees"),
            Property("lastonholdtime", EdmType.DATETIME),
            # Custom columns, as an organisation adds them: a whole number (BigInt), and a
            # decimal shaped like an ERP's numeric(18,2) (wider than Dataverse's own decimal
            # columns allow: a test double of both profiles carries it to test exactness).
            Property("new_externalsequence", EdmType.INT64), _decimal("new_balance", 18, 2),
            *_state(),
        ),
        lookups=(
            lookup("transactioncurrencyid", "transactioncurrencies"),
            lookup("ownerid", "systemusers"),
            lookup("primarycontactid", "contacts"),
            lookup("parentaccountid", "accounts"),
        ),
        alternate_keys=("accountnumber",),
    ),
    EntitySet(
        "contacts", "contact", "contactid",
        columns=(
            _string("firstname", 50), _string("middlename", 50), _string("lastname", 50),
            Property("fullname", EdmType.STRING, 160, computed_from=("firstname", "lastname")),
            _string("emailaddress1", 100), _string("telephone1", 50),
            _string("mobilephone", 50), _string("jobtitle", 100), *_address(),
            Property("birthdate", EdmType.DATE), *_state(),
        ),
        lookups=(
            Lookup("parentcustomerid", MappingProxyType({
                "parentcustomerid_account": "accounts",
                "parentcustomerid_contact": "contacts",
            })),
            lookup("transactioncurrencyid", "transactioncurrencies"),
            lookup("ownerid", "systemusers"),
        ),
    ),
    EntitySet(
        "products", "product", "productid",
        columns=(
            _string("name", 100), _string("productnumber", 100),
            _string("description", 2000), _money("price"), _money("standardcost"),
            _money("currentcost"), _int("producttypecode", 1), _int("productstructure", 1),
            _int("quantitydecimal", 2), *_state(),
        ),
        lookups=(
            lookup("defaultuomscheduleid", "uomschedules"),
            lookup("defaultuomid", "uoms"),
            lookup("transactioncurrencyid", "transactioncurrencies"),
        ),
        alternate_keys=("productnumber",),
    ),
)


class Schema:
    """The entity sets by name, checked for dangling lookup targets on construction."""

    def __init__(self, sets: Iterable[EntitySet] = ENTITY_SETS) -> None:
        self.sets: dict[str, EntitySet] = {s.name: s for s in sets}
        self.by_type: dict[str, EntitySet] = {s.entity_type: s for s in self.sets.values()}
        for entity_set in self.sets.values():
            for lk in entity_set.lookups:
                missing = set(lk.targets.values()) - set(self.sets)
                if missing:
                    raise ValueError(f"{entity_set.name}.{lk.attribute} points to {missing}")
            for alt in entity_set.alternate_keys:
                if alt not in entity_set.properties:
                    raise ValueError(f"{entity_set.name}: alternate key {alt} is no property")

    def __getitem__(self, name: str) -> EntitySet:
        return self.sets[name]

    def __contains__(self, name: object) -> bool:
        return name in self.sets

    def __iter__(self) -> Iterator[EntitySet]:
        return iter(self.sets.values())
