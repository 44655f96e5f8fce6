"""The transformers-shaped surface: outputs, conveniences, and clear errors on bad input."""

import pytest
import torch

from conftest import random_model, tiny_config
from rgemma import RecurrentGemmaModel, State
from rgemma.models.griffin import soft_cap


def test_output_fields_and_tuple_form(model, config):
    ids = torch.randint(0, 97, (2, 8))
    out = model(ids, output_hidden_states=True, output_attentions=True, labels=ids)
    assert out.logits.shape == (2, 8, 97)
    assert len(out.hidden_states) == config.num_hidden_layers + 1
    assert out.hidden_states[0].shape == (2, 8, 32)
    n_attention = config.layers_block_type.count("attention")
    assert len(out.attentions) == n_attention and out.attentions[0].shape == (2, 4, 8, 8)
    probs = out.attentions[0]
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 4, 8))
    assert (probs.triu(1) == 0).all()  # causal
    assert (probs[:, :, 7, :1] == 0).all()  # window of W+1=7 keys: position 0 is out of reach
    assert out["logits"] is out.logits and out[0] is out.loss
    as_tuple = model(ids, labels=ids, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], out.loss)
    torch.testing.assert_close(as_tuple[1], out.logits)


def test_loss_is_shifted_cross_entropy_ignoring_minus_100(model):
    ids = torch.randint(0, 97, (2, 10))
    labels = ids.clone()
    labels[0, :4] = -100
    out = model(ids, labels=labels)
    logits = out.logits[:, :-1].reshape(-1, 97)
    target = labels[:, 1:].reshape(-1)
    keep = target != -100
    manual = torch.nn.functional.cross_entropy(logits[keep], target[keep])
    torch.testing.assert_close(out.loss, manual)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_soft_cap_equals_the_plain_formula_on_every_value(dtype):
    """soft_cap's fast half-precision path gives torch's tanh(x / cap) * cap bit for bit, on
    every bf16/fp16 bit pattern (a float32 sample), and the same gradients."""
    bits = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16)
    x = bits.view(dtype) if dtype != torch.float32 else torch.randn(65536) * 100
    x = x.repeat(3)[:-5]  # vectorized body and scalar tail
    want, got = torch.tanh(x / 30.0) * 30.0, soft_cap(x, 30.0)
    same = (want == got) | (want.isnan() & got.isnan())
    assert same.all(), x[~same][:5]
    assert soft_cap(x, 0.0) is x
    finite = x[x.isfinite()][:4096].clone().requires_grad_()
    (torch.tanh(finite / 30.0) * 30.0).float().sum().backward()
    want_grad, finite.grad = finite.grad, None
    soft_cap(finite, 30.0).float().sum().backward()
    assert torch.equal(finite.grad, want_grad)


def test_logits_to_keep_and_soft_cap(model):
    ids = torch.randint(0, 97, (1, 12))
    full = model(ids).logits
    torch.testing.assert_close(model(ids, logits_to_keep=1).logits, full[:, -1:])
    assert full.abs().max() <= model.config.logits_soft_cap
    uncapped = random_model(tiny_config(logits_soft_cap=0.0))
    assert torch.isfinite(uncapped(ids).logits).all()


def test_inputs_embeds_equals_input_ids(model):
    ids = torch.randint(0, 97, (2, 7))
    embeds = model.get_input_embeddings()(ids)
    torch.testing.assert_close(model(inputs_embeds=embeds).logits, model(ids).logits)


