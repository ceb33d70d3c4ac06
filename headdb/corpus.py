"""Corpus readers: CoNLL-U with gold syntax, plain text and TSV pairs (parsed by spaCy).

Readers stream :class:`Sentence` objects in file order and never hold the corpus in memory.
Errors name ``path:line``. Raw text is parsed in batches by a *parser* (see
:mod:`headdb.parse`); this module itself does not import spaCy.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from headdb.errors import CorpusError, InputError, flag, given, option

FORMATS = ("conllu", "text", "tsv")
_EXTENSIONS = {".conllu": "conllu", ".conll": "conllu", ".txt": "text", ".text": "text", ".tsv": "tsv"}
#: Words per model input (both segments of a pair together): positions are stored as SMALLINT.
MAX_WORDS = 32_000
#: Lines (both TSV columns together) longer than this cannot fit any encoder, nor, as every
#: word is at least one character, headdb's SMALLINT positions: skipped unparsed (counted).
MAX_LINE_CHARS = MAX_WORDS
#: A line of more bytes than this is refused outright (a binary file, or no line ends at all):
#: lines are read with this cap so that memory stays bounded whatever the file holds.
MAX_LINE_BYTES = 8 << 20
_INT = re.compile(r"[0-9]+")  # ASCII digits only: int() would also take " 1", "+1" and "١"
_RANGE = re.compile(r"([1-9][0-9]*)-([1-9][0-9]*)")
_EMPTY_NODE = re.compile(r"[0-9]+\.[1-9][0-9]*")


def is_blank(text: str) -> bool:
    """True when ``text`` shows nothing: whitespace, control and format characters only
    (a zero-width space, a stray BOM or a bell is no word, and the tokenizer drops it)."""
    return all(c.isspace() or unicodedata.category(c) in ("Cc", "Cf") for c in text)


@dataclass(frozen=True)
class Word:
    """One syntactic word. ``head`` is the 0-based index of its head in the same segment,
    ``None`` for the root (or when the syntax is unknown)."""

    form: str
    lemma: str | None = None
    upos: str | None = None
    xpos: str | None = None
    head: int | None = None
    deprel: str | None = None


@dataclass(frozen=True)
class Segment:
    words: tuple[Word, ...]
    text: str
    line: int  # 1-based line where the segment starts in the corpus file
    sent_key: str | None = None
    doc_id: str | None = None


@dataclass(frozen=True)
class Sentence:
    """One model input: a single segment, or a pair (A, B)."""

    sentence_id: int
    segments: tuple[Segment, ...]

    @property
    def line(self) -> int:
        return self.segments[0].line

    @property
    def is_pair(self) -> bool:
        return len(self.segments) == 2


@dataclass
class ReadStats:
    """What a reader left out, for the run summary."""

    blank_lines: int = 0
    too_long_lines: int = 0
    odd_sentence_dropped: bool = False
    extra: dict[str, int] = field(default_factory=dict)


Parser = Callable[[list[str]], list[tuple[Word, ...]]]
"""Parses a batch of raw texts into words with syntax (one tuple of words per text)."""


def check_file(path: str | Path) -> None:
    """A corpus is a regular file: an ingest reads it more than once (to check it, to hash it,
    to ingest it, and again to resume), which a pipe or a device cannot give twice. A pipe
    (``/dev/stdin``, ``<(...)``) gave an empty run, and a named pipe hung on its second open."""
    import stat

    p = Path(path)
    if not p.exists():
        raise InputError("no such file", p)
    if p.is_dir():
        raise InputError("is a directory, expected a corpus file", p)
    if not stat.S_ISREG(p.stat().st_mode):
        raise InputError("is not a regular file (a pipe or a device): an ingest reads its corpus more than once; "
                         "save it to a file first (e.g. `cat ... > corpus.conllu`)", p)


#: The first bytes of the compressed files a corpus may come in, and how to unpack each.
_COMPRESSED = ((b"\x1f\x8b", ".gz", "gzip", "gunzip -k"), (b"BZh", ".bz2", "bzip2", "bunzip2 -k"),
               (b"\xfd7zXZ\x00", ".xz", "xz", "unxz -k"), (b"\x28\xb5\x2f\xfd", ".zst", "zstd", "unzstd"),
               (b"PK\x03\x04", ".zip", "zip", "unzip"))
#: Byte-order marks of the UTF encodings that are not UTF-8 (UTF-32's first: FF FE 00 00 starts
#: with UTF-16 LE's mark).
_OTHER_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"),
               (b"\xfe\xff", "UTF-16"))


def _is_text(raw: bytes) -> bool:
    """True for bytes that could be a line of a UTF-8 text file: no NUL, valid UTF-8."""
    if b"\x00" in raw:
        return False
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _compressed_message(kind: str, unpack: str, path: str | Path) -> str:
    article = "an" if kind[0] in "aeiox" else "a"  # an xz-compressed file
    return (f"is {article} {kind}-compressed file; headdb reads plain UTF-8 text: decompress it first "
            f"({unpack} {Path(path).name}) and ingest the file that gives")


def _not_utf8_message(first: bytes) -> str | None:
    """What the start of a corpus says it is, where it is text in another UTF encoding."""
    for bom, name in _OTHER_BOMS:
        if first.startswith(bom):
            return (f"the file is {name} text (it starts with a {name} byte-order mark); headdb reads UTF-8: "
                    f"convert it first (iconv -f {name} -t UTF-8)")
    body = first.rstrip(b"\r\n\x00")
    if len(body) >= 4 and body.count(0) * 3 >= len(body):  # ASCII in UTF-16: every other byte is NUL
        even, odd = body[0::2].count(0), body[1::2].count(0)
        if not (even and odd):
            return ("NUL bytes between the characters: is it UTF-16 text without a byte-order mark? headdb reads "
                    f"UTF-8: convert it first (iconv -f UTF-16{'BE' if even else 'LE'} -t UTF-8)")
    return None


def has_corpus_extension(path: str | Path) -> bool:
    """Whether ``path`` is named as a corpus file is (.conllu, .txt, .tsv, ..., or compressed, .gz)."""
    suffix = Path(path).suffix.lower()
    return suffix in _EXTENSIONS or any(suffix == ext for _, ext, _, _ in _COMPRESSED)


def infer_format(path: str | Path, fmt: str | None = None) -> str:
    if fmt is not None:
        fmt = fmt.lower()
        if fmt not in FORMATS:
            raise InputError(f"unknown format {fmt!r}; expected one of: {', '.join(FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lower()
    for _, ext, kind, unpack in _COMPRESSED:
        if suffix == ext:
            raise InputError(_compressed_message(kind, unpack, path), path)
    if suffix not in _EXTENSIONS:
        raise InputError(
            f"cannot infer the format from the extension {suffix or '(none)'!r}; "
            f"pass {option('format')} (one of {', '.join(FORMATS)})",
            path,
        )
    return _EXTENSIONS[suffix]


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, text without line end); UTF-8 with an optional BOM; CRLF ok."""
    p = Path(path)
    check_file(p)
    try:
        f = open(p, "rb")
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror}", p) from None
    with f:
        number = 0
        utf8_before = 0  # the first earlier line with a character beyond ASCII (valid UTF-8), if any
        while True:
            raw = f.readline(MAX_LINE_BYTES + 1)
            if not raw:
                break
            number += 1
            if number == 1:  # a compressed file, or text in UTF-16: say so, not "binary" or "invalid UTF-8"
                for magic, _, kind, unpack in _COMPRESSED:
                    if raw.startswith(magic) and not _is_text(raw):  # a text may start "BZh" or "PK"
                        raise CorpusError(_compressed_message(kind, unpack, p), p)
                # judged on the first 4 KiB, not the line alone: a first line of one character holds
                # one NUL in UTF-16, too few to tell from a binary file
                here = f.tell()
                sample = raw + f.read(4096)
                f.seek(here)
                if (other := _not_utf8_message(sample)) is not None:
                    raise CorpusError(other, p, number)
            if len(raw) > MAX_LINE_BYTES:
                raise CorpusError(f"line longer than {MAX_LINE_BYTES >> 20} MiB; is it a binary file?", p, number)
            if raw.startswith(b"\xef\xbb\xbf"):  # the file's start, or that of files joined with cat
                raw = raw[3:]
            if b"\x00" in raw:
                raise CorpusError("NUL byte in the file; is it a binary file?", p, number)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CorpusError(f"invalid UTF-8 at byte {exc.start} of the line; " + (
                    f"the file is UTF-8 before it (line {utf8_before} holds UTF-8 beyond ASCII), which converting the "
                    "whole file from Latin-1 would garble: fix this line (a stray byte, or text pasted in another "
                    "encoding)" if utf8_before else
                    "save the file as UTF-8 (from Latin-1 or Windows-1252: iconv -f cp1252 -t UTF-8)"),
                    p, number) from None
            if not utf8_before and not raw.isascii():
                utf8_before = number
            text = text.rstrip("\r\n")
            if "\r" in text:  # Python would split there, and an editor shows a line end
                raise CorpusError("a carriage return (CR) inside the line: are its line ends the old Mac "
                                  "CR only? Convert them to LF (tr '\\r' '\\n')", p, number)
            yield number, text


