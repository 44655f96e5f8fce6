"""A SentencePiece `tokenizer.model` as Hugging Face tokenizer files, without transformers.

`sentencepiece_to_tokenizers` reads the model proto (a minimal protobuf reader: the handful of
fields we need, so protobuf is not a dependency) and builds the `tokenizers` pipeline that
encodes like SentencePiece:

- model: BPE (merges rebuilt from the vocabulary, ranked by piece score) or Unigram (the
  pieces and their scores), with byte fallback when the model has it (`<0x00>`..`<0xFF>`);
- normalizer: the model's precompiled character map, and SentencePiece's removal of extra
  spaces when it is on (Gemma has neither: its normalizer is the identity);
- pre-tokenizer: spaces become "▁", with a "▁" in front of the text when the model adds a
  dummy prefix (Gemma does not; a text that starts with a user-defined piece gets none); no
  splitting, as SentencePiece segments the whole text;
- decoder: "▁" back to spaces, byte pieces fused into UTF-8, the dummy prefix stripped;
- control and unknown pieces (`<pad>`, `<eos>`, `<bos>`, `<unk>`) are special tokens, as are
  Gemma's `<start_of_turn>`/`<end_of_turn>`; other user-defined pieces are added tokens that
  are never split, matched in the normalized text like SentencePiece matches them; a
  post-processor puts BOS in front (`add_bos_token`).

`install_tokenizer` copies a tokenizer (a `.model` file, or a directory of tokenizer files) into
a converted checkpoint and writes whatever HF files it lacks.
"""

from __future__ import annotations

import json
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path

from rgemma.io.checkpoint_files import copy_tokenizer, tokenizer_files

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
UNIGRAM, BPE = 1, 2
TURN_TOKENS = ("<start_of_turn>", "<end_of_turn>")


@dataclass
class SentencePieceModel:
    """The parts of SentencePiece's ModelProto that decide how text is encoded."""

    pieces: list[tuple[str, float, int]] = field(default_factory=list)  # (piece, score, type)
    model_type: int = UNIGRAM
    byte_fallback: bool = False
    treat_whitespace_as_suffix: bool = False
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = -1
    precompiled_charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True

    def piece(self, i: int) -> str | None:
        return self.pieces[i][0] if 0 <= i < len(self.pieces) else None


# --------------------------------------------------------------------------- reading the proto
def read_sentencepiece(path: Path) -> SentencePieceModel:
    """Parse a `.model` file; ValueError naming the file when it is not one."""
    import sentencepiece

    try:  # SentencePiece itself is the judge of what a valid model is
        sentencepiece.SentencePieceProcessor(model_file=str(path))
        model = _parse_model(Path(path).read_bytes())
    except (IndexError, struct.error, UnicodeDecodeError, ValueError, RuntimeError, OSError) as err:
        raise ValueError(f"{path}: not a SentencePiece model ({str(err).splitlines()[0]})") from None
    if not model.pieces:
        raise ValueError(f"{path}: not a SentencePiece model (no pieces)")
    return model


def _parse_model(data: bytes) -> SentencePieceModel:
    model = SentencePieceModel()
    trainer = {
        3: "model_type",
        35: "byte_fallback",
        24: "treat_whitespace_as_suffix",
        40: "unk_id",
        41: "bos_id",
        42: "eos_id",
        43: "pad_id",
    }
    normalizer = {
        2: "precompiled_charsmap",
        3: "add_dummy_prefix",
        4: "remove_extra_whitespaces",
        5: "escape_whitespaces",
    }
    for number, value in _fields(data):
        if number == 1:  # repeated SentencePiece {1: piece, 2: score, 3: type}
            piece = dict(_fields(value))
            score = struct.unpack("<f", piece.get(2, b"\0\0\0\0"))[0]
            model.pieces.append((piece.get(1, b"").decode("utf-8"), score, piece.get(3, NORMAL)))
        elif number in (2, 3):  # TrainerSpec, NormalizerSpec
            names = trainer if number == 2 else normalizer
            for sub, v in _fields(value):
                if sub in names:
                    kind = type(getattr(model, names[sub]))
                    setattr(model, names[sub], v if kind is bytes else kind(_signed(v)))
    return model


