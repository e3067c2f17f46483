"""darkpool-analysis: FINRA off-exchange data -> daily accumulation/distribution signals.

FINRA short-sale volume is a *proxy* for dealer-filled customer buying (SqueezeMetrics'
"Short is Long" thesis), never observed buying, and it is not short interest.
"""

from __future__ import annotations


def __getattr__(name: str) -> str:
    """``__version__`` on first use (importlib.metadata costs a CLI cold start ~0.1 s)."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("darkpool-analysis")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "0.0.0+unknown"


__all__ = ["__version__"]
