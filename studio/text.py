"""Prompts -> token ids and padding masks for the T5 encoder, as diffusers' PixArtSigmaPipeline makes them.

Takes a `tokenizer/` folder in the published layout (spiece.model + tokenizer_config.json +
special_tokens_map.json, with or without tokenizer.json) and prompt strings; gives int32 numpy arrays
(B, max_length) of ids and of the mask (1 = token, 0 = padding). Caption cleaning (the pipeline's
`clean_caption=True`, which needs bs4 and ftfy) is not done: `preprocess` is the `clean_caption=False` path.
"""

import os
import re
import threading
from pathlib import Path

import numpy as np

from studio.errors import CheckpointError, InputError, first_line

MAX_LENGTH = 300  # PixArt-Sigma's max_sequence_length
SAMPLE = "a photo of a cat"  # a text every T5 vocabulary has pieces for: the loaded tokenizer is tried on it
# transformers' lazy import of T5Tokenizer is not thread-safe (two threads loading at once in a fresh process:
# "cannot import name 'T5Tokenizer'"), and its logging verbosity, lowered while loading, is process-wide: two
# threads overlapping left it at ERROR. One load at a time.
_TRANSFORMERS = threading.Lock()


def join_surrogates(text: str) -> str:
    """`text` with each UTF-16 surrogate pair as the character it encodes: what JSON's escapes "\\ud83e\\udd8a"
    (Python's json.dump of an emoji) mean, which YAML reads as two halves; lone halves stay."""
    if not any("\ud800" <= c <= "\udfff" for c in text):
        return text
    return re.sub("[\ud800-\udbff][\udc00-\udfff]",
                  lambda m: m[0].encode("utf-16-le", "surrogatepass").decode("utf-16-le"), text)


def surrogate_problem(text: str) -> str | None:
    """Why `text` is not text when it holds a lone surrogate (YAML reads the escape "\\udce9", half of a UTF-16
    pair, which is no character: no file name nor tokenizer takes it), or None."""
    bad = next((c for c in text if "\ud800" <= c <= "\udfff"), None)
    return None if bad is None else (f"\\u{ord(bad):04x} is half of a UTF-16 surrogate pair, not a character; "
                                     f"write the character itself")


def surrogates_escaped(text: str) -> str:
    """`text` with lone surrogates (os.fsdecode's stand-ins for bytes that are no UTF-8) as escapes: a message
    that holds one can be written anywhere."""
    return text.encode("utf-8", "backslashreplace").decode()


def load_tokenizer(folder, vocab_size: int | None = None):
    """The T5 tokenizer of a `tokenizer/` folder, through transformers' T5Tokenizer (the class the published
    model_index.json names, as diffusers loads it: a folder with tokenizer.json alone, or without
    tokenizer_config.json, loads too), offline; checked to work as T5's ('<pad>' is id 0, '</s>' id 1, a
    sample text encodes to known ids ending in '</s>', none of them '<unk>') and, given the text encoder's
    `vocab_size`, to have no more tokens than the encoder has embedding rows."""
    folder = Path(folder)
    if not (folder / "spiece.model").is_file() and not (folder / "tokenizer.json").is_file():
        raise CheckpointError(f"{folder}: no spiece.model or tokenizer.json; expected a T5 tokenizer folder")
    if not (folder / "tokenizer.json").is_file():
        _check_sentencepiece(folder / "spiece.model")  # transformers would take a damaged one for a tiktoken file
    # studio takes only the tokenizer from transformers: its advice that PyTorch is missing is noise here
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    with _TRANSFORMERS:
        from transformers import T5Tokenizer
        from transformers.utils import logging

        verbosity = logging.get_verbosity()
        logging.set_verbosity_error()  # its warnings about files it can't read: the error below says it in one line
        try:
            tokenizer = T5Tokenizer.from_pretrained(str(folder), local_files_only=True)
            problem = _t5_problem(tokenizer)
        except Warning:  # raised as errors (tests): not the folder's fault
            raise
        except Exception as e:  # whatever a third-party loader raises on a damaged folder, said in one line
            raise CheckpointError(f"{folder}: the tokenizer does not load ({type(e).__name__}: "
                                  f"{_first_sentence(str(e))})") from e
        finally:
            logging.set_verbosity(verbosity)
    if problem:
        raise CheckpointError(f"{folder}: not a working T5 tokenizer ({problem}); copy the checkpoint's tokenizer "
                              "folder again")
    if vocab_size is not None and len(tokenizer) > vocab_size:
        raise CheckpointError(f"{folder}: the tokenizer has {len(tokenizer)} tokens, the text encoder's vocab_size is "
                              f"{vocab_size}: the tokenizer and text_encoder folders come from different models")
    # padding after the tokens, whatever the folder's tokenizer_config says: the pipeline keeps the first
    # mask.sum() positions (`real_tokens`), and T5's features at real positions don't depend on where the
    # padding is (the reference, padding on the left, gets the same features there)
    tokenizer.padding_side = "right"
    return tokenizer


