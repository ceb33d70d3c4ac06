"""The report: figures and tables of one run's classification (and optionally a comparison).

Rendering only: everything shown is re-read from the database through the analysis and compare
functions. Writes ``report.html`` (self-contained: figures embedded as base64 PNG, no external
scripts, styles or fonts, so it opens offline), every figure as PNG and SVG under ``figures/``,
and ``summary.md``. matplotlib is imported here only, with the Agg backend.
Layers and heads are 0-based throughout.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from headdb import analysis
from headdb.analysis import DbLike, open_db
from headdb.db import memory_limit_mb
from headdb.errors import DatabaseError, InputError, count, yes_no
from headdb.progress import takes_progress
from headdb.resources import model_label
from headdb.store import resolve_run

NUMBERING = "Layers and heads are 0-based."


@dataclass
class Report:
    """What :func:`report` wrote."""

    out_dir: Path
    html: Path
    markdown_path: Path
    markdown: str
    figures: list[Path] = field(default_factory=list)  # PNG and SVG files


@dataclass
class _Figure:
    name: str
    title: str
    caption: str
    png: bytes


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import logging

    import matplotlib.pyplot as plt

    # a font cache that lacks matplotlib's own fonts (left by another installation) makes every
    # figure log "findfont: ... not found. Falling back to DejaVu Sans", which is what it uses anyway
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)

    plt.rcParams.update({"svg.hashsalt": "headdb", "font.size": 9, "axes.titlesize": 10,
                         "figure.dpi": 100, "savefig.bbox": "tight"})
    return plt


def _grid_size(n_rows: int, n_cols: int) -> tuple[float, float]:
    return max(4.8, 1.9 + 0.55 * n_cols), max(2.6, 1.3 + 0.42 * n_rows)


def _text_colour(rgba) -> str:
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def _fmt(v: float) -> str:
    if not np.isfinite(v):
        return ""
    a = abs(v)
    if 0 < a < 0.005:  # a small difference, significant as it may be, is not shown as 0.00
        return f"{v:.1g}"
    return f"{v:.0f}" if a >= 100 else f"{v:.1f}" if a >= 1 or a == 0 else f"{v:.2f}"


def _matrix_figure(plt, values: np.ndarray, *, title: str, xlabel: str, ylabel: str, cbar: str, cmap: str,
                   norm=None, xticks: Sequence[str] | None = None, yticks: Sequence[str] | None = None,
                   marks: np.ndarray | None = None, suffix: np.ndarray | None = None, integer: bool = False,
                   note: str = NUMBERING, labels: np.ndarray | None = None):
    """``labels``: the numbers written in the cells where ``values`` (the colours) are clipped, or
    missing: a cell without a colour (grey) still shows its label where it has one."""
    n_rows, n_cols = values.shape
    w, h = _grid_size(n_rows, n_cols)
    if xticks is not None:
        h += 0.06 * max(len(str(t)) for t in xticks)
    fig, ax = plt.subplots(figsize=(w, h))
    cm = plt.get_cmap(cmap).copy()
    cm = cm.with_extremes(bad="#dddddd")
    shown = np.ma.masked_invalid(values.astype(float))
    if integer and norm is None:  # counts of heads from 0: a lone count of 0 (or 2) was drawn mid-scale
        from matplotlib.colors import Normalize

        norm = Normalize(0, max(1.0, float(shown.max()) if shown.count() else 1.0))
    im = ax.imshow(shown, cmap=cm, norm=norm, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(n_cols), labels=xticks if xticks is not None else [str(i) for i in range(n_cols)],
                  rotation=45 if xticks is not None else 0, ha="right" if xticks is not None else "center")
    ax.set_yticks(range(n_rows), labels=yticks if yticks is not None else [str(i) for i in range(n_rows)])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    size = 7 if n_cols > 8 else 8
    for i in range(n_rows):
        for j in range(n_cols):
            v = values[i, j]
            number = v if labels is None else labels[i, j]
            if not np.isfinite(number):
                continue
            text = str(int(number)) if integer else _fmt(float(number))
            if suffix is not None and suffix[i, j]:
                text += suffix[i, j]
            colour = _text_colour(im.cmap(im.norm(v)) if np.isfinite(v) else cm.get_bad())
            ax.text(j, i, text, ha="center", va="center", fontsize=size, color=colour,
                    fontweight="bold" if marks is not None and marks[i, j] else "normal")
            if marks is not None and marks[i, j]:
                from matplotlib.patches import Rectangle

                ax.add_patch(Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False, edgecolor="white", lw=3.0))
                ax.add_patch(Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False, edgecolor="black", lw=1.4))
    from matplotlib.colors import LogNorm

    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    if integer:  # counts of heads: a bar of 0 to 1 was ticked 0.2, 0.4, ... heads
        from matplotlib.ticker import MaxNLocator

        cb.locator = MaxNLocator(integer=True)
        cb.update_ticks()
    elif not isinstance(im.norm, LogNorm):
        # each tick its own number: the bar of a difference of 1e-4 (or none) put a "1e-6" multiplier
        # above it, over the end of the title
        from matplotlib.ticker import FuncFormatter

        cb.formatter = FuncFormatter(lambda v, _: f"{v:g}")
        cb.update_ticks()
    cb.set_label(_fit_label(cbar, h))
    if note:
        fig.text(0.01, 0.005, note, fontsize=7, color="#444444", ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def _fit_label(label: str, fig_height: float) -> str:
    """A colour bar's label in lines no longer than the bar (about fig_height - 1 inch at 9 pt,
    0.075 inch a character): a long one ran past a short grid's bar into the footnote."""
    import textwrap

    return "\n".join(textwrap.wrap(label, max(12, int((fig_height - 1.0) / 0.075))))


