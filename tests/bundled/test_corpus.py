"""The synthetic corpus and the tokenizer trained on it: deterministic, plausible English, a
held-out split that differs from train, and a Gemma-style byte-fallback tokenizer that
round-trips any text, needs no byte pieces for printable ASCII, and keeps the special ids the
model code reads. The dialogues are tested in test_dialogues.py."""

import json
import random
import re
import string
from collections import Counter

import pytest

from rgemma.bundled import corpus, stories
from rgemma.bundled.tokenizer_train import BYTE_TOKENS, SPECIAL_TOKENS, train_tokenizer
from rgemma.io.documents import read_records
from rgemma.text.tokenizer import Tokenizer, render_template

MARKUP = re.compile(r"[\[\]{}|]")
ODD_TEXTS = [
    "Café, naïve, résumé, Zoë and crème brûlée.",
    "Party time 🎉👍🏽 with 日本語 and a flag 🇯🇵!",
    "Tabs\tand  double spaces, then a trailing one ",
    "Line one\nline two\n\n\nline five — “curly quotes” …",
]


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "train.jsonl"
    stats = corpus.write_corpus(path, n_docs=300, seed=1)
    return path, stats


@pytest.fixture(scope="module")
def small_tokenizer(small_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    return train_tokenizer(small_corpus[0], out, vocab_size=700), out


# --------------------------------------------------------------------------- grammar


def test_parse_plots_reads_beats_alternatives_optionals_and_paragraphs():
    text = "== a ==\nOne.\n  Uno.\n? Two.\n# a comment\n\nThree.\n"
    first = [(False, ("One.", "Uno.")), (True, ("Two.",))]
    assert stories.parse_plots(text) == {"a": [first, [(False, ("Three.",))]]}


def test_expand_resolves_nested_choices_and_slots_inside_slot_values():
    cast = stories.Cast(hero="Lily", he="she", joy="[smiled|{he} laughed]")
    for seed in range(20):
        template = "{He} [ran|[hopped|skipped]]. {Hero} {joy}."
        text = stories.expand(template, cast, random.Random(seed))
        assert re.fullmatch(r"She (ran|hopped|skipped)\. Lily (smiled|she laughed)\.", text)


def test_every_plot_renders_without_leftover_markup():
    for plot in stories.plot_names():
        for seed in range(25):
            text = stories.story(random.Random(f"{plot}{seed}"), plot)
            assert not MARKUP.search(text), (plot, text)


def test_every_way_to_say_a_beat_fills_and_ends_a_sentence():
    rng = random.Random(0)
    for _ in range(5):
        cast = stories.story_cast(rng)
        for name, section in stories.sections().items():
            ways = [w for para in section for _, beat in para for w in beat]
            for way in ways:
                text = stories.expand(way, cast, rng)
                assert text[-1] in '.!?"' and not MARKUP.search(text), (name, way)


# --------------------------------------------------------------------------- corpus


def test_stories_are_deterministic_and_a_prefix_of_a_longer_corpus():
    first = list(corpus.stories(40, seed=3))
    assert first == list(corpus.stories(40, seed=3))
    assert first[:15] == list(corpus.stories(15, seed=3))
    assert first != list(corpus.stories(40, seed=4))
    assert len(set(first)) == 40


def test_heldout_split_differs_from_train():
    train = set(corpus.stories(300, seed=0))
    heldout = set(corpus.stories(300, seed=0, split="heldout"))
    assert not train & heldout
    with pytest.raises(ValueError, match="split"):
        next(corpus.stories(1, split="test"))


def test_write_corpus_writes_one_document_per_jsonl_line(small_corpus):
    path, stats = small_corpus
    lines = path.read_text(encoding="utf-8").splitlines()
    assert stats.docs == len(lines) == 300
    records = [json.loads(line) for line in lines]
    assert [r.get("text", r.get("messages")) for r in records] == list(corpus.documents(300, seed=1))
    assert list(read_records(path)) == list(corpus.documents(300, seed=1))  # what `rgemma train` reads
    assert stats.dialogues == sum("messages" in r for r in records)
    assert 0.3 < stats.dialogues / stats.docs < 0.5  # DIALOGUES = 0.4
    assert stats.chars == sum(len(corpus.record_text(r)) for r in read_records(path))
    assert stats.words > 300 * 60


def test_stories_only_are_the_mixed_corpus_stories():
    mixed = list(corpus.documents(200, seed=2))
    only = list(corpus.stories(200, seed=2))
    assert all(isinstance(t, str) for t in only)
    assert [m for m in mixed if isinstance(m, str)] == [t for t, m in zip(only, mixed) if isinstance(m, str)]
    with pytest.raises(ValueError, match="dialogues"):
        next(corpus.documents(1, dialogues=1.5))


def test_stories_read_like_simple_english(small_corpus):
    texts = [r for r in read_records(small_corpus[0]) if isinstance(r, str)]
    assert sum(t.startswith("Once upon a time") for t in texts) > 0.4 * len(texts)
    words = Counter(w.lower() for t in texts for w in re.findall(r"[A-Za-z']+", t))
    assert {"the", "and", "a", "was", "said", "to"} <= {w for w, _ in words.most_common(25)}
    assert len(words) < 2000  # a small vocabulary a tiny model can learn
    for text in texts:
        assert text.isascii() and not MARKUP.search(text)
        assert 60 <= len(text.split()) <= 400
        assert text[0].isupper() and text[-1] in '.!"'
        for paragraph in text.split("\n\n"):
            assert paragraph and paragraph == paragraph.strip()


# --------------------------------------------------------------------------- tokenizer


def test_tokenizer_has_gemma_special_ids_and_byte_pieces(small_tokenizer):
    tok, _ = small_tokenizer
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(6))
    assert [tok.token_to_id(t) for t in BYTE_TOKENS] == list(range(6, 262))
    assert tok.get_vocab_size() == 700
    assert tok.encode("Once upon a time").tokens[:2] == ["<bos>", "▁Once"]


