"""Tokenizer wrapper, streaming detokenizer and chat templates, on tokenizers trained here.

Four tiny tokenizers are built per module: a `tokenizers` BPE with a Llama-style decoder
(Metaspace prefix + Strip), one with Gemma's (no prefix, no Strip), and SentencePiece
models (tokenizer.model only) without and with a dummy prefix. All have byte fallback and
Gemma's special ids;
emoji and CJK are absent from the training text, so they encode as `<0x..>` pieces.
"""

import json
import random
from pathlib import Path

import pytest

from rgemma.text.tokenizer import GEMMA_CHAT_TEMPLATE, StreamingDetokenizer, Tokenizer
from tokenizer_files import SPECIALS, TEXTS, _write_dir


@pytest.fixture(scope="module", params=["llama", "gemma", "sp", "sp-prefix"])
def tok_dir(request, tmp_path_factory) -> Path:
    return _write_dir(tmp_path_factory.mktemp(request.param), request.param)


@pytest.fixture(scope="module")
def tok(tok_dir) -> Tokenizer:
    return Tokenizer.from_dir(tok_dir)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    return _write_dir(tmp_path_factory.mktemp("hf"), "gemma")


def _stream(tok: Tokenizer, ids: list[int], skip_special_tokens: bool = True) -> list[str]:
    detok = StreamingDetokenizer(tok, skip_special_tokens)
    return [detok.push(i) for i in ids] + [detok.flush()]


# --------------------------------------------------------------------------- ids and text


def test_special_ids_come_from_the_files(tok):
    assert (tok.pad_id, tok.eos_id, tok.bos_id, tok.unk_id) == (0, 1, 2, 3)
    eot = tok.token_to_id("<end_of_turn>")
    assert eot is not None and tok.stop_ids == [1, eot]
    assert tok.token_to_id("<no such token>") is None


def test_special_names_from_config_dicts_and_special_tokens_map(tmp_path, hf_dir):
    (tmp_path / "tokenizer.json").write_text((hf_dir / "tokenizer.json").read_text())
    config = {"bos_token": {"content": "<start_of_turn>", "lstrip": False}}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "special_tokens_map.json").write_text(
        json.dumps({"eos_token": "<end_of_turn>", "bos_token": "<eos>"})
    )
    tok = Tokenizer.from_dir(tmp_path)
    assert tok.bos_id == tok.token_to_id("<start_of_turn>")  # tokenizer_config.json wins
    assert tok.eos_id == tok.token_to_id("<end_of_turn>")  # special_tokens_map.json fills in
    assert tok.pad_id == 0  # Gemma's default name
    assert tok.stop_ids == [tok.eos_id]  # <end_of_turn> is the EOS already: listed once


def test_encode_adds_exactly_one_bos(tok):
    ids = tok.encode("hello world")
    assert ids[0] == tok.bos_id and tok.bos_id not in ids[1:]
    assert tok.encode("hello world", add_bos=False) == ids[1:]


def test_add_bos_token_false_in_config_is_followed(tmp_path, hf_dir):
    (tmp_path / "tokenizer.json").write_text((hf_dir / "tokenizer.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": False}))
    tok = Tokenizer.from_dir(tmp_path)
    assert tok.bos_id not in tok.encode("hello")
    assert tok.encode("hello", add_bos=True)[0] == tok.bos_id