def _save(plt, fig, name: str, fig_dir: Path, written: list[Path]) -> bytes:
    png_path, svg_path = fig_dir / f"{name}.png", fig_dir / f"{name}.svg"
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150)
    png_path.write_bytes(buf.getvalue())
    fig.savefig(svg_path, format="svg", metadata={"Date": None})
    plt.close(fig)
    written += [png_path, svg_path]
    return buf.getvalue()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _score_figures(plt, con, run_id: int, roles: list[str], fig_dir: Path, written: list[Path]) -> list[_Figure]:
    from matplotlib.colors import LogNorm

    out = []
    for role in roles:
        mean = analysis.head_grid(con, run_id, role, "mean").to_numpy(float)
        # a head with a mean but no test (fewer than two scores, or no spread at tau) is grey, as
        # the note says of untested heads; it was coloured like a tested one
        tested = np.isfinite(analysis.head_grid(con, run_id, role, "p").to_numpy(float))
        sig = analysis.head_grid(con, run_id, role, "significant").fillna(False).to_numpy(bool)
        # as classify's table marks them: heads whose decision the sparse storage's bound could flip
        flip = analysis.head_grid(con, run_id, role, "flip_possible").fillna(False).to_numpy(bool)
        tau = con.execute("SELECT min(tau) FROM head_tests WHERE run_id = ? AND role = ?", [run_id, role]).fetchone()[0]
        finite = mean[np.isfinite(mean) & (mean > 0)]
        lo = max(0.05, float(finite.min())) if finite.size else 0.1
        hi = max(float(finite.max()) if finite.size else 1.0, tau * 1.05, lo * 1.5)
        fig = _matrix_figure(
            plt, np.where(tested & np.isfinite(mean), np.clip(mean, lo, None), np.nan),
            title=f"{role}: mean sieve bias score per head ({int(sig.sum())} of {count(sig.size, 'head')} significant)",
            xlabel="head (0-based)", ylabel="layer (0-based)",
            cbar="mean score (log scale; 1 = uniform attention)", cmap="viridis", norm=LogNorm(lo, hi), marks=sig,
            labels=mean,  # the colour of a score below the scale's floor, the number its own
            suffix=np.where(flip, "~", ""),
            note=f"{NUMBERING} Boxed, bold: heads with the role (one-sided t-test of mean score > tau = {tau:g}, "
                 "corrected p below alpha). Grey: not tested (its number, if any, is its mean)."
                 + (" ~: the sparse storage's bound could flip the decision." if flip.any() else ""))
        png = _save(plt, fig, f"heatmap_{_safe(role)}", fig_dir, written)
        out.append(_Figure(f"heatmap_{_safe(role)}", f"{role}: mean score per head",
                           f"Mean score per layer and head; significant heads boxed (tau = {tau:g})"
                           + ("; ~ marks heads whose decision the sparse storage's bound could flip"
                              if flip.any() else "") + f". {NUMBERING}",
                           png))
    return out