# --- CoNLL-U -----------------------------------------------------------------------------


def _conllu_blocks(path: str | Path) -> Iterator[tuple[int, list[str], list[tuple[int, str]]]]:
    """(first line, comment lines, token lines with numbers) per sentence block."""
    start, comments, rows = 0, [], []
    for number, line in _lines(path):
        if not line.strip():
            if rows:
                yield start, comments, rows
            elif comments:
                raise CorpusError("sentence has comments but no word lines", path, start)
            start, comments, rows = 0, [], []
            continue
        if not start:
            start = number
        if line.startswith("#"):
            if rows:
                raise CorpusError("comment line inside a sentence's word lines", path, number)
            comments.append(line)
        else:
            rows.append((number, line))
    if rows:
        yield start, comments, rows
    elif comments:
        raise CorpusError("sentence has comments but no word lines", path, start)


def _parse_conllu_block(path: str | Path, start: int, comments: list[str], rows: list[tuple[int, str]],
                        doc_id: str | None) -> tuple[Segment, str | None]:
    meta: dict[str, str] = {}
    for c in comments:
        body = c[1:].strip()
        if "=" in body:
            key, _, value = body.partition("=")
            meta[key.strip()] = value.strip()
    if "newdoc id" in meta:
        doc_id = meta["newdoc id"]
    elif any(c[1:].strip() == "newdoc" for c in comments):  # a new document without an id
        doc_id = None
    fields: list[tuple[str, str | None, str | None, str | None, str | None]] = []  # a Word's, less its head
    heads: list[tuple[int, int | None]] = []  # (line number, 1-based head or None)
    range_end, range_line = 0, 0  # the last word of the last multiword range, and its line
    surface: list[str] = []  # the text rebuilt from the tokens, for a sentence without `# text`
    for number, line in rows:
        cols = line.split("\t")
        if len(cols) != 10:
            parts = line.split()  # a word line with spaces for tabs, not a sentence of ten words
            spaced = len(cols) == 1 and len(parts) == 10 and re.fullmatch(r"[0-9]+([-.][0-9]+)?", parts[0])
            spaces = " (the columns are separated by spaces, not tabs)" if spaced else ""
            raise CorpusError(f"expected 10 tab-separated columns, found {len(cols)}{spaces}", path, number)
        wid = cols[0]
        if "-" in wid or "." in wid:
            m = _RANGE.fullmatch(wid)
            if not (m and int(m.group(1)) < int(m.group(2))) and not _EMPTY_NODE.fullmatch(wid):
                raise CorpusError(f"word id {wid!r} is neither a word (N), a multiword range (N-M) "
                                  "nor an empty node (N.M)", path, number)
            if m:  # a range comes just before its first word, and ranges do not overlap
                first, last = int(m.group(1)), int(m.group(2))
                if first != len(fields) + 1 or first <= range_end:
                    raise CorpusError(f"multiword range {wid} out of place (the next word is {len(fields) + 1}"
                                      + (f", and the range before ends at {range_end})" if range_end else ")"),
                                      path, number)
                range_end, range_line = last, number
                surface.append(cols[1] + ("" if _no_space_after(cols[9]) else " "))
            continue  # multiword-token range or empty node: not a syntactic word
        if not _INT.fullmatch(wid):
            raise CorpusError(f"word id {wid!r} is not an integer", path, number)
        index = int(wid)
        if index != len(fields) + 1:
            raise CorpusError(f"word id {index} out of order (expected {len(fields) + 1})", path, number)
        head_text = cols[6]
        head: int | None
        if head_text == "_":
            head = None  # unknown syntax
        elif _INT.fullmatch(head_text):
            head = int(head_text)
        else:
            raise CorpusError(f"head {head_text!r} is not a word number (0 for the root, 1..n)", path, number)
        form = cols[1]
        if not (form.isprintable() and form.strip()) and is_blank(form):  # the test only for odd forms
            raise CorpusError("empty word form (only whitespace or invisible characters)", path, number)
        if index > range_end:  # a word inside a multiword token is written by the token's surface form
            surface.append(form + ("" if _no_space_after(cols[9]) else " "))
        heads.append((number, head))
        fields.append((form, _opt(cols[2]), _opt(cols[3]), _opt(cols[4]), _opt(cols[7])))
    if not fields:
        raise CorpusError("sentence has no words (only ranges or empty nodes)", path, start)
    n = len(fields)
    if n > MAX_WORDS:
        raise CorpusError(f"sentence has {n} words; headdb stores at most {MAX_WORDS} per input", path, start)
    if range_end > n:
        raise CorpusError(f"multiword range ends at word {range_end}, beyond the sentence's {n} "
                          f"word{'s' if n != 1 else ''}", path,
                          range_line)
    resolved: list[int | None] = []
    for number, head in heads:
        if head is not None and head > n:
            raise CorpusError(f"head {head} is outside the sentence (1..{n}, or 0 for the root)", path, number)
        resolved.append(None if not head else head - 1)
    _check_tree(path, resolved, [nb for nb, _ in heads])
    words = [Word(form, lemma, upos, xpos, h, deprel) for (form, lemma, upos, xpos, deprel), h in zip(fields, resolved)]
    text = meta.get("text")
    if text is None:
        text = "".join(surface).strip()  # missing `# text`: the tokens, spaced as MISC's SpaceAfter=No says
    return Segment(tuple(words), text, start, meta.get("sent_id"), doc_id), doc_id


