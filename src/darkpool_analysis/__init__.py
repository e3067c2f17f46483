"""darkpool-analysis: FINRA off-exchange data -> daily accumulation/distribution signals.

FINRA short-sale volume is a *proxy* for dealer-filled customer buying (SqueezeMetrics'
"Short is Long" thesis), never observed buying, and it is not short interest.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("darkpool-analysis")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