def _check_sentencepiece(path: Path) -> None:
    """A CheckpointError unless `path` loads as a sentencepiece model (an empty or damaged one fails here)."""
    import sentencepiece as spm

    try:
        spm.SentencePieceProcessor(model_file=str(path))
    except (RuntimeError, OSError) as e:
        raise CheckpointError(f"{path.parent}: spiece.model is not a sentencepiece model "
                              f"({first_line(e)}); copy the checkpoint's "
                              "tokenizer folder again") from None


def _t5_problem(tokenizer) -> str | None:
    """What keeps `tokenizer` from tokenizing as T5's does, or None."""
    if (tokenizer.pad_token_id, tokenizer.eos_token_id) != (0, 1):
        return (f"'<pad>' is id {tokenizer.pad_token_id} and '</s>' id {tokenizer.eos_token_id}, where T5's are 0 "
                "and 1")
    ids = tokenizer(SAMPLE)["input_ids"]
    if ids[-1:] != [1] or not all(0 <= i < len(tokenizer) for i in ids):
        return f"{SAMPLE!r} encodes to {ids}, not ids below {len(tokenizer)} ending in '</s>' (1)"
    if tokenizer.unk_token_id in ids:  # a vocabulary without these common words' pieces is none at all
        return f"{SAMPLE!r} encodes to {ids}, with '<unk>' ({tokenizer.unk_token_id}) among them"
    return None


def _first_sentence(message: str) -> str:
    """A third-party error's first line, on one line; with the lines after it when it ends in ':' (a list)."""
    lines = [line.strip() for line in message.strip().splitlines()]
    if not lines:
        return ""
    end = next((i for i, line in enumerate(lines) if not line.endswith(":")), len(lines) - 1)
    return " ".join(lines[:end + 1])[:300]


def preprocess(text: str) -> str:
    """The pipeline's prompt preprocessing without caption cleaning: lowercase, strip outer whitespace."""
    return text.lower().strip()


def tokenize(tokenizer, prompts: list[str], max_length: int = MAX_LENGTH) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and mask, each int32 (B, max_length): '</s>' appended, truncated, padded with '<pad>'.

    The prompts are tokenized as given; apply `preprocess` first to match the pipeline.
    """
    if isinstance(prompts, str):
        raise InputError(f"tokenize: prompts must be a list of strings, got the string {prompts[:40]!r}")
    enc = tokenizer(list(prompts), padding="max_length", max_length=max_length, truncation=True,
                    add_special_tokens=True, return_attention_mask=True, return_tensors="np")
    return enc["input_ids"].astype(np.int32), enc["attention_mask"].astype(np.int32)


def truncated_text(tokenizer, prompt: str, max_length: int = MAX_LENGTH) -> str:
    """The part of `prompt` that `tokenize` drops for length ('' when it fits), which the pipeline warns of."""
    ids = tokenizer(prompt, add_special_tokens=True, verbose=False)["input_ids"]  # long is expected here
    if len(ids) <= max_length:
        return ""
    left = tokenizer.truncation_side == "left"  # (a tokenizer_config may say so) the start goes, '</s>' stays
    return tokenizer.decode(ids[:len(ids) - max_length] if left else ids[max_length - 1:-1])