def _analysis_figures(plt, con, run_id: int, roles: list[str], n_heads: int, fig_dir: Path,
                      written: list[Path]) -> list[_Figure]:
    out = []
    dist = analysis.layer_distribution(con, run_id, roles)
    m = dist.pivot(index="role", columns="layer", values="n_significant").reindex(index=roles)
    # a layer where no head of a role was tested (block on single sentences) has no count: its 0
    # read as 12 heads tested and none found, as the heatmaps' grey does not
    tested = dist.pivot(index="role", columns="layer", values="n_tested").reindex(index=roles)
    m = m.where(tested.fillna(0) > 0)
    untested = " Grey: no head of the role tested in the layer." if m.isna().to_numpy().any() else ""
    fig = _matrix_figure(plt, m.to_numpy(float), title=f"Layer distribution: heads with each role per layer (of {n_heads})",
                         xlabel="layer (0-based)", ylabel="role", cbar="heads with the role", cmap="Blues",
                         yticks=roles, integer=True, note=NUMBERING + untested)
    out.append(_Figure("layer_distribution", "Layer distribution",
                       f"Number of significant heads per role and layer, out of {count(n_heads, 'head')} per layer."
                       f"{untested} {NUMBERING}",
                       _save(plt, fig, "layer_distribution", fig_dir, written)))
    co = analysis.colocation_matrix(con, run_id, roles)
    # a role without any test has no co-location with any role (not 0 heads of both)
    none_tested = [r for r in co.index if r not in tested.index or not (tested.loc[r].fillna(0) > 0).any()]
    co = co.astype(float)
    co.loc[none_tested, :] = np.nan
    co.loc[:, none_tested] = np.nan
    untested = " Grey: a role without a test." if none_tested else ""
    fig = _matrix_figure(plt, co.to_numpy(float), title="Co-location: heads having both roles",
                         xlabel="role", ylabel="role", cbar="heads with both roles", cmap="Greens",
                         xticks=roles, yticks=roles, integer=True,
                         note="The diagonal is the number of heads with the role." + untested)
    out.append(_Figure("colocation", "Co-location of roles",
                       "Number of heads that have both roles; the diagonal counts the heads with each role." + untested,
                       _save(plt, fig, "colocation", fig_dir, written)))
    summ = analysis.role_summary(con, run_id, roles)
    fig, ax = plt.subplots(figsize=(7.6, max(2.2, 0.9 + 0.32 * len(roles))))
    y = np.arange(len(summ))
    ax.barh(y, summ["n_tested"], color="#dddddd", label="tested")
    ax.barh(y, summ["n_significant"], color="#2c7fb8", label="significant")
    for i, (s, t) in enumerate(zip(summ["n_significant"], summ["n_tested"])):
        ax.text(t, i, f" {s} / {t}", va="center", fontsize=8)
    ax.set_yticks(y, labels=list(summ["role"]))
    ax.invert_yaxis()
    ax.set_xlabel("heads")
    ax.set_ylabel("role")
    ax.set_xlim(0, max(float(summ["n_tested"].max()), 1.0) * 1.2)  # roles without a test: no 0-wide axis
    ax.set_title("Heads with each role (significant of tested)")
    # beside the axes: inside them it covered the "s / t" label of a bar that reaches the end
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    out.append(_Figure("summary", "Heads per role", "Significant heads of all heads tested, per role.",
                       _save(plt, fig, "summary", fig_dir, written)))
    return out


def _compare_figures(plt, cmp: pd.DataFrame, fig_dir: Path, written: list[Path],
                     skip: Sequence[str] = ()) -> list[_Figure]:
    from matplotlib.colors import TwoSlopeNorm

    out = []
    a, b = cmp.attrs["run_name_a"], cmp.attrs["run_name_b"]
    if cmp.attrs["basis"] != "paired":
        roles = list(dict.fromkeys(cmp["role"]))
        m = cmp.pivot(index="role", columns="layer", values="change").reindex(index=roles).to_numpy(float, na_value=np.nan, copy=True)
        # a layer only the deeper run has is no change: its count against nothing read as heads lost or gained
        (la, _), (lb, _) = cmp.attrs["shape_a"], cmp.attrs["shape_b"]
        m[:, min(la, lb):] = np.nan
        lo, hi = min(la, lb), max(la, lb) - 1
        deeper = "" if la == lb else (f" Grey: {f'layers {lo}-{hi}' if hi > lo else f'layer {lo}'} only "
                                      f"{a if la > lb else b} has ({la} against {lb} layers).")
        lim = max(1.0, float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 1.0)
        fig = _matrix_figure(plt, m, title=f"Change in heads with each role per layer ({b} minus {a})",
                             xlabel="layer (0-based)", ylabel="role", cbar="heads with the role: B - A", cmap="RdBu_r",
                             norm=TwoSlopeNorm(0, -lim, lim), yticks=roles, integer=True,
                             note="Shapes differ: per-layer role counts only." + deeper + " " + NUMBERING)
        out.append(_Figure("difference_layer_counts", "Change in per-layer role counts", cmp.attrs["note"],
                           _save(plt, fig, "difference_layer_counts", fig_dir, written)))
        return out
    n_layers, n_heads = cmp.attrs["shape_a"]
    for role in cmp.attrs["roles"]:
        r = cmp[cmp["role"] == role]
        if role in skip or not r["mean_diff"].notna().any():
            continue
        diff = np.full((n_layers, n_heads), np.nan)
        changed = np.zeros((n_layers, n_heads), bool)
        suffix = np.full((n_layers, n_heads), "", dtype=object)
        for row in r.itertuples(index=False):
            diff[row.layer, row.head] = row.mean_diff
            changed[row.layer, row.head] = bool(row.changed)
            suffix[row.layer, row.head] = {"gained": "+", "lost": "\u2212"}.get(row.role_change, "")
        fin = np.abs(diff[np.isfinite(diff)])
        lim = max(float(fin.max()) if fin.size else 0.0, 1e-6)
        fig = _matrix_figure(
            plt, diff, title=f"{role}: mean score change ({b} minus {a}); {count(int(changed.sum()), 'head')} changed",
            xlabel="head (0-based)", ylabel="layer (0-based)", cbar="mean score difference (B - A)", cmap="RdBu_r",
            norm=TwoSlopeNorm(0, -lim, lim), marks=changed, suffix=suffix,
            note=f"{NUMBERING} Boxed: paired t-test significant ({cmp.attrs['correction']}, "
                 f"alpha {cmp.attrs['alpha']}). +: role gained, \u2212: role lost.")
        name = f"difference_{_safe(role)}"
        out.append(_Figure(name, f"{role}: change from {a} to {b}",
                           f"Mean score difference per head; boxed heads changed significantly; + gained, "
                           f"\u2212 lost the role. {NUMBERING}", _save(plt, fig, name, fig_dir, written)))
    return out


