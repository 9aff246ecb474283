"""``eventbusctl bench``: eventbusd's throughput and latency next to a raw pyzmq broker's, in one run.

:func:`run_bench` starts (or, given a socket, uses) a daemon, demo collectors, idle collectors and
client processes, once per durability mode, then the raw baseline, and returns one document with every figure.
"""

from __future__ import annotations

from eventbus.bench.report import ProgressLine, table, unsuccessful
from eventbus.bench.run import DURABILITY_MODES, BenchOptions, run_bench
from eventbus.bench.stats import percentile

__all__ = ["DURABILITY_MODES", "BenchOptions", "ProgressLine", "percentile", "run_bench", "table", "unsuccessful"]
