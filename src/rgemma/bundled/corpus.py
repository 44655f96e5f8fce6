"""Synthetic children's stories (TinyStories-like) for training the tiny shipped model.

Why procedural: a ~2M-parameter model trained for minutes on a CPU can only learn to write
readable English from simple, regular prose with a small vocabulary. A generator written
here gives exactly that, is license-clean by construction, needs no download, and is
exactly reproducible from a seed. The word lists and plot templates live in
`corpus_grammar.py`; this module draws a cast, picks a plot and fills it in.

Each document is one story of about 190 words: an opening ("Once upon a time, ..."), then
one of 19 plots (a lost toy, sharing, a fear, a kite stuck in a tree, a gift, new food,
a race, a rainy day, a snowman, a wish, bedtime...), most ending with a moral.
Document `i` is drawn from its own RNG seeded with "split:seed:i", so a smaller corpus is a
prefix of a larger one, and the "heldout" split never shares a stream with "train".

    python -m rgemma.corpus data/train.jsonl --docs 20000 --seed 0
    python -m rgemma.corpus data/heldout.jsonl --docs 500 --seed 0 --split heldout
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from rgemma.bundled import grammar as g
from rgemma.io.atomic import atomic_file

SPLITS = ("train", "heldout")
_CHOICE = re.compile(r"\[([^\[\]]*)\]")

Beat = tuple[bool, tuple[str, ...]]  # (optional?, the ways to say it)
Section = list[list[Beat]]  # paragraphs of beats


# --------------------------------------------------------------------------- grammar


def parse_plots(text: str) -> dict[str, Section]:
    """Parse the plot format documented in `corpus_grammar` into sections of beats."""
    sections: dict[str, Section] = {}
    paras: Section = []
    for line in text.splitlines():
        if line.startswith("=="):
            paras = sections[line.strip("= ")] = [[]]
        elif not line.strip():
            paras.append([])
        elif line.startswith("#"):
            continue
        elif line.startswith("  "):
            optional, ways = paras[-1][-1]
            paras[-1][-1] = (optional, (*ways, line.strip()))
        else:
            optional = line.startswith("? ")
            paras[-1].append((optional, (line[2:] if optional else line,)))
    return {name: [p for p in body if p] for name, body in sections.items()}


@lru_cache(maxsize=1)
def sections() -> dict[str, Section]:
    """The parsed grammar: "opening" plus one section per plot."""
    return parse_plots(g.PLOTS)


def plot_names() -> tuple[str, ...]:
    return tuple(name for name in sections() if name != "opening")


def expand(template: str, cast: dict[str, str], rng: random.Random) -> str:
    """Pick `[a|b]` alternatives, then fill `{slots}`; repeat, as slot values may hold both."""
    text = template
    for _ in range(4):
        while match := _CHOICE.search(text):
            pick = rng.choice(match.group(1).split("|"))
            text = text[: match.start()] + pick + text[match.end() :]
        if "{" not in text:
            return text
        text = text.format_map(cast)
    raise ValueError(f"slots nest too deeply in {template!r}")


# --------------------------------------------------------------------------- cast


class Cast(dict):
    """Slot values; `{Name}` gives the value of `{name}` with a capital first letter."""

    def __missing__(self, key: str) -> str:
        low = key[:1].lower() + key[1:]
        if key[:1].isupper() and low in self:
            return _capitalize(self[low])
        raise KeyError(key)


def _capitalize(value: str) -> str:
    # A value that starts with a slot capitalises the slot's name instead: "{his} friend".
    if value.startswith("{"):
        return "{" + value[1:2].upper() + value[2:]
    return value[:1].upper() + value[1:]


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


@dataclass(frozen=True)
class Character:
    name: str
    kind: str
    female: bool
    went: str  # how it moves ("hopped")
    joy: str  # what it does when happy, a template that uses {his}
    home: str
    look: str


def _character(rng: random.Random, avoid: str = "") -> Character:
    """A child (a bit over half the time) or a named animal, never named `avoid`."""
    female = rng.random() < 0.5
    own_names = g.GIRLS if female else g.BOYS
    if rng.random() < 0.55:
        kind = "girl" if female else "boy"
        went, joy, home, look = "ran", g.HUMAN_JOYS, rng.choice(g.HOMES), rng.choice(g.HUMAN_LOOKS)
        name = rng.choice(own_names)
    else:
        kind = rng.choice(list(g.ANIMALS))
        went, joy, home, look = g.ANIMALS[kind]
        home = rng.choice(g.HOMES) if rng.random() < 0.4 else home
        name = rng.choice(g.PET_NAMES if rng.random() < 0.7 else own_names)
    if name == avoid:
        return _character(rng, avoid)
    return Character(name, kind, female, went, joy, home, look)


def _pronouns(female: bool, prefix: str) -> dict[str, str]:
    words = ("she", "her", "her", "herself") if female else ("he", "him", "his", "himself")
    return dict(zip((prefix + k for k in ("he", "him", "his", "self")), words))


def _hero_slots(hero: Character, rng: random.Random) -> dict[str, str]:
    return {
        "hero": hero.name, "kind": hero.kind, "went": hero.went, "joy": hero.joy,
        "home": hero.home, "look": hero.look, "hobby": rng.choice(g.HOBBIES),
        "a_hero": _article(f"{rng.choice(g.HERO_ADJS)} {hero.kind}"),
        **_pronouns(hero.female, ""),
    }  # fmt: skip


def _friend_slots(friend: Character, rng: random.Random) -> dict[str, str]:
    a_friend = _article(f"{rng.choice(g.HERO_ADJS)} {friend.kind}")
    ways = ["{his} friend {friend}", f"{a_friend} named {{friend}}"]
    if friend.kind not in ("girl", "boy"):
        ways.append("{his} friend {friend} the {fkind}")
    meet = rng.choice(ways)
    return {
        "friend": friend.name, "fkind": friend.kind, "a_friend": a_friend, "meet": meet,
        "fjoy": friend.joy.replace("{his}", "{fhis}"), **_pronouns(friend.female, "f"),
    }  # fmt: skip


def _thing_slots(rng: random.Random) -> dict[str, str]:
    """The place (with three distinct hiding spots), the toy and the food of one story."""
    at_place = rng.choice(list(g.PLACES))
    spots = rng.sample(g.PLACES[at_place], 3)
    obj = rng.choice(list(g.OBJECTS))
    looks, play, played = g.OBJECTS[obj]
    objadj = rng.choice(looks)
    return {
        "at_place": at_place, "place": at_place.split(" ", 1)[1],
        "spot1": spots[0], "spot2": spots[1], "spot3": spots[2],
        "obj": obj, "objadj": objadj, "a_obj": _article(f"{objadj} {obj}"),
        "the_obj": f"the {objadj} {obj}", "play": play, "played": played,
        "veg": rng.choice(g.VEGGIES),
    }  # fmt: skip


def story_cast(rng: random.Random) -> Cast:
    """Every slot one story may use, drawn once so characters stay consistent."""
    hero = _character(rng)
    friend = _character(rng, avoid=hero.name)
    mom = rng.random() < 0.5
    cast = Cast(_hero_slots(hero, rng), **_friend_slots(friend, rng), **_thing_slots(rng))
    cast.update(parent="mom" if mom else "dad", **_pronouns(mom, "p"))
    cast["grand"] = rng.choice(("grandma", "grandpa"))
    tables = (g.FEARS, g.STUCKS, g.CRAFTS, g.FINDS, g.HURTS, g.WARNINGS, g.CHORES, g.WISHES)
    for table in tables:  # one scenario of each kind; the plot uses at most one
        cast.update(rng.choice(table))
    cast.update(indoor=rng.choice(g.INDOORS), plant_end=rng.choice(g.PLANT_ENDS))
    return cast


# --------------------------------------------------------------------------- stories


def _render(section: Section, cast: Cast, rng: random.Random) -> list[list[str]]:
    """Paragraphs of sentences; each optional beat is kept half the time."""
    paragraphs = []
    for para in section:
        kept = [ways for optional, ways in para if not (optional and rng.random() < 0.5)]
        paragraphs.append([_sentence_case(expand(rng.choice(ways), cast, rng)) for ways in kept])
    return paragraphs


def _sentence_case(text: str) -> str:
    # Beats start sentences; a slot such as {meet} may have put a lowercase word first.
    i = 1 if text.startswith('"') else 0
    return text[:i] + text[i : i + 1].upper() + text[i + 1 :]


def story(rng: random.Random, plot: str | None = None) -> str:
    """One story: the opening runs into the plot's first paragraph."""
    plot = plot or rng.choice(plot_names())
    cast = story_cast(rng)
    opening = _render(sections()["opening"], cast, rng)[0]
    body = _render(sections()[plot], cast, rng)
    paragraphs = [opening + body[0], *body[1:]]
    text = "\n\n".join(" ".join(p) for p in paragraphs if p)
    text = re.sub(r'([.!?])"\.', r'\1"', text)  # no period after a quote that ended one
    return re.sub(r" {2,}", " ", text)


