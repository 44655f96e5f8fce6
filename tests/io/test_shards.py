"""The one safetensors writer: what it writes reads back through safetensors itself."""

import json

import pytest
import torch
from safetensors.torch import load_file

from rgemma.io.shards import ShardEntry, ShardWriter, write_shards


def tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "a": torch.randn(4, 8, generator=g),
        "b": torch.randn(3, generator=g).to(torch.bfloat16),
        "c": torch.randint(-127, 127, (5, 2), generator=g).to(torch.int8),
        "d": torch.randn(6, 4, generator=g).t(),  # not contiguous
    }


def read_all(out):
    index = out / "model.safetensors.index.json"
    if not index.exists():
        return load_file(out / "model.safetensors")
    found = {}
    for name in dict.fromkeys(json.loads(index.read_text())["weight_map"].values()):
        found.update(load_file(out / name))
    return found


@pytest.mark.parametrize("max_bytes", [10**9, 100])
def test_write_shards_round_trips(tmp_path, max_bytes):
    want = tensors()
    write_shards(tmp_path, want, max_bytes)
    got = read_all(tmp_path)
    assert list(got) == list(want) or set(got) == set(want)
    for k, t in want.items():
        assert torch.equal(got[k], t), k
    sharded = (tmp_path / "model.safetensors.index.json").exists()
    assert sharded == (max_bytes == 100)


def test_streaming_writer_checks_the_plan(tmp_path):
    writer = ShardWriter(tmp_path, [ShardEntry("x", torch.float32, (2,))], 100)
    with pytest.raises(RuntimeError, match="expected"):
        writer.write("x", torch.zeros(3))
    with pytest.raises(RuntimeError, match="0 of 1"):
        writer.finish()
    writer.close()
