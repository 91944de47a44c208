"""Request and response schemas, one module per resource; shared field types live here."""
from __future__ import annotations

from typing import Any

from marshmallow import fields


class Timestamp(fields.String):
    """A naive UTC timestamp as `datetime.isoformat()` writes it: no `Z`, no offset.

    Documented as a string, not `date-time`: RFC 3339 requires an offset, and the front-end
    relies on its absence (it appends `Z` itself).
    """

    def __init__(self, **kwargs: Any) -> None:
        metadata = {"example": "2026-11-24T07:34:22.332524",
                    "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?$",
                    **kwargs.pop("metadata", {})}
        super().__init__(metadata=metadata, **kwargs)