def test_tokenizer_round_trips_corpus_and_any_unicode(small_corpus, small_tokenizer):
    tok, _ = small_tokenizer
    heldout = list(corpus.stories(50, seed=1, split="heldout"))
    for text in heldout + ODD_TEXTS:
        ids = tok.encode(text).ids
        assert ids[0] == 2 and 3 not in ids  # BOS added; byte fallback, never <unk>
        assert tok.decode(ids) == text
    assert "<0xF0>" in tok.encode("🎉").tokens


def test_tokenizer_needs_no_byte_pieces_for_printable_ascii(small_tokenizer):
    # Digits, capitals and punctuation users type are pieces of their own, corpus or not.
    tok, _ = small_tokenizer
    texts = [  # none starts with a space, which decodes away (see tokenizer_train)
        string.printable,
        "".join(map(chr, range(0x21, 0x7F))) + " ",
        *(f"a{c}b" for c in string.printable),
        "Hi! I'm Quinn, 7 years old :) #1 @home [x] {y} <z> ~50% & $3^2 = 9; a|b \\ `q` _",
    ]
    for text in texts:
        encoding = tok.encode(text)
        assert not set(encoding.tokens) & set(BYTE_TOKENS), (text, encoding.tokens)
        assert tok.decode(encoding.ids) == text


def test_tokenizer_files_load_in_the_package_wrapper(small_tokenizer):
    _, out = small_tokenizer
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["add_bos_token"] is True
    special_map = json.loads((out / "special_tokens_map.json").read_text())
    assert special_map["eos_token"]["content"] == "<eos>"
    tok = Tokenizer.from_dir(out)
    assert (tok.pad_id, tok.eos_id, tok.bos_id, tok.unk_id) == (0, 1, 2, 3)
    ids = tok.encode_chat([{"role": "user", "content": "Tell me a story."}])
    assert ids[:2] == [2, 4] and ids.count(5) == 1
    assert tok.decode(tok.encode(ODD_TEXTS[1])) == ODD_TEXTS[1]


def test_chat_template_is_gemmas_and_refuses_the_system_role(small_tokenizer):
    _, out = small_tokenizer
    template = json.loads((out / "tokenizer_config.json").read_text())["chat_template"]
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    text = render_template(template, chat, bos_token="<bos>", add_generation_prompt=True)
    assert text == (
        "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    with pytest.raises(ValueError, match="System role not supported"):
        render_template(template, [{"role": "system", "content": "x"}, *chat], bos_token="<bos>")
