"""Each CLI command through its function, and once as a real subprocess."""

import io
import json
import subprocess
import sys
from dataclasses import replace

import pytest

from rgemma.cli import main
from rgemma.cli.commands import chat, generate, perplexity
from rgemma.text.engine import GenerationConfig
from rgemma.text.sampling import SamplingParams

GREEDY = GenerationConfig(max_new_tokens=6, sampling=SamplingParams(temperature=0), eos_ids=[])


class FakeStdin(io.StringIO):
    def isatty(self):
        return False


def test_generate_function_streams_text_and_stats(lm, lm_dir):
    out, err = io.StringIO(), io.StringIO()
    stats = generate("hello world", model=str(lm_dir), config=GREEDY, out=out, err=err)
    assert stats.generated_tokens == 6 and stats.prompt_tokens == len(lm[1].encode("hello world"))
    assert out.getvalue().endswith("\n")
    assert "prompt:" in err.getvalue() and "tok/s" in err.getvalue() and "peak memory" in err.getvalue()


def test_generate_save_and_load_state(lm, lm_dir, tmp_path):
    whole, err = io.StringIO(), io.StringIO()
    generate("the quick brown fox", model=str(lm_dir), config=GREEDY, out=whole, err=err)
    cfg0 = GenerationConfig(max_new_tokens=0)
    generate(
        "the quick brown fox",
        model=str(lm_dir),
        config=cfg0,
        out=io.StringIO(),
        err=err,
        save_state_path=str(tmp_path / "p.state"),
    )
    resumed = io.StringIO()
    generate(
        None,
        model=str(lm_dir),
        config=GREEDY,
        out=resumed,
        err=err,
        load_state_path=str(tmp_path / "p.state"),
    )
    assert resumed.getvalue() == whole.getvalue()


def test_chat_function_reads_lines_and_commands(lm_dir, tmp_path):
    out, err = io.StringIO(), io.StringIO()
    saved = tmp_path / "c.state"
    script = f"hello\n/save {saved}\n\nthe fox\n/reset\n/load {saved}\nthe fox\n/bogus\n/exit\nnever read\n"
    session = chat(model=str(lm_dir), config=GREEDY, stdin=FakeStdin(script), out=out, err=err)
    replies = out.getvalue().split("\n")
    assert replies[1] == replies[2]  # the same turn after /load as before /reset
    assert "(conversation reset)" in err.getvalue() and "unknown command /bogus" in err.getvalue()
    assert [m["role"] for m in session.messages] == ["user", "assistant", "user", "assistant"]
    # end of input without /exit also ends the chat
    chat(model=str(lm_dir), config=GREEDY, stdin=FakeStdin("hi"), out=io.StringIO(), err=io.StringIO())


def test_chat_survives_failed_commands_with_the_conversation_intact(lm_dir, tmp_path):
    """A /save to a directory, a /load of a damaged or missing snapshot and a line that is not
    text each print one `error:` line; the next message continues the same conversation."""
    damaged = tmp_path / "damaged.state"
    damaged.write_bytes(b"\x00garbage" * 50)
    failing = f"/save {tmp_path}\n/load {damaged}\n/load {tmp_path / 'missing'}\ncaf\udce9\n"

    def run(script: str):
        out, err = io.StringIO(), io.StringIO()
        session = chat(model=str(lm_dir), config=GREEDY, stdin=FakeStdin(script), out=out, err=err)
        return out.getvalue(), err.getvalue(), session

    plain_out, _, plain = run("hello\nthe fox\n")
    out, err, session = run("hello\n" + failing + "the fox\n")
    assert out == plain_out and session.messages == plain.messages and session.fed == plain.fed
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 4 and "Traceback" not in err, err
    assert "is a directory" in errors[0] and "not UTF-8" in errors[3]


