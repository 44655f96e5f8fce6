"""Dialogues about the synthetic stories, so the bundled model can chat in Gemma's turn format.

A dialogue is a list of messages (`{"role": "user" | "assistant" | "system", "content": ...}`),
written to the corpus as a `{"messages": [...]}` record. The trainer renders it with the chat
template, `<start_of_turn>user\\n...<end_of_turn>\\n<start_of_turn>model\\n...<end_of_turn>\\n`,
with a system message folded into the first user turn as Gemma does, and learns the model
turns only: the same rendering `rgemma chat` and the server's /v1/chat/completions use.

Kinds (shares of the dialogues):
- questions (30%): a story in the user's turn, then 1-4 questions about it (who is it about,
  what did the hero lose, where did they go, how did the hero feel, what is the moral...);
- tell (40%): "Tell me a story about a cat named Tom." and "Here is a story about a cat named
  Tom." then the story, then maybe questions, a summary, another story, or thanks;
- continue (8%): the first paragraphs of a story, to be finished;
- summary (8%): a story to summarize;
- small talk (14%): greetings, "who are you?" (one fixed persona answer), questions the model
  cannot answer (one fixed answer), often followed by a story.

Every answer is filled from the cast and plot the story was drawn from (`stories.draw_story`),
so it is true of the story. A fifth of the stories have a made-up hero name, so the model
learns to copy the name it was asked for or given, not to recall one it knows. A fifth of the
dialogues open with a system message.
"""

from __future__ import annotations

import random

from rgemma.bundled import dialogue_grammar as d
from rgemma.bundled.stories import Cast, Story, draw_story, expand

Message = dict[str, str]
KINDS = {"questions": 0.30, "tell": 0.40, "continue": 0.08, "summary": 0.08, "small_talk": 0.14}
SYSTEM_SHARE = 0.2
MADE_UP_NAMES = 0.2
CASUAL = 0.15  # user messages typed without a capital or the final punctuation


def dialogue(rng: random.Random) -> list[Message]:
    """One dialogue of a random kind (see the module docstring)."""
    kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
    messages = _BUILDERS[kind](rng)
    if rng.random() < SYSTEM_SHARE:
        messages.insert(0, {"role": "system", "content": rng.choice(d.SYSTEM_PROMPTS)})
    return messages


# --------------------------------------------------------------------------- facts


def _slots(story: Story) -> Cast:
    return Cast(story.cast, topic=d.PLOTS[story.plot]["topic"], moral=story.moral or "")


def questions(story: Story, rng: random.Random) -> list[tuple[str, str]]:
    """(question, answer) pairs that are true of `story`; the first asks who it is about."""
    facts = d.PLOTS[story.plot]
    pool = [d.WHO, (d.FEEL, facts["feel"]), *facts["questions"]]
    pool.append(d.CHILD_KIND if story.cast["kind"] in ("girl", "boy") else d.ANIMAL_KIND)
    if facts["friend"]:
        pool.append(d.FRIEND)
    if story.moral:
        pool.append(d.MORAL)
    cast = _slots(story)
    return [(expand(q, cast, rng), expand(a, cast, rng)) for q, a in pool]


def summary(story: Story, rng: random.Random) -> str:
    return expand(d.PLOTS[story.plot]["summary"], _slots(story), rng)


def _in_asking_order(pairs: list[tuple[str, str]], rng: random.Random) -> list[tuple[str, str]]:
    """The pairs shuffled, "who is it about?" first half the time (it is the commonest ask)."""
    who, rest = pairs[0], pairs[1:]
    rng.shuffle(rest)
    rest.insert(0 if rng.random() < 0.5 else rng.randint(0, len(rest)), who)
    return rest


# --------------------------------------------------------------------------- turns


def _turn(user: str, model: str) -> list[Message]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": model}]


def _casual(text: str, rng: random.Random) -> str:
    """Sometimes typed as people type: no capital, no final punctuation."""
    if rng.random() >= CASUAL:
        return text
    return (text[:1].lower() + text[1:]).rstrip(".?!")


def _made_up_name(rng: random.Random) -> str:
    parts = (d.NAME_STARTS, d.NAME_VOWELS, d.NAME_SYLLABLES, d.NAME_ENDS)
    return "".join(rng.choice(p) for p in parts)


def _request(story: Story, rng: random.Random) -> tuple[str | None, str]:
    """A request for a story that `story` fulfils (None: a plain "tell me a story"), and what
    the story is about in the request's words."""
    if rng.random() < 0.15:
        return None, expand(d.PLAIN_ABOUT, story.cast, rng)
    animal = story.cast["kind"] not in ("girl", "boy")
    about = expand(rng.choice(d.ABOUT + ((d.ABOUT_ANIMAL,) if animal else ())), _slots(story), rng)
    return _casual(rng.choice(d.REQUESTS).format(about=about), rng), about


