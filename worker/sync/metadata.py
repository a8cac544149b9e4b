"""Reading an OData service's ``$metadata`` (CSDL): entity sets, their properties, types,
facets (MaxLength, Precision, Scale) and navigation properties. Used by ``crmsync check``,
to cut text to the remote side's length and to refuse numbers a property cannot hold."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worker.remote.client import ODataClient

_EDM = "{http://docs.oasis-open.org/odata/ns/edm}"


@dataclass(frozen=True)
class PropertyInfo:
    """One property; ``precision``/``scale`` None when the service leaves them open
    (absent, or Dataverse's ``Scale="Variable"``)."""

    name: str
    type: str
    max_length: int | None = None
    precision: int | None = None
    scale: int | None = None


@dataclass
class EntitySetInfo:
    name: str
    entity_type: str
    keys: list[str] = field(default_factory=list)
    properties: dict[str, PropertyInfo] = field(default_factory=dict)
    navigation: dict[str, str] = field(default_factory=dict)  # name -> target type


def parse(xml_text: str) -> dict[str, EntitySetInfo]:
    root = ET.fromstring(xml_text)
    types: dict[str, ET.Element] = {}
    for schema in root.iter(f"{_EDM}Schema"):
        namespace = schema.get("Namespace", "")
        for et in schema.findall(f"{_EDM}EntityType"):
            types[f"{namespace}.{et.get('Name')}"] = et
            types[et.get("Name", "")] = et
    sets: dict[str, EntitySetInfo] = {}
    for es in root.iter(f"{_EDM}EntitySet"):
        type_name = es.get("EntityType", "")
        info = EntitySetInfo(es.get("Name", ""), type_name)
        found = types.get(type_name) or types.get(type_name.rsplit(".", 1)[-1])
        if found is not None:
            _fill(info, found, types)
        sets[info.name] = info
    return sets


def _fill(info: EntitySetInfo, et: ET.Element, types: dict[str, ET.Element]) -> None:
    base = et.get("BaseType")
    if base and base in types:
        _fill(info, types[base], types)
    key = et.find(f"{_EDM}Key")
    if key is not None:
        info.keys.extend(ref.get("Name", "") for ref in key.findall(f"{_EDM}PropertyRef"))
    for prop in et.findall(f"{_EDM}Property"):
        info.properties[prop.get("Name", "")] = PropertyInfo(
            prop.get("Name", ""), prop.get("Type", ""), _facet(prop, "MaxLength"),
            _facet(prop, "Precision"), _facet(prop, "Scale"))
    for nav in et.findall(f"{_EDM}NavigationProperty"):
        info.navigation[nav.get("Name", "")] = nav.get("Type", "")


def _facet(prop: ET.Element, name: str) -> int | None:
    text = prop.get(name)
    return int(text) if text and text.isdigit() else None


def for_client(client: ODataClient) -> dict[str, EntitySetInfo]:
    """The entity sets of ``client``'s service (empty when it has no usable $metadata),
    from the client's one ``$metadata``."""
    try:
        return client.service_metadata.view(parse)
    except Exception:  # a service without $metadata syncs without the property checks
        return {}