def test_embedding_scale_applied_in_bf16_rounding(model):
    base = model.model
    ids = torch.randint(0, 97, (1, 3))
    out = base(ids, output_hidden_states=True).hidden_states[0]
    expected = base.embed_tokens(ids) * torch.tensor(32**0.5).to(torch.bfloat16).float()
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_conveniences(model):
    n = model.num_parameters()
    assert n == sum(p.numel() for p in set(model.parameters()))
    assert model.num_parameters(exclude_embeddings=True) == n - 97 * 32
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    model.train()
    ids = torch.randint(0, 97, (2, 9))
    loss = model(ids, labels=ids).loss
    loss.backward()
    g_ckpt = model.model.layers[0].mlp_block.up_proj.weight.grad.clone()
    model.zero_grad()
    model.gradient_checkpointing_disable()
    model(ids, labels=ids).loss.backward()
    torch.testing.assert_close(model.model.layers[0].mlp_block.up_proj.weight.grad, g_ckpt)
    model.eval()
    model.resize_token_embeddings(120)
    assert model.config.vocab_size == 120 and model.lm_head.weight.shape == (120, 32)
    assert model.lm_head.weight is model.get_input_embeddings().weight
    assert model(torch.tensor([[119]])).logits.shape == (1, 1, 120)
    half = model.to(torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half.lm_head.weight is half.model.embed_tokens.weight
    assert half(torch.tensor([[1, 2]])).logits.dtype == torch.bfloat16


def test_base_model_forward(model):
    base = model.model
    assert isinstance(base, RecurrentGemmaModel)
    out = base(torch.randint(0, 97, (1, 5)), use_cache=True)
    assert out.last_hidden_state.shape == (1, 5, 32) and isinstance(out.cache, State)
    assert out.past_key_values is out.cache


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(input_ids=torch.tensor([[1, 97]])), "token id 97 is out of range"),
        (dict(input_ids=torch.tensor([[-1, 3]])), "token id -1 is out of range"),
        (dict(input_ids=torch.zeros(1, 0, dtype=torch.long)), "empty"),
        (dict(input_ids=torch.tensor([1, 2])), "shape"),
        (dict(input_ids=torch.tensor([[1.0, 2.0]])), "integer"),
        (dict(), "exactly one of input_ids or inputs_embeds"),
        (dict(input_ids=torch.tensor([[1]]), inputs_embeds=torch.zeros(1, 1, 32)), "exactly one"),
        (dict(inputs_embeds=torch.zeros(1, 3, 31)), "inputs_embeds must have shape"),
        (
            dict(input_ids=torch.ones(2, 4, dtype=torch.long), attention_mask=torch.ones(2, 3)),
            "attention_mask has shape",
        ),
        (
            dict(input_ids=torch.ones(1, 4, dtype=torch.long), attention_mask=torch.tensor([[1, 0, 1, 0]])),
            "padding must be on the left",
        ),
        (
            dict(
                input_ids=torch.ones(1, 4, dtype=torch.long),
                attention_mask=torch.tensor([[1, 1, 0, 0]]),
                use_cache=True,
            ),
            "padding_side = 'left'",
        ),
        (dict(input_ids=torch.ones(1, 2, dtype=torch.long), attention_mask=torch.tensor([[2, 1]])), "only 0"),
        (
            dict(input_ids=torch.ones(1, 2, dtype=torch.long), position_ids=torch.tensor([[0, 1, 2]])),
            "position_ids",
        ),
        (
            dict(input_ids=torch.ones(1, 2, dtype=torch.long), labels=torch.ones(1, 3, dtype=torch.long)),
            "labels",
        ),
    ],
)
def test_bad_input_gives_clear_value_error(model, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        model(**kwargs)


def test_cache_from_other_batch_or_config(model):
    cache = model(torch.ones(2, 3, dtype=torch.long), use_cache=True).cache
    with pytest.raises(ValueError, match="cache holds 2 rows but the input has 1"):
        model(torch.ones(1, 1, dtype=torch.long), cache=cache)
    other = random_model(tiny_config(attention_window_size=5))
    with pytest.raises(ValueError, match="different model config"):
        other(torch.ones(2, 1, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="cache holds torch.float32"):
        model.to(torch.bfloat16)(torch.ones(2, 1, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="rgemma State"):
        model.to(torch.float32)(torch.ones(2, 1, dtype=torch.long), cache=("k", "v"))


def test_resize_untied_head():
    model = random_model(tiny_config(tie_word_embeddings=False))
    assert model.lm_head.weight is not model.get_input_embeddings().weight
    old = model.lm_head.weight.detach().clone()
    model.resize_token_embeddings(100)
    assert model.lm_head.weight.shape == (100, 32)
    torch.testing.assert_close(model.lm_head.weight[:97], old)
    assert model(torch.tensor([[99]])).logits.shape == (1, 1, 100)


def test_right_padding_without_a_state_equals_each_row_alone(model):
    torch.manual_seed(0)
    ids = torch.randint(1, 97, (3, 9))
    lengths = [9, 4, 6]
    mask = torch.tensor([[1] * n + [0] * (9 - n) for n in lengths])
    out = model(ids, attention_mask=mask, use_cache=False, output_hidden_states=True)
    for i, n in enumerate(lengths):
        row = model(ids[i : i + 1, :n], use_cache=False, output_hidden_states=True)
        torch.testing.assert_close(out.logits[i, :n], row.logits[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            out.hidden_states[-1][i, :n], row.hidden_states[-1][0], rtol=1e-5, atol=1e-5
        )
    assert out.cache is None
    with pytest.raises(ValueError, match="row 1 ends in padding"):
        model(ids, attention_mask=mask, use_cache=True)
