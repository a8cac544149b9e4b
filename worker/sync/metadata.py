"""Reading an OData service's ``$metadata`` (CSDL): entity sets, their properties, types,
maximum lengths and navigation properties. Used by ``crmsync check`` and to cut text to the
remote side's length."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

_EDM = "{http://docs.oasis-open.org/odata/ns/edm}"


@dataclass(frozen=True)
class PropertyInfo:
    name: str
    type: str
    max_length: int | None = None


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
        length = prop.get("MaxLength")
        info.properties[prop.get("Name", "")] = PropertyInfo(
            prop.get("Name", ""), prop.get("Type", ""),
            int(length) if length and length.isdigit() else None)
    for nav in et.findall(f"{_EDM}NavigationProperty"):
        info.navigation[nav.get("Name", "")] = nav.get("Type", "")