@pytest.mark.parametrize(
    "messages", [5, "hi", [{"role": "user"}], [{"role": 1, "content": "x"}], [["user", "x"]]]
)
def test_a_snapshot_with_malformed_messages_is_refused_in_one_line(lm_dir, tmp_path, messages):
    from safetensors import safe_open
    from safetensors.torch import save_file

    good = tmp_path / "good.state"
    run = f"hello\n/save {good}\n"
    chat(model=str(lm_dir), config=GREEDY, stdin=FakeStdin(run), out=io.StringIO(), err=io.StringIO())
    with safe_open(str(good), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    save_file(
        tensors, str(tmp_path / "bad.state"), metadata={**meta, "extra": json.dumps({"messages": messages})}
    )
    err = io.StringIO()
    script = f"/load {tmp_path / 'bad.state'}\nthe fox\n"
    session = chat(model=str(lm_dir), config=GREEDY, stdin=FakeStdin(script), out=io.StringIO(), err=err)
    errors = [line for line in err.getvalue().splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "messages are not role/content pairs" in errors[0], err.getvalue()
    assert "Traceback" not in err.getvalue() and [m["role"] for m in session.messages] == [
        "user",
        "assistant",
    ]


def test_perplexity_function(lm_dir, tmp_path):
    data = tmp_path / "held.jsonl"
    data.write_text('{"text": "hello world"}\n{"text": "the quick brown fox"}\n')
    result = perplexity(data, model=str(lm_dir), err=io.StringIO())
    assert result["documents"] == 2 and result["perplexity"] > 1
    (tmp_path / "bad.jsonl").write_text('{"txt": 1}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        perplexity(tmp_path / "bad.jsonl", model=str(lm_dir), err=io.StringIO())


def test_perplexity_and_train_split_a_file_the_same_way(lm, lm_dir, tmp_path):
    from rgemma.training.data import load_examples

    data = tmp_path / "held.txt"
    data.write_bytes(b"one\r\nline two\r\n\r\n  \nsecond doc\n \t \n  third\n")
    result = perplexity(data, model=str(lm_dir), err=io.StringIO())
    examples = load_examples([data], lm[1])
    assert result["documents"] == len(examples) == 3
    assert result["tokens"] == sum(len(ids) - 1 for ids, _ in examples)


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["generate", "hi", "--model", "/no/such/model"], "does not exist"),
        (["generate", "hi", "--model", "nobody/nothing"], "not in the HF cache"),
        (["generate", "   ", "--model", "X"], "empty prompt"),
        (["generate", "--model", "X"], "no prompt"),
        (["generate", "hi", "--model", "LM", "--top-p", "0"], "top_p"),
        (["generate", "hi", "--model", "LM", "--load-state", "/no/such.state"], "state file not found"),
        (["chat", "--model", "LM", "--temperature", "-1"], "temperature"),
    ],
)
def test_errors_are_one_line_and_nonzero(argv, needle, lm_dir, capsys):
    argv = [str(lm_dir) if a == "LM" else a for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_bad_flag_and_help(capsys):
    assert main(["generate", "hi", "--max-new-tokens", "lots"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rgemma generate: error: argument --max-new-tokens") and err.count("\n") == 1
    assert main(["generate", "--help"]) == 0 and "--debug" in capsys.readouterr().out
    assert main(["--help"]) == 0 and "generate" in capsys.readouterr().out
    assert main(["frobnicate"]) == 2


def test_real_subprocess(lm_dir):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rgemma",
            "generate",
            "hello",
            "--model",
            str(lm_dir),
            "--max-new-tokens",
            "5",
            "--seed",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() and "generated: 5 tokens" in proc.stderr
    proc = subprocess.run(
        # seeded: unseeded sampling from the random model ends the turn early now and then
        [
            sys.executable,
            "-m",
            "rgemma",
            "chat",
            "--model",
            str(lm_dir),
            "--max-new-tokens",
            "3",
            "--seed",
            "0",
        ],
        input="hello\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "generated: 3 tokens" in proc.stderr


def test_load_applies_speed_switches(lm_dir):
    from rgemma.accel.compile import CompiledBlock
    from rgemma.accel.linears import MatVecLinear
    from rgemma.accel.quantize import Int8Linear
    from rgemma.cli.commands import load

    plain, _ = load(str(lm_dir), err=io.StringIO())  # float32 too: decode-sized products
    assert type(plain.lm_head) is MatVecLinear and not plain.accel.compile
    half, _ = load(str(lm_dir), "bfloat16", err=io.StringIO())
    assert type(half.lm_head) is MatVecLinear and half.accel.linears == "matvec"
    err = io.StringIO()
    q, _ = load(str(lm_dir), err=err, quantize="int8")
    assert isinstance(q.lm_head, Int8Linear) and isinstance(q.model.layers[0].mlp_block.up_proj, Int8Linear)
    assert "int8 weight-only" in err.getvalue()
    assert f"{plain.num_parameters() / 1e6:.1f}M parameters" in err.getvalue()
    c, _ = load(str(lm_dir), err=io.StringIO(), compile=True)  # compiles on first use: not here
    assert c.accel.compile and all(isinstance(b, CompiledBlock) for b in c.model.layers)
    with pytest.raises(ValueError, match="quantization"):
        load(str(lm_dir), err=io.StringIO(), quantize="int4")


def test_generate_quantized_and_compiled(lm_dir, monkeypatch):
    """--quantize int8 runs end to end and stays close to the float model's greedy text;
    --compile (traced with aot_eager here: inductor's C++ build is too slow for CI) equals the
    plain step token for token."""
    from rgemma.accel import speed

    def text(**kw):
        out = io.StringIO()
        generate("hello world", model=str(lm_dir), config=GREEDY, out=out, err=io.StringIO(), **kw)
        return out.getvalue()

    plain = text()
    assert text(quantize="int8").strip()
    real = speed.cli_accel
    monkeypatch.setattr(speed, "cli_accel", lambda m, c: replace(real(m, c), compile_backend="aot_eager"))
    assert text(compile=True) == plain
    assert (
        main(["generate", "hi", "--model", str(lm_dir), "--quantize", "int8", "--max-new-tokens", "3"]) == 0
    )


def test_perplexity_json_goes_to_stdout(lm_dir, tmp_path, capsys):
    data = tmp_path / "held.jsonl"
    data.write_text('{"text": "hello world"}\n{"text": "the quick brown fox"}\n')
    assert main(["perplexity", "--model", str(lm_dir), "--data", str(data), "--json"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result == perplexity(data, model=str(lm_dir), err=io.StringIO())
    assert "perplexity" not in err


def test_generate_and_chat_speculate_with_the_same_output(lm, lm_dir):
    config = GenerationConfig(max_new_tokens=24, sampling=SamplingParams(temperature=0), eos_ids=[])
    prompt = "abc abc abc abc abc"

    def text(**speculation):
        out = io.StringIO()
        generate(prompt, config=config, loaded=lm, out=out, err=io.StringIO(), **speculation)
        return out.getvalue()

    plain = text()
    assert text(prompt_lookup=True) == plain
    assert text(draft_model=str(lm_dir), draft_tokens=3) == plain
    with pytest.raises(ValueError, match="--draft-tokens needs"):
        text(draft_tokens=3)

    def reply(**speculation):
        out = io.StringIO()
        chat(
            config=config,
            loaded=lm,
            stdin=io.StringIO("hi\nmore\n"),
            out=out,
            err=io.StringIO(),
            **speculation,
        )
        return out.getvalue()

    assert reply(prompt_lookup=True) == reply()
