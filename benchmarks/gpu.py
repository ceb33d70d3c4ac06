"""``python -m benchmarks.gpu``: ingestion speed and where the time goes, on a GPU (or a CPU).

For each model (the default model's shape and a bert-base-sized BertConfig; random weights are
built when the real weights are not at hand, which times the same) and each batch size: the
forward-only throughput on the same batches, then end-to-end ingestion with per-stage seconds
(forward, top-k + transfer, edge arrays, Arrow build, DuckDB write, time the model waited for
the writer; on CUDA the keep mask and edge selection run on the device, so ``edges`` there is
mask + selection + transfer). Writes gpu-results.json into --out. Run through
benchmarks/gpu.sh on a GPU box.

    python -m benchmarks.gpu --device cpu --tiny --sentences 40 --out /tmp/gpu-test   # CPU check
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

SHAPES = {  # hidden, layers, heads, intermediate
    "minilm": (384, 6, 12, 1536),      # all-MiniLM-L6-v2, the default model
    "bert-base": (768, 12, 12, 3072),
    "tiny": (32, 2, 2, 64),            # for the CPU check of this script
}
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


#: batch sizes per model when --batch-sizes is not given: bert-base at 1024 needs about 15 GiB
#: of attention maps at EWT's longest batch (an H200 has 139 GiB); an out-of-memory setting is
#: recorded under "errors" and the others still run
DEFAULT_BATCHES = {"minilm": [64, 256], "bert-base": [256, 1024], "tiny": [16]}


def _free_device_memory() -> bool:
    """Free what the last setting left cached on the device and, where this torch has a binding
    for it, torch's cache of page-locked host memory, so that every ingest starts cold (each
    pays for its page-locked buffers, as a user's first ingest does). Returns whether the host
    cache was emptied (recorded with each row)."""
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            host_empty = getattr(torch._C, "_host_emptyCache", None)
            if host_empty is not None:
                host_empty()
                return True
    except Exception:  # noqa: BLE001, S110 - best effort between settings
        pass
    return False


def build_model(name: str, tokenizer_dir: Path, dest: Path) -> Path:
    """A BertModel of the named shape with random weights (seed 0), saved with the bundled tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    hidden, layers, heads, inter = SHAPES[name]
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=inter, max_position_embeddings=512, attn_implementation="eager")
    folder = dest / name
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    for f in TOKENIZER_FILES:
        if (tokenizer_dir / f).exists():
            shutil.copy(tokenizer_dir / f, folder / f)
    return folder


def tokenizer_folder(given: Path | None) -> Path:
    if given is not None:
        return given
    from headdb.resources import default_model

    return Path(default_model())


#: what a --variant may set: name -> (module, attribute)
KNOBS = {"threads": ("headdb.ingest", "APPEND_THREADS"), "overlap": ("headdb.ingest", "OVERLAP_WRITES"),
         "writers": ("headdb.ingest", "WRITERS"), "chunk": ("headdb.store", "ARROW_CHUNK_ROWS"),
         "memory_mb": ("headdb.ingest", "GPU_MEMORY_MB_PER_THREAD"), "commit_edges": ("headdb.ingest", "COMMIT_EDGES"),
         "pinned": ("headdb.model", "PIN_MEMORY"), "read_ahead": ("headdb.ingest", "READ_AHEAD"),
         "window": ("headdb.ingest", "GPU_WINDOW_BATCHES"), "depth": ("headdb.ingest", "WRITE_DEPTH"),
         "switch_us": ("headdb.ingest", "GIL_SWITCH_US"),
         # false: the model runs whole instead of stopping at the last attention map
         "stop_at_last_map": ("headdb.model", "STOP_AT_LAST_MAP"),
         # false: the objects alive at the ingest's start stay in the garbage collector's view
         "freeze_heap": ("headdb.ingest", "FREEZE_HEAP"),
         # an argument of ingest(), not a module setting: 16 rounds the weights on the device
         "weight_bits": (None, "weight_bits"),
         # an environment variable: the tokenizer's own threads (headdb turns them off by default)
         "tokenizer_parallel": ("env", "TOKENIZERS_PARALLELISM")}


def parse_variant(spec: str) -> dict:
    """``writers=2,chunk=122880`` -> {"writers": 2, "chunk": 122880} (values: int, or true/false)."""
    out = {}
    for item in spec.split(","):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in KNOBS:
            raise SystemExit(f"--variant {spec!r}: unknown setting {name!r}; one of {', '.join(KNOBS)}")
        v = value.strip().lower()
        out[name] = True if v == "true" else False if v == "false" else int(v)
    return out