@pytest.mark.parametrize("text", TEXTS)
def test_decode_inverts_encode(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_unseen_characters_use_byte_fallback(tok):
    ids = tok.encode("🎉日", add_bos=False)
    assert sum(tok.is_byte_token(i) for i in ids) == 7  # 4 + 3 UTF-8 bytes
    assert not tok.is_byte_token(tok.encode("hello", add_bos=False)[0])


def test_decode_skips_special_tokens_unless_asked(tok):
    ids = tok.encode("hello") + [tok.token_to_id("<end_of_turn>"), tok.eos_id]
    assert tok.decode(ids) == "hello"
    # (Whether "▁hello" keeps its space after <bos> depends on the decoder, as in transformers.)
    assert tok.decode(ids, skip_special_tokens=False).replace(" ", "") == "<bos>hello<end_of_turn><eos>"


def test_special_strings_in_text_encode_as_one_id(tok):
    ids = tok.encode("hi<end_of_turn>", add_bos=False)
    assert ids[-1] == tok.token_to_id("<end_of_turn>")


def test_vocab_size_covers_every_id(tok):
    assert tok.vocab_size > 256 + len(SPECIALS)
    assert tok.id_to_token(tok.vocab_size - 1) is not None


def test_missing_tokenizer_files_name_the_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        Tokenizer.from_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Tokenizer.from_dir(tmp_path / "nope")


def test_from_file_loads_either_format(tok_dir):
    name = "tokenizer.model" if (tok_dir / "tokenizer.model").exists() else "tokenizer.json"
    tok = Tokenizer.from_file(tok_dir / name)
    assert tok.decode(tok.encode("café 🎉")) == "café 🎉"


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("text", TEXTS + ["".join(TEXTS)])
def test_stream_equals_decode_and_never_breaks_characters(tok, text):
    ids = tok.encode(text)
    chunks = _stream(tok, ids)
    assert "".join(chunks) == tok.decode(ids) == text
    assert not any("\ufffd" in chunk for chunk in chunks)


def test_stream_holds_partial_emoji_until_complete(tok):
    emoji = [i for i in tok.encode("🎉", add_bos=False) if tok.is_byte_token(i)]
    tail = tok.encode("ok", add_bos=False)
    detok = tok.detokenizer()
    assert [detok.push(i) for i in emoji[:3]] == ["", "", ""]
    # The last byte completes the emoji; it may be released now or with the next text token.
    rest = detok.push(emoji[3]) + "".join(detok.push(i) for i in tail) + detok.flush()
    assert rest == tok.decode(emoji + tail) and rest.startswith("🎉") and rest.endswith("ok")


def test_stream_keeps_the_space_between_words(tok):
    ids = tok.encode("hello world")
    k = next(k for k in range(len(ids)) if tok.decode(ids[:k]) == "hello")
    detok = tok.detokenizer()
    first = "".join(detok.push(i) for i in ids[:k])
    second = "".join(detok.push(i) for i in ids[k:]) + detok.flush()
    assert (first, second) == ("hello", " world")


@pytest.mark.parametrize("skip_special_tokens", [True, False])
def test_stream_equals_decode_on_random_ids(tok, skip_special_tokens):
    rng = random.Random(0)
    bytes_ = [i for i in range(tok.vocab_size) if tok.is_byte_token(i)]
    # Half the draws are byte pieces, so incomplete and invalid UTF-8 runs are common.
    for _ in range(300):
        ids = [
            rng.choice(bytes_) if rng.random() < 0.5 else rng.randrange(tok.vocab_size)
            for _ in range(rng.randint(1, 25))
        ]
        chunks = _stream(tok, ids, skip_special_tokens)
        assert "".join(chunks) == tok.decode(ids, skip_special_tokens), ids


# --------------------------------------------------------------------------- chat

CHAT = [
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "How are you?"},
]


