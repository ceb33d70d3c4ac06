"""``python -m benchmarks``: run the suite, print a table, write JSON (see docs/benchmarks.md).

    python -m benchmarks                 # the full suite on EWT dev (2,001 sentences)
    python -m benchmarks --quick         # a few sentences of every section (a smoke run)
    python -m benchmarks --only ingestion,storage --out results.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

SECTIONS = ("ingestion", "storage", "fidelity", "classify", "scale", "baseline")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few sentences, one repetition: a smoke run")
    ap.add_argument("--sentences", type=int, default=None, help="sentences for ingestion/storage (default 2001)")
    ap.add_argument("--fidelity-sentences", type=int, default=None, help="sentences for the k/min-mass grid (default 500)")
    ap.add_argument("--scale-base", type=int, default=None, help="sentences at 1x for the scale test (default 125)")
    ap.add_argument("--corpus", type=Path, default=None, help="CoNLL-U corpus (default: UD EWT dev)")
    ap.add_argument("--model", default=None, help="model folder or name (default: the bundled all-MiniLM-L6-v2)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--reps", type=int, default=None, help="interleaved repetitions of each timing (default 2)")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {', '.join(SECTIONS)}")
    ap.add_argument("--no-text", action="store_true", help="skip the raw-text (spaCy) ingestion")
    ap.add_argument("--workdir", type=Path, default=None, help="where the benchmark databases go, kept (default: a temporary folder, removed at exit)")
    ap.add_argument("--out", type=Path, default=Path("benchmark-results.json"), help="JSON results file")
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from benchmarks import sections as S
    from benchmarks.common import EWT_DEV, machine, scratch_dir
    from headdb.resources import sample_corpus

    corpus = args.corpus or (EWT_DEV if EWT_DEV.exists() else sample_corpus())
    n = args.sentences or (40 if args.quick else 2001)
    nf = args.fidelity_sentences or (20 if args.quick else 500)
    base = args.scale_base or (8 if args.quick else 125)
    reps = args.reps or (1 if args.quick else 2)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections: {', '.join(sorted(unknown))}")
    work = args.workdir or scratch_dir("headdb-bench-")  # a temporary one is removed at exit
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": machine(), "corpus": str(corpus), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                     "args": {k: str(v) for k, v in vars(args).items()}}

    def save() -> None:
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")

    def section(name, fn, *a, **kw):
        if name not in only:
            return None
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        results[name] = fn(*a, **kw)
        results[name]["section_seconds"] = round(time.perf_counter() - t0, 1)
        save()
        return results[name]

    ing = section("ingestion", S.ingestion, work, corpus, n, reps, args.batch_size, args.model, args.device,
                  args.dtype, text=not args.no_text)
    if "storage" in only:
        db = Path(ing["conllu"]["db"]) if ing else None
        if db is None:
            from headdb.ingest import ingest

            db = work / "storage.db"
            sub = __import__("benchmarks.common", fromlist=["x"]).corpus_prefix(corpus, n, work / "storage.conllu",
                                                                                   repeat=False)
            ingest(db, sub, model=args.model, batch_size=args.batch_size)
        section("storage", S.storage, db, work)
    section("fidelity", S.fidelity, work, corpus, nf, args.batch_size, args.model)
    if "classify" in only:
        def classify_ewt() -> dict:
            if not S.classify_available():
                return {"skipped": "headdb.classify is not available yet"}
            db = Path(ing["conllu"]["db"]) if ing else None
            if db is None:
                return {"skipped": "needs the ingestion section's store"}
            secs, _ = S.classify_run(db, 1)
            return {"sentences": n, "classify_s": secs}
        section("classify", classify_ewt)
    section("scale", S.scale, work, corpus, base, args.batch_size, args.model)
    section("baseline", S.research_baseline, work, corpus, nf, args.batch_size, args.model)
    save()
    print(render(results))
    print(f"\nresults: {args.out}   machine: {results['machine']['cpu']} x{results['machine']['cores']}")
    return 0


def _f(v, digits=2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def render(r: dict) -> str:
    """The results as a Markdown table (what docs/benchmarks.md shows)."""
    lines = ["| measure | value | target |", "| --- | --- | --- |"]
    add = lambda m, v, t="": lines.append(f"| {m} | {v} | {t} |")  # noqa: E731
    ing = r.get("ingestion")
    if ing:
        for name, target in (("conllu", ">= 0.75"), ("text", ">= 0.55")):
            if name in ing:
                x = ing[name]
                add(f"ingestion {name}: end-to-end / forward-only sentences/s",
                    f"{x['end_to_end_sps']:.1f} / {x['forward_only_sps']:.1f} = **{x['ratio']:.2f}**", target)
                if x.get("ratio_of_pairs") and len(x["ratio_of_pairs"]) > 1:
                    add(f"ingestion {name}: each ingest / the forward-only pass before it (median; all)",
                        f"{x['ratio_median_of_pairs']:.2f} ({', '.join(f'{v:.2f}' for v in x['ratio_of_pairs'])})")
                if x.get("forward_to_last_map_sps"):
                    packed = " (real tokens only)" if x.get("forward_packed") else ""
                    add(f"ingestion {name}: end-to-end / the forward stopped at the last attention map{packed}",
                        f"{x['end_to_end_sps']:.1f} / {x['forward_to_last_map_sps']:.1f} = {x['ratio_to_last_map']:.2f}")
    st = r.get("storage")
    if st:
        add(f"storage: bytes per edge, edges table (k={st['top_k']}), float32 weights", f"{st['edges_table_bytes_per_edge']:.2f}",
            "<= 3.5")
        if "edges_table_bytes_per_edge_16bit" in st:
            add(f"storage: bytes per edge, edges table (k={st['top_k']}), `--weight-bits 16`",
                f"**{st['edges_table_bytes_per_edge_16bit']:.2f}**", "<= 3.5")
        add("storage: bytes per edge, whole file, float32 / 16-bit weights",
            f"{st['file_bytes_per_edge']:.2f} / {_f(st.get('file_bytes_per_edge_16bit'))}")
        if st.get("entropy_bits"):
            e = st["entropy_bits"]
            add("storage: lossless floor, order-0 entropy of weight (exponent + 23 mantissa bits) and key_pos",
                f"({e['weight_exponent']:.2f} + {e['weight_mantissa_bits_sum']:.2f} + {e['key_pos']:.2f}) bits"
                f" = {e['floor_bytes_per_edge']:.2f} B/edge")
        add("storage: file / dense float16 copy", f"{st['file_bytes'] / 1e6:.1f} MB / {st['dense_fp16_bytes'] / 1e6:.1f} MB"
            f" = {st['file_vs_dense_fp16']:.3f}")
    fi = r.get("fidelity")
    if fi and "grid" in fi:
        for row in fi["grid"]:
            bits = "" if row.get("weight_bits", 32) == 32 else f" weight-bits={row['weight_bits']}"
            add(f"fidelity k={row['top_k']} min-mass={row['min_mass']}{bits}: decisions equal to dense, max score dev",
                f"{100 * row['agree_share']:.2f}% , {_f(row['max_sentence_score_dev'], 4)} ({row['edges']} edges)", ">= 99%")
    elif fi:
        add("fidelity", fi.get("skipped", "-"))
    cl = r.get("classify")
    if cl:
        add("classify EWT store (s)", _f(cl.get("classify_s")) if "classify_s" in cl else cl.get("skipped"), "<= 2")
    sc = r.get("scale")
    if sc:
        for row in sc["rows"]:
            add(f"scale {row['factor']}x ({row['sentences']} sentences): ingest s, peak RSS MiB, classify s",
                f"{row['ingest_s']:.1f}, {row['ingest_peak_rss_mib']:.0f}, {_f(row.get('classify_s'))}")
        add("scale: time per sentence 16x/1x (ingest, classify)",
            f"{sc['ingest_time_per_sentence_ratio_16x_vs_1x']:.2f}, {_f(sc.get('classify_time_per_sentence_ratio_16x_vs_1x'))}",
            "within 10%")
        if "ingest_marginal_slope_ratio" in sc:
            add("scale: marginal time per sentence, 4x->16x over 1x->4x (ingest, classify)",
                f"{_f(sc['ingest_marginal_slope_ratio'])}, {_f(sc.get('classify_marginal_slope_ratio'))}", "1 +- 0.10")
        if "ingest_marginal_slope_ratio_64" in sc:
            add("scale: marginal time per sentence, 16x->64x over 4x->16x (ingest, classify)",
                f"{_f(sc['ingest_marginal_slope_ratio_64'])}, {_f(sc.get('classify_marginal_slope_ratio_64'))}",
                "1 +- 0.10")
        add("scale: ingest peak RSS 16x/1x", f"{sc['ingest_rss_ratio_16x_vs_1x']:.2f}", "flat")
        if "ingest_rss_ratio_64x_vs_16x" in sc:
            add("scale: ingest peak RSS 64x/16x", f"{sc['ingest_rss_ratio_64x_vs_16x']:.2f}", "flat")
    bl = r.get("baseline")
    if bl:
        add("research loops over dense maps (s)", _f(bl["python_loops_s"]))
        for name in ("k8", "dense"):
            if f"speedup_{name}" in bl:
                add(f"SQL classify on the {name} store: s, times faster", f"{bl[f'sql_classify_{name}_s']:.2f}, "
                    f"**{bl[f'speedup_{name}']:.1f}x**")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
