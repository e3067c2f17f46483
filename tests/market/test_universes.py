"""Universes: the packaged TOML, user overrides (darkpool.toml, DARKPOOL_UNIVERSES), spellings
and clear errors naming the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from darkpool_analysis.cli import app
from darkpool_analysis.config import load_config
from darkpool_analysis.errors import ConfigError, DataFormatError
from darkpool_analysis.market import get_universe, load_universes, normalise_ticker


def test_packaged_universes_and_the_reserved_all() -> None:
    universes = load_universes()
    assert universes["all"].is_all and universes["all"].tickers == ()
    original = universes["original"]
    assert [name for name, _ in original.sections] == [
        "sector_etfs", "mega_caps", "commodities", "rates", "crypto", "speculative"]
    assert 70 <= len(original.tickers) <= 100  # "about 90 tickers" in the original system
    assert "BRK.B" in universes["mega_caps"].tickers  # stored spelling
    assert len(universes["sector_leaders"].sections) == 11
    for universe in universes.values():
        assert len(universe.tickers) == len(set(universe.tickers))
        assert universe.is_all or universe.description


@pytest.mark.parametrize("spelling", ["BRK.B", "BRK-B", "BRK/B", "brk.b", " brk-b "])
def test_every_spelling_normalises_to_the_stored_form(spelling: str) -> None:
    assert normalise_ticker(spelling) == "BRK.B"


def test_darkpool_toml_and_env_file_override_in_order(clean_env: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    (clean_env / "darkpool.toml").write_text(
        'short_z_window = 30\n\n'
        '[universes]\npicks = ["GME", "amc"]\n\n'
        '[universes.mega_caps]\ndescription = "mine"\ntickers = ["AAPL", "BRK/B"]\n')
    assert load_config().short_z_window == 30  # settings ignore the [universes] table
    universes = load_universes()
    assert universes["picks"].tickers == ("GME", "AMC")
    assert universes["mega_caps"].tickers == ("AAPL", "BRK.B")
    # the packaged composed group sees the user's version of its sub-group
    assert dict(universes["original"].sections)["mega_caps"] == ("AAPL", "BRK.B")

    override = tmp_path / "groups.toml"
    override.write_text('[universes.picks]\ntickers = ["PLTR"]\n'
                        '[universes.both]\ngroups = ["picks", "mega_caps"]\ntickers = ["SPY"]\n')
    monkeypatch.setenv("DARKPOOL_UNIVERSES", str(override))
    universes = load_universes()
    assert universes["picks"].tickers == ("PLTR",)  # DARKPOOL_UNIVERSES wins
    assert universes["picks"].source == str(override)
    assert universes["both"].sections == (("picks", ("PLTR",)),
                                           ("mega_caps", ("AAPL", "BRK.B")),
                                           ("both", ("SPY",)))
    assert universes["both"].tickers == ("PLTR", "AAPL", "BRK.B", "SPY")


@pytest.mark.parametrize(("text", "line", "needle"), [
    ('[universes.x]\ntickers = ["A"\n', 2, "not valid TOML"),
    ('[universes.x]\ntickers = ["A"] x\n\n', 2, "not valid TOML"),
    ('[universes.x]\ntickers = ["A"]\nsymbols = ["B"]\n', 1, "unknown key(s) symbols"),
    ('\n[universes.x]\ngroups = ["nope"]\n', 2, "unknown group 'nope'"),
    ('[universes.a]\ngroups = ["b"]\n[universes.b]\ngroups = ["a"]\n', None, "cycle"),
    ('[universes.all]\ntickers = ["A"]\n', 1, "'all' is reserved"),
    ('[universes.x]\n\ntickers = ["A B"]\n', 1, "is not a ticker"),
    ('[universes.x]\ndescription = "empty"\n', 1, "no tickers and no groups"),
    ('[other]\nx = 1\n', None, "no universes table"),
])
def test_bad_universe_files_name_file_and_line(tmp_path: Path, text: str, line: int | None,
                                               needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(DataFormatError) as info:
        load_universes(path)
    assert str(path) in info.value.message
    assert needle in info.value.message
    if line is not None:
        assert info.value.line == line
        assert f"line {line}" in info.value.message


def test_unknown_universe_lists_the_valid_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown universe 'nope'.*mega_caps"):
        get_universe("nope")
    assert get_universe("MEGA_CAPS").name == "mega_caps"


def test_dotted_keys_work_as_the_hint_says(tmp_path: Path) -> None:
    path = tmp_path / "dotted.toml"
    path.write_text('universes.mine.tickers = ["AAPL", "BRK.B"]\n')
    assert load_universes(path)["mine"].tickers == ("AAPL", "BRK.B")


def test_cli_lists_universes(clean_env: Path) -> None:
    result = CliRunner().invoke(app, ["universes"])
    assert result.exit_code == 0, result.output
    assert "mega_caps" in result.output and "original" in result.output
