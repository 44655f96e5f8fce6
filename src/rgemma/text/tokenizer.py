"""Tokenizer wrapper, streaming detokenizer and chat templates.

`Tokenizer` loads a Hugging Face checkpoint directory: `tokenizer.json` through the
`tokenizers` library, or `tokenizer.model` through SentencePiece when there is no
`tokenizer.json`. Special tokens, `add_bos_token` and the chat template are read from
`tokenizer_config.json` / `special_tokens_map.json` / `chat_template.jinja`; nothing about
Gemma is hard-coded except fallback names and the built-in Gemma chat template.

`StreamingDetokenizer` turns ids into text one at a time without ever emitting half a
UTF-8 character, and the concatenation of its output equals `Tokenizer.decode(all_ids)`.

Chat rendering follows transformers' `apply_chat_template`: a sandboxed Jinja environment
with `trim_blocks`/`lstrip_blocks`, `raise_exception`, `tojson` and `strftime_now`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from rgemma.io.files import require_dir, require_file

# Fallback special-token names: Gemma's, used when the checkpoint's files do not name one.
_DEFAULT_SPECIALS = {
    "bos_token": "<bos>",
    "eos_token": "<eos>",
    "pad_token": "<pad>",
    "unk_token": "<unk>",
}
_END_OF_TURN = "<end_of_turn>"
_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")
_REPLACEMENT_CHAR = "\ufffd"

# The chat template shipped in google/gemma-2b-it and google/recurrentgemma-2b-it
# tokenizer_config.json: "assistant" is written as "model", content is trimmed.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)

Message = dict[str, Any]


# --------------------------------------------------------------------------- backends


class _HFBackend:
    """`tokenizer.json` through the `tokenizers` library."""

    def __init__(self, path: Path) -> None:
        import tokenizers

        self._tok = tokenizers.Tokenizer.from_file(str(path))
        added = self._tok.get_added_tokens_decoder()
        self.special_ids = frozenset(i for i, tok in added.items() if tok.special)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        # The post-processor would add BOS; the wrapper decides about BOS itself.
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tok.id_to_token(token_id)


class _SPBackend:
    """`tokenizer.model` through SentencePiece, matching transformers' slow tokenizer.

    Special strings in the text (control pieces such as `<bos>`, and the checkpoint's
    listed special tokens) are split out first, because SentencePiece never produces
    control pieces from text.
    """

    def __init__(self, path: Path, special_tokens: Iterable[str]) -> None:
        import sentencepiece

        self._sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
        size = self._sp.get_piece_size()
        specials = {i for i in range(size) if self._sp.is_control(i) or self._sp.is_unknown(i)}
        specials |= {i for s in special_tokens if (i := self.token_to_id(s)) is not None}
        self.special_ids = frozenset(specials)
        names = sorted((self._sp.id_to_piece(i) for i in specials), key=len, reverse=True)
        self._split = re.compile("(" + "|".join(map(re.escape, names)) + ")") if names else None

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        if self._split is None:
            return self._sp.encode(text)
        ids: list[int] = []
        for i, part in enumerate(self._split.split(text)):
            if i % 2:  # odd parts are the captured special strings
                ids.append(self._sp.piece_to_id(part))
            elif part:
                ids.extend(self._sp.encode(part))
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool) -> str:
        if skip_special_tokens:
            return self._sp.decode([i for i in ids if i not in self.special_ids])
        # Like transformers' slow tokenizer: specials as their piece, the runs between decoded.
        out, run = [], []
        for i in ids:
            if i in self.special_ids:
                out += [self._sp.decode(run), self._sp.id_to_piece(i)]
                run = []
            else:
                run.append(i)
        return "".join(out) + self._sp.decode(run)

    def token_to_id(self, token: str) -> int | None:
        token_id = self._sp.piece_to_id(token)
        # piece_to_id answers unk for unknown pieces; only an exact match counts.
        return token_id if self._sp.id_to_piece(token_id) == token else None

    def id_to_token(self, token_id: int) -> str | None:
        if 0 <= token_id < self._sp.get_piece_size():
            return self._sp.id_to_piece(token_id)
        return None


# --------------------------------------------------------------------------- config files


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or {} when the file does not exist."""
    if not path.is_file():
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as err:  # not JSON, or not UTF-8
        raise ValueError(f"{path} is not valid JSON ({err})") from None


