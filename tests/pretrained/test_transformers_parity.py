"""The calls transformers and peft users already type, on the bundled model, run as they type
them, with their outputs checked."""

from __future__ import annotations

import io
import json

import pytest
import torch

from rgemma import RecurrentGemmaConfig, RecurrentGemmaForCausalLM, bundled_model_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tok():
    return transformers.AutoTokenizer.from_pretrained(bundled_model_dir())


@pytest.fixture(scope="module")
def model():
    return RecurrentGemmaForCausalLM.from_pretrained(bundled_model_dir())


def alone(model, text_ids: list[int], **kw) -> list[int]:
    return model.generate(torch.tensor([text_ids]), **kw)[0, len(text_ids) :].tolist()


# --------------------------------------------------------------------------- padding
def test_tokenizer_pads_left_and_generate_takes_its_batch(model, tok):
    assert tok.padding_side == "left"
    batch = tok(["a", "longer prompt"], padding=True, return_tensors="pt")
    out = model.generate(**batch, max_new_tokens=8, eos_token_id=[])
    T = batch["input_ids"].shape[1]
    for i, text in enumerate(["a", "longer prompt"]):
        assert out[i, T:].tolist() == alone(model, tok(text)["input_ids"], max_new_tokens=8, eos_token_id=[])


def test_right_padded_training_batch_equals_each_row_alone(model, tok):
    right = transformers.AutoTokenizer.from_pretrained(bundled_model_dir(), padding_side="right")
    texts = ["a", "a much longer prompt than the first"]
    batch = right(texts, padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    out = model(**batch, labels=labels)
    losses = []
    for i, text in enumerate(texts):
        ids = torch.tensor([right(text)["input_ids"]])
        row = model(ids, labels=ids)
        torch.testing.assert_close(out.logits[i, : ids.shape[1]], row.logits[0], rtol=1e-4, atol=1e-4)
        losses.append((row.loss * (ids.shape[1] - 1), ids.shape[1] - 1))
    torch.testing.assert_close(out.loss, sum(s for s, _ in losses) / sum(n for _, n in losses))
    with pytest.raises(ValueError, match="padding_side = 'left'"):
        model.generate(**batch, max_new_tokens=2)
    with pytest.raises(ValueError, match="padding_side = 'left'"):
        model(**batch, use_cache=True)


# --------------------------------------------------------------------------- generate()
def test_generation_config_object_equals_keyword_arguments(model, tok):
    ids = tok(["Once upon a time", "The cat"], padding=True, return_tensors="pt")
    config = transformers.GenerationConfig(max_new_tokens=6, num_beams=2, length_penalty=0.5)
    assert torch.equal(
        model.generate(**ids, generation_config=config),
        model.generate(**ids, max_new_tokens=6, num_beams=2, length_penalty=0.5),
    )
    # keyword arguments override the object's fields, as in transformers
    assert (
        model.generate(**ids, generation_config=config, max_new_tokens=3).shape[1]
        <= ids["input_ids"].shape[1] + 3
    )
    with pytest.raises(ValueError, match="typical_p"):
        model.generate(**ids, generation_config=transformers.GenerationConfig(typical_p=0.5))
    with pytest.raises(TypeError, match="frobnicate"):
        model.generate(**ids, frobnicate=1)


def test_model_generation_config_is_read_and_written_back(model, tmp_path):
    assert (model.generation_config.bos_token_id, model.generation_config.eos_token_id) == (2, 1)
    copy = RecurrentGemmaForCausalLM.from_pretrained(bundled_model_dir())
    copy.generation_config.max_new_tokens = 7
    copy.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "generation_config.json").read_text())["max_new_tokens"] == 7
    again = RecurrentGemmaForCausalLM.from_pretrained(tmp_path)
    assert again.generation_config.max_new_tokens == 7
    assert again.generate(torch.tensor([[2, 40, 41]]), eos_token_id=[]).shape == (1, 10)


def test_num_return_sequences_sampling(model, tok):
    ids = tok(["Once upon a time", "The cat"], padding=True, return_tensors="pt")
    kw = dict(do_sample=True, num_return_sequences=3, max_new_tokens=12, eos_token_id=[], top_k=0)
    a = model.generate(**ids, seed=3, **kw)
    assert a.shape[0] == 6 and torch.equal(a, model.generate(**ids, seed=3, **kw))
    assert torch.equal(a[:3, : ids["input_ids"].shape[1]], ids["input_ids"][[0, 0, 0]])
    assert len({tuple(r) for r in a[:3].tolist()}) > 1
    with pytest.raises(ValueError, match="num_return_sequences"):
        model.generate(**ids, num_return_sequences=2)  # greedy: transformers refuses it too


