"""The TypedDicts in `schemas/records.py` say exactly what the newest .avsc of each schema says:
the same fields, each with a matching type (a retailer reads the .avsc, the code reads these)."""

from __future__ import annotations

from typing import Any, Literal, get_args, get_origin, get_type_hints

import pytest
from typing_extensions import is_typeddict

from cartstream.schemas import records
from cartstream.schemas.registry import default_registry

RECORD_TYPES = {
    records.CART_FRAME: records.CartFrame,
    records.WEIGHT_PACKET: records.WeightPacket,
    records.SESSION_EVENT: records.SessionEvent,
    records.DETECTION: records.Detection,
    records.BASKET_CHANGE: records.BasketChange,
    records.ANOMALY: records.Anomaly,
    records.SESSION_REVIEW: records.SessionReview,
    records.CHECKOUT: records.Checkout,
    records.DEAD_LETTER: records.DeadLetter,
    records.REVIEW_FRAME: records.ReviewFrame,
    records.SHADOW_DETECTION: records.ShadowDetection,
    records.CHECKOUT_DECISION: records.CheckoutDecision,
}
PRIMITIVES = {
    "string": str,
    "int": int,
    "long": int,
    "float": float,
    "double": float,
    "boolean": bool,
    "bytes": bytes,
}


def mismatches(avro: Any, hint: Any, where: str) -> list[str]:
    """Where an Avro type and a Python annotation disagree (empty: they agree)."""
    if isinstance(avro, list):  # a union: only ["null", T] is used
        kinds = [a for a in avro if a != "null"]
        args = [a for a in get_args(hint) if a is not type(None)]
        nullable = type(None) in get_args(hint)
        if ("null" in avro) != nullable or len(kinds) != 1 or len(args) != 1:
            return [f"{where}: {avro} vs {hint}"]
        return mismatches(kinds[0], args[0], where)
    if isinstance(avro, str) and avro in PRIMITIVES:
        ok = hint is PRIMITIVES[avro] or (avro == "string" and get_origin(hint) is Literal)
        return [] if ok else [f"{where}: {avro} vs {hint}"]
    if isinstance(avro, dict) and avro["type"] == "enum":
        values = set(get_args(hint)) if get_origin(hint) is Literal else None
        return [] if values == set(avro["symbols"]) else [f"{where}: {avro['symbols']} vs {hint}"]
    if isinstance(avro, dict) and avro["type"] == "array":
        if get_origin(hint) is not list:
            return [f"{where}: array vs {hint}"]
        return mismatches(avro["items"], get_args(hint)[0], f"{where}[]")
    if isinstance(avro, dict) and avro["type"] == "map":
        if get_origin(hint) is not dict:
            return [f"{where}: map vs {hint}"]
        return mismatches(avro["values"], get_args(hint)[1], f"{where}{{}}")
    if isinstance(avro, dict) and avro["type"] == "record":
        return record_mismatches(avro, hint, where)
    if isinstance(avro, dict):  # a primitive with attributes (a logical type)
        return mismatches(avro["type"], hint, where)
    return [f"{where}: unhandled Avro type {avro}"]


def record_mismatches(schema: dict[str, Any], typed: Any, where: str) -> list[str]:
    if not is_typeddict(typed):
        return [f"{where}: record {schema['name']} vs {typed}"]
    hints = get_type_hints(typed)
    fields = {f["name"]: f["type"] for f in schema["fields"]}
    found = [f"{where}: field {n} only in the .avsc" for n in fields if n not in hints]
    found += [f"{where}: field {n} only in the TypedDict" for n in hints if n not in fields]
    for name in fields.keys() & hints.keys():
        found += mismatches(fields[name], hints[name], f"{where}.{name}")
    return found


@pytest.mark.parametrize("name", sorted(RECORD_TYPES))
def test_typed_dict_matches_the_newest_schema(name: str) -> None:
    schema = default_registry().latest(name).raw
    assert record_mismatches(schema, RECORD_TYPES[name], name) == []


def test_every_schema_has_a_typed_dict() -> None:
    assert set(default_registry().names()) == set(RECORD_TYPES)


def test_the_check_catches_a_drift() -> None:
    class Drifted(records.TypedDict):
        event_id: int  # a string in the schema
        extra: str

    schema = {"name": "x", "fields": [{"name": "event_id", "type": "string"}]}
    assert record_mismatches(schema, Drifted, "x") == [
        "x: field extra only in the TypedDict",
        "x.event_id: string vs <class 'int'>",
    ]
