"""The CLIP BPE tokenizer, built offline from the vocabulary file that open_clip ships.

open_clip's ``bpe_simple_vocab_16e6.txt.gz`` holds the 48,894 BPE merges of OpenAI CLIP.
Writing them as ``vocab.json`` + ``merges.txt`` gives a ``transformers.CLIPTokenizer`` with the
same 49,408 ids (BOS 49406, EOS 49407) as ``open_clip.get_tokenizer("ViT-B-32")``.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

CLIP_VOCAB_SIZE = 49408
BOS_ID = 49406
EOS_ID = 49407
_N_MERGES = 49152 - 256 - 2  # as in open_clip.tokenizer.SimpleTokenizer


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP reversible byte → printable-unicode table."""
    from open_clip.tokenizer import bytes_to_unicode

    return bytes_to_unicode()


def bpe_file() -> Path:
    """Path of the CLIP BPE merges file bundled with open_clip."""
    import open_clip

    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise FileNotFoundError(f"open_clip's BPE vocabulary is missing: {path}")
    return path


def write_clip_vocab(out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``vocab.json`` and ``merges.txt`` (HF CLIP format) into ``out_dir``; return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = gzip.open(bpe_file()).read().decode("utf-8").split("\n")[1 : _N_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    if len(vocab) != CLIP_VOCAB_SIZE:
        raise RuntimeError(f"built a vocabulary of {len(vocab)} tokens, expected {CLIP_VOCAB_SIZE}")
    vocab_path, merges_path = out / "vocab.json", out / "merges.txt"
    vocab_path.write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    merges_path.write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    return vocab_path, merges_path


def build_clip_tokenizer(model_max_length: int = 16, work_dir: str | Path | None = None):
    """A ``transformers.CLIPTokenizer`` over the CLIP BPE vocabulary, padding/truncating to ``model_max_length``."""
    import tempfile

    from transformers import CLIPTokenizer

    if model_max_length < 3:
        raise ValueError(f"model_max_length must be >= 3 (BOS, a token, EOS), got {model_max_length}")
    with tempfile.TemporaryDirectory() as tmp:
        vocab_path, merges_path = write_clip_vocab(work_dir or tmp)
        tok = CLIPTokenizer(vocab=str(vocab_path), merges=str(merges_path), model_max_length=model_max_length)
    return tok
