"""Who may call the API: people (operator, researchers, site admins) and their tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from oncofed.wire.base import Message
from oncofed.wire.spec import Name

Role = Literal["operator", "researcher", "site_admin"]
MAX_TOKEN_DAYS = 3650
Days = Annotated[float, Field(gt=0, le=MAX_TOKEN_DAYS)]
Label = Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9_.\- ]*$")]


class NewPrincipal(Message):
    """The operator adds a person; a site admin names the one site they act for."""

    name: Name
    role: Role
    site: Name | None = None
    days: Days | None = Field(
        None, description="Their first token's lifetime; the default if unset."
    )


class NewToken(Message):
    """A caller asks for another token of their own (to rotate the one they use)."""

    label: Label = ""
    days: Days | None = Field(
        None, description="Its lifetime; the orchestrator's default if unset."
    )


class TokenCreated(Message):
    """A new token: shown once, only its hash is kept."""

    id: int
    principal: str
    token: str
    expires: datetime | None


class TokenPublic(Message):
    id: int
    principal: str
    role: Role
    site: str | None
    label: str
    created: datetime
    expires: datetime | None
    revoked: datetime | None
    status: Literal["active", "expired", "revoked"]


class PrincipalPublic(Message):
    name: str
    role: Role
    site: str | None
    created: datetime
    active_tokens: int