def measure(model_dir: Path, label: str, corpus: Path, device: str, dtype: str, batch_size: int, top_k: int,
            work: Path, knobs: dict | None = None) -> dict:
    import importlib

    from benchmarks.sections import _batches, forward_only
    from headdb.model import AttentionModel

    am = AttentionModel(str(model_dir), device=device, dtype=dtype)
    batches = _batches(am, corpus, "conllu", batch_size)
    forward_only(am, batches[:2])  # warm-up: CUDA context, kernels, allocator
    n, secs = forward_only(am, batches)
    del am
    ingest_mod = importlib.import_module("headdb.ingest")  # the module (headdb.ingest is also the function)
    knobs = knobs or {}
    saved = {}
    options = {attr: knobs[name] for name, (mod, attr) in KNOBS.items() if mod is None and name in knobs}
    saved_env = {}
    for name, value in knobs.items():
        mod, attr = KNOBS[name]
        if mod is None:
            continue
        if mod == "env":
            saved_env[attr] = os.environ.get(attr)
            os.environ[attr] = "true" if value else "false"
            continue
        m = importlib.import_module(mod)
        saved[(m, attr)] = getattr(m, attr, None)
        setattr(m, attr, value)
    tag = "-".join(f"{k}{v}" for k, v in knobs.items()) or "default"
    host_cache_emptied = _free_device_memory()
    db = work / f"{label}-{dtype}-b{batch_size}-{tag}.db"
    try:
        r = ingest_mod.ingest(db, corpus, model=str(model_dir), device=device, dtype=dtype, batch_size=batch_size,
                              top_k=top_k, new_run=True, **options)
    finally:
        for (m, attr), value in saved.items():
            setattr(m, attr, value)
        for attr, value in saved_env.items():
            if value is None:
                os.environ.pop(attr, None)
            else:
                os.environ[attr] = value
    size = db.stat().st_size
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    weight_bits = con.execute("SELECT weight_bits FROM runs WHERE run_id = ?", [r.run_id]).fetchone()[0]
    con.close()
    db.unlink()
    return {"model": label, "dtype": dtype, "batch_size": batch_size, "top_k": top_k, "variant": tag,
            "weight_bits": weight_bits,
            "host_cache_emptied": host_cache_emptied, "pinned_mb": r.pinned_bytes / 2**20,
            "append_threads": r.append_threads, "sentences": r.sentences,
            "edges": r.edges, "forward_only_sps": n / secs, "end_to_end_sps": r.sentences / r.seconds,
            "ratio": (r.sentences / r.seconds) / (n / secs), "seconds": r.seconds,
            "stages_s": {k: round(v, 3) for k, v in r.timings.items()},
            "edges_per_s_written": r.edges / max(r.timings.get("write", 0.0), 1e-9),
            "db_bytes_per_edge_before_checkpoint": size / max(r.edges, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtypes", default="bfloat16,float16", help="comma-separated: float32, bfloat16, float16")
    ap.add_argument("--models", default="minilm,bert-base", help=f"comma-separated: {', '.join(SHAPES)}")
    ap.add_argument("--tiny", action="store_true", help="the tiny shape only (CPU check)")
    ap.add_argument("--batch-sizes", default=None,
                    help="comma-separated, for every model (default: " + "; ".join(
                        f"{m} {','.join(map(str, b))}" for m, b in DEFAULT_BATCHES.items()) + ")")
    ap.add_argument("--sentences", type=int, default=2001)
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--corpus", type=Path, default=None, help="CoNLL-U (default: EWT dev, else the bundled sample)")
    ap.add_argument("--tokenizer", type=Path, default=None, help="folder with tokenizer.json (default: bundled model)")
    ap.add_argument("--variant", action="append", default=None, metavar="SPEC",
                    help="also time the last model at its largest batch with these settings, e.g. "
                         "threads=4 or writers=2,chunk=122880 (" + ", ".join(KNOBS) + "); repeatable; "
                         "default: threads=1 and threads=4 (against CUDA's min(cores, 16))")
    ap.add_argument("--no-variants", action="store_true", help="no --variant runs")
    ap.add_argument("--out", type=Path, required=True, help="folder for gpu-results.json")
    args = ap.parse_args(argv)
    variants = [] if args.no_variants else [parse_variant(v) for v in (args.variant or ["threads=1", "threads=4"])]

    from benchmarks.common import EWT_DEV, corpus_prefix, machine, scratch_dir
    from headdb.resources import sample_corpus

    args.out.mkdir(parents=True, exist_ok=True)
    work = scratch_dir("headdb-gpu-")  # removed at exit, also when a model fails
    src = args.corpus or (EWT_DEV if EWT_DEV.exists() else sample_corpus())
    corpus = corpus_prefix(src, args.sentences, work / "corpus.conllu", repeat=True)
    models = ["tiny"] if args.tiny else [m.strip() for m in args.models.split(",") if m.strip()]
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    given = [int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes else None
    tok = tokenizer_folder(args.tokenizer)
    results: dict = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}, "rows": []}
    out_file = args.out / "gpu-results.json"

    def record(row: dict) -> None:
        results["rows"].append(row)
        out_file.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
        st = row["stages_s"]
        print(f"{row['model']:9s} {row['dtype']:8s} b={row['batch_size']:<4d} {row['variant']:24s} "
              f"duckdb_threads={row['append_threads']}  e2e {row['end_to_end_sps']:8.1f}/s  "
              f"fwd-only {row['forward_only_sps']:8.1f}/s  ratio {row['ratio']:.2f}  "
              f"pinned={row.get('pinned_mb', 0):.0f}MiB  "
              + " ".join(f"{k}={v:.2f}" for k, v in st.items()), flush=True)

    for name in models:
        folder = build_model(name, tok, work / "models")
        sizes = given or DEFAULT_BATCHES.get(name, [64, 256])
        for dtype in dtypes:
            for b in sizes:
                t0 = time.perf_counter()
                try:  # the default writer thread and DuckDB threads (ingest decides by the device)
                    record(measure(folder, name, corpus, args.device, dtype, b, args.top_k, work))
                except Exception as exc:  # noqa: BLE001 - one failed setting (out of memory) must not lose the others
                    results.setdefault("errors", []).append(f"{name} {dtype} b={b}: {exc!r}")
                    print(f"FAILED {name} {dtype} b={b}: {exc!r}", file=sys.stderr, flush=True)
                    _free_device_memory()
                results.setdefault("section_seconds", {})[f"{name}-{dtype}-{b}"] = time.perf_counter() - t0
        if name == models[-1]:
            for knobs in variants:
                try:
                    record(measure(folder, name, corpus, args.device, dtypes[0], sizes[-1], args.top_k, work, knobs))
                except Exception as exc:  # noqa: BLE001
                    results.setdefault("errors", []).append(f"variant {knobs}: {exc!r}")
    out_file.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"wrote {out_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
