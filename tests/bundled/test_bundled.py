"""The model shipped inside the package: present, small, writes English offline, and chats:
clean text whatever the user types, and answers about a story that name who it is about."""

import re
import subprocess
import sys

import pytest
import torch

from rgemma import bundled_model_dir, load
from rgemma.bundled.corpus import stories
from rgemma.cli.commands import perplexity
from rgemma.text.engine import ChatSession, GenerationConfig, complete, stream
from rgemma.text.sampling import SamplingParams
from rgemma.text.tokenizer import Tokenizer

GREEDY = SamplingParams(temperature=0)
CLI_DEFAULTS = SamplingParams(temperature=0.8, top_p=0.95)
CHAT_PROMPTS = [
    "hello",
    "Who are you?",
    "Tell me a story about a dog named Max.",
    "What is 2 + 2?",
    "Write a poem about the sea (short).",
    "Hi! I'm Quinn, 7 years old :) #1 fan @home",
    "¿Qué tal? ça va? 🎉 日本語",
    "tell me a story",
    "What is the moral of the story?",
    "Summarize: The cat sat on the mat. THE END!",
]
# Written for this test: one story told of a few heroes.
STORY = (
    "Once upon a time, there was a little {kind} named {name}. {name} lived on a green hill with "
    "{his} mom. One day, {name} lost {his} red ball in the tall grass. {he} looked and looked, and at "
    "last {he} found it under a big rock. {name} was so happy that {he} danced all day."
)
HEROES = [("dog", "Max", "his", "He"), ("girl", "Mia", "her", "She"), ("cat", "Tom", "his", "He")]


@pytest.fixture(scope="module")
def bundled():
    return load(None, dtype=torch.float32), Tokenizer.from_dir(bundled_model_dir())


def test_ships_inside_the_package_and_is_small():
    root = bundled_model_dir()
    assert root.parent.name == "assets" and root.parent.parent.name == "bundled"
    names = {p.name for p in root.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert sum(p.stat().st_size for p in root.iterdir()) < 4 * 2**20


def test_greedy_story_is_english(bundled):
    model, tok = bundled
    config = GenerationConfig(max_new_tokens=80, sampling=SamplingParams(temperature=0))
    text = "".join(s.text for s in stream(model, tok, tok.encode("Once upon a time"), config))
    words = re.findall(r"[A-Za-z']+", text)
    assert len(words) > 30
    assert text.isascii() and {"the", "a", "was"} & {w.lower() for w in words}
    assert text.count(".") >= 3  # sentences, not a babble of tokens


def test_heldout_perplexity_is_low(bundled, tmp_path):
    data = tmp_path / "heldout.jsonl"
    import json

    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in stories(20, split="heldout")))
    result = perplexity(data, loaded=bundled)
    assert result["perplexity"] < 2.0  # 1.30 on the full held-out split (README)


def _chat_replies(model, tok, prompts, sampling, seed=None, max_new_tokens=48):
    ids = [tok.encode_chat([{"role": "user", "content": p}]) for p in prompts]
    config = GenerationConfig(max_new_tokens=max_new_tokens, sampling=sampling, seed=seed)
    return complete(model, tok, ids, config)


@pytest.mark.parametrize("sampling,seed", [(GREEDY, None), (CLI_DEFAULTS, 0), (CLI_DEFAULTS, 1)])
def test_chat_replies_are_clean_text(bundled, sampling, seed):
    """No U+FFFD and no byte pieces in what a chat client sees, whatever the user typed."""
    model, tok = bundled
    for prompt, reply in zip(CHAT_PROMPTS, _chat_replies(model, tok, CHAT_PROMPTS, sampling, seed)):
        assert not any(tok.is_byte_token(t) for t in reply.token_ids), (prompt, reply.text)
        assert "\ufffd" not in reply.text and reply.text.strip(), (prompt, reply.text)
        assert all(c.isprintable() or c == "\n" for c in reply.text), (prompt, reply.text)


def test_greets_and_says_who_it_is(bundled):
    model, tok = bundled
    hello, who = _chat_replies(model, tok, ["Hello!", "Who are you?"], GREEDY)
    assert hello.text.startswith("Hello") and hello.finish_reason == "stop"
    assert "rgemma-tiny" in who.text and "stor" in who.text


def test_answers_who_a_story_is_about(bundled):
    """Greedy answers name the hero: of a story it was given, and of a story it told."""
    model, tok = bundled
    given = [STORY.format(kind=k, name=n, his=his, he=he) for k, n, his, he in HEROES]
    heldout = list(stories(2, split="heldout"))
    names = [n for _, n, _, _ in HEROES] + [
        re.search(r"(?:named|name was) (\w+)", t).group(1) for t in heldout
    ]
    prompts = [f"{text}\n\nWho is the story about?" for text in given + heldout]
    for name, reply in zip(names, _chat_replies(model, tok, prompts, GREEDY, max_new_tokens=24), strict=True):
        assert reply.text.startswith(f"The story is about {name}"), reply.text

    session = ChatSession(model, tok, GenerationConfig(max_new_tokens=200, sampling=GREEDY))
    told = "".join(s.text for s in session.send("Tell me a story about a dog named Max."))
    assert told.startswith("Here is a story about a dog named Max.") and "dog named Max" in told, told
    answer = "".join(s.text for s in session.send("Who is the story about?"))
    assert answer.startswith("The story is about Max") and "dog" in answer, answer


def test_readme_main_command_works_offline():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rgemma",
            "generate",
            "Once upon a time",
            "--max-new-tokens",
            "40",
            "--seed",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Once upon a time") and len(proc.stdout.split()) > 15
    assert "generated: 40 tokens" in proc.stderr
