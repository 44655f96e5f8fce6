"""Tiny tokenizers with Gemma's special ids, trained on the spot, for tests that need one:
a `tokenizers` BPE (Llama- or Gemma-style decoder) or a SentencePiece model, with byte fallback."""

import io
import json
from pathlib import Path

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world, hello there, café au lait and crème brûlée",
    "streaming detokenizers must keep words apart",
    "numbers like 123 and 4567 appear here too",
] * 8
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
TEXTS = [
    "hello world",
    "café crème brûlée",
    "日本語のテキスト",
    "party 🎉 time 👍🏽 ok",
    "🎉🎉 x 🇯🇵",
    "double  spaces  and a trailing one ",
    "line one\nline two\ttab",
]
CONFIG = {
    "add_bos_token": True,
    "bos_token": "<bos>",
    "eos_token": {"content": "<eos>"},
    # As in Gemma's file; a tokenizer.model cannot mark these special itself.
    "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"],
}


def _hf_tokenizer_json(style: str) -> str:
    """tokenizer.json text for a byte-fallback BPE with Gemma's special-token ids."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    tok = HFTokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    prepend = "first" if style == "llama" else "never"
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend)
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if style == "llama" else []))
    tok.train_from_iterator(
        CORPUS, trainers.BpeTrainer(vocab_size=150, special_tokens=SPECIALS, show_progress=False)
    )
    # The trainer cannot add byte pieces as ordinary (non-special) tokens; add them to the JSON.
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    vocab.update({f"<0x{b:02X}>": len(vocab) + b for b in range(256)})
    data["model"]["byte_fallback"] = True
    tok = HFTokenizer.from_str(json.dumps(data))
    # Like Gemma's file: the post-processor adds BOS, which the wrapper must not double.
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return tok.to_str()


def _sp_model(add_dummy_prefix: bool) -> bytes:
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=buf, vocab_size=360, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, hard_vocab_limit=False,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        user_defined_symbols=["<start_of_turn>", "<end_of_turn>"],
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        add_dummy_prefix=add_dummy_prefix,
        minloglevel=2,
    )  # fmt: skip
    return buf.getvalue()


def _write_dir(root: Path, kind: str, config: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if kind.startswith("sp"):
        (root / "tokenizer.model").write_bytes(_sp_model(add_dummy_prefix=kind == "sp-prefix"))
    else:
        (root / "tokenizer.json").write_text(_hf_tokenizer_json(kind), encoding="utf-8")
    (root / "tokenizer_config.json").write_text(json.dumps(config or CONFIG), encoding="utf-8")
    return root
