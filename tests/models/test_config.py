import json

import pytest

from rgemma import PRESETS, RecurrentGemmaConfig


def test_defaults_follow_transformers():
    c = RecurrentGemmaConfig()
    assert (c.num_hidden_layers, c.vocab_size, c.hidden_size, c.intermediate_size) == (26, 256000, 2560, 7680)
    assert c.lru_width == 2560 and c.num_key_value_heads == 10 and c.head_dim == 256
    assert c.block_types == ("recurrent", "recurrent", "attention")
    assert c.embeddings_scale_by_sqrt_dim and c.logits_soft_cap == 30.0


def test_embedding_scale_is_bf16_rounded():
    assert RecurrentGemmaConfig(hidden_size=2560, num_attention_heads=10).embedding_scale == 50.5
    assert RecurrentGemmaConfig(hidden_size=4096, num_attention_heads=16).embedding_scale == 64.0
    c = RecurrentGemmaConfig(embeddings_scale_by_sqrt_dim=False)
    assert c.embedding_scale == 1.0


def test_presets_match_deepmind():
    two = RecurrentGemmaConfig.from_preset("recurrentgemma-2b")
    assert two.mlp_width == 7680 and two.num_hidden_layers == 26 and two.num_key_value_heads == 1
    assert two.layers_block_type[:3] == ["recurrent", "recurrent", "attention"]
    hawk = RecurrentGemmaConfig.from_preset("hawk-7b")
    assert set(hawk.layers_block_type) == {"recurrent"} and hawk.logits_soft_cap == 0
    griffin = RecurrentGemmaConfig.from_preset("griffin-7b")
    assert griffin.lru_width == 5632 and not griffin.embeddings_scale_by_sqrt_dim
    assert set(PRESETS) == {"recurrentgemma-2b", "recurrentgemma-9b", "griffin-7b", "hawk-7b"}
    with pytest.raises(ValueError, match="unknown preset"):
        RecurrentGemmaConfig.from_preset("gemma-7b")


PUBLISHED_2B = {
    "architectures": ["RecurrentGemmaForCausalLM"],
    "attention_bias": False,
    "attention_window_size": 2048,
    "_block_types": ["recurrent", "recurrent", "attention"],
    "bos_token_id": 2,
    "conv1d_width": 4,
    "embeddings_scale_by_sqrt_dim": True,
    "eos_token_id": 1,
    "final_w_init_variance_scale": 0.07692307692307693,
    "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh",
    "hidden_size": 2560,
    "intermediate_size": 15360,
    "logits_soft_cap": 30.0,
    "lru_width": 2560,
    "model_type": "recurrent_gemma",
    "num_attention_heads": 10,
    "num_hidden_layers": 26,
    "num_key_value_heads": 1,
    "pad_token_id": 0,
    "partial_rotary_factor": 0.5,
    "rms_norm_eps": 1e-06,
    "rope_theta": 10000.0,
    "torch_dtype": "float32",
    "transformers_version": "4.40.0.dev0",
    "vocab_size": 256000,
    "w_init_variance_scale": 0.01,
}


def test_reads_published_2b_config_and_both_spellings(tmp_path):
    c = RecurrentGemmaConfig.from_dict(PUBLISHED_2B)
    assert c == RecurrentGemmaConfig.from_preset("recurrentgemma-2b")
    assert c.extra["torch_dtype"] == "float32"
    v5 = {
        k: v
        for k, v in PUBLISHED_2B.items()
        if k not in ("_block_types", "rope_theta", "partial_rotary_factor")
    }
    v5.update(
        block_types=["recurrent", "attention"],
        rope_parameters={"rope_type": "default", "rope_theta": 500.0, "partial_rotary_factor": 0.25},
    )
    c5 = RecurrentGemmaConfig.from_dict(v5)
    assert c5.block_types == ("recurrent", "attention") and c5.rope_theta == 500.0
    assert c5.partial_rotary_factor == 0.25
    path = tmp_path / "config.json"
    path.write_text(c5.to_json_string())
    assert RecurrentGemmaConfig.from_json_file(path) == c5


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("num_attention_heads", 7, "num_attention_heads"),
        ("lru_width", 30, "num_attention_heads"),
        ("block_types", ("recurrent", "mamba"), "block_types"),
        ("hidden_size", 0, "hidden_size"),
        ("vocab_size", -5, "vocab_size"),
        ("num_key_value_heads", 3, "num_key_value_heads"),
        ("intermediate_size", 63, "intermediate_size"),
        ("hidden_activation", "relu", "hidden_activation"),
        ("logits_soft_cap", -1.0, "logits_soft_cap"),
        ("eos_token_id", 10**9, "eos_token_id"),
    ],
)
def test_invalid_values_name_the_field(field, value, needle):
    base = dict(hidden_size=32, num_attention_heads=4, intermediate_size=64, vocab_size=100)
    with pytest.raises(ValueError, match=needle):
        RecurrentGemmaConfig(**{**base, field: value})


def test_malformed_config_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="invalid JSON"):
        RecurrentGemmaConfig.from_json_file(path)
    path.write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="model_type"):
        RecurrentGemmaConfig.from_json_file(path)
    path.write_text(json.dumps({**PUBLISHED_2B, "hidden_size": "big"}))
    with pytest.raises(ValueError, match="hidden_size"):
        RecurrentGemmaConfig.from_json_file(path)
    with pytest.raises(FileNotFoundError, match="config.json"):
        RecurrentGemmaConfig.from_json_file(tmp_path / "nope" / "config.json")


@pytest.mark.parametrize("drop", [("vocab_size",), ("num_key_value_heads", "intermediate_size")])
def test_config_json_missing_shape_keys_are_named(tmp_path, drop):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({k: v for k, v in PUBLISHED_2B.items() if k not in drop}))
    with pytest.raises(ValueError, match="missing required key") as err:
        RecurrentGemmaConfig.from_json_file(path)
    assert all(repr(k) in str(err.value) for k in drop) and "\n" not in str(err.value)


def test_config_json_keys_with_a_published_default_may_be_absent(tmp_path):
    path = tmp_path / "config.json"
    optional = ("rms_norm_eps", "rope_theta", "logits_soft_cap", "conv1d_width", "lru_width", "_block_types")
    path.write_text(json.dumps({k: v for k, v in PUBLISHED_2B.items() if k not in optional}))
    assert RecurrentGemmaConfig.from_json_file(path) == RecurrentGemmaConfig.from_dict(PUBLISHED_2B)
    assert RecurrentGemmaConfig(hidden_size=640).num_hidden_layers == 26  # Python keeps its defaults
