"""headdb: transformer attention as a queryable DuckDB store, with per-head role tests.

The public API. Heavy modules (torch, transformers, spaCy, scipy) load only when used.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {
    "connect": "headdb.db",
    "init": "headdb.db",
    "engine": "headdb.db",
    "ingest": "headdb.ingest",
    "runs": "headdb.store",
    "summary": "headdb.store",
    "sql": "headdb.query",
    "export": "headdb.query",
    "load_roles": "headdb.roles",
    "scores": "headdb.scores",
    "classify": "headdb.classify",
    "layer_distribution": "headdb.analysis",
    "colocation": "headdb.analysis",
    "colocation_matrix": "headdb.analysis",
    "multi_role_heads": "headdb.analysis",
    "role_summary": "headdb.analysis",
    "compare": "headdb.compare",
    "compare_layers": "headdb.compare",
    "accuracy": "headdb.accuracy",
    "head_accuracy": "headdb.accuracy",
    "offset_baselines": "headdb.accuracy",
    "report": "headdb.report",
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'headdb' has no attribute {name!r}")
