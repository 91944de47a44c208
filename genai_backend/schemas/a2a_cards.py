"""The A2A agent-card subset the service validates and stores (rest-api #35)."""
from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, fields


class _CardPart(Schema):
    # Cards carry many more (and newer) fields; only this subset is kept.
    class Meta:
        unknown = EXCLUDE


def _strings(**kwargs: Any) -> fields.List:
    return fields.List(fields.String(), **kwargs)


class A2ASkillSchema(_CardPart):
    id = fields.String(required=True)
    name = fields.String(required=True)
    description = fields.String(required=True)
    examples = _strings(allow_none=True)
    inputModes = _strings(allow_none=True)
    outputModes = _strings(allow_none=True)
    tags = _strings(load_default=list)


class A2ACapabilitiesSchema(_CardPart):
    pushNotifications = fields.Boolean(allow_none=True)
    stateTransitionHistory = fields.Boolean(allow_none=True)
    streaming = fields.Boolean(allow_none=True)


class A2AProviderSchema(_CardPart):
    organization = fields.String(required=True)
    url = fields.String(required=True)


class A2ACardSchema(_CardPart):
    """Declaration order is the stored `card_content` order (the reference's pydantic model order)."""

    name = fields.String(required=True)
    description = fields.String(required=True)
    defaultInputModes = _strings(required=True)
    defaultOutputModes = _strings(required=True)
    skills = fields.List(fields.Nested(A2ASkillSchema), required=True)
    url = fields.String(required=True)
    version = fields.String(required=True)
    capabilities = fields.Nested(A2ACapabilitiesSchema, required=True)
    provider = fields.Nested(A2AProviderSchema, allow_none=True)
    documentationUrl = fields.String(allow_none=True)
    security = fields.List(fields.Dict(keys=fields.String(), values=_strings()), allow_none=True)
    securitySchemes = fields.Dict(keys=fields.String(), allow_none=True)
    supportsAuthenticatedExtendedCard = fields.Boolean(allow_none=True)
