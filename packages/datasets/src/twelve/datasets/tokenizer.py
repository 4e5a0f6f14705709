"""BERT WordPiece tokenisation exactly as the original built its text inputs (original-system.md §3.5).

Text is lower-cased and split into word pieces without special tokens, cut to T−2 pieces, then
wrapped as `[CLS] … [SEP]`; padding happens later, to the longest text of a batch. The
vocabulary's sha256 (of its tokens in id order, one per line — for a `vocab.txt` this is the
file's own sha256) travels with checkpoints so that a model never meets ids from another
vocabulary.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tokenizers.decoders import WordPiece as WordPieceDecoder
from tokenizers.models import WordPiece
from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer

CLS_TOKEN = "[CLS]"
SEP_TOKEN = "[SEP]"
UNK_TOKEN = "[UNK]"
PAD_ID = 0
"""Text padding id; the original pads with 0, which is `[PAD]` in BERT vocabularies."""


class VocabularyMismatchError(ValueError):
    """A checkpoint or cache was built with another vocabulary than the tokenizer in use."""


def vocabulary_sha256(tokens: Sequence[str]) -> str:
    """Fingerprint a vocabulary as its tokens in id order, one per line (= a vocab.txt's sha256)."""
    digest = hashlib.sha256()
    for token in tokens:
        digest.update(token.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def _tokens_by_id(tokenizer: Tokenizer, source: str) -> list[str]:
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    tokens = [""] * len(vocab)
    for token, index in vocab.items():
        if not 0 <= index < len(vocab) or tokens[index]:
            raise ValueError(f"{source}: vocabulary ids are not 0..{len(vocab) - 1} without gaps")
        tokens[index] = token
    return tokens


class BertTokenizer:
    """WordPiece tokenizer producing the original's `[CLS] … [SEP]` id sequences."""

    def __init__(self, tokenizer: Tokenizer, *, source: str) -> None:
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        self.source = source
        tokens = _tokens_by_id(tokenizer, source)
        for special in (CLS_TOKEN, SEP_TOKEN, UNK_TOKEN):
            if special not in tokenizer.get_vocab():
                raise ValueError(f"{source}: the vocabulary has no {special} token")
        self.vocab_size = len(tokens)
        self.vocab_sha256 = vocabulary_sha256(tokens)
        self.cls_id = tokenizer.token_to_id(CLS_TOKEN)
        self.sep_id = tokenizer.token_to_id(SEP_TOKEN)

    @classmethod
    def from_vocab_file(cls, path: str | Path, *, lowercase: bool = True) -> BertTokenizer:
        """Build bert-base-uncased's tokenizer from a `vocab.txt` (one token per line)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"BERT vocabulary {path} does not exist")
        vocab: dict[str, int] = {}
        with path.open(encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                token = line.rstrip("\n").rstrip("\r")
                if token in vocab:
                    raise ValueError(f"{path}: line {line_number}: token {token!r} appears twice")
                vocab[token] = len(vocab)
        if UNK_TOKEN not in vocab:
            raise ValueError(f"{path}: the vocabulary has no {UNK_TOKEN} token")
        tokenizer = Tokenizer(WordPiece(vocab, unk_token=UNK_TOKEN, max_input_chars_per_word=100))
        tokenizer.normalizer = BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
        )
        tokenizer.pre_tokenizer = BertPreTokenizer()
        tokenizer.decoder = WordPieceDecoder(prefix="##")
        return cls(tokenizer, source=str(path))

    @classmethod
    def from_tokenizer_json(cls, path: str | Path) -> BertTokenizer:
        """Load a Hugging Face `tokenizer.json` (its normaliser decides the lower-casing)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file {path} does not exist")
        return cls(Tokenizer.from_file(str(path)), source=str(path))

    @classmethod
    def from_hub(cls, name: str) -> BertTokenizer:
        """Download a tokenizer by hub id (needs the network; e.g. `bert-base-uncased`)."""
        return cls(Tokenizer.from_pretrained(name), source=name)

    @classmethod
    def load(cls, source: str | Path) -> BertTokenizer:
        """Open a `vocab.txt`, a `tokenizer.json`, a folder holding either, or else a hub id."""
        path = Path(source)
        if path.is_dir():
            for name, loader in (
                ("tokenizer.json", cls.from_tokenizer_json),
                ("vocab.txt", cls.from_vocab_file),
            ):
                if (path / name).is_file():
                    return loader(path / name)
            raise FileNotFoundError(f"{path} holds neither tokenizer.json nor vocab.txt")
        if path.is_file():
            if path.suffix == ".json":
                return cls.from_tokenizer_json(path)
            return cls.from_vocab_file(path)
        text = str(source)
        if path.suffix in (".txt", ".json") or text.startswith((".", "/", "~")):
            raise FileNotFoundError(f"tokenizer file {text} does not exist")
        return cls.from_hub(text)

    def word_pieces(self, text: str) -> list[int]:
        """Word-piece ids of a text without special tokens or truncation."""
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def encode(self, text: str, max_length: int) -> np.ndarray:
        """`[CLS]` + the first `max_length − 2` word pieces + `[SEP]`, as int64 ids."""
        if max_length < 3:
            raise ValueError(f"max_length must be at least 3, got {max_length}")
        pieces = self.word_pieces(text)[: max_length - 2]
        ids = np.empty(len(pieces) + 2, dtype=np.int64)
        ids[0] = self.cls_id
        ids[1:-1] = pieces
        ids[-1] = self.sep_id
        return ids

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Turn ids back into text (special tokens and padding dropped), for inspection."""
        special = {self.cls_id, self.sep_id, PAD_ID}
        return self._tokenizer.decode([int(i) for i in ids if int(i) not in special])

    def check_vocabulary(self, expected_sha256: str) -> None:
        """Refuse to go on when a checkpoint was trained with a different vocabulary."""
        if expected_sha256 != self.vocab_sha256:
            raise VocabularyMismatchError(
                f"vocabulary mismatch: the checkpoint expects sha256 {expected_sha256}, but "
                f"{self.source} has {self.vocab_sha256}; use the vocabulary it was trained with"
            )