def _colocation_change_figure(plt, con, co: pd.DataFrame, fig_dir: Path, written: list[Path]) -> _Figure:
    """The change in the co-location of roles (B - A) as a role x role heatmap, both triangles;
    grey, as in the co-location figure, for a role without a test in either run."""
    from matplotlib.colors import TwoSlopeNorm

    a, b = co.attrs["run_name_a"], co.attrs["run_name_b"]
    roles = list(co.attrs["roles"])
    at = {r: i for i, r in enumerate(roles)}
    m = np.zeros((len(roles), len(roles)))
    for x, y, change in zip(co["role_a"], co["role_b"], co["change"]):
        m[at[x], at[y]] = m[at[y], at[x]] = change
    tested = {r for (r,) in con.execute(
        "SELECT role FROM head_tests WHERE run_id IN (?, ?) AND list_contains(?, role) GROUP BY role "
        "HAVING count(p) FILTER (WHERE run_id = ?) > 0 AND count(p) FILTER (WHERE run_id = ?) > 0",
        [co.attrs["run_a"], co.attrs["run_b"], roles, co.attrs["run_a"], co.attrs["run_b"]]).fetchall()}
    untested = [at[r] for r in roles if r not in tested]
    m[untested, :] = np.nan
    m[:, untested] = np.nan
    fin = np.abs(m[np.isfinite(m)])
    lim = max(1.0, float(fin.max()) if fin.size else 1.0)
    fig = _matrix_figure(plt, m, title=f"Change in co-location: heads having both roles ({b} minus {a})",
                         xlabel="role", ylabel="role", cbar="heads with both roles: B - A", cmap="RdBu_r",
                         norm=TwoSlopeNorm(0, -lim, lim), xticks=roles, yticks=roles, integer=True,
                         note="The diagonal is the change in the number of heads with the role."
                         + (" Grey: a role without a test in one of the runs." if untested else "") + (
                             "" if co.attrs["basis"] == "paired" else
                             f" Shapes differ: {co.attrs['shape_a'][0]}x{co.attrs['shape_a'][1]} against "
                             f"{co.attrs['shape_b'][0]}x{co.attrs['shape_b'][1]} heads."))
    return _Figure("colocation_change", "Change in co-location of roles",
                   f"Heads having both roles in {b} minus those in {a}; the diagonal is the change in the heads with "
                   "each role. The table gives the heads that gained and lost each pair.",
                   _save(plt, fig, "colocation_change", fig_dir, written))


def _md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)


def _cell(v) -> str:
    if v is pd.NA:  # a count with no answer (a change of a layer one run lacks) is blank, as NaN is
        return ""
    if isinstance(v, (float, np.floating)):
        return "" if not np.isfinite(v) else f"{v:.3g}"
    return str(v)