def test_min_new_tokens_no_repeat_ngram_and_bad_words(model, tok):
    ids = tok("Once upon a time", return_tensors="pt")["input_ids"]
    free = alone(model, ids[0].tolist(), max_new_tokens=12, eos_token_id=[])
    eos = free[0]
    assert alone(model, ids[0].tolist(), max_new_tokens=12, eos_token_id=[eos]) == [eos]
    held = alone(model, ids[0].tolist(), max_new_tokens=12, eos_token_id=[eos], min_new_tokens=4)
    assert eos not in held[:4]
    out = model.generate(ids, max_new_tokens=30, eos_token_id=[], no_repeat_ngram_size=2)[0].tolist()
    bigrams = list(zip(out, out[1:]))
    assert len(bigrams) == len(set(bigrams))
    banned = alone(model, ids[0].tolist(), max_new_tokens=12, eos_token_id=[], bad_words_ids=[[free[1]]])
    assert free[1] not in banned


def test_stop_strings_with_the_tokenizer(model, tok):
    ids = tok("Once upon a time", return_tensors="pt")["input_ids"]
    free = model.generate(ids, max_new_tokens=20, eos_token_id=[])[0, ids.shape[1] :].tolist()
    word = tok.decode(free[2:4], skip_special_tokens=True).strip().split()[0]
    out = model.generate(ids, max_new_tokens=20, eos_token_id=[], stop_strings=word, tokenizer=tok)
    new = out[0, ids.shape[1] :].tolist()
    assert word in tok.decode(new) and word not in tok.decode(new[:-1]) and new == free[: len(new)]
    with pytest.raises(ValueError, match="tokenizer"):
        model.generate(ids, stop_strings=word)


def test_inputs_embeds_and_scores(model, tok):
    ids = tok(["Once upon a time", "The cat"], padding=True, return_tensors="pt")
    T = ids["input_ids"].shape[1]
    embeds = model.get_input_embeddings()(ids["input_ids"])
    by_ids = model.generate(**ids, max_new_tokens=6, eos_token_id=[])
    by_embeds = model.generate(
        inputs_embeds=embeds, attention_mask=ids["attention_mask"], max_new_tokens=6, eos_token_id=[]
    )
    assert torch.equal(by_embeds, by_ids[:, T:])  # transformers returns only the new tokens here
    out = model.generate(
        **ids,
        max_new_tokens=6,
        eos_token_id=[],
        return_dict_in_generate=True,
        output_scores=True,
        output_logits=True,
    )
    assert torch.equal(out.sequences, by_ids) and len(out.scores) == len(out.logits) == 6
    assert torch.equal(torch.stack(out.scores, 1).argmax(-1), by_ids[:, T:])
    full = model(
        by_ids, attention_mask=torch.cat([ids["attention_mask"], torch.ones(2, 6, dtype=torch.long)], 1)
    )
    torch.testing.assert_close(torch.stack(out.logits, 1), full.logits[:, T - 1 : -1], rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- peft
def _randomize_lora(model) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)


def test_peft_get_peft_model_generate_save_load_merge(model, tmp_path):
    peft = pytest.importorskip("peft")
    base = RecurrentGemmaForCausalLM.from_pretrained(bundled_model_dir())
    config = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "linear_x", "up_proj"], task_type="CAUSAL_LM"
    )
    config.base_model_name_or_path = str(bundled_model_dir())
    adapted = peft.get_peft_model(base, config)
    _randomize_lora(adapted)
    ids = torch.tensor([[2, 40, 41, 42, 43]])
    want = adapted(input_ids=ids).logits
    generated = adapted.generate(input_ids=ids, max_new_tokens=5, eos_token_id=[])
    adapted.save_pretrained(tmp_path / "adapter")

    fresh = RecurrentGemmaForCausalLM.from_pretrained(bundled_model_dir())
    loaded = peft.PeftModel.from_pretrained(fresh, tmp_path / "adapter")
    torch.testing.assert_close(loaded(input_ids=ids).logits, want)
    merged = loaded.merge_and_unload()
    torch.testing.assert_close(merged(ids).logits, want, rtol=1e-4, atol=1e-4)
    ours = RecurrentGemmaForCausalLM.from_pretrained(tmp_path / "adapter")  # base + adapter merged
    torch.testing.assert_close(ours(ids).logits, want, rtol=1e-4, atol=1e-4)
    assert torch.equal(ours.generate(ids, max_new_tokens=5, eos_token_id=[]), generated)


