"""The settings the stages run with, resolved from the config by ``wiring``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PipelineSettings:
    owner: str = "local"          # this daemon's id in the store (daemon.host_id)
    lease: float = 60.0           # how long a claim holds without renewal
    max_in_flight: int = 16       # per backend, for the AI/ML API
    local_in_flight: int = 4      # per backend, for the local engine (its queue)
    first_poll: float = 1.0
    poll_cap: float = 20.0
    job_timeout: float = 3600.0
    max_attempts: int = 3
    poll_workers: int = 4
    probe_interval: float = 30.0  # while the key is refused: one request this often
