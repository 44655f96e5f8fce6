"""Synthetic children's stories (TinyStories-like), the bulk of the bundled model's corpus.

Why procedural: a ~2M-parameter model trained for minutes on a CPU can only learn to write
readable English from simple, regular prose with a small vocabulary. A generator written
here gives exactly that, is license-clean by construction, needs no download, and is
exactly reproducible from a seed. The word lists and plot templates live in `grammar.py`;
this module draws a cast, picks a plot and fills it in.

Each story is about 190 words: an opening ("Once upon a time, ..."), then one of 19 plots
(a lost toy, sharing, a fear, a kite stuck in a tree, a gift, new food, a race, a rainy day,
a snowman, a wish, bedtime...), most ending with a moral. `draw_story` also returns the cast
and the plot, so the dialogues about a story (`dialogues.py`) answer from the same draw.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache

from rgemma.bundled import grammar as g

_CHOICE = re.compile(r"\[([^\[\]]*)\]")
# The plots state their moral in one of these ways ("And so Tom learned that sharing is caring.")
_MORAL = re.compile(r"(?:learned that|learned an important lesson:|The lesson is that) ([^.!?\"]+)\.")

Beat = tuple[bool, tuple[str, ...]]  # (optional?, the ways to say it)
Section = list[list[Beat]]  # paragraphs of beats


# --------------------------------------------------------------------------- grammar


def parse_plots(text: str) -> dict[str, Section]:
    """Parse the plot format documented in `grammar.py` into sections of beats."""
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
        "a_hero": _article(f"{rng.choice(g.HERO_ADJS)} {hero.kind}"), "a_kind": _article(hero.kind),
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
        "the_obj": f"the {objadj} {obj}", "a_toy": _article(obj), "play": play, "played": played,
        "veg": rng.choice(g.VEGGIES),
    }  # fmt: skip


def story_cast(rng: random.Random, hero_name: str | None = None) -> Cast:
    """Every slot one story may use, drawn once so characters stay consistent. `hero_name`
    renames the hero after the draw (the rest of the draw is the same)."""
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
    if hero_name:
        cast["hero"] = hero_name
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


@dataclass(frozen=True)
class Story:
    """A rendered story with what it was drawn from, so questions about it can be answered."""

    plot: str
    cast: Cast
    text: str

    @property
    def paragraphs(self) -> list[str]:
        return self.text.split("\n\n")

    @property
    def moral(self) -> str | None:
        """What the hero learned ("sharing is caring"), when the story says it."""
        found = _MORAL.findall(self.text)
        return found[-1] if found else None


def draw_story(rng: random.Random, plot: str | None = None, hero_name: str | None = None) -> Story:
    """One story: the opening runs into the plot's first paragraph."""
    plot = plot or rng.choice(plot_names())
    cast = story_cast(rng, hero_name)
    opening = _render(sections()["opening"], cast, rng)[0]
    body = _render(sections()[plot], cast, rng)
    paragraphs = [opening + body[0], *body[1:]]
    text = "\n\n".join(" ".join(p) for p in paragraphs if p)
    text = re.sub(r'([.!?])"\.', r'\1"', text)  # no period after a quote that ended one
    return Story(plot, cast, re.sub(r" {2,}", " ", text))


def story(rng: random.Random, plot: str | None = None) -> str:
    """The text of one story (see `draw_story`)."""
    return draw_story(rng, plot).text