def _token_content(value: Any) -> str | None:
    """A special token given as a string or as an AddedToken dict {"content": ...}."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _special_token_names(config: dict[str, Any], special_map: dict[str, Any]) -> dict[str, str]:
    """bos/eos/pad/unk strings from tokenizer_config.json, else special_tokens_map.json, else
    Gemma's names."""
    names = {}
    for key, default in _DEFAULT_SPECIALS.items():
        found = _token_content(config.get(key)) or _token_content(special_map.get(key))
        names[key] = found or default
    return names


def _listed_special_tokens(config: dict[str, Any], special_map: dict[str, Any]) -> set[str]:
    """Every string the config files mark as special (added tokens, additional specials)."""
    listed = set()
    for source in (config, special_map):
        listed |= {_token_content(t) for t in source.get("additional_special_tokens") or []}
    for token in (config.get("added_tokens_decoder") or {}).values():
        if token.get("special"):
            listed.add(token.get("content"))
    return {t for t in listed if t}


def _chat_template_source(root: Path, config: dict[str, Any]) -> str | None:
    """`chat_template.jinja` wins over tokenizer_config.json's `chat_template`."""
    jinja_file = root / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):
        # Named templates: [{"name": ..., "template": ...}]; generation uses "default".
        named = {t.get("name"): t.get("template") for t in template}
        if "default" not in named:
            raise ValueError(f"{root}: chat_template list has no 'default' entry")
        return named["default"]
    return template


def _load_backend(path: Path, config: dict[str, Any], special_map: dict[str, Any]) -> _HFBackend | _SPBackend:
    """A .json file through `tokenizers`, anything else as a SentencePiece model; a file
    they cannot read is a ValueError that names it."""
    listed = _listed_special_tokens(config, special_map)
    listed |= set(_special_token_names(config, special_map).values())
    try:
        return _HFBackend(path) if path.suffix == ".json" else _SPBackend(path, listed)
    except OSError:
        raise
    except Exception as err:  # both libraries raise plain Exception/RuntimeError here
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path} is not a valid tokenizer file ({reason})") from None


# --------------------------------------------------------------------------- tokenizer


