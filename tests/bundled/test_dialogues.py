"""The corpus dialogues: deterministic, valid chats in Gemma's turn format, with answers that
are true of the story they are about, and requests that the told story fulfils."""

import random
import re
from collections import Counter

import pytest

from rgemma import bundled_model_dir
from rgemma.bundled import corpus, dialogue_grammar, dialogues, stories
from rgemma.text.tokenizer import Tokenizer, normalize_messages
from rgemma.training.data import IGNORE, tokenize_chat

MARKUP = re.compile(r"[\[\]{}|]")
NAMES = set(stories.g.GIRLS + stories.g.BOYS + stories.g.PET_NAMES)
# Cast values that, when an answer states them, the story must state too.
FACT_SLOTS = (
    "hero", "friend", "obj", "spot1", "spot2", "spot3", "place", "fear", "stuck_obj", "veg", "craft",
    "find_what", "hurt_who", "chore", "plant_end", "warn_rule", "kind",
)  # fmt: skip


@pytest.fixture(scope="module")
def sample():
    return [dialogues.dialogue(random.Random(f"test:{i}")) for i in range(600)]


def _drawn(plot: str, n: int):
    return [stories.draw_story(random.Random(f"{plot}:{seed}"), plot) for seed in range(n)]


# --------------------------------------------------------------------------- the chats


def test_dialogues_are_deterministic(sample):
    assert sample[:50] == [dialogues.dialogue(random.Random(f"test:{i}")) for i in range(50)]
    assert len({str(d) for d in sample}) > 0.95 * len(sample)  # a few greetings repeat


def test_dialogues_are_valid_chats_that_end_with_the_model(sample):
    for messages in sample:
        chat = normalize_messages(messages)  # alternation and roles, system folded in
        assert chat[-1]["role"] == "assistant" and 2 <= len(chat) <= 12
        for m in messages:
            assert m["content"] == m["content"].strip() and m["content"], messages
            assert m["content"].isascii() and not MARKUP.search(m["content"]), m


def test_every_kind_occurs_in_about_its_share(sample):
    persona = sum(any(m["content"] == dialogue_grammar.PERSONA for m in d) for d in sample)
    told = sum(any("Here is a story about" in m["content"] for m in d) for d in sample)
    system = sum(d[0]["role"] == "system" for d in sample)
    assert 0.01 < persona / len(sample) < 0.15
    assert 0.1 < told / len(sample) < 0.5
    assert 0.1 < system / len(sample) < 0.3


# --------------------------------------------------------------------------- grounding


@pytest.mark.parametrize("plot", stories.plot_names())
def test_answers_are_true_of_the_story(plot):
    for story in _drawn(plot, 12):
        pairs = dialogues.questions(story, random.Random(0))
        assert pairs[0][1] == f"The story is about {story.cast['hero']}, {story.cast['a_hero']}."
        assert story.cast["hero"] in story.paragraphs[0]
        answers = [a for _, a in pairs] + [dialogues.summary(story, random.Random(0))]
        for text in [q for q, _ in pairs] + answers:
            assert not MARKUP.search(text) and text[0].isupper(), text
        for answer in answers:
            for name in NAMES.intersection(re.findall(r"\b[A-Z][a-z]+\b", answer)):
                assert name in (story.cast["hero"], story.cast["friend"]), (name, answer, story.text)
            for slot in FACT_SLOTS:
                value = stories.expand(story.cast[slot], story.cast, random.Random(0))
                if re.search(rf"\b{re.escape(value)}\b", answer):
                    assert value in story.text, (slot, value, answer, story.text)


def test_the_moral_is_quoted_from_the_story():
    for plot in stories.plot_names():
        for story in _drawn(plot, 5):
            pairs = dict(dialogues.questions(story, random.Random(0)))
            learned = [a for a in pairs.values() if " learned that " in a]
            if story.moral is None:
                assert not learned
            else:
                assert learned == [f"{story.cast['hero']} learned that {story.moral}."]
                assert f"{story.moral}." in story.text


def test_a_told_story_is_the_one_asked_for():
    seen = Counter()
    for seed in range(400):
        rng = random.Random(seed)
        (request, reply), story = dialogues._told_story(rng)
        ask, text = request["content"], reply["content"]
        lead_in, told = text.split("\n\n", 1)
        assert told == story.text and re.fullmatch(r"(Sure! )?Here is a story about [^\n]+\.", lead_in)
        if about := re.search(r"about (.+?)[.?]?$", ask):
            assert lead_in.endswith(f"about {about.group(1)}."), (ask, lead_in)  # the request's words
        if named := re.search(r"named (\w+)", ask):
            seen["named"] += 1
            assert named.group(1) == story.cast["hero"] and named.group(1) in story.paragraphs[0]
        if re.search(rf"\b{story.cast['kind']}\b", ask):
            seen["kind"] += 1
    assert seen["named"] > 100 and seen["kind"] > 150
    heroes = {dialogues._told_story(random.Random(i))[1].cast["hero"] for i in range(200)}
    assert heroes - NAMES  # some names are made up


# --------------------------------------------------------------------------- training


def test_the_trainer_learns_the_model_turns_only(sample):
    tok = Tokenizer.from_dir(bundled_model_dir())
    for messages in sample[:40]:
        ids, labels = tokenize_chat(tok, messages)
        learned = tok.decode(
            [t for t, label in zip(ids, labels) if label != IGNORE], skip_special_tokens=False
        )
        replies = [m["content"] for m in messages if m["role"] == "assistant"]
        assert learned == "".join(r + "<end_of_turn>\n" for r in replies)


def test_documents_mix_stories_and_dialogues():
    docs = list(corpus.documents(400, seed=5))
    chats = [d for d in docs if not isinstance(d, str)]
    assert 0.33 < len(chats) / len(docs) < 0.47
    assert chats == [d for d in corpus.documents(400, seed=5) if not isinstance(d, str)]
