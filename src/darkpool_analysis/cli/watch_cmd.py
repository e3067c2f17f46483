"""``darkpool watch``: post alerts when FINRA publishes the day's short-sale file."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from pydantic import SecretStr
from rich.markup import escape
from rich.table import Table

from darkpool_analysis.cli.app import (
    app,
    config,
    console,
    err_console,
    handle_errors,
    parse_date,
)
from darkpool_analysis.errors import ConfigError, DarkpoolError


class KindOption(StrEnum):
    """``--webhook-kind`` values."""

    auto = "auto"
    discord = "discord"
    json = "json"


def _report_table(report: object) -> Table:
    from darkpool_analysis.watch import DayReport

    if not isinstance(report, DayReport):
        raise TypeError("expected a DayReport")
    table = Table(title=f"watch {report.session}", title_justify="left",
                  header_style="bold cyan")
    table.add_column("step")
    table.add_column("result")
    table.add_column("seconds", justify="right")
    seconds = report.seconds
    table.add_row("FINRA file", f"published ({report.probes} probe(s)); {report.finra_outcome}",
                  f"{seconds.get('wait', 0.0):.2f}")
    table.add_row("ingest", f"FINRA {report.finra_outcome}; prices {report.price_note}",
                  f"{seconds.get('ingest_finra', 0.0) + seconds.get('ingest_prices', 0.0):.2f}")
    table.add_row("build", f"{report.rows_built:,} daily_metrics rows",
                  f"{seconds.get('build', 0.0):.2f}")
    table.add_row("rules", f"{len(report.alerts)} triggered", f"{seconds.get('evaluate', 0.0):.2f}")
    table.add_row("charts", f"{sum(len(a.charts) for a in report.alerts)} PNG",
                  f"{seconds.get('charts', 0.0):.2f}")
    outcomes: dict[str, int] = {}
    for delivery in report.deliveries:
        outcomes[delivery.outcome] = outcomes.get(delivery.outcome, 0) + 1
    table.add_row("alerts", ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in outcomes.items())
                  or "none", f"{seconds.get('post', 0.0):.2f}")
    work = sum(value for key, value in seconds.items() if key != "wait")
    table.caption = f"work after publication: {work:.2f}s"
    return table


@app.command("watch")
@handle_errors
def watch_command(
    rules: Annotated[Path, typer.Option(
        "--rules", help="TOML rules file: rule tables with when = \"current >= 70\", "
        "\"short_buy_sell_ratio_z >= 2\" or \"scan top 10\" (see docs/watch.md).")],
    tickers: Annotated[str | None, typer.Option(
        "--tickers", help="Comma-separated tickers to watch (default: DARKPOOL_TICKERS).")
    ] = None,
    universe: Annotated[str | None, typer.Option(
        "--universe", help="Watch a named universe instead (`darkpool universes`), or all.")
    ] = None,
    webhook: Annotated[str | None, typer.Option(
        "--webhook", help="Webhook URL (default: DARKPOOL_WEBHOOK_URL from the environment or "
        ".env, which is safer: command lines are visible to other users).",
        show_default=False)] = None,
    webhook_kind: Annotated[KindOption, typer.Option(
        "--webhook-kind", case_sensitive=False,
        help="discord (JSON + file upload) or json (Slack-compatible {\"text\"}); auto = "
        "discord for discord.com URLs.")] = KindOption.auto,
    once: Annotated[bool, typer.Option(
        "--once", help="Do one day and exit (for cron / systemd timers).")] = False,
    date: Annotated[str | None, typer.Option(
        "--date", help="The session to watch (YYYY-MM-DD; default today in New York). "
        "Implies --once.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the messages instead of posting (nothing is recorded).")
    ] = False,
    no_prices: Annotated[bool, typer.Option(
        "--no-prices", help="Do not ingest the day's price bars.")] = False,
    provider: Annotated[str | None, typer.Option(
        "--provider", help="Price provider (polygon, yahoo, csv); default as `ingest prices`.")
    ] = None,
    prices_dir: Annotated[Path | None, typer.Option(
        "--prices-dir", file_okay=False, help="Yahoo-format <TICKER>.csv folder (csv provider).")
    ] = None,
    at: Annotated[str | None, typer.Option(
        "--at", help="New York time to start looking for the file (default DARKPOOL_WATCH_TIME "
        "or 18:00).")] = None,
    poll_interval: Annotated[float | None, typer.Option(
        "--poll-interval", help="Seconds between the first probes (grows x1.5 per miss).")
    ] = None,
    poll_max_interval: Annotated[float | None, typer.Option(
        "--poll-max-interval", help="Longest wait between probes, seconds.")] = None,
    poll_timeout: Annotated[float | None, typer.Option(
        "--poll-timeout", help="Give up on the day after this many seconds of probing.")
    ] = None,
) -> None:
    """Wait for FINRA's daily short-sale file, ingest it with the day's prices, build, evaluate
    the rules and post one message (with the sandbox chart) per triggered rule.

    Alerts already posted are never posted again. FINRA short volume is a proxy for
    dealer-filled buying, not observed buying and not short interest.
    """
    from darkpool_analysis import watch
    from darkpool_analysis.ingest.prices import normalise_tickers
    from darkpool_analysis.webhooks import Webhook

    settings = config()
    overrides: dict[str, object] = {}
    for name, value in (("watch_time", at), ("watch_poll_interval", poll_interval),
                        ("watch_poll_max_interval", poll_max_interval),
                        ("watch_poll_timeout", poll_timeout)):
        if value is not None:
            overrides[name] = value
    if webhook is not None:
        overrides["webhook_url"] = SecretStr(webhook)
    if webhook_kind != KindOption.auto:
        overrides["webhook_kind"] = webhook_kind.value
    watch_settings = watch.load_watch_settings(**overrides)
    if tickers and universe:
        raise ConfigError("pass either --tickers or --universe, not both")
    rule_list = watch.load_rules(rules)
    watch.check_rules(rule_list, settings.db_path, settings)
    symbols = (tuple(normalise_tickers(tickers.split(","))) if tickers
               else None if universe else tuple(normalise_tickers(settings.tickers)))
    target = watch.WatchTarget(symbols, universe)
    day = parse_date(date, "--date")
    hook = None
    if not dry_run:
        if watch_settings.webhook_url is None:
            raise ConfigError("no webhook configured",
                              hint="set DARKPOOL_WEBHOOK_URL in the environment or .env (or "
                                   "pass --webhook), or use --dry-run to print the messages")
        hook = Webhook(watch_settings.webhook_url, watch_settings.webhook_kind,
                       policy=watch_settings.webhook_policy())
    clock = watch.Clock()

    def run(session: dt.date) -> watch.DayReport:
        report = watch.run_day(settings, watch_settings, rule_list, session, target=target,
                               webhook=hook, dry_run=dry_run, prices=not no_prices,
                               price_provider=provider, prices_dir=prices_dir, clock=clock,
                               printer=lambda text: console.print(escape(text), highlight=False,
                                                                  soft_wrap=True))
        console.print(_report_table(report))
        return report

    try:
        if once or day is not None:
            session = day or watch.session_for(clock.now())
            from darkpool_analysis import trading_calendar

            if day is None and not trading_calendar.is_session(session):
                console.print(f"{session} is not a trading session: nothing to watch",
                              highlight=False)
                return
            failed = run(session).failed
            if failed:
                err_console.print(f"[bold red]error:[/] {len(failed)} alert(s) could not be "
                                  "posted; the next run retries them", highlight=False)
                raise typer.Exit(code=1)
            return

        def report_error(session: dt.date, exc: DarkpoolError) -> None:
            err_console.print(f"[bold red]{session}:[/] {escape(exc.message)}", highlight=False)

        console.print(f"watching {hook.describe() if hook else 'in dry-run mode'}; daily at "
                      f"{watch_settings.watch_time} New York (Ctrl-C to stop)", highlight=False)
        try:
            watch.run_forever(run, watch_settings.poll_policy(), clock=clock,
                              on_error=report_error)
        except KeyboardInterrupt:
            console.print("stopped", highlight=False)
    finally:
        if hook is not None:
            hook.close()