def test_builtin_gemma_format(tok):
    assert tok.chat_template == GEMMA_CHAT_TEMPLATE
    expected = (
        "<bos><start_of_turn>user\nHi there<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nHow are you?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    assert tok.render_chat(CHAT) == expected
    assert tok.render_chat(CHAT, add_generation_prompt=False) == expected.removesuffix(
        "<start_of_turn>model\n"
    )


def test_model_role_is_accepted_as_assistant(tok):
    renamed = [dict(m, role="model") if m["role"] == "assistant" else m for m in CHAT]
    assert tok.render_chat(renamed) == tok.render_chat(CHAT)


def test_system_message_merges_into_first_user_turn(tok):
    text = tok.render_chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert text == "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"


def test_encode_chat_has_a_single_bos(tok):
    ids = tok.encode_chat(CHAT)
    assert ids[0] == tok.bos_id and ids.count(tok.bos_id) == 1
    assert tok.decode(ids, skip_special_tokens=False) == tok.render_chat(CHAT)


def _dir_with(tmp_path: Path, hf_dir: Path, config: dict, jinja: str | None = None) -> Tokenizer:
    (tmp_path / "tokenizer.json").write_text((hf_dir / "tokenizer.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    if jinja is not None:
        (tmp_path / "chat_template.jinja").write_text(jinja)
    return Tokenizer.from_dir(tmp_path)


SIMPLE = (
    "{% for m in messages %}[{{ m.role }}]{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}>{% endif %}"
)


def test_template_from_tokenizer_config(tmp_path, hf_dir):
    tok = _dir_with(tmp_path, hf_dir, {"chat_template": SIMPLE})
    assert tok.render_chat(CHAT[:2]) == "[user]Hi there\n[assistant]Hello!\n>"
    assert tok.encode_chat(CHAT[:1])[0] != tok.bos_id  # no BOS in the template, none added


def test_named_template_list_uses_default(tmp_path, hf_dir):
    config = {
        "chat_template": [
            {"name": "tool_use", "template": "TOOLS"},
            {"name": "default", "template": SIMPLE},
        ]
    }
    tok = _dir_with(tmp_path, hf_dir, config)
    assert tok.render_chat(CHAT[:1], add_generation_prompt=False) == "[user]Hi there\n"


def test_jinja_file_wins_over_config(tmp_path, hf_dir):
    tok = _dir_with(
        tmp_path,
        hf_dir,
        {"chat_template": SIMPLE},
        jinja="{{ eos_token }}{{ messages[0].content }}",
    )
    assert tok.render_chat(CHAT[:1]) == "<eos>Hi there"


def test_tojson_keeps_text_as_is(tmp_path, hf_dir):
    tok = _dir_with(tmp_path, hf_dir, {"chat_template": "{{ messages[0].content | tojson }}"})
    assert tok.render_chat([{"role": "user", "content": "<b>é</b>"}]) == '"<b>é</b>"'


def test_template_refusal_becomes_value_error(tmp_path, hf_dir):
    refuse = "{% if messages | length > 1 %}{{ raise_exception('Only one turn, please') }}{% endif %}ok"
    tok = _dir_with(tmp_path, hf_dir, {"chat_template": refuse})
    assert tok.render_chat(CHAT[:1]) == "ok"
    with pytest.raises(ValueError, match="Only one turn, please"):
        tok.render_chat(CHAT)


def test_broken_template_syntax_is_a_value_error(tmp_path, hf_dir):
    tok = _dir_with(tmp_path, hf_dir, {"chat_template": "{% for m in messages %}"})
    with pytest.raises(ValueError, match="not valid Jinja"):
        tok.render_chat(CHAT)


@pytest.mark.parametrize(
    "messages, match",
    [
        ([], "non-empty list"),
        ("hello", "non-empty list"),
        (["hi"], r"messages\[0\] must be a dict"),
        ([{"role": "robot", "content": "x"}], "has role 'robot'"),
        ([{"role": "user", "content": 3}], r"messages\[0\]\['content'\] must be a string"),
        ([{"role": "user"}], r"must be a string, got NoneType"),
        (
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
            r"messages\[1\] has role 'user'",
        ),
        ([{"role": "assistant", "content": "a"}], r"messages\[0\] has role 'assistant'"),
        ([{"role": "system", "content": "a"}], "followed by a user message"),
        ([CHAT[0], {"role": "system", "content": "late"}], r"messages\[1\] has role 'system'"),
    ],
)
def test_invalid_messages_are_rejected(tok, messages, match):
    with pytest.raises(ValueError, match=match):
        tok.render_chat(messages)


TRICKY = (
    "{% for m in messages %}\n  {% if m.role == 'user' %}\n    U: {{ m | tojson }}\n  {% else %}\n"
    "    A: {{ m.content | trim }}\n  {% endif %}\n{% endfor %}\n"
    "{% if add_generation_prompt %}A:{% endif %}"
)


@pytest.mark.parametrize("template", [GEMMA_CHAT_TEMPLATE, TRICKY])
def test_chat_matches_transformers(hf_dir, template):
    transformers = pytest.importorskip("transformers")
    theirs = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(hf_dir / "tokenizer.json"), bos_token="<bos>", eos_token="<eos>"
    )
    ours = Tokenizer.from_file(hf_dir / "tokenizer.json", chat_template=template)
    messages = [dict(m, content=f"  {m['content']} <é> 🎉\n") for m in CHAT]
    expected = theirs.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=True
    )
    assert ours.render_chat(messages) == expected
    assert ours.encode_chat(messages) == theirs(expected, add_special_tokens=False)["input_ids"]


def test_copy_tokenizer_carries_everything_the_tokenizer_reads(tok_dir, tmp_path):
    """Training checkpoints, convert and the bundled export copy tokenizers by one list."""
    import shutil

    from rgemma.io.checkpoint_files import copy_tokenizer

    source = shutil.copytree(tok_dir, tmp_path / "src")
    (source / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    copied = copy_tokenizer(source, tmp_path)
    assert sorted(f.name for f in copied) == sorted(p.name for p in source.iterdir())
    a, b = Tokenizer.from_dir(source), Tokenizer.from_dir(tmp_path)
    assert a.encode(TEXTS[0]) == b.encode(TEXTS[0]) and a.chat_template == b.chat_template