def _fields(buf: bytes):
    """(field number, value) pairs of a protobuf message: ints for varints, bytes otherwise."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i : i + n], i + n
        elif wire == 5:
            value, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if i > len(buf):
            raise ValueError("truncated protobuf message")
        yield number, value


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[i]
        value |= (b & 0x7F) << shift
        i += 1
        if b < 0x80:
            return value, i
        shift += 7


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v  # int32 -1 is written as a 10-byte varint


# --------------------------------------------------------------------------- building tokenizers
def sentencepiece_to_tokenizers(sp: SentencePieceModel):
    """A `tokenizers.Tokenizer` that encodes to the same ids as the SentencePiece model."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors

    if sp.treat_whitespace_as_suffix or not sp.escape_whitespaces:
        raise ValueError(
            "SentencePiece models with treat_whitespace_as_suffix or without "
            "escape_whitespaces are not supported"
        )
    unk = sp.piece(sp.unk_id)
    if sp.model_type == BPE:
        vocab = {p: i for i, (p, _, _) in enumerate(sp.pieces)}
        model = models.BPE(
            vocab, _bpe_merges(sp), unk_token=unk, fuse_unk=True, byte_fallback=sp.byte_fallback
        )
    elif sp.model_type == UNIGRAM:
        model = models.Unigram(
            [(p, s) for p, s, _ in sp.pieces], unk_id=sp.unk_id, byte_fallback=sp.byte_fallback
        )
    else:
        raise ValueError(
            f"SentencePiece model type {sp.model_type} (word/char) is not supported; expected BPE or Unigram"
        )
    tok = Tokenizer(model)
    normalizer = _normalizer(sp)
    if normalizer is not None:
        tok.normalizer = normalizer
    scheme = "first" if sp.add_dummy_prefix else "never"
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme, split=False)
    tok.decoder = _decoder(sp)
    # User-defined pieces match the normalized text, as in SentencePiece; control pieces the raw text.
    tok.add_tokens(
        [
            AddedToken(p, special=_is_special(p, t), normalized=t == USER_DEFINED)
            for p, _, t in sp.pieces
            if t in (UNKNOWN, CONTROL, USER_DEFINED)
        ]
    )
    bos = sp.piece(sp.bos_id)
    if bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1", special_tokens=[(bos, sp.bos_id)]
        )
    return tok


def _bpe_merges(sp: SentencePieceModel) -> list[tuple[str, str]]:
    """Every split of a piece into two pieces, best merged score first (SentencePiece merges
    the adjacent pair whose union has the highest score)."""
    mergeable = (NORMAL, USER_DEFINED)
    ids = {p: i for i, (p, _, t) in enumerate(sp.pieces) if t in mergeable}
    found = []
    for i, (piece, score, kind) in enumerate(sp.pieces):
        if kind not in mergeable:
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in ids and right in ids:
                found.append((-score, i, ids[left], ids[right], left, right))
    found.sort()
    return [(left, right) for *_, left, right in found]


def _normalizer(sp: SentencePieceModel):
    """Character map and space trimming, applied to the whole text before added tokens match.

    With a dummy prefix, a leading run of spaces is squeezed to one space rather than removed:
    the pre-tokenizer turns it into the "▁" that SentencePiece would have prepended."""
    from tokenizers import Regex, normalizers

    steps = []
    if sp.precompiled_charsmap:
        steps.append(normalizers.Precompiled(sp.precompiled_charsmap))
    if sp.remove_extra_whitespaces:  # SentencePiece trims spaces and squeezes runs of them
        steps.append(normalizers.Replace(Regex(r" +\z"), ""))
        if not sp.add_dummy_prefix:
            steps.append(normalizers.Replace(Regex(r"\A +"), ""))
        steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    return normalizers.Sequence(steps) if steps else None


