"""load_config(): defaults, environment names, toml/.env sources and load-time validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from darkpool_analysis.config import env_name, load_config
from darkpool_analysis.errors import ConfigError


def test_defaults_match_the_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DARKPOOL_DB")
    cfg = load_config()
    assert (cfg.short_z_window, cfg.return_z_window, cfg.zscore_min_periods) == (20, 20, 5)
    assert (cfg.composite_w_short, cfg.composite_w_lit, cfg.composite_w_price) == (0.55, 0.30, 0.15)
    assert (cfg.intensity_scale_min, cfg.intensity_scale_max) == (0.7, 1.3)
    assert cfg.min_lit_volume == 10_000
    assert cfg.accumulation_short_z_source == "short_buy_sell_ratio_z"
    assert cfg.finra_cdn_url == "https://cdn.finra.org/equity/regsho/daily"
    assert cfg.finra_api_url == "https://api.finra.org"
    assert cfg.db_path.parts[-2:] == ("darkpool", "darkpool.duckdb")
    assert cfg.polygon_api_key is None


def test_environment_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DARKPOOL_DB", str(tmp_path / "x.duckdb"))
    monkeypatch.setenv("FINRA_CDN_URL", "http://127.0.0.1:9/regsho/")
    monkeypatch.setenv("FINRA_API_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("POLYGON_API_KEY", "sekrit-key")
    monkeypatch.setenv("DARKPOOL_SHORT_Z_WINDOW", "30")
    monkeypatch.setenv("DARKPOOL_TICKERS", "nke, brk.b ,AAPL")
    cfg = load_config()
    assert cfg.db_path == tmp_path / "x.duckdb"
    assert cfg.finra_cdn_url == "http://127.0.0.1:9/regsho"
    assert cfg.finra_api_url == "http://127.0.0.1:9"
    assert cfg.polygon_api_key is not None
    assert cfg.polygon_api_key.get_secret_value() == "sekrit-key"
    assert "sekrit" not in repr(cfg)
    assert cfg.short_z_window == 30
    assert cfg.tickers == ["NKE", "BRK.B", "AAPL"]
    assert env_name("db_path") == "DARKPOOL_DB"
    assert env_name("short_z_window") == "DARKPOOL_SHORT_Z_WINDOW"


def test_toml_and_dotenv_sources(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / "darkpool.toml").write_text("short_z_window = 25\ncomposite_w_lit = 0.2\n")
    (clean_env / ".env").write_text("DARKPOOL_COMPOSITE_W_LIT=0.25\n")
    cfg = load_config()
    assert cfg.short_z_window == 25  # from toml
    assert cfg.composite_w_lit == 0.25  # .env beats toml
    monkeypatch.setenv("DARKPOOL_COMPOSITE_W_LIT", "0.35")
    assert load_config().composite_w_lit == 0.35  # environment beats .env


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DARKPOOL_SHORT_Z_WINDOW", "-5"),
        ("DARKPOOL_COMPOSITE_W_SHORT", "heavy"),
        ("DARKPOOL_ACCUMULATION_SHORT_Z_SOURCE", "magic_z"),
        ("FINRA_CDN_URL", "cdn.finra.org"),
        ("DARKPOOL_HTTP_TIMEOUT", "0"),
    ],
)
def test_bad_values_fail_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        load_config()


def test_inconsistent_values_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DARKPOOL_INTENSITY_SCALE_MIN", "1.5")
    with pytest.raises(ConfigError, match="DARKPOOL_INTENSITY_SCALE_MAX"):
        load_config()


def test_secret_is_not_echoed_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYGON_API_KEY", "")
    monkeypatch.setenv("DARKPOOL_SHORT_Z_WINDOW", "x")
    with pytest.raises(ConfigError) as info:
        load_config(polygon_api_key=["not", "a", "string"])
    assert "not" not in str(info.value).split("POLYGON_API_KEY")[-1][:30]


def test_cli_errors_print_brackets_literally(monkeypatch: pytest.MonkeyPatch) -> None:
    """A message naming ``[section]`` or a path with brackets is not Rich markup."""
    from typer.testing import CliRunner

    from darkpool_analysis.cli import app

    monkeypatch.setenv("DARKPOOL_SHORT_Z_WINDOW", "[bold]x")
    result = CliRunner().invoke(app, ["db", "info"])
    assert result.exit_code == 1
    assert "[bold]x" in result.output
