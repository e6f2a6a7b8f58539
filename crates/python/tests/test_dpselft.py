"""Tests of the Python package on a tiny random BERT (written here, no download): the bindings
turn keyword arguments into the command's options, return its JSON as dicts, report progress,
and raise clear errors. The commands themselves are tested by the Rust test suites."""

import json
import math
import random
import struct
from pathlib import Path

import pytest

import dpselft

WORDS = ["red", "green", "blue", "pink", "gold", "teal", "dog", "cat", "cow", "owl", "eel", "yak"]
SPECIALS = ["[PAD]", "[UNK]"]
D, FFN, LAYERS, POSITIONS = 8, 12, 2, 16


def write_safetensors(path: Path, tensors: dict) -> None:
    """The safetensors format: a little-endian u64 header length, a JSON header, raw f32 data."""
    header, blobs, offset = {}, [], 0
    for name, (shape, values) in tensors.items():
        blob = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def tiny_bert(folder: Path) -> Path:
    rng = random.Random(7)

    def normal(*shape):
        return (list(shape), [rng.gauss(0.0, 0.3) for _ in range(math.prod(shape))])

    def ones(n):
        return ([n], [1.0] * n)

    def zeros(n):
        return ([n], [0.0] * n)

    vocab = len(SPECIALS) + len(WORDS)
    t = {
        "embeddings.word_embeddings.weight": normal(vocab, D),
        "embeddings.position_embeddings.weight": normal(POSITIONS, D),
        "embeddings.token_type_embeddings.weight": normal(2, D),
        "embeddings.LayerNorm.weight": ones(D),
        "embeddings.LayerNorm.bias": zeros(D),
    }
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        for m in ["attention.self.query", "attention.self.key", "attention.self.value",
                  "attention.output.dense"]:
            t[p + m + ".weight"], t[p + m + ".bias"] = normal(D, D), zeros(D)
        t[p + "intermediate.dense.weight"], t[p + "intermediate.dense.bias"] = normal(FFN, D), zeros(FFN)
        t[p + "output.dense.weight"], t[p + "output.dense.bias"] = normal(D, FFN), zeros(D)
        for ln in ["attention.output.LayerNorm", "output.LayerNorm"]:
            t[p + ln + ".weight"], t[p + ln + ".bias"] = ones(D), zeros(D)
    folder.mkdir(parents=True)
    write_safetensors(folder / "model.safetensors", t)
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": vocab,
        "hidden_size": D, "num_hidden_layers": LAYERS, "num_attention_heads": 2,
        "intermediate_size": FFN, "max_position_embeddings": POSITIONS,
    }))
    (folder / "tokenizer.json").write_text(json.dumps({
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": None, "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": None, "decoder": None,
        "model": {"type": "WordLevel", "unk_token": "[UNK]",
                  "vocab": {w: i for i, w in enumerate(SPECIALS + WORDS)}},
    }))
    return folder


def colours_and_animals(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            label = i % 2
            words = [rng.choice(WORDS[label * 6:label * 6 + 6]) for _ in range(rng.randint(2, 5))]
            f.write(json.dumps({"text": " ".join(words), "label": ["colour", "animal"][label]}) + "\n")
    return path


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("dpselft")
    return {
        "model": tiny_bert(root / "tiny-bert"),
        "train": colours_and_animals(root / "train.jsonl", 200, 1),
        "test": colours_and_animals(root / "test.jsonl", 60, 2),
        "root": root,
    }


def test_account_returns_the_commands_json_and_epsilon_falls_with_the_noise():
    low = dpselft.account(sigma=0.8, sampling_rate=0.01, steps=1000, delta=1e-5)
    high = dpselft.account(sigma=1.6, sampling_rate=0.01, steps=1000, delta=1e-5)
    assert set(low) >= {"epsilon", "delta", "sampling_rate", "steps", "sigma"}
    assert low["sigma"] == 0.8 and low["steps"] == 1000
    assert high["epsilon"]["pld"] < low["epsilon"]["pld"]
    # The calibration is the inverse of the accounting: the σ found for low's ε gives it back.
    cal = dpselft.account(target_epsilon=low["epsilon"]["pld"], sampling_rate=0.01, steps=1000,
                          delta=1e-5, accountant="pld")
    assert cal["sigma"]["pld"] == pytest.approx(0.8, rel=1e-3)


def test_invalid_arguments_raise_value_error_with_the_usage():
    with pytest.raises(ValueError, match="--delta"):
        dpselft.account(sigma=1.0, sampling_rate=0.01, steps=10)
    with pytest.raises(ValueError, match="no-such-option"):
        dpselft.account(no_such_option=1, sigma=1.0, delta=1e-5)


def test_dp_training_reports_progress_and_its_ledger(assets):
    out = assets["root"] / "dp-run"
    events = []
    summary = dpselft.train(model=assets["model"], data=assets["train"], out=out, epsilon=8.0,
                            delta=1e-4, steps=12, batch_size=32, lr=5e-2, trainable="head",
                            seed=3, checkpoint_every="off", progress=events.append)
    assert summary["steps"] == 12 and summary["completed"]
    assert [e["step"] for e in events] == list(range(1, 13))
    assert all(e["total_steps"] == 12 for e in events)
    eps = [e["epsilon"] for e in events]
    assert all(a <= b for a, b in zip(eps, eps[1:])) and eps[-1] <= 8.0 + 1e-6
    ledger = dpselft.ledger(out)
    assert ledger["delta"] == 1e-4
    assert ledger["epsilon"] == pytest.approx(eps[-1], rel=1e-6)
    assert [e["stage"] for e in ledger["entries"]] == ["train"]
    assert (out / "model" / "model.safetensors").is_file()

    metrics = dpselft.eval(model=out, data=assets["test"])
    assert metrics["examples"] == 60 and 0.0 <= metrics["accuracy"] <= 1.0


def test_a_non_private_run_has_no_epsilon(assets):
    events = []
    dpselft.train(model=assets["model"], data=assets["train"], out=assets["root"] / "np",
                  non_private=True, steps=3, batch_size=16, trainable="head", seed=1,
                  progress=events.append)
    assert [e["epsilon"] for e in events] == [None, None, None]


def test_a_failing_command_raises_dpselft_error_naming_the_file(assets):
    bad = assets["root"] / "bad.jsonl"
    bad.write_text('{"text": "red dog"}\nnot json\n')
    with pytest.raises(dpselft.DpselftError, match="bad.jsonl"):
        dpselft.train(model=assets["model"], data=bad, out=assets["root"] / "bad-run",
                      epsilon=3.0, steps=2)
    assert not (assets["root"] / "bad-run" / "ledger.json").exists()
    with pytest.raises(dpselft.DpselftError, match="ledger"):
        dpselft.ledger(assets["root"] / "nowhere")


def test_run_checks_its_configuration_before_anything_is_spent(assets):
    config = assets["root"] / "run.toml"
    config.write_text('[run]\nepsilon = -1.0\n')
    out = assets["root"] / "bad-pipeline"
    with pytest.raises((ValueError, dpselft.DpselftError), match="epsilon|ε"):
        dpselft.run(config=config, out=out)
    assert not (out / "ledger.json").exists()
