"""``python -m benchmarks.gpu``: ingestion speed and where the time goes, on a GPU (or a CPU).

For each model (the default model's shape and a bert-base-sized BertConfig; random weights are
built when the real weights are not at hand, which times the same) and each batch size: the
forward-only throughput on the same batches, then end-to-end ingestion with per-stage seconds
(forward, top-k + transfer, edge arrays, Arrow build, DuckDB write, time the model waited for
the writer). Writes gpu-results.json into --out. Run through benchmarks/gpu.sh on a GPU box.

    python -m benchmarks.gpu --device cpu --tiny --sentences 40 --out /tmp/gpu-test   # CPU check
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

SHAPES = {  # hidden, layers, heads, intermediate
    "minilm": (384, 6, 12, 1536),      # all-MiniLM-L6-v2, the default model
    "bert-base": (768, 12, 12, 3072),
    "tiny": (32, 2, 2, 64),            # for the CPU check of this script
}
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


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


def measure(model_dir: Path, label: str, corpus: Path, device: str, dtype: str, batch_size: int, top_k: int,
            work: Path, overlap: bool | None, append_threads: int) -> dict:
    import importlib

    ingest_mod = importlib.import_module("headdb.ingest")  # the module (headdb.ingest is also the function)
    from benchmarks.sections import _batches, forward_only
    from headdb.model import AttentionModel

    am = AttentionModel(str(model_dir), device=device, dtype=dtype)
    batches = _batches(am, corpus, "conllu", batch_size)
    forward_only(am, batches[:2])  # warm-up: CUDA context, kernels, allocator
    n, secs = forward_only(am, batches)
    del am
    ingest_mod.OVERLAP_WRITES = overlap
    ingest_mod.APPEND_THREADS = append_threads
    db = work / f"{label}-{dtype}-b{batch_size}-o{overlap}-t{append_threads}.db"
    r = ingest_mod.ingest(db, corpus, model=str(model_dir), device=device, dtype=dtype, batch_size=batch_size,
                          top_k=top_k, new_run=True)
    ingest_mod.OVERLAP_WRITES, ingest_mod.APPEND_THREADS = None, 1
    size = db.stat().st_size
    db.unlink()
    return {"model": label, "dtype": dtype, "batch_size": batch_size, "top_k": top_k,
            "writer_thread": overlap, "append_threads": append_threads, "sentences": r.sentences,
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
    ap.add_argument("--batch-sizes", default="64,256")
    ap.add_argument("--sentences", type=int, default=2001)
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--corpus", type=Path, default=None, help="CoNLL-U (default: EWT dev, else the bundled sample)")
    ap.add_argument("--tokenizer", type=Path, default=None, help="folder with tokenizer.json (default: bundled model)")
    ap.add_argument("--variants", action="store_true", default=True,
                    help="also time the largest model without the writer thread and with 4 DuckDB threads")
    ap.add_argument("--no-variants", dest="variants", action="store_false")
    ap.add_argument("--out", type=Path, required=True, help="folder for gpu-results.json")
    args = ap.parse_args(argv)

    from benchmarks.common import EWT_DEV, corpus_prefix, machine
    from headdb.resources import sample_corpus

    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="headdb-gpu-"))
    src = args.corpus or (EWT_DEV if EWT_DEV.exists() else sample_corpus())
    corpus = corpus_prefix(src, args.sentences, work / "corpus.conllu", repeat=True)
    models = ["tiny"] if args.tiny else [m.strip() for m in args.models.split(",") if m.strip()]
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    tok = tokenizer_folder(args.tokenizer)
    results: dict = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}, "rows": []}
    out_file = args.out / "gpu-results.json"

    def record(row: dict) -> None:
        results["rows"].append(row)
        out_file.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
        st = row["stages_s"]
        print(f"{row['model']:9s} {row['dtype']:8s} b={row['batch_size']:<4d} writer={row['writer_thread']!s:5s} "
              f"duckdb_threads={row['append_threads']}  e2e {row['end_to_end_sps']:8.1f}/s  "
              f"fwd-only {row['forward_only_sps']:8.1f}/s  ratio {row['ratio']:.2f}  "
              + " ".join(f"{k}={v:.2f}" for k, v in st.items()), flush=True)

    for name in models:
        folder = build_model(name, tok, work / "models")
        for dtype in dtypes:
            for b in sizes:
                t0 = time.perf_counter()
                try:
                    record(measure(folder, name, corpus, args.device, dtype, b, args.top_k, work, None, 1))
                except Exception as exc:  # noqa: BLE001 - one failed setting must not lose the others
                    results.setdefault("errors", []).append(f"{name} {dtype} b={b}: {exc!r}")
                    print(f"FAILED {name} {dtype} b={b}: {exc!r}", file=sys.stderr, flush=True)
                results.setdefault("section_seconds", {})[f"{name}-{dtype}-{b}"] = time.perf_counter() - t0
        if args.variants and name == models[-1]:
            for overlap, threads in ((False, 1), (True, 4)):
                try:
                    record(measure(folder, name, corpus, args.device, dtypes[0], sizes[-1], args.top_k, work,
                                   overlap, threads))
                except Exception as exc:  # noqa: BLE001
                    results.setdefault("errors", []).append(f"variant {overlap} {threads}: {exc!r}")
    out_file.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {out_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
