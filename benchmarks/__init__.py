"""headdb's benchmark suite (``python -m benchmarks``; see docs/benchmarks.md).

Not unit tests: nothing here asserts a time. Every ratio is measured within one run.
"""
