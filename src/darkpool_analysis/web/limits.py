"""Bounds on the work one web request may ask for (issue 10 item 7).

Every request is checked against these before any data is read, so a hostile or careless URL
(1,000 formulas, a century of dates) is answered with a clear 4xx instead of tying up the
server. The formula count and length are the package's own limits
(:data:`formulas.MAX_FORMULAS`, :data:`formulas.MAX_SPEC_LENGTH`, shared with the CLI); the
variants, date span and the chart pool are web-specific.
"""

from __future__ import annotations

from typing import Final

from darkpool_analysis import formulas

#: User formulas per request (``name=expression`` lines): the package-wide limit.
MAX_FORMULAS: Final = formulas.MAX_FORMULAS
#: Characters of one ``name=expression`` line (name, ``=`` and the expression).
MAX_FORMULA_LINE: Final = formulas.MAX_SPEC_LENGTH
#: Variants named in one request (registry names and formulas together).
MAX_VARIANTS: Final = 24
#: Calendar days between ``start`` and ``end`` of a sandbox request (about ten years).
MAX_RANGE_DAYS: Final = 3660
#: Calendar days of an evaluation or dark-index request (about twenty years).
MAX_EVAL_RANGE_DAYS: Final = 7320
#: Tickers in an explicit evaluation universe.
MAX_UNIVERSE_TICKERS: Final = 500
#: Bytes of an uploaded membership file.
MAX_MEMBERSHIP_BYTES: Final = 2_000_000
#: Characters of the whole query string (the 30 KB URL of the adversarial run is refused).
MAX_QUERY_LENGTH: Final = 16_000

#: Charts rendered at once (matplotlib is CPU-bound; more threads only queue on the GIL).
RENDER_WORKERS: Final = 2
#: Chart renders waiting for a worker before new ones are refused with 503.
RENDER_QUEUE: Final = 4
#: Seconds a chart request waits for a free slot before 503.
RENDER_QUEUE_TIMEOUT_S: Final = 5.0
#: Seconds a chart may take before the request is answered 504.
RENDER_TIMEOUT_S: Final = 30.0
#: Evaluations running at once (each in its own process) and kept for polling.
EVAL_WORKERS: Final = 1
EVAL_KEEP: Final = 20
#: Seconds one evaluation may run before its process is stopped.
EVAL_TIMEOUT_S: Final = 900.0