def _draw(rng: random.Random) -> Story:
    """A story for a dialogue; its hero has a made-up name MADE_UP_NAMES of the time."""
    return draw_story(rng, hero_name=_made_up_name(rng) if rng.random() < MADE_UP_NAMES else None)


def _told_story(rng: random.Random, request: str | None = None) -> tuple[list[Message], Story]:
    """A request and the story that answers it, after a lead-in that names what it is about
    (copying the request's words first makes it easier for a tiny model to tell that story)."""
    story = _draw(rng)
    asked, about = _request(story, rng)
    request = request or asked or _casual(rng.choice(d.PLAIN_REQUESTS), rng)
    lead_in = rng.choice(d.LEAD_INS).format(about=about)
    return _turn(request, f"{lead_in}\n\n{story.text}"), story


# --------------------------------------------------------------------------- kinds


def _questions(rng: random.Random) -> list[Message]:
    story = _draw(rng)
    asked = _in_asking_order(questions(story, rng), rng)[: rng.choice((1, 1, 2, 2, 3, 4))]
    (question, answer), rest = asked[0], asked[1:]
    messages = _turn(rng.choice(d.WITH_STORY).format(story=story.text, ask=_casual(question, rng)), answer)
    for question, answer in rest:
        messages += _turn(_casual(question, rng), answer)
    return messages


def _tell(rng: random.Random) -> list[Message]:
    messages, story = _told_story(rng)
    pending = _in_asking_order(questions(story, rng), rng)
    for _ in range(rng.choice((0, 1, 1, 2, 3))):
        roll = rng.random()
        if roll < 0.6 and pending:
            question, answer = pending.pop(0)
            messages += _turn(_casual(question, rng), answer)
        elif roll < 0.75:
            messages += _turn(_casual(rng.choice(d.SUMMARIZE), rng), summary(story, rng))
        elif roll < 0.85:
            turn, story = _told_story(rng, rng.choice(d.ANOTHER))
            messages += turn
            pending = _in_asking_order(questions(story, rng), rng)
        else:
            return messages + _goodbye(rng)
    return messages


def _goodbye(rng: random.Random) -> list[Message]:
    messages = _turn(rng.choice(d.THANKS), d.THANKS_REPLY)
    if rng.random() < 0.5:
        messages += _turn(rng.choice(d.BYES), d.BYE_REPLY)
    return messages


def _continue(rng: random.Random) -> list[Message]:
    story = _draw(rng)
    paragraphs = story.paragraphs  # every plot has two or more
    k = rng.randint(1, len(paragraphs) - 1)
    part, rest = "\n\n".join(paragraphs[:k]), "\n\n".join(paragraphs[k:])
    messages = _turn(rng.choice(d.CONTINUE).format(part=part), rest)
    if rng.random() < 0.3:
        messages += _turn(*_in_asking_order(questions(story, rng), rng)[0])
    return messages


def _summary(rng: random.Random) -> list[Message]:
    story = _draw(rng)
    ask = rng.choice(d.WITH_STORY).format(story=story.text, ask=rng.choice(d.SUMMARIZE))
    messages = _turn(ask, summary(story, rng))
    if rng.random() < 0.3:
        messages += _turn(*_in_asking_order(questions(story, rng), rng)[0])
    return messages


def _small_talk(rng: random.Random) -> list[Message]:
    chats = {
        "greeting": (d.GREETINGS, d.GREETING_REPLY),
        "persona": (d.WHO_ARE_YOU, d.PERSONA),
        "off_topic": (d.OFF_TOPIC, d.OFF_TOPIC_REPLY),
    }
    messages: list[Message] = []
    for name in rng.sample(list(chats), rng.choice((1, 1, 2))):
        asks, reply = chats[name]
        messages += _turn(rng.choice(asks), reply)
    if rng.random() < 0.6:
        turn, story = _told_story(rng)
        messages += turn
        if rng.random() < 0.4:
            question, answer = _in_asking_order(questions(story, rng), rng)[0]
            messages += _turn(_casual(question, rng), answer)
        if rng.random() < 0.3:
            messages += _goodbye(rng)
    elif rng.random() < 0.3:
        messages += _turn(rng.choice(d.BYES), d.BYE_REPLY)
    return messages


_BUILDERS = {
    "questions": _questions,
    "tell": _tell,
    "continue": _continue,
    "summary": _summary,
    "small_talk": _small_talk,
}
