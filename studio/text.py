"""Prompts -> token ids and padding masks for the T5 encoder, as diffusers' PixArtSigmaPipeline makes them.

Takes a `tokenizer/` folder in the published layout (spiece.model + tokenizer_config.json +
special_tokens_map.json, with or without tokenizer.json) and prompt strings; gives int32 numpy arrays
(B, max_length) of ids and of the mask (1 = token, 0 = padding). Caption cleaning (the pipeline's
`clean_caption=True`, which needs bs4 and ftfy) is not done: `preprocess` is the `clean_caption=False` path.
"""

import os
from pathlib import Path

import numpy as np

from studio.errors import CheckpointError, InputError

MAX_LENGTH = 300  # PixArt-Sigma's max_sequence_length


def load_tokenizer(folder):
    """The T5 tokenizer of a `tokenizer/` folder, through transformers' AutoTokenizer, offline."""
    folder = Path(folder)
    if not (folder / "spiece.model").is_file() and not (folder / "tokenizer.json").is_file():
        raise CheckpointError(f"{folder}: no spiece.model or tokenizer.json; expected a T5 tokenizer folder")
    # studio takes only the tokenizer from transformers: its advice that PyTorch is missing is noise here
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder}: the tokenizer does not load ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from e


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
    return tokenizer.decode(ids[max_length - 1:-1]) if len(ids) > max_length else ""
