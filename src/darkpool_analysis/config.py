"""Typed, validated settings read from the environment, an optional `.env` and `darkpool.toml`.

Precedence (highest first): explicit keyword arguments to :func:`load_config`, environment
variables, `.env`, `darkpool.toml`, defaults. Environment variable names are ``DARKPOOL_`` +
the field name upper-cased, except ``DARKPOOL_DB``, ``FINRA_CDN_URL``, ``FINRA_API_URL`` and
``POLYGON_API_KEY``. The seed notebook only needs :func:`load_config` and the fields it reads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from darkpool_analysis.errors import ConfigError

ShortZSource = Literal["short_buy_sell_ratio_z", "vw_flow_z", "finra_buy_volume_z"]
OtcAlignment = Literal["published", "week"]

#: Fields whose environment variable is not simply ``DARKPOOL_<FIELD>``.
ENV_NAME_OVERRIDES: dict[str, str] = {
    "db_path": "DARKPOOL_DB",
    "finra_cdn_url": "FINRA_CDN_URL",
    "finra_api_url": "FINRA_API_URL",
    "polygon_api_key": "POLYGON_API_KEY",
}

DEFAULT_TICKERS = ["NKE", "AAPL", "TSLA", "GME", "SPY"]


def default_db_path() -> Path:
    """`<platformdirs user data dir>/darkpool/darkpool.duckdb` (not created until written)."""
    return platformdirs.user_data_path("darkpool", appauthor=False) / "darkpool.duckdb"


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    return ENV_NAME_OVERRIDES.get(field, f"DARKPOOL_{field.upper()}")


def _alias(field: str) -> AliasChoices:
    # Accept the field name (toml, kwargs) and the environment variable name.
    return AliasChoices(field, env_name(field))


class Settings(BaseSettings):
    """All settings of darkpool-analysis. Build it with :func:`load_config`."""

    model_config = SettingsConfigDict(
        env_prefix="DARKPOOL_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        validate_default=True,
    )

    # Storage -------------------------------------------------------------------------------
    db_path: Path = Field(default_factory=default_db_path, validation_alias=_alias("db_path"))
    output_dir: Path = Path("output")

    # Rolling statistics (metrics-spec.md) ---------------------------------------------------
    short_z_window: int = Field(20, ge=2, le=2520)
    return_z_window: int = Field(20, ge=2, le=2520)
    zscore_min_periods: int = Field(5, ge=1, le=2520)
    otc_z_window: int = Field(12, ge=2, le=520)
    otc_z_min_periods: int = Field(4, ge=1, le=520)

    # Composite score --------------------------------------------------------------------
    composite_w_short: float = Field(0.55, ge=0.0, le=10.0)
    composite_w_lit: float = Field(0.30, ge=0.0, le=10.0)
    composite_w_price: float = Field(0.15, ge=0.0, le=10.0)
    intensity_scale_min: float = Field(0.7, ge=0.0, le=10.0)
    intensity_scale_max: float = Field(1.3, ge=0.0, le=10.0)
    accumulation_short_z_source: ShortZSource = "short_buy_sell_ratio_z"
    min_lit_volume: float = Field(10_000, ge=0)
    otc_alignment: OtcAlignment = "published"

    # Universe -----------------------------------------------------------------------------
    tickers: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(DEFAULT_TICKERS))

    # Market hours for lit trade classification (America/New_York) -------------------------
    market_timezone: str = "America/New_York"
    rth_start: str = Field("09:30", pattern=r"^\d{2}:\d{2}$")
    rth_end: str = Field("16:00", pattern=r"^\d{2}:\d{2}$")

    # Sources ----------------------------------------------------------------------------------
    finra_cdn_url: str = Field(
        "https://cdn.finra.org/equity/regsho/daily", validation_alias=_alias("finra_cdn_url")
    )
    finra_api_url: str = Field("https://api.finra.org", validation_alias=_alias("finra_api_url"))
    polygon_api_url: str = "https://api.polygon.io"
    polygon_api_key: SecretStr | None = Field(None, validation_alias=_alias("polygon_api_key"))
    price_provider: Literal["polygon", "yahoo", "csv"] | None = None

    # HTTP -----------------------------------------------------------------------------------
    http_timeout: float = Field(30.0, gt=0, le=600)
    http_retries: int = Field(4, ge=0, le=20)
    http_backoff: float = Field(0.5, ge=0, le=60)
    http_concurrency: int = Field(8, ge=1, le=64)
    otc_requests_per_second: float = Field(10.0, gt=0, lt=20)

    @field_validator("tickers", mode="before")
    @classmethod
    def _split_tickers(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [t.strip().upper() for t in value.split(",") if t.strip()]
        if isinstance(value, list | tuple):
            return [str(t).strip().upper() for t in value if str(t).strip()]
        return value

    @field_validator("finra_cdn_url", "finra_api_url", "polygon_api_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("db_path", "output_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.intensity_scale_min > self.intensity_scale_max:
            raise ValueError(
                "intensity_scale_min must be <= intensity_scale_max "
                f"({env_name('intensity_scale_min')}={self.intensity_scale_min}, "
                f"{env_name('intensity_scale_max')}={self.intensity_scale_max})"
            )
        for window in ("short_z_window", "return_z_window"):
            if self.zscore_min_periods > getattr(self, window):
                raise ValueError(
                    f"zscore_min_periods ({self.zscore_min_periods}) must be <= {window} "
                    f"({getattr(self, window)}); set {env_name('zscore_min_periods')}"
                )
        if self.otc_z_min_periods > self.otc_z_window:
            raise ValueError(f"otc_z_min_periods must be <= otc_z_window; set "
                             f"{env_name('otc_z_min_periods')}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("DARKPOOL_CONFIG", "darkpool.toml"))
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_path),
            file_secret_settings,
        )

    @property
    def master_db_path(self) -> Path:
        """The writer's private database; readers use :attr:`db_path` (see ``store``)."""
        from darkpool_analysis.store import master_path_for

        return master_path_for(self.db_path)


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        loc = item.get("loc") or ()
        field = str(loc[0]) if loc else ""
        name = env_name(field) if field in Settings.model_fields else field
        value = item.get("input")
        shown = "<secret>" if "key" in field or "secret" in field else repr(value)
        prefix = f"{name}={shown}" if field else "settings"
        lines.append(f"{prefix}: {item.get('msg')}")
    return "; ".join(lines)


def load_config(**overrides: Any) -> Settings:
    """Read and validate all settings; raise :class:`ConfigError` naming the bad variable.

    Examples
    --------
    >>> cfg = load_config(short_z_window=30)
    >>> cfg.short_z_window
    30
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(
            f"Invalid configuration: {_describe(exc)}",
            hint="fix the environment variable, .env or darkpool.toml entry named above",
        ) from exc
