"""Symbol spellings across FINRA/CQS, Polygon and Yahoo map to one normalised form."""

from __future__ import annotations

import numpy as np
import pytest

from darkpool_analysis.symbols import normalise, normalise_array, to_feed


@pytest.mark.parametrize(
    ("cqs", "norm", "yahoo", "polygon"),
    [
        ("GME", "GME", "GME", "GME"),
        ("BRK/B", "BRK.B", "BRK-B", "BRK.B"),
        ("RDS/A", "RDS.A", "RDS-A", "RDS.A"),
        ("ABRpD", "ABR.PR.D", "ABR-PD", "ABRpD"),
        ("ABRp", "ABR.PR", "ABR-P", "ABRp"),
        ("AACT/WS", "AACT.WS", "AACT-WS", "AACT.WS"),
        ("AACT/U", "AACT.U", "AACT-U", "AACT.U"),
    ],
)
def test_round_trips(cqs: str, norm: str, yahoo: str, polygon: str) -> None:
    assert normalise(cqs) == norm
    assert to_feed(norm, "cqs") == cqs
    assert to_feed(norm, "yahoo") == yahoo
    assert to_feed(norm, "polygon") == polygon
    assert normalise(yahoo, feed="yahoo") == norm
    assert normalise(polygon, feed="polygon") == norm


def test_preferreds_and_warrants_are_not_folded_into_the_common() -> None:
    assert len({normalise(s) for s in ["ABR", "ABRpD", "ABRpE", "ABR/WS"]}) == 4


def test_vectorised_matches_scalar() -> None:
    raw = np.array(["A", "BRK/B", "ABRpD", "AACT/WS", "ZYXI", "BRK/B"], dtype=object)
    assert list(normalise_array(raw)) == [normalise(s) for s in raw]