def test_rgemma_train_adapters_load_through_peft_and_the_cli(model, tmp_path, capsys):
    peft = pytest.importorskip("peft")
    from rgemma.cli import main
    from rgemma.training.trainer import add_lora, write_adapter

    lora, config = add_lora(RecurrentGemmaForCausalLM.from_pretrained(bundled_model_dir()), 4, 8.0)
    _randomize_lora(lora)
    out = tmp_path / "lora"
    out.mkdir()
    write_adapter(
        out, dict(lora.state_dict()), config, str(bundled_model_dir())
    )  # `rgemma train --lora`'s writer
    assert json.loads((out / "adapter_config.json").read_text())["task_type"] == "CAUSAL_LM"
    ids = torch.tensor([[2, 40, 41, 42, 43]])
    want = lora(ids).logits
    fresh = RecurrentGemmaForCausalLM.from_pretrained(bundled_model_dir())
    torch.testing.assert_close(peft.PeftModel.from_pretrained(fresh, out)(input_ids=ids).logits, want)

    from rgemma.pretrained.loading import load

    merged, _ = load(str(bundled_model_dir()), adapter=str(out), err=io.StringIO())
    torch.testing.assert_close(merged(ids).logits, want, rtol=1e-4, atol=1e-4)
    from rgemma.cli.commands import generate
    from rgemma.text.engine import GenerationConfig
    from rgemma.text.sampling import SamplingParams

    texts = []
    greedy = GenerationConfig(max_new_tokens=8, sampling=SamplingParams(temperature=0))
    for kw in (dict(model=str(out)), dict(adapter=str(out))):  # --model ADAPTER, --adapter ADAPTER
        buf = io.StringIO()
        generate("Once upon a time", config=greedy, out=buf, err=io.StringIO(), **kw)
        texts.append(buf.getvalue())
    plain = io.StringIO()
    generate("Once upon a time", config=greedy, out=plain, err=io.StringIO())
    assert texts[0] == texts[1] != plain.getvalue()
    assert main(["generate", "Once upon a time", "--max-new-tokens", "2", "--adapter", str(out)]) == 0
    capsys.readouterr()


# --------------------------------------------------------------------------- loading
def test_config_from_pretrained_and_save_pretrained(model, tmp_path):
    config = RecurrentGemmaConfig.from_pretrained(bundled_model_dir())
    assert config == model.config and config.model_type == "recurrent_gemma"
    config.save_pretrained(tmp_path / "cfg")
    assert RecurrentGemmaConfig.from_pretrained(tmp_path / "cfg") == config


def test_device_map_and_the_one_dtype_rule(model, tmp_path):
    from rgemma.pretrained.loading import load

    for device_map in ("cpu", "auto", torch.device("cpu"), {"": "cpu"}):
        if device_map == "auto" and torch.cuda.is_available():
            continue
        lm = RecurrentGemmaForCausalLM.from_pretrained(bundled_model_dir(), device_map=device_map)
        assert lm.device.type == "cpu"
    with pytest.raises(ValueError, match="one device"):
        RecurrentGemmaForCausalLM.from_pretrained(bundled_model_dir(), device_map={"model.layers.0": "cpu"})
    # the bundled model: stored in bf16, run in float32 by the library, the CLI and the server
    assert model.dtype == torch.float32
    assert load(None, err=io.StringIO())[0].dtype == torch.float32
    assert load(str(bundled_model_dir()), err=io.StringIO())[0].dtype == torch.float32  # serve's call
    assert RecurrentGemmaForCausalLM.from_pretrained(None, dtype="auto").dtype == torch.bfloat16
    # any other checkpoint: its own dtype, as transformers 5 ("auto")
    from rgemma.io.checkpoint_files import copy_tokenizer

    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    model.to(torch.float32)
    copy_tokenizer(bundled_model_dir(), tmp_path / "bf16")
    assert RecurrentGemmaForCausalLM.from_pretrained(tmp_path / "bf16").dtype == torch.bfloat16
    assert load(str(tmp_path / "bf16"), err=io.StringIO())[0].dtype == torch.bfloat16


def test_text_generation_pipeline(model, tok):
    pipe = transformers.pipeline("text-generation", model=model, tokenizer=tok)
    prompt = "Once upon a time"
    text = pipe(prompt, max_new_tokens=8, do_sample=False)[0]["generated_text"]
    ids = tok(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=8)
    # the pipeline decodes the new tokens alone and appends them to the prompt; the bundled
    # tokenizer's decoder strips a leading space there ("timea little"), as Llama's does
    new = out[0, ids["input_ids"].shape[1] :]
    assert text == prompt + tok.decode(new, skip_special_tokens=True)
    assert tok.decode(out[0], skip_special_tokens=True).startswith(prompt + " ")
