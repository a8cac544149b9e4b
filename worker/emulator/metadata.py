"""``$metadata`` (CSDL XML) and the service document, generated from the schema."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from functools import lru_cache
from typing import Any

from worker.emulator.schema import EntitySet, Schema

NOTICE = ("crmsync emulator: a local test double speaking the Dataverse Web API protocol, "
          "not a CRM. Data lives in memory and is not secured.")
NAMESPACE = "Microsoft.Dynamics.CRM"  # Dataverse's; a profile may name another
_EDMX = "http://docs.oasis-open.org/odata/ns/edmx"
_EDM = "http://docs.oasis-open.org/odata/ns/edm"


def service_document(schema: Schema, service_root: str) -> dict[str, Any]:
    return {
        "@odata.context": f"{service_root}/$metadata",
        "@crmsync.notice": NOTICE,
        "value": [{"name": s.name, "kind": "EntitySet", "url": s.name} for s in schema],
    }


@lru_cache(maxsize=4)
def metadata_xml(schema: Schema, namespace: str = NAMESPACE,
                 actions: tuple[str, ...] = ()) -> bytes:
    """The CSDL document: entity types with typed properties (decimals with ``Precision``
    and ``Scale``), keys, and lookups as navigation properties with the referential
    constraint naming their foreign-key property (``_x_value``, or ``<nav>_ID``); and the
    bulk ``actions`` (``CreateMultiple`` …) bound to entity collections, as Dataverse
    declares them (bound to ``crmbaseentity``: the document cannot say which tables have
    them)."""
    ET.register_namespace("edmx", _EDMX)
    ET.register_namespace("", _EDM)
    root = ET.Element(f"{{{_EDMX}}}Edmx", Version="4.0")
    services = ET.SubElement(root, f"{{{_EDMX}}}DataServices")
    csdl = ET.SubElement(services, f"{{{_EDM}}}Schema", Namespace=namespace, Alias="mscrm")
    for entity_set in schema:
        _entity_type(csdl, schema, entity_set)
    for action in actions:
        _bulk_action(csdl, action)
    container = ET.SubElement(csdl, f"{{{_EDM}}}EntityContainer", Name="System")
    ET.SubElement(container, f"{{{_EDM}}}Annotation", Term="Org.OData.Core.V1.Description",
                  String=NOTICE)
    for entity_set in schema:
        element = ET.SubElement(container, f"{{{_EDM}}}EntitySet", Name=entity_set.name,
                                EntityType=f"{namespace}.{entity_set.entity_type}")
        for nav_name, (_, target) in entity_set.navigation.items():
            ET.SubElement(element, f"{{{_EDM}}}NavigationPropertyBinding", Path=nav_name,
                          Target=target)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _entity_type(csdl: ET.Element, schema: Schema, entity_set: EntitySet) -> None:
    element = ET.SubElement(csdl, f"{{{_EDM}}}EntityType", Name=entity_set.entity_type)
    key = ET.SubElement(element, f"{{{_EDM}}}Key")
    ET.SubElement(key, f"{{{_EDM}}}PropertyRef", Name=entity_set.key)
    for prop in entity_set.properties.values():
        attrs = {"Name": prop.name, "Type": prop.type.value}
        if prop.max_length is not None:
            attrs["MaxLength"] = str(prop.max_length)
        if prop.precision is not None and prop.scale is not None:
            attrs["Precision"] = str(prop.precision)
            attrs["Scale"] = str(prop.scale)
        if prop.name == entity_set.key:
            attrs["Nullable"] = "false"
        ET.SubElement(element, f"{{{_EDM}}}Property", attrs)
    for nav_name, (lookup, target) in entity_set.navigation.items():
        target_set = schema[target]
        nav = ET.SubElement(element, f"{{{_EDM}}}NavigationProperty", Name=nav_name,
                            Type=f"mscrm.{target_set.entity_type}")
        ET.SubElement(nav, f"{{{_EDM}}}ReferentialConstraint", Property=lookup.value_name,
                      ReferencedProperty=target_set.key)


def _bulk_action(csdl: ET.Element, name: str) -> None:
    element = ET.SubElement(csdl, f"{{{_EDM}}}Action", Name=name, IsBound="true")
    ET.SubElement(element, f"{{{_EDM}}}Parameter", Name="entityset",
                  Type="Collection(mscrm.crmbaseentity)", Nullable="false")
    ET.SubElement(element, f"{{{_EDM}}}Parameter", Name="Targets",
                  Type="Collection(mscrm.crmbaseentity)", Nullable="false")
    if name == "CreateMultiple":
        ET.SubElement(element, f"{{{_EDM}}}ReturnType", Type="mscrm.CreateMultipleResponse",
                      Nullable="false")
