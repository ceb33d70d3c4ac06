"""A spaCy parsing process for :class:`headdb.parse.SpacyParser` (``python -m headdb._parse_worker
PIPELINE BATCH_SIZE [--no-torch] [--background]``): reads lists of texts from stdin and writes
their words to stdout, each message a length and a pickle (:func:`headdb.parse.send`). Replies ("ready", None) once the
pipeline is loaded, then ("ok", words) per list, or ("error", message). Exits at the end of its
input."""

from __future__ import annotations

import os
import signal
import sys


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and closes our input
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # whatever a library prints must not break the protocol
    name, batch_size, flags = argv[0], int(argv[1]), argv[2:]
    if "--no-torch" in flags:
        # thinc imports torch where it is installed, only to offer its PyTorch layers: a pipeline
        # that needs none loads in 1.1 s and 148 MiB without it, against 2.4 s and 328 MiB
        sys.modules["torch"] = None  # `import torch` now raises ImportError
    from headdb.parse import _load, parse_texts, receive, send

    try:
        nlp = _load(name)
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        send(out, ("error", str(exc)))
        return 1
    if "--background" in flags and hasattr(os, "nice"):
        os.nice(19)  # loaded at full speed (beside the model's load); parses in idle time
    send(out, ("ready", None))
    inp = sys.stdin.buffer
    while True:
        try:
            texts = receive(inp)
        except EOFError:
            return 0
        try:
            send(out, ("ok", parse_texts(nlp, texts, batch_size)))
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            send(out, ("error", f"spaCy failed to parse a batch: {type(exc).__name__}: {exc}"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
