"""Helpers shared by the benchmark sections: machine description, timing, child processes."""

from __future__ import annotations

import atexit
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: UD English EWT dev: the shared/ folder beside the checkout (as on this project's machines and
#: CI), or wherever HEADDB_EWT_DEV points; callers fall back to the bundled sample without it.
EWT_DEV = Path(os.environ.get("HEADDB_EWT_DEV",
                              Path(__file__).resolve().parents[2] / "shared" / "corpora" / "en_ewt-ud-dev.conllu"))


def scratch_dir(prefix: str) -> Path:
    """A temporary folder for a benchmark's databases, removed when the process exits: a run
    leaves hundreds of MB there, and repeated runs used to fill the disk."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    return work


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import duckdb
    import torch

    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "duckdb": duckdb.__version__,
            "platform": platform.platform(), "load_avg_at_start": os.getloadavg()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def corpus_prefix(src: Path, n: int, dst: Path, repeat: bool = True) -> Path:
    """The first ``n`` sentences of a CoNLL-U file (the file repeated when it has fewer)."""
    blocks = [b for b in src.read_text(encoding="utf-8").split("\n\n") if b.strip()]
    out = []
    i = 0
    while len(out) < n:
        if i == len(blocks):
            if not repeat:
                break
            i = 0
        out.append(blocks[i].strip("\n"))
        i += 1
    dst.write_text("\n\n".join(out) + "\n\n", encoding="utf-8")
    return dst


def corpus_repeated(src: Path, n: int, times: int, dst: Path) -> Path:
    """The first ``n`` sentences of a CoNLL-U file, ``times`` times over: more of the same data,
    so that sizes differ and nothing else does (the longest sentence, hence the largest batch)."""
    blocks = [b.strip("\n") for b in src.read_text(encoding="utf-8").split("\n\n") if b.strip()][:n]
    dst.write_text("\n\n".join(blocks * times) + "\n\n", encoding="utf-8")
    return dst


def text_from_conllu(src: Path, dst: Path) -> Path:
    """The ``# text`` lines of a CoNLL-U file, one sentence a line (raw text for spaCy)."""
    lines = [ln[len("# text = "):] for ln in src.read_text(encoding="utf-8").splitlines() if ln.startswith("# text = ")]
    dst.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dst


def run_child(code: str, args: dict) -> dict:
    """Run ``code`` in a fresh interpreter (it prints one JSON line last, with its own peak RSS
    where it measures one); add the wall time of the child."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["child_seconds"] = time.perf_counter() - t0
    return out


def best(values: list[float]) -> float:
    return min(values) if values else float("nan")
