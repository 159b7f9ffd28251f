"""A tiny T5-style tokenizer folder, written offline, for tests and tiny checkpoints.

Takes a folder path; writes into it what the published PixArt-Sigma `tokenizer/` folder holds:
`spiece.model` (a sentencepiece unigram model with pad=0, eos=1, unk=2 and no bos, as T5's),
`tokenizer_config.json` (T5Tokenizer with 100 `<extra_id_N>` sentinels) and `special_tokens_map.json`.
The sentencepiece model is trained on a generated English corpus, single-threaded, so the files are
the same on every run.
"""

import io
import itertools
import json
from pathlib import Path

import sentencepiece as spm

SP_VOCAB_SIZE = 256
EXTRA_IDS = 100
VOCAB_SIZE = SP_VOCAB_SIZE + EXTRA_IDS  # ids of the loaded tokenizer: sp pieces, then the sentinels
MODEL_MAX_LENGTH = 300

_ADJECTIVES = ("a red", "a blue", "a green", "a small", "a large", "an old", "a bright", "a dark", "a quiet",
               "a golden", "a snowy", "a misty", "a tiny", "a giant", "a wooden", "a glass")
_NOUNS = ("cat", "dog", "house", "mountain", "river", "forest", "city", "poster", "flower", "robot", "boat",
          "castle", "garden", "bird", "tree", "lamp", "window", "bridge", "road", "star")
_PLACES = ("in the rain", "at night", "under the sun", "by the sea", "on a hill", "in winter", "near a lake",
           "with neon lights", "at sunset", "in the morning", "behind the clouds", "on a table")
_STYLES = ("oil painting", "photograph", "watercolor", "pixel art", "3d render", "sketch", "digital art",
           "poster design", "high detail", "soft light", "4k", "cinematic")
_WORDS = ("""
    portrait landscape street market harbor village desert ocean island valley canyon meadow jungle glacier
    volcano lighthouse cathedral temple library kitchen bedroom studio balcony rooftop subway airport station
    dragon tiger horse rabbit owl whale dolphin butterfly elephant giraffe penguin squirrel fox wolf bear
    astronaut knight wizard princess pirate samurai dancer musician painter scientist farmer child woman man
    smiling running flying sleeping reading painting walking swimming glowing floating burning melting
    beautiful mysterious colorful peaceful dramatic vintage futuristic minimalist detailed realistic abstract
    surreal elegant cozy gloomy vibrant pastel monochrome symmetrical intricate ethereal whimsical
    spring summer autumn evening midnight twilight sunrise thunderstorm fog snowfall rainbow aurora
    typography headline banner wallpaper illustration composition gradient texture pattern shadow reflection
""".split())
_EXTRA = "the quick brown fox jumps over the lazy dog. 0123456789 !?,.:;'\"()-+=/&%$#@*[]{}<>_~^|\\`"


def _corpus() -> list[str]:
    """A fixed list of short captions covering lowercase letters, digits and ASCII punctuation."""
    lines = [f"{a} {n} {p}, {s}." for a, n, p, s in itertools.product(_ADJECTIVES, _NOUNS, _PLACES[:4], _STYLES[:3])]
    lines += [f"{n} {p}; {s}!" for n, p, s in itertools.product(_NOUNS, _PLACES, _STYLES)]
    lines += [" ".join(_WORDS[i::7]) for i in range(7)] * 5
    lines += [f"{w} {n}, {s}." for w, n, s in zip(_WORDS, itertools.cycle(_NOUNS), itertools.cycle(_STYLES))]
    lines += [_EXTRA, _EXTRA.upper()] * 10
    return lines


def _train_spiece() -> bytes:
    """Train the unigram model in memory; T5's id layout: pad=0, eos=1, unk=2, no bos."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()), model_writer=model, model_type="unigram",
        vocab_size=SP_VOCAB_SIZE, character_coverage=1.0, normalization_rule_name="nmt_nfkc",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
        num_threads=1, shuffle_input_sentence=False, minloglevel=2)
    return model.getvalue()


def write_tiny_tokenizer(folder: Path) -> Path:
    """Write spiece.model, tokenizer_config.json and special_tokens_map.json into `folder`; returns it.

    The loaded tokenizer has VOCAB_SIZE ids (SP_VOCAB_SIZE pieces + EXTRA_IDS sentinels).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(_train_spiece())
    sentinels = [f"<extra_id_{i}>" for i in range(EXTRA_IDS)]
    special = {"additional_special_tokens": sentinels, "eos_token": "</s>", "pad_token": "<pad>",
               "unk_token": "<unk>"}
    config = {**special, "clean_up_tokenization_spaces": True, "extra_ids": EXTRA_IDS, "legacy": True,
              "model_max_length": MODEL_MAX_LENGTH, "sp_model_kwargs": {}, "tokenizer_class": "T5Tokenizer"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2, sort_keys=True) + "\n")
    return folder
