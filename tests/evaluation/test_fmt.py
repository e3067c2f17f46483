"""Numbers for people: significant digits, separators, units, no raw exponents."""

from __future__ import annotations

import math

from darkpool_analysis.evaluation.fmt import fmt_bps, fmt_ci, fmt_num, fmt_p, fmt_pct


def test_numbers_read_like_a_person_wrote_them() -> None:
    assert fmt_num(-2.621e-19) == "0"
    assert fmt_num(3.2e-9) == "~0"
    assert fmt_num(0.004123) == "0.00412"
    assert fmt_num(-0.0109) == "-0.0109"
    assert fmt_num(7.8812) == "7.88"
    assert fmt_num(123456.7) == "123,457"
    assert fmt_num(1234.5) == "1,234"  # round half to even at 3+ digits
    assert fmt_num(math.inf) == "∞" and fmt_num(math.nan) == "n/a" and fmt_num(None) == "n/a"
    assert fmt_pct(0.5) == "50.0%" and fmt_pct(-0.00123) == "-0.123%"
    assert fmt_bps(-3.14159) == "-3.14 bps"
    assert fmt_p(0.0004) == "<0.001" and fmt_p(0.61234) == "0.612" and fmt_p(math.nan) == "n/a"
    assert fmt_ci(-0.011, 0.019) == "-0.0110 .. 0.0190"
    assert fmt_ci(math.nan, 0.1) == "n/a"
