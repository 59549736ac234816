"""The little protobuf the API server must read: kubectl 1.32 sends its review requests only as protobuf.

A body is the magic `k8s\\0` followed by a runtime.Unknown {1 typeMeta {1 apiVersion, 2 kind}, 2 raw}; for the
authorization reviews `raw` is the object in the field numbers of `authorization/v1/generated.proto`. The
server answers in JSON, which every client accepts (kubectl-fidelity.md §0.3, §8). Only the message types
below are decoded; anything else is refused as a bad request, never guessed at.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"


class ProtoError(ValueError):
    """The body is not the protobuf this server reads."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ProtoError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ProtoError("varint too long")


def fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) pairs: an int for varints, bytes for length-delimited values."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, value
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ProtoError("truncated field")
            yield number, data[pos : pos + length]
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ProtoError(f"unsupported wire type {wire}")


def _strings(data: bytes, names: dict[int, str]) -> dict[str, str]:
    """A message of string fields; empty strings count as absent, as Go's omitempty does."""
    out: dict[str, str] = {}
    for number, value in fields(data):
        if number in names and isinstance(value, bytes) and value:
            out[names[number]] = value.decode("utf-8")
    return out


_TYPE_META = {1: "apiVersion", 2: "kind"}
_RESOURCE_ATTRIBUTES = {
    1: "namespace",
    2: "verb",
    3: "group",
    4: "version",
    5: "resource",
    6: "subresource",
    7: "name",
}
_NON_RESOURCE_ATTRIBUTES = {1: "path", 2: "verb"}


def _review_spec(kind: str, data: bytes) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    for number, value in fields(data):
        if not isinstance(value, bytes):
            continue
        if kind == "SelfSubjectRulesReview":
            if number == 1 and value:
                spec["namespace"] = value.decode("utf-8")
        elif number == 1:
            spec["resourceAttributes"] = _strings(value, _RESOURCE_ATTRIBUTES)
        elif number == 2:
            spec["nonResourceAttributes"] = _strings(value, _NON_RESOURCE_ATTRIBUTES)
    return spec


DECODERS = {"SelfSubjectAccessReview", "SelfSubjectRulesReview"}


def decode(body: bytes) -> dict[str, Any]:
    """The JSON form of a protobuf-encoded authorization review."""
    if not body.startswith(MAGIC):
        raise ProtoError("missing the k8s protobuf magic")
    type_meta: dict[str, str] = {}
    raw = b""
    for number, value in fields(body[len(MAGIC) :]):
        if number == 1 and isinstance(value, bytes):
            type_meta = _strings(value, _TYPE_META)
        elif number == 2 and isinstance(value, bytes):
            raw = value
    kind = type_meta.get("kind", "")
    if kind not in DECODERS:
        raise ProtoError(
            f"the local cluster reads protobuf only for {', '.join(sorted(DECODERS))}, not {kind!r}"
        )
    obj: dict[str, Any] = {"kind": kind, "apiVersion": type_meta.get("apiVersion", ""), "metadata": {}}
    for number, value in fields(raw):
        if number == 2 and isinstance(value, bytes):
            obj["spec"] = _review_spec(kind, value)
    obj.setdefault("spec", {})
    return obj


# ---------------------------------------------------------------- encoding (tests build kubectl's bodies)


def _key(number: int, wire: int) -> bytes:
    return _encode_varint((number << 3) | wire)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_bytes(number: int, value: bytes) -> bytes:
    return _key(number, 2) + _encode_varint(len(value)) + value


def encode_review(kind: str, api_version: str, spec: bytes) -> bytes:
    """The envelope kubectl sends, around a review whose spec message is `spec`."""
    type_meta = field_bytes(1, api_version.encode()) + field_bytes(2, kind.encode())
    raw = field_bytes(1, b"") + field_bytes(2, spec)
    return MAGIC + field_bytes(1, type_meta) + field_bytes(2, raw) + field_bytes(3, b"") + field_bytes(4, b"")


def encode_attributes(attributes: dict[str, str], names: dict[int, str] = _RESOURCE_ATTRIBUTES) -> bytes:
    by_name = {v: k for k, v in names.items()}
    return b"".join(field_bytes(by_name[k], v.encode()) for k, v in attributes.items())
