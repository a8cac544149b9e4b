"""Server profiles: which OData v4 server the emulator imitates.

``dataverse`` (the default) is the Dataverse Web API the rest of the emulator describes.
``odata`` is a generic OData v4 service of another vendor, with the behaviours crmsync must
not rely on a server having (issue 9): key property ``ID`` on every set, a server-managed
``modifiedAt``, POST creates with the key in the body and a duplicate key answered 500 (a
primary-key violation), pages of the server's own size that ignore ``odata.maxpagesize``,
``$batch`` parts addressed relative to the service root only, no
``Prefer: return=representation``, and lookups read back as ``<navigation property>_ID``.
Entity set names and every other property name are the same in both profiles, so one test
can run against either.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from types import MappingProxyType

from worker.emulator.schema import ENTITY_SETS, EntitySet, Lookup, Schema


@dataclass(frozen=True)
class Profile:
    """The behaviours in which the imitated servers differ.

    ``page_size`` is the server's own page size (used when a client asks for none, or always
    when ``honours_maxpagesize`` is false); ``relative_nextlinks`` makes ``@odata.nextLink``
    relative to the service root, as many servers send it."""

    name: str
    key_name: str | None = None  # None: each set's own Dataverse key (accountid, ...)
    modified_on: str = "modifiedon"
    duplicate_create_status: int = 412
    honours_maxpagesize: bool = True
    page_size: int = 5000
    relative_nextlinks: bool = False
    absolute_batch_urls: bool = True
    return_representation: bool = True
    dataverse_lookups: bool = True  # _x_value and lookuplogicalname; else <nav>_ID
    alternate_keys: bool = True
    change_tracking: bool = True
    who_am_i: bool = True
    bulk_messages: bool = True  # CreateMultiple, UpdateMultiple, UpsertMultiple
    namespace: str = "Microsoft.Dynamics.CRM"
    keeps_microseconds: bool = False  # Dataverse keeps date-times to the second
    # Optimistic concurrency enforced, as a service whose entities carry an ETag does (SAP
    # CAP with ``@odata.etag``): an update or delete without If-Match is answered 428.
    requires_if_match: bool = False
    # ``$count=true`` counts at most this many (Dataverse: 5,000, with the annotation
    # ``@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded``); None: every record.
    count_limit: int | None = 5000

    def with_page_size(self, page_size: int | None) -> Profile:
        """This profile with another server page size (None: unchanged)."""
        if page_size is None:
            return self
        if not 1 <= page_size <= 5000:
            raise ValueError(f"page size {page_size}: expected 1-5000")
        return replace(self, page_size=page_size)

    def schema(self, sets: Iterable[EntitySet] = ENTITY_SETS) -> Schema:
        """The entity sets as this server names their keys, stamps and lookups."""
        if self.name == DATAVERSE.name:
            return Schema(sets)
        return Schema(self._entity_set(s) for s in sets)

    def _entity_set(self, entity_set: EntitySet) -> EntitySet:
        lookups = entity_set.lookups
        if not self.dataverse_lookups:
            # One foreign key per navigation property: a polymorphic Dataverse lookup
            # becomes one association per target, as a generic service models it.
            lookups = tuple(Lookup(nav, MappingProxyType({nav: target}), read_as=f"{nav}_ID")
                            for lk in entity_set.lookups for nav, target in lk.targets.items())
        return replace(entity_set, key=self.key_name or entity_set.key,
                       modified_on=self.modified_on, lookups=lookups,
                       keeps_microseconds=self.keeps_microseconds,
                       alternate_keys=entity_set.alternate_keys if self.alternate_keys else ())


DATAVERSE = Profile("dataverse")
ODATA = Profile(
    "odata", key_name="ID", modified_on="modifiedAt", duplicate_create_status=500,
    honours_maxpagesize=False, page_size=1000, relative_nextlinks=True,
    absolute_batch_urls=False, return_representation=False, dataverse_lookups=False,
    alternate_keys=False, change_tracking=False, who_am_i=False, bulk_messages=False,
    namespace="CrmService",
    keeps_microseconds=True, count_limit=None)
# The generic service with ETags enforced on every write to an existing record.
ODATA_ETAG = replace(ODATA, name="odata-etag", requires_if_match=True)
PROFILES: dict[str, Profile] = {p.name: p for p in (DATAVERSE, ODATA, ODATA_ETAG)}


def profile_named(name: str | Profile) -> Profile:
    """The profile called ``name`` (a ``Profile`` is returned as it is)."""
    if isinstance(name, Profile):
        return name
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown emulator profile {name!r}: expected one of "
                         f"{', '.join(PROFILES)}") from None
