"""Typed settings read from PERKFLOW_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PERKFLOW_", extra="ignore")

    database_url: str = "sqlite:///./var/perkflow.db"
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    # Seconds a SQLite connection waits on another process's write lock before giving up.
    sqlite_busy_timeout_s: float = Field(default=10.0, gt=0)
    # The largest number of events one bulk request may carry.
    bulk_max_events: int = Field(default=1000, ge=1, le=10_000)
    # The largest request body the API reads (a full bulk request is well under this).
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    # How often the background scheduler in `perkflow serve` settles due lots (expiry, pending release).
    settle_interval_s: float = Field(default=60.0, gt=0)
    # How often the background jobs look for due date-triggered workflows and waiting workflow runs.
    workflow_schedule_interval_s: float = Field(default=15.0, gt=0)
    # Run background jobs inside `perkflow serve` (off when a separate `perkflow worker` does it).
    serve_runs_jobs: bool = True
    # Threads delivering to the connected platforms in `perkflow serve` / `perkflow worker`.
    delivery_threads: int = Field(default=1, ge=0, le=64)
    # How long a worker holds claimed items; a worker that dies leaves them to others after this.
    delivery_lease_s: float = Field(default=60.0, gt=0)
    # How long a process holds a code generation job between chunks; a job whose holder died is
    # resumed by `perkflow serve` / `perkflow worker` (or `perkflow codes resume`) after this.
    generation_lease_s: float = Field(default=60.0, gt=0)
    # The member's wallet page, written next to codes by distributions ({member_id} is URL-encoded).
    wallet_url_template: str = "https://wallet.example.com/members/{member_id}"
    # Segments: members evaluated per transaction when a rule segment's membership is computed (a
    # segment created or changed over at most this many members is computed in the request itself).
    segment_batch_size: int = Field(default=1000, ge=1, le=100_000)
    # How often the background jobs look for segment evaluations to run or continue.
    segment_jobs_interval_s: float = Field(default=5.0, gt=0)
    # Rules that change with time alone ("no checkout in 30 days") are re-evaluated this often and
    # after each UTC midnight; every rule segment is fully reconciled at least this often.
    segment_sweep_interval_s: float = Field(default=3600.0, gt=0)
    segment_reconcile_interval_s: float = Field(default=86400.0, gt=0)
    secret_key: str | None = None
    secret_key_file: Path = Path("./var/secret.key")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