def _no_space_after(misc: str) -> bool:
    return "SpaceAfter=No" in misc.split("|")


def _opt(value: str) -> str | None:
    """A column's value, None where it has none: CoNLL-U's `_`, or an empty column as some tools
    write it (stored as '', an empty DEPREL was a relation of its own beside `_`)."""
    return None if value in ("_", "") else value


def _check_tree(path: str | Path, heads: list[int | None], lines: list[int]) -> None:
    """Reject cycles: following heads from any word must reach the root."""
    state = [0] * len(heads)  # 0 new, 1 on the current path, 2 known to reach the root
    for start in range(len(heads)):
        path_nodes = []
        node: int | None = start
        while node is not None and state[node] == 0:
            state[node] = 1
            path_nodes.append(node)
            node = heads[node]
        if node is not None and state[node] == 1:
            raise CorpusError(f"the heads form a cycle through word {node + 1}", path, lines[node])
        for p in path_nodes:
            state[p] = 2


def read_conllu(path: str | Path, pairs: bool = False, stats: ReadStats | None = None) -> Iterator[Sentence]:
    """Sentences of a CoNLL-U file; with ``pairs``, the 1st with the 2nd, the 3rd with the 4th..."""
    stats = stats if stats is not None else ReadStats()
    doc_id: str | None = None
    pending: Segment | None = None
    count = 0
    for start, comments, rows in _conllu_blocks(path):
        segment, doc_id = _parse_conllu_block(path, start, comments, rows, doc_id)
        if not pairs:
            yield Sentence(count, (segment,))
            count += 1
        elif pending is None:
            pending = segment
        else:
            if len(pending.words) + len(segment.words) > MAX_WORDS:
                raise CorpusError(f"the pair starting here has more than {MAX_WORDS} words; headdb stores "
                                  f"at most {MAX_WORDS} per input", path, pending.line)
            yield Sentence(count, (pending, segment))
            count += 1
            pending = None
    if pending is not None:
        stats.odd_sentence_dropped = True