def _is_special(piece: str, kind: int) -> bool:
    return kind != USER_DEFINED or piece in TURN_TOKENS


def _decoder(sp: SentencePieceModel):
    from tokenizers import decoders

    steps = [decoders.Replace("▁", " ")]
    if sp.byte_fallback:
        steps.append(decoders.ByteFallback())
    steps.append(decoders.Fuse())
    if sp.add_dummy_prefix:
        steps.append(decoders.Strip(" ", 1, 0))
    return decoders.Sequence(steps)


# --------------------------------------------------------------------------- HF config files
def _token_entry(content: str, special: bool = True, normalized: bool = False) -> dict:
    return {
        "content": content,
        "lstrip": False,
        "normalized": normalized,
        "rstrip": False,
        "single_word": False,
        "special": special,
    }


def tokenizer_configs(sp: SentencePieceModel) -> dict[str, dict]:
    """tokenizer_config.json and special_tokens_map.json for a SentencePiece model."""
    from rgemma.text.tokenizer import GEMMA_CHAT_TEMPLATE

    names = {f"{k}_token": sp.piece(getattr(sp, f"{k}_id")) for k in ("bos", "eos", "pad", "unk")}
    names = {k: v for k, v in names.items() if v is not None}
    present = [p for p, _, t in sp.pieces if t == USER_DEFINED and p in TURN_TOKENS]
    added = {
        str(i): _token_entry(p, _is_special(p, t), t == USER_DEFINED)
        for i, (p, _, t) in enumerate(sp.pieces)
        if t in (UNKNOWN, CONTROL, USER_DEFINED)
    }
    config = {
        "add_bos_token": "bos_token" in names,
        "add_eos_token": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": present,
        **names,
        "clean_up_tokenization_spaces": False,
        "spaces_between_special_tokens": False,
        "model_max_length": 1_000_000,
        "padding_side": "left",
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    if len(present) == len(TURN_TOKENS):
        config["chat_template"] = GEMMA_CHAT_TEMPLATE
    special_map = {k: _token_entry(v) for k, v in names.items()}
    special_map["additional_special_tokens"] = present
    return {"tokenizer_config.json": config, "special_tokens_map.json": special_map}


def install_tokenizer(source: str | Path, out: Path) -> None:
    """Copy a SentencePiece `.model` file, or a directory's tokenizer files, into `out`, and
    write tokenizer.json / tokenizer_config.json / special_tokens_map.json where missing."""
    source = Path(source).expanduser()
    if source.is_dir():
        if not any(f.name in ("tokenizer.model", "tokenizer.json") for f in tokenizer_files(source)):
            raise FileNotFoundError(
                f"tokenizer directory {source} has neither tokenizer.model nor tokenizer.json"
            )
        copy_tokenizer(source, out)
    elif source.is_file():
        shutil.copyfile(source, out / "tokenizer.model")
    else:
        raise FileNotFoundError(f"tokenizer not found: {source}")
    model_file = out / "tokenizer.model"
    if not model_file.is_file():
        pad_on_the_left(out)
        return
    sp = read_sentencepiece(model_file)
    if not (out / "tokenizer.json").is_file():
        sentencepiece_to_tokenizers(sp).save(str(out / "tokenizer.json"))
    for name, data in tokenizer_configs(sp).items():
        if not (out / name).is_file():
            (out / name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    pad_on_the_left(out)


def pad_on_the_left(out: Path) -> None:
    """Make tokenizer_config.json in `out` say padding_side "left": RecurrentGemma continues a
    batch from its last column, so generate() refuses right padding (and transformers'
    tokenizers pad on the right unless told)."""
    path = out / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if config.get("padding_side") != "left":
        config["padding_side"] = "left"
        path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
