"""Rules files, the publication poll (local CDN) and the daily loop's scheduling."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import httpx
import pandas as pd
import pytest
from pytest_httpserver import HTTPServer

from darkpool_analysis.config import load_config
from darkpool_analysis.errors import ConfigError, FetchError, NotPublishedError
from darkpool_analysis.sources.http import make_client
from darkpool_analysis.watch import (
    NEW_YORK,
    Alert,
    Clock,
    DayReport,
    PollPolicy,
    ScanRule,
    ThresholdRule,
    alert_key,
    format_message,
    load_watch_settings,
    next_run_day,
    parse_rules,
    publication_start,
    run_forever,
    wait_for_publication,
)

DAY = dt.date(2025, 5, 30)
PATH = f"/daily/CNMSshvol{DAY:%Y%m%d}.txt"
DENIED = (Path(__file__).resolve().parents[1] / "fixtures" / "finra_short"
          / "access_denied.xml").read_bytes()


def test_rules_file_parses_thresholds_and_scans() -> None:
    rules = parse_rules("""
[[rule]]
name = "accumulation"
when = "current >= 70"

[[rule]]
when = "short_buy_sell_ratio_z<=-2.5"

[[rule]]
when = "scan bottom 5 by finra_buy_volume_z"
""")
    assert rules[0] == ThresholdRule("accumulation", "current", ">=", 70.0, 4)
    assert rules[1] == ThresholdRule("short_buy_sell_ratio_z <= -2.5",
                                     "short_buy_sell_ratio_z", "<=", -2.5, 7)
    assert rules[2] == ScanRule("scan bottom 5 by finra_buy_volume_z", "bottom", 5,
                                "finra_buy_volume_z", 10)


@pytest.mark.parametrize(("text", "expected"), [
    ('[[rule]]\nwhen = "current => 70"\n', "rules.toml line 2, field when: cannot read"),
    ('[[rule]]\nwhen = "scan top 0"\n', "positive count"),
    ('[[rule]]\nname = "x"\n', "field 'when' is missing"),
    ('[[rule]]\nwhen = "current >= 70"\nlevel = 3\n', "unknown field 'level'"),
    ('[rules]\nx = 1\n', "unknown table 'rules'"),
    ('', "no rules"),
    ('[[rule]\n', "not valid TOML"),
    ('[[rule]]\nname = "a"\nwhen = "current >= 70"\n[[rule]]\nname = "a"\nwhen = "x < 1"\n',
     "rule name 'a' is used twice"),
])
def test_bad_rules_name_file_line_and_field(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_rules(text)
    assert expected in info.value.message


def test_alert_identity_and_message() -> None:
    rule = ThresholdRule("spike", "short_buy_sell_ratio_z", ">=", 2.0)
    alert = Alert(rule, DAY, pd.DataFrame({"symbol": ["NKE", "GME"], "value": [3.1, 2.05]}))
    text = format_message(alert, label="SYNTHETIC DATA - not real market data")
    assert text.splitlines()[0] == ("[SYNTHETIC DATA - not real market data] **spike** · "
                                    "2025-05-30: `short_buy_sell_ratio_z >= 2` matched 2 "
                                    "symbol(s)")
    assert text.splitlines()[1] == "NKE 3.10, GME 2.05"
    assert "not observed buying" in text
    key = alert_key(DAY, rule, "discord:abc")
    assert key == alert_key(DAY, rule, "discord:abc")
    assert key != alert_key(DAY + dt.timedelta(days=3), rule, "discord:abc")
    assert key != alert_key(DAY, ThresholdRule("spike", "short_buy_sell_ratio_z", ">=", 3.0),
                            "discord:abc")  # a changed condition is a new alert


def test_poll_waits_through_403_then_finds_the_file(httpserver: HTTPServer) -> None:
    httpserver.expect_oneshot_request(PATH).respond_with_data(DENIED, status=403)
    httpserver.expect_oneshot_request(PATH).respond_with_data(DENIED, status=403)
    httpserver.expect_request(PATH).respond_with_data(b"D", status=206)
    settings = load_config(finra_cdn_url=httpserver.url_for("/daily"))
    with make_client(settings) as client:
        probes = wait_for_publication(client, settings, DAY,
                                      poll=PollPolicy(interval=0.05, timeout=10))
    assert probes == 3
    assert all(request.headers["Range"] == "bytes=0-0" for request, _ in httpserver.log)


def test_poll_gives_up_after_the_timeout(httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATH).respond_with_data(DENIED, status=403)
    settings = load_config(finra_cdn_url=httpserver.url_for("/daily"))
    with make_client(settings) as client, pytest.raises(NotPublishedError) as info:
        wait_for_publication(client, settings, DAY,
                             poll=PollPolicy(interval=0.05, backoff=2.0, timeout=0.4))
    assert "has not published CNMS for 2025-05-30" in info.value.message
    assert 2 <= len(httpserver.log) <= 6  # 0.05, 0.1, 0.2 ... within 0.4 s


def test_poll_other_403_is_an_error(httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATH).respond_with_data("blocked by proxy", status=403)
    settings = load_config(finra_cdn_url=httpserver.url_for("/daily"))
    with make_client(settings) as client, pytest.raises(FetchError, match="blocked by proxy"):
        wait_for_publication(client, settings, DAY, poll=PollPolicy(interval=0.05, timeout=5))


def test_polling_starts_at_the_new_york_time(httpserver: HTTPServer) -> None:
    """Before 18:00 New York the poll sleeps until then (the clock is a time source)."""
    httpserver.expect_request(PATH).respond_with_data(b"D")
    start = publication_start(DAY, PollPolicy())
    assert start == dt.datetime(2025, 5, 30, 22, 0, tzinfo=dt.UTC)  # 18:00 EDT
    moments = [start - dt.timedelta(hours=2)]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        moments[0] += dt.timedelta(seconds=seconds)

    clock = Clock(now=lambda: moments[0], sleep=sleep)
    settings = load_config(finra_cdn_url=httpserver.url_for("/daily"))
    with httpx.Client() as client:
        assert wait_for_publication(client, settings, DAY, poll=PollPolicy(), clock=clock) == 1
    assert sum(slept) == pytest.approx(7200) and max(slept) <= 60
    assert moments[0] >= start


def test_next_run_day_skips_weekends_holidays_and_done_days() -> None:
    friday_evening = dt.datetime(2025, 5, 30, 23, 30, tzinfo=NEW_YORK)
    assert next_run_day(friday_evening, dt.time(18), set()) == DAY
    assert next_run_day(friday_evening, dt.time(18), {DAY}) == dt.date(2025, 6, 2)
    good_friday = dt.datetime(2025, 4, 18, 12, 0, tzinfo=NEW_YORK)
    assert next_run_day(good_friday, dt.time(18), set()) == dt.date(2025, 4, 21)


def test_run_forever_runs_each_session_once_and_survives_a_failed_day() -> None:
    moments = [dt.datetime(2025, 5, 29, 12, 0, tzinfo=NEW_YORK).astimezone(dt.UTC)]

    def sleep(seconds: float) -> None:
        moments[0] += dt.timedelta(seconds=seconds)

    ran: list[tuple[dt.date, dt.datetime]] = []
    errors: list[dt.date] = []

    def run(day: dt.date) -> DayReport:
        ran.append((day, moments[0].astimezone(NEW_YORK)))
        moments[0] += dt.timedelta(minutes=20)  # the day's work
        if day == DAY:
            raise NotPublishedError("late")
        return DayReport(day)

    handled = run_forever(run, PollPolicy(start=dt.time(18, 5)),
                          clock=Clock(now=lambda: moments[0], sleep=sleep), days=3,
                          on_error=lambda day, exc: errors.append(day))
    assert handled == 3
    assert [day for day, _ in ran] == [dt.date(2025, 5, 29), DAY, dt.date(2025, 6, 2)]
    assert all(when.time() >= dt.time(18, 5) for _, when in ran)
    assert errors == [DAY]


def test_watch_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DARKPOOL_WEBHOOK_URL", "https://discord.com/api/webhooks/1/sekrit-token")
    monkeypatch.setenv("DARKPOOL_WATCH_POLL_INTERVAL", "2.5")
    watch = load_watch_settings()
    assert watch.webhook_url is not None
    assert "sekrit" not in repr(watch) and "sekrit" not in str(watch.model_dump())
    assert watch.poll_policy().interval == 2.5
    monkeypatch.setenv("DARKPOOL_WATCH_TIME", "6pm")
    with pytest.raises(ConfigError, match="DARKPOOL_WATCH_TIME"):
        load_watch_settings()
