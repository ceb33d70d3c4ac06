"""``python -m benchmarks.csv_floats``: every float32 whose CSV text headdb takes from pyarrow.

``headdb sql --out x.csv`` writes a float32 as numpy does (``values.astype(str)``, pandas' own
text), except for values in ``headdb.query._ARROW_FLOAT32`` that are not integers, whose text
comes from pyarrow's cast, 7 times as fast. This compares the two on every such value of
either sign (536 M; about 6 minutes a sign on one core) and prints the count of those that
differ, with the first few; it exits 1 if any does. ``--limit N``: the first N of each sign.

    python -m benchmarks.csv_floats                # all of them
    python -m benchmarks.csv_floats --limit 1000000
"""

from __future__ import annotations

import argparse
import sys
import time


def compare(limit: int | None = None, step: int = 1 << 21) -> tuple[int, int, list]:
    """(values compared, values that differ, the first few of those as (value, pyarrow, numpy))."""
    import numpy as np

    from headdb.query import _arrow_float32_bits, _arrow_float32_differs

    low, high = _arrow_float32_bits()
    if limit is not None:
        high = min(high, low + limit)
    checked, differ, examples = 0, 0, []
    for sign in (0, 1 << 31):
        for start in range(low, high, step):
            values = (np.arange(start, min(start + step, high), dtype=np.uint32) | np.uint32(sign)).view(np.float32)
            values = values[values != np.trunc(values)]
            differs = _arrow_float32_differs(values)
            checked += len(values)
            differ += int(differs.sum())
            for value in values[differs][: max(0, 10 - len(examples))]:
                examples.append((repr(value), _arrow_float32_text(value), str(value)))
    return checked, differ, examples


def _arrow_float32_text(value) -> str:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.cast(pa.array(np.float32([value])), pa.large_string())[0].as_py()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.csv_floats", description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="compare the first N values of each sign only")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    checked, differ, examples = compare(args.limit)
    print(f"{checked:,} float32 compared, {differ:,} differ ({time.perf_counter() - started:.0f} s)")
    for value, arrow, numpy in examples:
        print(f"  {value}: pyarrow {arrow!r}, numpy {numpy!r}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
