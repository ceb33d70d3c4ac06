"""Fine-tune the bundled model on UPOS tagging, then compare its attention heads with the original.

Runs offline on a CPU in a few minutes:

1. fine-tune the bundled all-MiniLM-L6-v2 (a BertModel) for UPOS tagging on the EWT dev
   sentences that are *not* in the bundled 300-sentence sample (the sample is held apart);
2. save the fine-tuned encoder to a folder, with the original tokenizer files;
3. ingest the held-apart sample with both models into one store, classify both runs;
4. compare them head by head (paired t-tests), measure syntactic head accuracy of both,
   and write a report with difference heatmaps.

    .venv/bin/python examples/finetune_compare.py --out finetune-example

Numbers land in ``OUT/results.json``; ``docs/finetune-example.md`` records one run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time
from pathlib import Path

# UD English EWT dev from the shared/ folder beside the checkout, or HEADDB_EWT_DEV (see --train)
DEV = Path(os.environ.get("HEADDB_EWT_DEV",
                          Path(__file__).resolve().parents[2] / "shared" / "corpora" / "en_ewt-ud-dev.conllu"))
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def read_tagged(path: Path) -> list[tuple[str | None, list[str], list[str]]]:
    """(sent_id, forms, upos) for every sentence of a CoNLL-U file."""
    from headdb.corpus import read_conllu

    out = []
    for s in read_conllu(path):
        seg = s.segments[0]
        out.append((seg.sent_key, [w.form for w in seg.words], [w.upos or "X" for w in seg.words]))
    return out


def encode(tokenizer, batch, label_ids, max_length=128):
    """Pre-split words to pieces; the first piece of a word carries its tag, the others -100."""
    import torch

    enc = tokenizer([forms for _, forms, _ in batch], is_split_into_words=True, truncation=True,
                    max_length=max_length, padding=True, return_tensors="pt")
    labels = torch.full(enc["input_ids"].shape, -100, dtype=torch.long)
    for b, (_, _, tags) in enumerate(batch):
        seen = set()
        for t, wid in enumerate(enc.word_ids(b)):
            if wid is not None and wid not in seen:
                seen.add(wid)
                labels[b, t] = label_ids[tags[wid]]
    enc["labels"] = labels
    return enc


def tag_accuracy(model, tokenizer, data, label_ids, batch_size=32) -> float:
    import torch

    model.eval()
    right = total = 0
    with torch.inference_mode():
        for i in range(0, len(data), batch_size):
            enc = encode(tokenizer, data[i:i + batch_size], label_ids)
            labels = enc.pop("labels")
            pred = model(**enc).logits.argmax(-1)
            mask = labels != -100
            right += int((pred[mask] == labels[mask]).sum())
            total += int(mask.sum())
    return right / max(total, 1)


def finetune(base: Path, train, held, out: Path, epochs: int, lr: float, batch_size: int, seed: int) -> dict:
    import torch
    from transformers import AutoTokenizer, BertForTokenClassification

    torch.manual_seed(seed)
    random.seed(seed)
    tags = sorted({t for _, _, ts in train + held for t in ts})
    label_ids = {t: i for i, t in enumerate(tags)}
    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True, trust_remote_code=False)
    model = BertForTokenClassification.from_pretrained(base, num_labels=len(tags), local_files_only=True,
                                                       trust_remote_code=False)
    # The word-embedding table (30522 x 384) is half the weights; updating it every step doubles
    # the optimizer's time on a CPU and does not bear on attention patterns: keep it frozen.
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    before = tag_accuracy(model, tokenizer, held, label_ids)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, foreach=True)
    steps = epochs * ((len(train) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / max(steps, 1)))
    started = time.perf_counter()
    losses = []
    for epoch in range(epochs):
        model.train()
        order = list(range(len(train)))
        random.shuffle(order)
        for i in range(0, len(order), batch_size):
            enc = encode(tokenizer, [train[j] for j in order[i:i + batch_size]], label_ids)
            loss = model(**enc).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            losses.append(loss.item())
            if len(losses) % 25 == 0:
                print(f"  step {len(losses)}/{steps}: loss {sum(losses[-25:]) / 25:.3f} "
                      f"({time.perf_counter() - started:.0f} s)", flush=True)
        print(f"epoch {epoch + 1}/{epochs}: mean loss {sum(losses[-50:]) / len(losses[-50:]):.3f}", flush=True)
    seconds = time.perf_counter() - started
    after = tag_accuracy(model, tokenizer, held, label_ids)
    out.mkdir(parents=True, exist_ok=True)
    model.bert.save_pretrained(out)  # the encoder alone: headdb loads it with AutoModel
    for name in TOKENIZER_FILES:
        if (base / name).exists():
            shutil.copy(base / name, out / name)
    return {"train_sentences": len(train), "held_apart_sentences": len(held), "epochs": epochs, "lr": lr,
            "batch_size": batch_size, "steps": steps, "frozen": "word embeddings", "train_seconds": round(seconds, 1),
            "upos_accuracy_held_apart_before": round(before, 4), "upos_accuracy_held_apart_after": round(after, 4),
            "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("finetune-example"), help="output folder")
    ap.add_argument("--train", type=Path, default=DEV, help="CoNLL-U with UPOS for training (EWT dev)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top-k", type=int, default=16, help="keys stored per attention row")
    args = ap.parse_args()

    import torch

    import headdb
    from headdb.resources import default_model, sample_corpus

    torch.set_num_threads(max(1, torch.get_num_threads()))
    base = Path(default_model())
    held_path = sample_corpus()
    held = read_tagged(held_path)
    held_keys = {k for k, _, _ in held}
    if not args.train.exists():
        raise SystemExit(f"{args.train}: training corpus not found (pass --train with a CoNLL-U file that has UPOS)")
    train = [s for s in read_tagged(args.train) if s[0] not in held_keys]
    print(f"training on {len(train)} sentences of {args.train}; held apart: {len(held)} of {held_path}", flush=True)

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    tuned = out / "model-upos"
    results: dict = {}
    if (tuned / "config.json").exists() and (out / "finetune.json").exists():
        results["finetune"] = json.loads((out / "finetune.json").read_text())
        print(f"reusing the fine-tuned model in {tuned}")
    else:
        results["finetune"] = finetune(base, train, held, tuned, args.epochs, args.lr, args.batch_size, args.seed)
        (out / "finetune.json").write_text(json.dumps(results["finetune"], indent=1))
    print(json.dumps(results["finetune"], indent=1), flush=True)

    db = out / "compare.db"
    t0 = time.perf_counter()
    ra = headdb.ingest(db, held_path, model=str(base), top_k=args.top_k, run_name="pretrained")
    rb = headdb.ingest(db, held_path, model=str(tuned), top_k=args.top_k, run_name="finetuned-upos")
    results["ingest_seconds"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    for run in (ra.run_id, rb.run_id):
        headdb.classify(db, run=run)
    results["classify_seconds"] = round(time.perf_counter() - t0, 1)

    cmp = headdb.compare(db, ra.run_id, rb.run_id)
    from headdb.compare import layer_profile, role_changes

    prof = layer_profile(cmp)
    per_role = cmp.groupby("role", sort=False).agg(
        heads_changed=("changed", "sum"), mean_diff=("mean_diff", "mean"),
        mean_abs_diff=("mean_diff", lambda s: s.abs().mean())).reset_index()
    changes = role_changes(cmp)
    summ_a = headdb.role_summary(db, ra.run_id)[["role", "n_significant"]]
    summ_b = headdb.role_summary(db, rb.run_id)[["role", "n_significant"]]
    counts = summ_a.merge(summ_b, on="role", suffixes=("_pretrained", "_finetuned"))
    gained = changes[changes["role_change"] == "gained"].groupby("role").size()
    lost = changes[changes["role_change"] == "lost"].groupby("role").size()
    counts["gained"] = counts["role"].map(gained).fillna(0).astype(int)
    counts["lost"] = counts["role"].map(lost).fillna(0).astype(int)
    counts = counts.merge(per_role, on="role")
    results["compare_note"] = cmp.attrs["note"]
    results["n_sentences"] = cmp.attrs["n_sentences"]
    results["roles"] = counts.round(4).to_dict(orient="records")
    results["layer_mean_abs_diff"] = (prof.groupby("layer")["mean_abs_diff"].mean().round(4).to_dict())
    results["layer_heads_changed"] = (prof.groupby("layer")[["n_up", "n_down"]].sum().astype(int)
                                      .to_dict(orient="index"))
    acc = {}
    for name, run in (("pretrained", ra.run_id), ("finetuned", rb.run_id)):
        a = headdb.accuracy(db, run, min_count=20)
        acc[name] = a[["relation", "direction", "n_report", "layer", "head", "accuracy", "baseline_offset",
                       "baseline_accuracy"]].round(4).to_dict(orient="records")
    results["accuracy"] = acc
    rep = headdb.report(db, ra.run_id, out / "report", compare=rb.run_id)
    results["report"] = str(rep.html)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(rep.markdown)
    print(f"results: {out / 'results.json'}; report: {rep.html}")


if __name__ == "__main__":
    main()