def _html_table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #444; } .note { background: #fff8dc; padding: 0.5em 0.8em; }
"""


#: relations (besides "all") in the markdown summary's accuracy table; the HTML has every one
ACCURACY_MD_RELATIONS = 6


def _accuracy_table(con, run_id: int, wanted: bool | None,
                    progress: Callable[[int, int], None] | None = None) -> pd.DataFrame | None:
    """The syntactic head accuracy of the run (headdb.accuracy), or None: ``wanted`` None means
    when the sentences the run stored have dependency relations, True always (an error without them).
    ``progress`` is accuracy's (:func:`headdb.accuracy.head_accuracy`)."""
    from headdb.accuracy import accuracy as syntactic_accuracy

    if wanted is False:
        return None
    # the words of the sentences the run stored: a run that skipped every sentence as over-long, or
    # whose --limit kept only sentences of one word, has none to judge in a corpus with syntax
    has_syntax = con.execute(
        "SELECT count(*) > 0 FROM words w JOIN runs r ON r.corpus_id = w.corpus_id "
        "JOIN run_sentences s ON s.run_id = r.run_id AND s.sentence_id = w.sentence_id "
        "WHERE r.run_id = ? AND s.status <> 'skipped' AND w.head_word_pos IS NOT NULL", [run_id]).fetchone()[0]
    if not has_syntax:
        if wanted:
            from headdb.accuracy import why_no_dependency_edges

            raise InputError(why_no_dependency_edges(con, run_id)
                             or f"run {run_id} has no dependency relations, so no syntactic head accuracy "
                             "(no word of its corpus has a head word: a CoNLL-U file whose HEAD column is `_`, "
                             "or sentences of one word; text and TSV pairs are parsed by spaCy)")
        return None
    acc = syntactic_accuracy(con, run_id, progress=progress)
    shown = acc.assign(best_head=[f"L{r.layer} H{r.head}" for r in acc.itertuples()])
    shown = shown[["relation", "direction", "n_report", "best_head", "accuracy", "baseline_offset",
                   "baseline_accuracy", "n_select", "select_accuracy"]]
    shown.attrs = dict(acc.attrs)  # the storage and the edges left out, for the section's note
    return shown


def _remove_stale_staging(out_dir: Path) -> None:
    """Remove the figure folders of killed reports (``.figures-PID.tmp`` of a process that is gone):
    named by their process, a later report never met them, and they stayed for good."""
    import shutil

    from headdb.db import process_gone

    for folder in out_dir.glob(".figures-*.tmp") if out_dir.is_dir() else ():
        try:
            pid = int(folder.name[len(".figures-"):-len(".tmp")])
        except ValueError:  # not a name of ours
            continue
        if process_gone(pid):
            shutil.rmtree(folder, ignore_errors=True)


@takes_progress("accuracy")
def report(db: DbLike, run: int | str | None = None, out: str | Path = "report", *,
           compare: int | str | None = None, roles: Sequence[str] | str | None = None,
           correction: str = "bh", alpha: float = 0.05, accuracy: bool | None = None,
           progress: Callable[[int, int], None] | bool | None = None) -> Report:
    """Write the report of ``run`` (default: the latest finished) into the folder ``out``.

    With ``compare=RUN_B`` the report adds the comparison of RUN_B against ``run`` (difference
    heatmaps, roles gained and lost, per-layer profile). ``accuracy`` adds the syntactic head
    accuracy (Clark et al. 2019, :func:`headdb.accuracy.accuracy`): by default when the
    sentences the run stored have dependency relations; ``progress(done, total)`` counts its
    ranges of sentences (:func:`headdb.accuracy.head_accuracy`; True draws a bar on stderr).
    Returns the paths and the markdown summary.

    The figures are drawn into a folder of their own and take the place of ``figures/``'s PNG
    and SVG files only once everything is drawn: a failed report changes nothing in ``out``,
    and a new one leaves no figure of an earlier one behind.
    """
    import os
    import shutil

    from headdb.stats import check_options

    # refused with or without `compare`, as compare refuses them: a report without it took
    # alpha=5 or correction='xx' without a word
    check_options(alpha, correction)
    accuracy = yes_no("accuracy", accuracy, optional=True)
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("the report output must be a folder", out_dir)
    created = not out_dir.exists()
    staging = out_dir / f".figures-{os.getpid()}.tmp"
    _remove_stale_staging(out_dir)
    fig_dir = out_dir / "figures"
    try:
        try:
            run_id, doc, markdown, drawn = _draw(db, run, out_dir, fig_dir, staging, compare=compare, roles=roles,
                                                 correction=correction, alpha=alpha, accuracy=accuracy,
                                                 progress=progress)
        except DatabaseError as exc:  # report(db, "/tmp/out"): the folder given where the run goes
            if isinstance(run, str) and str(exc).startswith(f"no run {run!r}") and ("/" in run or os.sep in run):
                raise DatabaseError(f"{exc}; the second argument is the run: the report's folder is out={run!r}") \
                    from None
            raise
        html_path, md_path = out_dir / "report.html", out_dir / "summary.md"
        written = _put_in_place(staging, drawn, fig_dir, {html_path: doc, md_path: markdown})
        shutil.rmtree(staging, ignore_errors=True)  # the old report's files, moved aside
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        if isinstance(exc, OSError):
            raise _write_error(exc, out_dir) from exc
        raise
    return Report(out_dir, html_path, md_path, markdown, written)


