"""Content negotiation of the local API server: which representation a request's Accept header asks for.

The API server serves one object in several shapes, chosen by media-type parameters of Accept, first
acceptable entry wins (apiserver `pkg/endpoints/handlers/negotiation`):
  - `application/json;as=Table;g=meta.k8s.io;v=v1` (or v1beta1): a server-side Table (`kubectl get`);
  - `application/json;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1`: metadata only (metadata clients);
  - `application/vnd.kubernetes.protobuf`: answered in JSON, which every client also accepts (the protobuf
    encoder is the one part of the API server this emulation leaves out; kube_proto.py decodes what kubectl
    insists on sending);
  - anything else (`application/json`, `*/*`, none): the object itself as JSON.
A new representation is one more `Representation` member and one more branch in `negotiate`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

META_GROUP = "meta.k8s.io"
SERVED_META_VERSIONS = ("v1", "v1beta1")


class Representation(enum.Enum):
    OBJECT = "object"  # the resource as stored (JSON)
    TABLE = "Table"
    PARTIAL_METADATA = "PartialObjectMetadata"
    PARTIAL_METADATA_LIST = "PartialObjectMetadataList"


@dataclass(frozen=True)
class MediaType:
    type: str
    params: dict[str, str]

    @property
    def as_kind(self) -> str:
        return self.params.get("as", "")


def parse_accept(header: str | None) -> list[MediaType]:
    out = []
    for part in (header or "").split(","):
        pieces = [p.strip() for p in part.split(";")]
        if not pieces[0]:
            continue
        params = {}
        for piece in pieces[1:]:
            key, sep, value = piece.partition("=")
            if sep:
                params[key.strip()] = value.strip()
        out.append(MediaType(pieces[0].lower(), params))
    return out


@dataclass(frozen=True)
class Negotiated:
    representation: Representation
    meta_version: str = "v1"  # the meta.k8s.io version of a Table/PartialObjectMetadata answer


def negotiate(header: str | None, *, is_list: bool) -> Negotiated:
    """The first media type in Accept this server can answer; the plain object when none asks for more."""
    for media in parse_accept(header):
        kind = media.as_kind
        if not kind:
            if media.type in (
                "application/json",
                "application/*",
                "*/*",
                "application/vnd.kubernetes.protobuf",
            ):
                return Negotiated(Representation.OBJECT)
            continue
        if media.params.get("g") != META_GROUP or media.params.get("v") not in SERVED_META_VERSIONS:
            continue
        version = media.params["v"]
        if kind == "Table":
            return Negotiated(Representation.TABLE, version)
        if kind == "PartialObjectMetadataList" and is_list:
            return Negotiated(Representation.PARTIAL_METADATA_LIST, version)
        if kind == "PartialObjectMetadata" and not is_list:
            return Negotiated(Representation.PARTIAL_METADATA, version)
    return Negotiated(Representation.OBJECT)


def is_protobuf(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() == "application/vnd.kubernetes.protobuf"