class Tokenizer:
    """A thin wrapper over a `tokenizers` or SentencePiece tokenizer plus its config files."""

    def __init__(
        self,
        backend: _HFBackend | _SPBackend,
        config: dict[str, Any] | None = None,
        special_tokens_map: dict[str, Any] | None = None,
        chat_template: str | None = None,
    ) -> None:
        self._backend = backend
        self._config = config or {}
        self.special_tokens = _special_token_names(self._config, special_tokens_map or {})
        self.add_bos_token = bool(self._config.get("add_bos_token", True))
        self._chat_template = chat_template

    @classmethod
    def from_dir(cls, path: str | Path) -> Tokenizer:
        """Load from a checkpoint directory holding tokenizer.json and/or tokenizer.model."""
        root = require_dir(path, "tokenizer directory")
        config = _read_json(root / "tokenizer_config.json")
        special_map = _read_json(root / "special_tokens_map.json")
        files = [root / name for name in ("tokenizer.json", "tokenizer.model")]
        found = next((f for f in files if f.is_file()), None)
        if found is None:
            raise FileNotFoundError(f"{root} has neither tokenizer.json nor tokenizer.model")
        backend = _load_backend(found, config, special_map)
        return cls(backend, config, special_map, _chat_template_source(root, config))

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        config: dict[str, Any] | None = None,
        chat_template: str | None = None,
    ) -> Tokenizer:
        """Load a single tokenizer.json (`tokenizers`) or SentencePiece .model file."""
        path = require_file(path, "tokenizer file")
        return cls(_load_backend(path, config or {}, {}), config, None, chat_template)

    # ----------------------------------------------------------------- ids

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can produce (the model's embedding may be larger)."""
        return self._backend.vocab_size

    def token_to_id(self, token: str) -> int | None:
        return self._backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._backend.id_to_token(token_id)

    @property
    def bos_id(self) -> int | None:
        return self.token_to_id(self.special_tokens["bos_token"])

    @property
    def eos_id(self) -> int | None:
        return self.token_to_id(self.special_tokens["eos_token"])

    @property
    def pad_id(self) -> int | None:
        return self.token_to_id(self.special_tokens["pad_token"])

    @property
    def unk_id(self) -> int | None:
        return self.token_to_id(self.special_tokens["unk_token"])

    @property
    def stop_ids(self) -> list[int]:
        """Ids that end generation: EOS, plus `<end_of_turn>` for chat checkpoints."""
        ids = [self.eos_id, self.token_to_id(_END_OF_TURN)]
        return list(dict.fromkeys(i for i in ids if i is not None))

    def is_special(self, token_id: int) -> bool:
        """True for ids that `decode(..., skip_special_tokens=True)` drops."""
        return token_id in self._backend.special_ids

    def is_byte_token(self, token_id: int) -> bool:
        """True for SentencePiece byte-fallback pieces such as `<0xE2>`."""
        token = self.id_to_token(token_id)
        return token is not None and _BYTE_PIECE.fullmatch(token) is not None

    # ----------------------------------------------------------------- text

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Token ids of `text`; `add_bos=None` follows the checkpoint's `add_bos_token`."""
        ids = self._backend.encode(text)
        if self.add_bos_token if add_bos is None else add_bos:
            if self.bos_id is None:
                raise ValueError(f"BOS token {self.special_tokens['bos_token']!r} is not in the vocabulary")
            ids.insert(0, self.bos_id)
        return ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        return self._backend.decode(list(ids), skip_special_tokens)

    def detokenizer(self, skip_special_tokens: bool = True) -> StreamingDetokenizer:
        return StreamingDetokenizer(self, skip_special_tokens)

    # ----------------------------------------------------------------- chat

    @property
    def chat_template(self) -> str:
        """The checkpoint's template, or the built-in Gemma one when it has none."""
        return self._chat_template or GEMMA_CHAT_TEMPLATE

    def render_chat(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """The prompt text for `messages`, rendered like transformers' apply_chat_template.

        A leading system message is merged into the first user turn (Gemma's convention; its
        templates refuse the system role). `model` is accepted as a synonym of `assistant`.
        """
        chat = normalize_messages(messages)
        variables = dict(self.special_tokens, add_generation_prompt=add_generation_prompt)
        return render_template(self.chat_template, chat, **variables)

    def encode_chat(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of the rendered chat; BOS comes from the template, never twice."""
        text = self.render_chat(messages, add_generation_prompt)
        bos = self.special_tokens["bos_token"]
        if text.startswith(bos):
            return self.encode(text[len(bos) :], add_bos=True)
        # Like apply_chat_template(tokenize=True): the template owns the special tokens.
        return self.encode(text, add_bos=False)


# --------------------------------------------------------------------------- streaming


class StreamingDetokenizer:
    """Incremental decoding: `push(id)` returns newly printable text, `flush()` the rest.

    The ids since the last emission (`pending`) are decoded together with the segment
    emitted before them (`context`), and only the text beyond the context is returned. The
    context gives the decoder its leading-space behaviour (SentencePiece's ``▁``, a `Strip`
    decoder) exactly as in a full decode. Text is held back while the last id is a byte
    piece or a skipped special token (a run of byte pieces decodes as a whole, and an
    invalid run turns into U+FFFD for each of its bytes), or while the text ends in U+FFFD.
    So the concatenation of all output equals `tokenizer.decode(all_ids)`.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self._reset()

    def _reset(self) -> None:
        self._context: list[int] = []
        self._context_text = ""
        self._pending: list[int] = []

    def prime(self, ids: Sequence[int]) -> None:
        """Decode what follows `ids` (the prompt): its spacing then comes out as in a full
        decode, e.g. the space before a continuation's first word."""
        self._context = [int(i) for i in ids][-8:]
        self._context_text = self.tokenizer.decode(self._context, self.skip_special_tokens)
        self._pending = []

    def _holds(self, token_id: int) -> bool:
        """Whether a segment may not end after `token_id` (it could change earlier text)."""
        if self.tokenizer.is_byte_token(token_id):
            return True
        return self.skip_special_tokens and self.tokenizer.is_special(token_id)

    def push(self, token_id: int) -> str:
        """Add one id; return the text that became final (often "", never half a character)."""
        self._pending.append(int(token_id))
        if self._holds(token_id):
            return ""
        text = self.tokenizer.decode(self._context + self._pending, self.skip_special_tokens)
        if text.endswith(_REPLACEMENT_CHAR):
            return ""  # e.g. byte-level BPE half way through a character
        return self._emit(text)

    def flush(self) -> str:
        """Return everything still held and start over (the stream has ended)."""
        text = self.tokenizer.decode(self._context + self._pending, self.skip_special_tokens)
        out = self._emit(text) if self._pending else ""
        self._reset()
        return out

    def _emit(self, text: str) -> str:
        # `text` starts with the context's text for every decoder tested here. Should one
        # rewrite earlier text, what was emitted cannot be taken back: go on after the part
        # they share rather than stop the stream.
        new = text[len(os.path.commonprefix([text, self._context_text])) :]
        self._context, self._pending = self._pending, []
        self._context_text = self.tokenizer.decode(self._context, self.skip_special_tokens)
        return new


# --------------------------------------------------------------------------- chat templates

_ROLES = ("system", "user", "assistant", "model")


def _check_message(i: int, message: Any) -> None:
    """One-line ValueError for a malformed message."""
    if not isinstance(message, dict):
        raise ValueError(
            f"messages[{i}] must be a dict with 'role' and 'content', got {type(message).__name__}"
        )
    role, content = message.get("role"), message.get("content")
    if role not in _ROLES:
        raise ValueError(f"messages[{i}] has role {role!r}; expected one of {', '.join(_ROLES)}")
    if not isinstance(content, str):
        raise ValueError(f"messages[{i}]['content'] must be a string, got {type(content).__name__}")


def _check_alternation(roles: list[str], offset: int) -> None:
    """Roles after the system message must go user, assistant, user, ..."""
    for i, role in enumerate(roles):
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            raise ValueError(
                f"messages[{i + offset}] has role {role!r} where {expected!r} was expected; "
                "roles must alternate user/assistant, starting with user"
            )


def normalize_messages(messages: Sequence[Message]) -> list[Message]:
    """Validated copies of `messages`, system merged into the first user turn.

    The system content is joined to the first user content with a blank line, and `model`
    is renamed `assistant`, so any template (Gemma's included) sees plain user/assistant.
    """
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    for i, message in enumerate(messages):
        _check_message(i, message)
    chat = [dict(m, role="assistant" if m["role"] == "model" else m["role"]) for m in messages]
    offset = 1 if chat[0]["role"] == "system" else 0
    if offset and len(chat) == 1:
        raise ValueError("a system message must be followed by a user message")
    _check_alternation([m["role"] for m in chat[offset:]], offset)
    if offset:
        system, chat = chat[0], chat[1:]
        chat[0]["content"] = system["content"] + "\n\n" + chat[0]["content"]
    return chat


class _TemplateRefusal(jinja2.exceptions.TemplateError):
    """Raised by a template's own `raise_exception(...)` call."""


def _raise_exception(message: str) -> None:
    raise _TemplateRefusal(message)


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson escapes HTML characters, which would change the prompt text.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=16)
def compile_template(source: str) -> jinja2.Template:
    """A compiled chat template; the environment matches transformers' (sandboxed)."""
    # Templates come from checkpoints downloaded off the Hub: treat them as untrusted code.
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ValueError(f"chat template is not valid Jinja (line {e.lineno}): {e.message}") from None


def render_template(source: str, messages: list[Message], **variables: Any) -> str:
    """Render a chat template; a refusal or a failure becomes a one-line ValueError."""
    template = compile_template(source)
    try:
        return template.render(messages=messages, tools=None, documents=None, **variables)
    except _TemplateRefusal as e:
        raise ValueError(f"chat template refused the messages: {e.message}") from None
    except jinja2.exceptions.TemplateError as e:
        raise ValueError(f"chat template failed to render: {e}") from None
