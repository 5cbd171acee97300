"""Settings, read from ZHIDA_* environment variables only (never at import time)."""

from __future__ import annotations

import enum
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEV_TOKEN_SECRET = "zhida-dev-secret-not-for-production-use"


class Environment(enum.StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZHIDA_", extra="ignore")

    environment: Environment = Environment.DEVELOPMENT
    var_dir: Path = PROJECT_ROOT / "var"
    database_url: str = ""
    sql_echo: bool = False

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "zhida"
    temporal_tls: bool = False
    temporal_api_key: SecretStr | None = None
    temporal_tls_client_cert: Path | None = None
    temporal_tls_client_key: Path | None = None
    task_queue: str = "zhida-main"
    # Run workflow code in the SDK's sandbox. Off by default: the sandbox re-imports the
    # workflow module for every run and costs about a fifth of a worker's CPU (measured
    # with bench/recognition.py). Determinism is checked where it is cheap instead: every
    # test worker and the replay of every stored history run sandboxed.
    workflow_sandbox: bool = False
    # Log what each activity costs the worker (`activity.cost`: statements, CPU, wall
    # time; workers/costs.py). For measuring, e.g. bench/application_throughput.py --profile.
    profile_activities: bool = False

    # The provincial budget system (the simulator on the embedded stack).
    budget_system_url: str = "http://127.0.0.1:8100"
    budget_system_timeout_s: float = 10.0

    # The government messaging channel (the simulator on the embedded stack).
    message_channel_url: str = "http://127.0.0.1:8200"
    message_channel_timeout_s: float = 10.0

    # The city's public data platform (the simulator on the embedded stack).
    data_platform_url: str = "http://127.0.0.1:8300"
    data_platform_timeout_s: float = 10.0
    # The government portals' policy feed (the simulator on the embedded stack).
    policy_feed_url: str = "http://127.0.0.1:8400"
    policy_feed_timeout_s: float = 10.0
    # Policy push: at most this many pushes per firm in any seven days.
    push_per_week: int = Field(default=3, ge=1)
    # After sending pushes, a run asks the channel for receipts after each of these waits.
    push_receipt_polls_s: list[float] = Field(default_factory=lambda: [30.0, 120.0, 600.0])
    # Threads the matching engine spreads a full run over.
    match_threads: int = Field(default=2, ge=1)
    # How often a recognition batch looks at its cases once they have all started.
    recognition_follow_s: int = Field(default=60, ge=1, le=3600)

    # Dashboards' figures (overview, warnings, time to money, bulletin, policy effect)
    # are computed from every case of the year: 50 to 230 ms of CPU each at city scale.
    # An API process keeps each reader scope's figures this long (0: never), and
    # readers of one scope asking at once share one computation; every answer carries
    # the time it was computed (`generated_at`).
    dashboard_max_age_s: float = Field(default=15.0, ge=0, le=3600)
    # Read every firm's facts into memory as an API process starts (in the background),
    # so that the first budget preview does not wait for it (28 s at 300,000 firms on a
    # slow core); later writes patch that copy (domain.registry.enterprises).
    preload_facts: bool = False

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # API processes sharing the port (uvicorn's workers): they hold no state of their
    # own, so more processes use more cores (bench/api_load.py).
    api_processes: int = Field(default=2, ge=1, le=64)
    # Tokens the platform issues itself (`zhida token`, the embedded stack).
    token_secret: SecretStr = SecretStr(DEV_TOKEN_SECRET)
    token_ttl_hours: int = Field(default=12, ge=1, le=24 * 30)
    # Browser origins allowed to call the API (the Temporal UI calls the codec server).
    # Never "*" in production.
    cors_origins: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:8233", "http://localhost:8233"]
    )

    # Identities from an OpenID Connect provider (production): tokens signed by the
    # provider's keys (JWKS), with the platform user, role and unit in claims. When
    # `oidc_issuer` is set, these tokens are accepted; the platform's own tokens only
    # outside production.
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None  # default: from the issuer's discovery document
    oidc_user_claim: str = "preferred_username"
    oidc_role_claim: str = "zhida_role"
    oidc_unit_claim: str = "zhida_unit"
    oidc_enterprise_claim: str = "uscc"
    # The provider's role names to the platform's roles (Role values); a provider role
    # not named here maps to itself.
    oidc_role_map: dict[str, str] = Field(default_factory=dict)

    # Payload encryption: AES-256-GCM over every payload Temporal stores. A key ring
    # "id1:base64key,id2:base64key": the first key encrypts, every key decrypts (rotation
    # puts a new key first and keeps the old ones). Or a file with one "id:base64key" per
    # line, first line first. Outside production, a missing key ring is made once in
    # `var_dir/codec-keys`; production refuses to start without one.
    codec_keys: SecretStr | None = None
    codec_key_file: Path | None = None

    # Time limits of the policy-change review stages, in working days.
    policy_head_review_days: int = 3
    policy_finance_review_days: int = 5

    # Working-day calendar: the country's public holidays and make-up working days
    # (调休) from the `holidays` package, plus local additions.
    holiday_country: str = "CN"
    extra_holidays: list[str] = Field(default_factory=list)
    extra_working_days: list[str] = Field(default_factory=list)

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        """Normalise the URL to the async driver the engine needs."""
        for prefix, replacement in (
            ("postgres://", "postgresql+asyncpg://"),
            ("postgresql://", "postgresql+asyncpg://"),
            ("postgresql+psycopg2://", "postgresql+asyncpg://"),
            ("sqlite:///", "sqlite+aiosqlite:///"),
        ):
            if value.startswith(prefix):
                return replacement + value[len(prefix) :]
        return value

    @model_validator(mode="after")
    def _defaults_and_production_checks(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.var_dir / 'zhida.db'}"
        if self.environment is Environment.PRODUCTION:
            problems = []
            if self.token_secret.get_secret_value() == DEV_TOKEN_SECRET:
                problems.append("ZHIDA_TOKEN_SECRET must be set (not the development default)")
            if self.codec_keys is None and self.codec_key_file is None:
                problems.append("ZHIDA_CODEC_KEYS or ZHIDA_CODEC_KEY_FILE must be set")
            if "*" in self.cors_origins:
                problems.append("ZHIDA_CORS_ORIGINS must name origins, not '*'")
            if problems:
                raise ValueError("production refuses to start: " + "; ".join(problems))
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