def _put_in_place(staging: Path, drawn: list[Path], fig_dir: Path, texts: dict[Path, str]) -> list[Path]:
    """The report's last step: its new figures (drawn in ``staging``) and files (``texts``) take
    the place of the old report's, which are moved aside into ``staging`` first; where any step
    fails, what was moved in goes and what was moved aside comes back, so the old report stays.
    report.html and summary.md are written into ``staging`` before anything is moved: a full disk
    fails there (the HTML was written last, after the new figures had replaced the old ones, so
    a failed write left the new figures beside the old HTML). Returns the figures' new paths."""
    import shutil

    aside = staging / "old"
    texts_in = []
    for path, text in texts.items():  # the writes that can fail for want of space, before any move
        new = staging / path.name
        new.write_text(text, encoding="utf-8")
        texts_in.append((new, path))
    made_fig_dir = not fig_dir.exists()
    fig_dir.mkdir(exist_ok=True)
    moves: list[tuple[Path, Path]] = []  # (from, to), undone in reverse
    try:
        aside.mkdir()
        for old in [*fig_dir.glob("*.png"), *fig_dir.glob("*.svg"), *(p for p in texts if p.exists())]:
            moves.append((old, old.replace(aside / (old.parent.name + "-" + old.name))))
        written = []
        for new, path in [*((p, fig_dir / p.name) for p in drawn), *texts_in]:
            moves.append((new, new.replace(path)))
            written.append(path)
    except BaseException:
        for source, moved in reversed(moves):
            try:
                moved.replace(source)
            except OSError:  # pragma: no cover - a folder that could be written a moment ago
                pass
        if made_fig_dir:
            shutil.rmtree(fig_dir, ignore_errors=True)
        raise
    return written[:len(drawn)]


def _write_error(exc: OSError, out_dir: Path) -> InputError:
    """A file system error while the report was written, naming the report's folder (and the file,
    where it is another): a full disk said ``error: No space left on device`` alone (a failed
    write names no file), a read-only folder named the report's hidden staging folder."""
    why = exc.strerror or str(exc)
    if exc.filename is not None and Path(exc.filename) != out_dir:
        why += f" ({exc.filename})"
    return InputError(f"cannot write the report: {why}", out_dir)


def _store_arg(db: DbLike) -> str:
    """The store as a command line names it: its path (quoted for a shell where needed), or DB
    for an open connection."""
    from headdb.errors import shell_word

    return shell_word(db) if isinstance(db, (str, Path)) else "DB"


