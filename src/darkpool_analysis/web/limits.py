"""Bounds on the work one web request may ask for (issue 10 item 7).

Every request is checked against these before any data is read, so a hostile or careless URL
(1,000 formulas, a century of dates) is answered with a clear 4xx instead of tying up the
server. Formula *length* reuses :data:`darkpool_analysis.formulas.MAX_EXPRESSION_LENGTH`; the
count, variants and date span are web-specific (the CLI user owns their own machine).
"""

from __future__ import annotations

from typing import Final

from darkpool_analysis.formulas import MAX_EXPRESSION_LENGTH

#: User formulas per request (``name=expression`` lines).
MAX_FORMULAS: Final = 8
#: Characters of one ``name=expression`` line (name, ``=`` and the expression).
MAX_FORMULA_LINE: Final = MAX_EXPRESSION_LENGTH + 70
#: Variants named in one request (registry names and formulas together).
MAX_VARIANTS: Final = 12
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
