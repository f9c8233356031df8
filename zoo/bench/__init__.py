"""``zoo bench``: is a zoo layer as fast as the layer you would write by hand?

Every variant is timed at the workloads its spec's :class:`zoo.BenchSpec` names, against
the baseline that spec gives (the same mathematics on the same weights, written by hand:
one ``scaled_dot_product_attention`` call for an attention variant), interleaved in the
same process, forward and forward+backward, float32 and bfloat16;
peak memory is measured in fresh processes; then the system checks (dispatch
overhead, import time, memory scaling, GFLOP/s against peak matmul). The table goes
to stdout, progress to stderr, the JSON (schema in :mod:`zoo.bench.report`) to
``benchmarks/results/cpu.json`` when run from the repository, or to ``--json PATH``.

The command line is :mod:`zoo.bench.cli`; the runner :mod:`zoo.bench.runner`.
"""

from __future__ import annotations