# --- raw text and TSV ----------------------------------------------------------------------


#: A CoNLL-U word line's first column: a word (N), a multiword range (N-M) or an empty node (N.M).
_WORD_ID = re.compile(r"[0-9]+([-.][0-9]+)?")
#: The comments that open a CoNLL-U sentence or document.
_CONLLU_COMMENT = re.compile(r"#\s*(sent_id|text|newdoc|newpar)\b")


def _looks_like_conllu(cols: list[str]) -> bool:
    """Whether a line of a text or TSV file, split at its tabs, is a CoNLL-U word line (ten
    columns, the first a word id): a CoNLL-U file read as raw text, whose every line would become
    a sentence ("1 From from ADP IN _ 3 case 3:case _") or fail as a pair of three or more texts."""
    return len(cols) == 10 and _WORD_ID.fullmatch(cols[0].strip()) is not None


def _raw_records(path: str | Path, columns: int, stats: ReadStats) -> Iterator[tuple[int, tuple[str, ...]]]:
    for number, line in _lines(path):
        if is_blank(line):
            stats.blank_lines += 1
            continue
        cols = line.split("\t")
        if _looks_like_conllu(cols):
            fmt = "text" if columns == 1 else "tsv"
            raise CorpusError(f"this line is a CoNLL-U word line (ten tab-separated columns), and the file is read as "
                              f"{fmt}: pass {given('format', 'conllu')}", path, number)
        if columns == 1:
            fields = (line.strip(),)
        else:
            fields = tuple(f.strip() for f in cols)
            if len(fields) < 2:
                comment = _CONLLU_COMMENT.match(line) is not None
                raise CorpusError("expected two tab-separated text columns, found one"
                                  + (f" (a CoNLL-U comment: pass {given('format', 'conllu')})" if comment else ""),
                                  path, number)
            if len(fields) > 2:
                empty = sum(map(is_blank, fields))
                why = "" if not empty else (f" ({'one' if empty == 1 else empty} of them empty: a tab at the end of "
                                            "the line, or two tabs in a row?)")
                raise CorpusError(f"expected two tab-separated text columns, found {len(fields)}{why}", path, number)
            if is_blank(fields[0]) or is_blank(fields[1]):
                raise CorpusError("a TSV pair has an empty text column", path, number)
        if sum(len(f) for f in fields) > MAX_LINE_CHARS:
            stats.too_long_lines += 1
            continue
        yield number, fields