def _draw(db: DbLike, run: int | str | None, out_dir: Path, fig_dir: Path, staging: Path, *,
          compare: int | str | None, roles: Sequence[str] | str | None, correction: str, alpha: float,
          accuracy: bool | None, progress: Callable[[int, int], None] | None = None
          ) -> tuple[int, str, str, list[Path]]:
    """The report's figures, drawn into ``staging``, and its HTML and markdown, which name
    them in ``fig_dir``: (run id, HTML, markdown, the figure files in ``staging``)."""
    from headdb.compare import colocation_profile, layer_profile, role_changes
    from headdb.compare import compare as compare_runs

    plt = _plt()
    written: list[Path] = []
    with open_db(db, memory_limit_mb()) as con:  # DuckDB's cache of the run's blocks capped, as accuracy's
        run_id = resolve_run(con, run, finished=True)
        info = con.execute("SELECT run_name, model, corpus_path, n_layers, n_heads, top_k, dense, weight_bits, pairs "
                           "FROM runs WHERE run_id = ?", [run_id]).fetchone()
        name, model, corpus, n_layers, n_heads, top_k, dense, weight_bits, pairs = info
        model = model_label(model)
        wanted = analysis.select_roles(analysis.classified_roles(con, run_id), roles, f"run {run_id}")
        # the classifications the shown roles' tests come from (several, after a classify --roles)
        cls = con.execute(
            "SELECT c.correction, c.alpha, c.tau_override, c.n_tests, list(DISTINCT t.role ORDER BY t.role) "
            "FROM head_tests t JOIN classifications c USING (classification_id) "
            "WHERE t.run_id = ? AND list_contains(?, t.role) "
            "GROUP BY c.classification_id, c.correction, c.alpha, c.tau_override, c.n_tests "
            "ORDER BY c.classification_id",
            [run_id, wanted]).fetchall()
        staging.mkdir(parents=True, exist_ok=True)  # only once the run and its roles are known to be there
        n_sent = con.execute("SELECT count(*) FROM run_sentences WHERE run_id = ? AND status <> 'skipped'",
                             [run_id]).fetchone()[0]
        summary = analysis.role_summary(con, run_id, wanted)
        # roles no sentence has (block on single inputs) get a table row but no heatmap
        scored = [r for r in wanted if con.execute(
            "SELECT count(mean) FROM head_tests WHERE run_id = ? AND role = ?", [run_id, r]).fetchone()[0]]
        unscored = [r for r in wanted if r not in scored]
        multi = analysis.multi_role_heads(con, run_id, roles=wanted)
        acc = _accuracy_table(con, run_id, accuracy, progress)
        figures = _score_figures(plt, con, run_id, scored, staging, written)
        figures += _analysis_figures(plt, con, run_id, wanted, n_heads, staging, written)
        cmp = None
        if compare is not None:
            cmp = compare_runs(con, run_id, compare, roles=roles, correction=correction, alpha=alpha)
            cmp_figures = _compare_figures(plt, cmp, staging, written, skip=unscored)
            co_change = colocation_profile(con, cmp)
            co_figure = _colocation_change_figure(plt, con, co_change, staging, written)
        else:
            cmp_figures = []

    storage = "dense" if dense else f"top-{top_k} sparse"
    unit = "pair" if pairs else "sentence"  # a pair is one input, as ingest counts it
    if weight_bits == 16:
        storage += " (16-bit weights, rounded down)"
    # a --tau given to classify replaced every role's own (the table's tau column shows it too)
    cls_text = "; ".join(f"correction {c}, alpha {a:g}, " + ("" if t is None else f"tau {t:g} for every role, ")
                         + f"{count(n, 'test')} in the family"
                         + (f" (roles {', '.join(sorted(r, key=wanted.index))})" if len(cls) > 1 else "")
                         for c, a, t, n, r in cls)
    summ = summary[["role", "n_tested", "n_significant", "share_significant", "n_flip_possible", "tau",
                    "mean_score", "max_score"]]
    md = [f"# headdb report: run {run_id} ({name})", "",
          f"- model: `{model}` ({count(n_layers, 'layer')} x {count(n_heads, 'head')} = "
          f"{count(n_layers * n_heads, 'head')})",
          f"- corpus: `{corpus}`, {count(n_sent, unit)}, {storage} attention",
          f"- classification: {cls_text}" if cls_text else "- classification: (none recorded)",
          f"- {NUMBERING}", "", "## Heads per role", "", _md_table(summ), "",
          f"Heads with several roles: {len(multi)}"
          + (" (" + "; ".join(f"L{r.layer} H{r.head}: {r.roles}" for r in multi.head(12).itertuples())
             + ("; ..." if len(multi) > 12 else "") + ")" if len(multi) else ""), ""]
    parts = [f"<h1>headdb report: run {run_id} ({html.escape(str(name))})</h1>",
             "<ul>", f"<li>model: <code>{html.escape(str(model))}</code> ({count(n_layers, 'layer')} &times; "
                     f"{count(n_heads, 'head')})</li>",
             f"<li>corpus: <code>{html.escape(str(corpus))}</code>, {count(n_sent, unit)}, {storage} attention</li>",
             f"<li>classification: {html.escape(cls_text)}</li>" if cls_text else "",
             f"<li><strong>{NUMBERING}</strong></li>", "</ul>",
             "<h2>Heads per role</h2>", _html_table(summ)]
    by_name = {f.name: f for f in figures}

    def fig_html(f: _Figure) -> str:
        data = base64.b64encode(f.png).decode("ascii")
        return (f'<figure id="{f.name}"><img src="data:image/png;base64,{data}" alt="{html.escape(f.title)}">'
                f"<figcaption>{html.escape(f.caption)} Files: figures/{f.name}.png, figures/{f.name}.svg"
                "</figcaption></figure>")

    parts.append(fig_html(by_name["summary"]))
    parts += ["<h2>Layer distribution</h2>", fig_html(by_name["layer_distribution"]),
              "<h2>Co-location</h2>", fig_html(by_name["colocation"]),
              f"<h3>Heads with several roles ({len(multi)})</h3>",
              _html_table(multi[["layer", "head", "n_roles", "roles"]]) if len(multi) else "<p>None.</p>",
              "<h2>Mean score per head, by role</h2>"]
    if unscored:
        parts.append(f"<p>No sentence gives a score for: {html.escape(', '.join(unscored))} "
                     "(no heatmap).</p>")
    parts += [fig_html(f) for f in figures if f.name.startswith("heatmap_")]
    if cmp is not None:
        a = cmp.attrs
        md += [f"## Comparison: run {a['run_b']} ({a['run_name_b']}) against run {a['run_a']} ({a['run_name_a']})", "",
               a["note"], ""]
        parts += [f"<h2>Comparison: run {a['run_b']} ({html.escape(str(a['run_name_b']))}) against run {a['run_a']} "
                  f"({html.escape(str(a['run_name_a']))})</h2>", f'<p class="note">{html.escape(a["note"])}</p>']
        if a["basis"] == "paired":
            parts.append(f"<p>Test: {html.escape(a['test'])}; correction {a['correction']} over all "
                         f"(head, role) tests, alpha {a['alpha']:g}.</p>")
            changes = role_changes(cmp)
            per_role = (cmp.groupby("role", sort=False)
                        .agg(changed=("changed", "sum"), up=("direction", lambda s: int((s == "up").sum())),
                             down=("direction", lambda s: int((s == "down").sum())),
                             gained=("role_change", lambda s: int((s == "gained").sum())),
                             lost=("role_change", lambda s: int((s == "lost").sum())),
                             known=("role_change", lambda s: int((s != "unknown").sum())),
                             mean_diff=("mean_diff", "mean")).reset_index())
            # a role whose role_change is unknown throughout has no count of gained and lost, not 0
            for col in ("gained", "lost"):
                per_role[col] = per_role[col].astype("Int64").where(per_role["known"] > 0, pd.NA)
            per_role = per_role.drop(columns="known")
            md += [_md_table(per_role), ""]
            parts += ["<h3>Per role</h3>", _html_table(per_role),
                      f"<h3>Roles gained and lost ({len(changes)})</h3>",
                      _html_table(changes) if len(changes) else "<p>None.</p>",
                      "<h3>Per-layer profile of change</h3>", _html_table(layer_profile(cmp))]
        else:
            # the summary said only that the shapes differ: the counts were in report.html alone
            per_role = (cmp.groupby("role", sort=False)[["n_significant_a", "n_significant_b", "n_tested_a",
                                                         "n_tested_b"]].sum().reset_index())
            md += [_md_table(per_role), "", "Per layer: report.html.", ""]
            parts += ["<h3>Per-layer role counts</h3>", _html_table(cmp.drop(columns=["basis"]))]
        parts += [fig_html(f) for f in cmp_figures]
        # how the co-location of roles changed, in both bases (gained and lost blank where unknown)
        md += ["### Co-location change (B - A)", "", _md_table(co_change), ""]
        parts += ["<h3>Co-location change</h3>", _html_table(co_change), fig_html(co_figure)]
    if acc is not None:
        from headdb.accuracy import REPORT_SPLIT, SELECTION_SPLIT, storage_notes

        note = (f"Per relation and direction, the head with the best accuracy on the {SELECTION_SPLIT}s, "
                f"and its accuracy on the {REPORT_SPLIT}s (n_report dependency edges), beside the best "
                "fixed-offset baseline chosen the same way. dep->head: the dependent's most-attended word "
                "is its head; head->dep: the word attending most to the dependent is its head (Clark et "
                "al.'s transposed map)."
                + "".join(f" {n[0].upper()}{n[1:]}." for n in storage_notes(acc.attrs)))
        frequent = [r for r in dict.fromkeys(acc["relation"]) if r != "all"][:ACCURACY_MD_RELATIONS]
        top = acc[acc["relation"].isin(["all", *frequent])]
        md += ["## Syntactic head accuracy (Clark et al. 2019)", "", note, ""]
        parts += ["<h2>Syntactic head accuracy (Clark et al. 2019)</h2>", f"<p>{html.escape(note)}</p>"]
        if acc.empty:  # a table of headers alone and "All -1 relations" said nothing of why
            none = (f"No relation has dependency edges in both splits: the run's are all on the "
                    f"{SELECTION_SPLIT}s or all on the {REPORT_SPLIT}s (a run of one sentence has them in one), "
                    "so no head is selected on one and reported on the other.")
            md += [none, ""]
            parts.append(f"<p>{html.escape(none)}</p>")
        else:
            n_relations = acc.loc[acc["relation"] != "all", "relation"].nunique()
            md += [_md_table(top.drop(columns=["n_select", "select_accuracy"])), "",
                   f"All {count(n_relations, 'relation')}: report.html, or "
                   f"`headdb accuracy {_store_arg(db)} --run {run_id} --min-count 1`.", ""]
            parts.append(_html_table(acc))
    md += ["## Files", "", f"- `{out_dir / 'report.html'}` (self-contained)",
           f"- `{fig_dir}/*.png`, `*.svg`: {len(written) // 2} figures"]
    markdown = "\n".join(md) + "\n"
    doc = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
           f"<title>headdb report: run {run_id}</title><style>{_CSS}</style></head><body>\n"
           + "\n".join(p for p in parts if p) + "\n</body></html>\n")
    return run_id, doc, markdown, written


__all__ = ["report", "Report"]
