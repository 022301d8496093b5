"""One settings class for the orchestrator: a state directory, optionally a database URL."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from oncofed._files import write_private

ANSWER_HOLD_SECONDS = 0.05
"""``Settings.answer_hold_seconds``' default (``Coordinator._hold``)."""

CONFIG_FILE = "orchestrator.json"


class Settings(BaseSettings):
    """Read from ``ONCOFED_*`` environment variables, then ``DIR/orchestrator.json``."""

    model_config = SettingsConfigDict(env_prefix="ONCOFED_", extra="ignore")

    home: Path = Field(description="State directory: database (SQLite default) and blobs.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; SQLite in home if unset.")
    long_poll_seconds: float = Field(25.0, gt=0, le=120)
    """Longest an edge's request for its next task waits for one."""
    connected_window_seconds: float = Field(60.0, gt=0, description="Seen within: connected.")
    site_seen_window_s: float = Field(
        600.0,
        gt=0,
        description="A job that lists no sites goes to the approving sites seen within this "
        "many seconds: an offline site never holds it (one a spec lists is warned of).",
    )
    max_upload_bytes: int = Field(4 << 30, gt=0)
    """Largest body an edge may post: a model update, masked input or result."""
    answer_hold_seconds: float = Field(
        ANSWER_HOLD_SECONDS,
        ge=0,
        le=1,
        description="How long an edge's answer, whose acknowledgement waits for the site's next "
        "task anyway, may wait for the others of its round, to be recorded with them in one "
        "transaction (a group commit); 0: recorded as they come.",
    )
    tick_seconds: float = Field(1.0, gt=0, description="How often round deadlines are checked.")
    beat_seconds: float = Field(
        1.0, gt=0, le=60, description="How often the orchestrator records that it is up."
    )
    token_days: float = Field(
        90.0, gt=0, le=3650, description="How long a new token is valid unless asked otherwise."
    )
    site_certificate_days: float = Field(
        30.0,
        gt=0,
        le=825,
        description="Validity of a site's client certificate (renewed by "
        "the edge when a third of it is left).",
    )
    max_json_body_bytes: int = Field(
        1 << 20, gt=0, description="Largest body of an authenticated route that takes JSON."
    )
    max_unauthenticated_body_bytes: int = Field(
        64 << 10, gt=0, description="Largest body of a route that needs no token (enrolment)."
    )
    auth_failure_limit: int = Field(
        20, ge=1, description="Failed authentications a source or credential may make at once."
    )
    auth_failure_window_seconds: float = Field(
        60.0, gt=0, description="Seconds in which that many failures are allowed again."
    )
    max_running_jobs_per_researcher: int = Field(10, ge=1)
    """Jobs a researcher may have running at once (not the operator)."""
    max_model_parameters: int = Field(
        20_000_000, ge=1, description="Largest model a job may train (whoever submits it)."
    )
    max_stored_bytes_per_researcher: int = Field(
        16 << 30, ge=0, description="Model bytes a researcher's jobs may keep in the blob store."
    )

    @property
    def url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'oncofed.db').resolve()}"

    @property
    def blob_dir(self) -> Path:
        return self.home / "blobs"

    @property
    def identity_file(self) -> Path:
        """The orchestrator's Ed25519 identity key (PEM, mode 600): it signs secure rounds'
        survivor lists, and sites pin its public half."""
        return self.home / "identity.key"

    @classmethod
    def load(cls, home: Path) -> Settings:
        """Settings for the state directory ``home``; the environment overrides its file."""
        stored = home / CONFIG_FILE
        values = json.loads(stored.read_text()) if stored.exists() else {}
        env = cls(home=home)
        explicit = env.model_dump(exclude_unset=True, exclude={"home"})
        return cls(**{**values, **explicit, "home": home})

    def save(self) -> None:
        """Write the database URL (if any) next to the state, so ``serve`` finds it."""
        data = {"database_url": self.database_url} if self.database_url else {}
        write_private(self.home / CONFIG_FILE, json.dumps(data, indent=2) + "\n")
