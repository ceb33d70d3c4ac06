"""headdb: transformer attention as a queryable DuckDB store, with per-head role tests.

The public API. Heavy modules (torch, transformers, spaCy, scipy) load only when used.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

from headdb import errors as errors  # light: `except headdb.errors.HeaddbError` right after `import headdb`

__version__ = "0.1.0"

if TYPE_CHECKING:  # what type checkers read; at run time __getattr__ imports each name when first used
    from headdb.accuracy import accuracy as accuracy
    from headdb.accuracy import head_accuracy as head_accuracy
    from headdb.accuracy import offset_baselines as offset_baselines
    from headdb.analysis import colocation as colocation
    from headdb.analysis import colocation_matrix as colocation_matrix
    from headdb.analysis import layer_distribution as layer_distribution
    from headdb.analysis import multi_role_heads as multi_role_heads
    from headdb.analysis import role_summary as role_summary
    from headdb.classify import classify as classify
    from headdb.compare import colocation_change as colocation_change
    from headdb.compare import compare as compare
    from headdb.compare import compare_layers as compare_layers
    from headdb.db import compact as compact
    from headdb.db import connect as connect
    from headdb.db import engine as engine
    from headdb.db import init as init
    from headdb.ingest import ingest as ingest
    from headdb.query import export as export
    from headdb.query import export_sql as export_sql
    from headdb.query import sql as sql
    from headdb.query import write_sql as write_sql
    from headdb.report import report as report
    from headdb.roles import load_roles as load_roles
    from headdb.scores import scores as scores
    from headdb.store import drop_run as drop_run
    from headdb.store import runs as runs
    from headdb.store import summary as summary

_API = {
    "connect": "headdb.db",
    "init": "headdb.db",
    "engine": "headdb.db",
    "compact": "headdb.db",
    "ingest": "headdb.ingest",
    "runs": "headdb.store",
    "summary": "headdb.store",
    "drop_run": "headdb.store",
    "sql": "headdb.query",
    "export": "headdb.query",
    "export_sql": "headdb.query",
    "write_sql": "headdb.query",
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
    "colocation_change": "headdb.compare",
    "accuracy": "headdb.accuracy",
    "head_accuracy": "headdb.accuracy",
    "offset_baselines": "headdb.accuracy",
    "report": "headdb.report",
}

__all__ = sorted(_API) + ["__version__", "errors"]


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'headdb' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The API's names too, before they are loaded: ``dir(headdb)`` and a notebook's completion."""
    return sorted(set(globals()) | set(_API))


class _Package(types.ModuleType):
    """Keeps API functions that share their module's name (``headdb.ingest``, ``headdb.classify``,
    ``headdb.scores``) callable: importing the submodule would otherwise replace the function
    attribute with the module. The submodule itself stays in ``sys.modules``."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _API.get(name) == value.__name__:
            value = getattr(value, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
