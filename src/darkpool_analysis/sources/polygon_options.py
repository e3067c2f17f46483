"""Polygon options: near-the-money contract lists and contracts' daily bars.

Two endpoints (shapes as Polygon documents them):

* ``GET /v3/reference/options/contracts`` with ``underlying_ticker``, ``as_of`` (the session),
  ``strike_price.gte/.lte``, ``expiration_date.gte/.lte``, ``expired`` and ``limit`` (at most
  1,000): ``{"status": "OK", "results": [{"ticker": "O:AAPL230324C00120000",
  "contract_type": "call", "strike_price": 120, "expiration_date": "2023-03-24",
  "shares_per_contract": 100, "underlying_ticker": "AAPL", ...}], "next_url": ...}``, paged
  with ``next_url``. ``expired`` is relative to *today*, not to ``as_of``: a past session whose
  expiry window reaches today needs both ``expired=true`` and ``expired=false``.
* ``GET /v2/aggs/ticker/{options_ticker}/range/1/day/{from}/{to}``: the stock aggregates shape
  (``t``, ``o``, ``h``, ``l``, ``c``, ``v`` contracts, ``vw`` VWAP per share of the premium).

Requests go through :class:`~darkpool_analysis.sources.prices.PolygonClient` (the shared retry
policy: 429 and 5xx are retried with backoff / ``Retry-After``; the key travels in a header and
never reaches a log line).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Mapping
from typing import Any, Final

import numpy as np
import pandas as pd

from darkpool_analysis.errors import DataFormatError
from darkpool_analysis.sources.prices import MARKET_TZ, POLYGON_MAX_PAGES, PolygonClient
from darkpool_analysis.symbols import to_feed

log = logging.getLogger(__name__)

#: Polygon's largest page of the contracts endpoint.
CONTRACTS_LIMIT: Final = 1000
#: Columns of a contracts frame.
CONTRACT_COLUMNS: Final = ("ticker", "contract_type", "strike_price", "expiration_date",
                           "shares_per_contract")
#: Columns of a contract bars frame.
BAR_COLUMNS: Final = ("ticker", "date", "volume", "vwap", "close")
#: Contracts are standard (100 shares) unless Polygon says otherwise.
DEFAULT_SHARES: Final = 100.0


def empty_contracts() -> pd.DataFrame:
    """A contracts frame without rows."""
    return pd.DataFrame({"ticker": pd.Series(dtype="str"),
                         "contract_type": pd.Series(dtype="str"),
                         "strike_price": pd.Series(dtype="float64"),
                         "expiration_date": pd.Series(dtype="datetime64[ns]"),
                         "shares_per_contract": pd.Series(dtype="float64")})


def empty_contract_bars() -> pd.DataFrame:
    """A contract bars frame without rows."""
    return pd.DataFrame({"ticker": pd.Series(dtype="str"),
                         "date": pd.Series(dtype="datetime64[ns]"),
                         "volume": pd.Series(dtype="float64"),
                         "vwap": pd.Series(dtype="float64"),
                         "close": pd.Series(dtype="float64")})


def parse_contracts(payload: Mapping[str, Any], *, source: str) -> pd.DataFrame:
    """Contracts ``results`` -> frame of :data:`CONTRACT_COLUMNS` (calls and puts only)."""
    results = payload.get("results") or []
    if not isinstance(results, list):
        raise DataFormatError("'results' is not a list", source=source, field="results")
    if not results:
        return empty_contracts()
    records = pd.DataFrame.from_records(results)
    for key in ("ticker", "contract_type", "strike_price", "expiration_date"):
        if key not in records:
            raise DataFormatError(f"contracts without {key!r}", source=source,
                                  field=f"results[0].{key}")
        missing = np.flatnonzero(records[key].isna().to_numpy())
        if missing.size:
            raise DataFormatError(f"missing {key!r} in {missing.size} contract(s)",
                                  source=source, field=f"results[{int(missing[0])}].{key}")
    strikes = pd.to_numeric(records["strike_price"], errors="coerce")
    bad = np.flatnonzero(~(strikes > 0).to_numpy())
    if bad.size:
        raise DataFormatError(f"strike_price {records['strike_price'].iloc[bad[0]]!r} is not a "
                              "positive number", source=source,
                              field=f"results[{int(bad[0])}].strike_price")
    expiry = pd.to_datetime(records["expiration_date"], format="%Y-%m-%d", errors="coerce")
    bad = np.flatnonzero(expiry.isna().to_numpy())
    if bad.size:
        raise DataFormatError(f"expiration_date {records['expiration_date'].iloc[bad[0]]!r} is "
                              "not YYYY-MM-DD", source=source,
                              field=f"results[{int(bad[0])}].expiration_date")
    shares = (pd.to_numeric(records["shares_per_contract"], errors="coerce")
              if "shares_per_contract" in records else pd.Series(np.nan, index=records.index))
    kind = records["contract_type"].astype(str).str.lower()
    frame = pd.DataFrame({
        "ticker": records["ticker"].astype(str),
        "contract_type": kind,
        "strike_price": strikes.astype("float64"),
        "expiration_date": expiry.astype("datetime64[ns]"),
        "shares_per_contract": shares.where(shares > 0, DEFAULT_SHARES).astype("float64"),
    })
    return frame.loc[kind.isin(["call", "put"]).to_numpy()].reset_index(drop=True)


def parse_contract_bars(payload: Mapping[str, Any], *, source: str,
                        ticker: str) -> pd.DataFrame:
    """Option aggregates ``results`` -> frame of :data:`BAR_COLUMNS` (session dates)."""
    results = payload.get("results") or []
    if not isinstance(results, list):
        raise DataFormatError("'results' is not a list", source=source, field="results")
    if not results:
        return empty_contract_bars()
    records = pd.DataFrame.from_records(results)
    for key in ("t", "v", "c"):
        values = (pd.to_numeric(records[key], errors="coerce") if key in records
                  else pd.Series(np.nan, index=records.index))
        bad = np.flatnonzero(~np.isfinite(values.to_numpy(dtype="float64")))
        if bad.size:
            raise DataFormatError(f"missing or non-numeric {key!r} in {bad.size} bar(s)",
                                  source=source, field=f"results[{int(bad[0])}].{key}")
    volume = records["v"].astype("float64")
    bad = np.flatnonzero((volume < 0).to_numpy())
    if bad.size:
        raise DataFormatError(f"negative volume {volume.iloc[bad[0]]:g}", source=source,
                              field=f"results[{int(bad[0])}].v")
    vwap = (pd.to_numeric(records["vw"], errors="coerce").astype("float64") if "vw" in records
            else pd.Series(np.nan, index=records.index))
    bad = np.flatnonzero((vwap <= 0).to_numpy() | np.isinf(vwap.to_numpy()))
    if bad.size:
        raise DataFormatError(f"VWAP {vwap.iloc[bad[0]]:g} is not a positive price",
                              source=source, field=f"results[{int(bad[0])}].vw")
    stamps = pd.to_datetime(records["t"].astype("int64"), unit="ms", utc=True)
    return pd.DataFrame({
        "ticker": ticker,
        "date": stamps.dt.tz_convert(MARKET_TZ).dt.tz_localize(None).dt.normalize()
        .astype("datetime64[ns]"),
        "volume": volume,
        "vwap": vwap,
        "close": records["c"].astype("float64"),
    })


class PolygonOptionsClient(PolygonClient):
    """Options contract lists and contract bars, paged and retried like the stock endpoints."""

    def _pages(self, url: str, params: Mapping[str, str] | None) -> Iterator[tuple[str,
                                                                                  dict[str, Any]]]:
        """Each page of a paged endpoint: ``(url, payload)``, following ``next_url``."""
        seen: set[str] = set()
        next_url: str | None = url
        next_params = dict(params) if params is not None else None
        while next_url is not None:
            if next_url in seen or len(seen) >= POLYGON_MAX_PAGES:
                raise DataFormatError("next_url repeats or paging does not end",
                                      source=next_url, field="next_url")
            seen.add(next_url)
            payload = self._get_json(next_url, next_params)
            yield next_url, payload
            next_url, next_params = self._next_page(payload.get("next_url"),
                                                    source=next_url), None

    def contracts(self, underlying: str, as_of: dt.date, *, min_strike: float,
                  max_strike: float, max_expiry: dt.date,
                  today: dt.date | None = None) -> pd.DataFrame:
        """Calls and puts on ``underlying`` listed on ``as_of`` with a strike in
        ``[min_strike, max_strike]`` expiring in ``[as_of, max_expiry]`` (every page)."""
        today = today or dt.date.today()
        flags = (["true"] if max_expiry < today else ["false"] if as_of >= today
                 else ["true", "false"])
        url = f"{self._base}/v3/reference/options/contracts"
        frames: list[pd.DataFrame] = []
        for expired in flags:
            params = {"underlying_ticker": to_feed(underlying, "polygon"),
                      "as_of": as_of.isoformat(), "expired": expired,
                      "strike_price.gte": f"{min_strike:.4f}",
                      "strike_price.lte": f"{max_strike:.4f}",
                      "expiration_date.gte": as_of.isoformat(),
                      "expiration_date.lte": max_expiry.isoformat(),
                      "order": "asc", "sort": "ticker", "limit": str(CONTRACTS_LIMIT)}
            for page_url, payload in self._pages(url, params):
                frames.append(parse_contracts(payload, source=page_url))
        frames = [frame for frame in frames if not frame.empty]
        if not frames:
            return empty_contracts()
        merged = pd.concat(frames, ignore_index=True)
        return merged.drop_duplicates("ticker").sort_values("ticker", ignore_index=True)

    def contract_bars(self, ticker: str, start: dt.date, end: dt.date) -> pd.DataFrame:
        """One contract's daily bars over ``[start, end]`` (every page)."""
        url = (f"{self._base}/v2/aggs/ticker/{ticker}/range/1/day/{start.isoformat()}/"
               f"{end.isoformat()}")
        params = {"adjusted": "true", "sort": "asc", "limit": "50000"}
        frames = [parse_contract_bars(payload, source=page_url, ticker=ticker)
                  for page_url, payload in self._pages(url, params)]
        frames = [frame for frame in frames if not frame.empty]
        if not frames:
            return empty_contract_bars()
        bars = pd.concat(frames, ignore_index=True)
        if bars.duplicated("date").any():
            raise DataFormatError(f"two bars on one session for {ticker}", source=url,
                                  field="results.t")
        return bars


def strike_band(close: float, band: float) -> tuple[float, float]:
    """Strikes counted as near the money for a session close: ``close x (1 -+ band)``.

    Examples
    --------
    >>> strike_band(200.0, 0.1)
    (180.0, 220.0)
    """
    return round(close * (1.0 - band), 6), round(close * (1.0 + band), 6)


__all__ = [
    "BAR_COLUMNS",
    "CONTRACT_COLUMNS",
    "PolygonOptionsClient",
    "empty_contract_bars",
    "empty_contracts",
    "parse_contract_bars",
    "parse_contracts",
    "strike_band",
]