def stories(n_docs: int, seed: int = 0, split: str = "train") -> Iterator[str]:
    """The corpus, document by document; document i depends only on (split, seed, i)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    for i in range(n_docs):
        yield story(random.Random(f"{split}:{seed}:{i}"))


@dataclass(frozen=True)
class CorpusStats:
    docs: int
    chars: int
    megabytes: float
    words: int
    distinct_words: int


def write_corpus(path: str | Path, n_docs: int, seed: int = 0, split: str = "train") -> CorpusStats:
    """Write `n_docs` stories as JSONL (`{"text": ...}` per line), atomically."""
    path = Path(path)
    chars = words = 0
    vocab: set[str] = set()
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for text in stories(n_docs, seed, split):
            f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
            tokens = re.findall(r"[A-Za-z']+", text)
            chars, words = chars + len(text), words + len(tokens)
            vocab.update(t.lower() for t in tokens)
    return CorpusStats(n_docs, chars, round(path.stat().st_size / 2**20, 2), words, len(vocab))


def read_texts(path: str | Path) -> Iterator[str]:
    """The `text` of each line of a JSONL corpus."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)["text"]


def main(argv: list[str] | None = None) -> None:
    summary = __doc__.split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="python -m rgemma.corpus", description=summary)
    parser.add_argument("out_file", type=Path, help="JSONL file to write")
    parser.add_argument("--docs", type=int, default=20000, help="number of stories (default 20000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--split", choices=SPLITS, default="train", help="heldout: a disjoint stream of stories"
    )
    args = parser.parse_args(argv)
    stats = write_corpus(args.out_file, args.docs, args.seed, args.split)
    print(json.dumps({"path": str(args.out_file), **asdict(stats)}), file=sys.stderr)


if __name__ == "__main__":
    main()