def _batched(items: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


#: Lines of raw text handed to the parser at a time (a TSV line holds two texts).
RAW_BATCH_LINES = 256


def read_raw(path: str | Path, parser: Parser | None, columns: int, stats: ReadStats | None = None,
             batch_size: int = RAW_BATCH_LINES) -> Iterator[Sentence]:
    """Text (one sentence per line, ``columns=1``) or TSV pairs (``columns=2``), parsed in batches.

    Blank and whitespace-only lines are not sentences (counted in ``stats``). With
    ``parser=None`` the words are whitespace-split and carry no syntax (used to validate). A
    parser with a ``pipe`` method (:class:`headdb.parse.SpacyParser`) is handed the batches
    through it, so that it may parse ahead.
    """
    stats = stats if stats is not None else ReadStats()
    handed: deque = deque()  # the batches handed to the parser and not yet read back, oldest first

    def texts() -> Iterator[list[str]]:
        for batch in _batched(_raw_records(path, columns, stats), batch_size):
            handed.append(batch)
            yield [f for _, fields in batch for f in fields]

    if parser is None:
        parsed_batches: Iterator = ([tuple(Word(t) for t in text.split()) for text in batch] for batch in texts())
    elif hasattr(parser, "pipe"):
        parsed_batches = parser.pipe(texts())
    else:
        parsed_batches = (parser(batch) for batch in texts())
    count = 0
    for parsed in parsed_batches:
        batch = handed.popleft()
        for i, (number, fields) in enumerate(batch):
            segs = []
            for j, text in enumerate(fields):
                words = parsed[i * columns + j]
                if not words:
                    raise CorpusError("the parser found no words in this text", path, number)
                segs.append(Segment(tuple(words), text, number))
            yield Sentence(count, tuple(segs))
            count += 1


def read_corpus(path: str | Path, fmt: str, pairs: bool = False, parser: Parser | None = None,
                stats: ReadStats | None = None) -> Iterator[Sentence]:
    """Stream the sentences of a corpus in one of :data:`FORMATS`."""
    if fmt == "conllu":
        return read_conllu(path, pairs=pairs, stats=stats)
    if pairs:
        raise InputError(f"{flag('pairs')} applies to CoNLL-U; "
                         + ("a TSV file already holds pairs" if fmt == "tsv" else
                            f"pairs of raw text are a TSV file (.tsv or {given('format', 'tsv')}), "
                            "two tab-separated texts a line"), path)
    if fmt == "text":
        return read_raw(path, parser, 1, stats)
    if fmt == "tsv":
        return read_raw(path, parser, 2, stats)
    raise InputError(f"unknown format {fmt!r}; expected one of: {', '.join(FORMATS)}")


def validate(path: str | Path, fmt: str, pairs: bool = False) -> tuple[int, ReadStats]:
    """Read the whole file once without parsing: count sentences, fail early on bad input.

    Ingestion runs this before it writes anything, so a bad line 90% into the file never
    leaves half an ingest behind.
    """
    stats = ReadStats()
    n = 0
    for _ in read_corpus(path, fmt, pairs=pairs, parser=None, stats=stats):
        n += 1
    if n == 0:
        if pairs and stats.odd_sentence_dropped:
            raise CorpusError(f"the corpus holds one sentence, and {flag('pairs')} needs two", path)
        if stats.too_long_lines:
            many = stats.too_long_lines != 1
            raise CorpusError("the corpus holds no sentences: "
                              + (f"all {stats.too_long_lines} text lines are" if many else "its one text line is")
                              + f" longer than {MAX_LINE_CHARS:,} characters, "
                              "which no model takes (such lines are skipped)", path)
        raise CorpusError("the corpus holds no sentences", path)
    return n, stats
