"""The Python half of scripts/check-hf-export (run that script, not this file).

--write-data WORK  writes WORK/train.jsonl and WORK/eval.jsonl (small built-in text sets)
--check WORK       loads each model dpselft saved under WORK with stock transformers,
                   sentence-transformers and peft, and compares its outputs with the ones
                   `dpselft eval --logits` wrote; prints a table, writes WORK/report.json and
                   exits 1 if a tokenization differs or an output differs beyond TOLERANCE.
"""

import argparse
import json
import sys
from pathlib import Path

# Largest |ours - theirs| allowed, relative to the largest |logit| of the example (at least 1):
# both sides compute in f32, in a different order.
TOLERANCE = 1e-4

TOPICS = {
    "weather": [
        "Heavy rain is expected over the coast tonight.",
        "The morning will be cold, with frost in the valleys.",
        "Sunny spells in the afternoon, and a light breeze from the west.",
        "A storm warning is in force for the northern islands until Friday.",
        "Temperatures climb to thirty degrees by the weekend.",
        "Fog lingers on the motorway, so drivers should slow down.",
        "Snow showers will turn to sleet as the day goes on.",
        "The drought has left reservoirs at half their usual level.",
    ],
    "sport": [
        "The home side scored twice in the final ten minutes.",
        "She won the marathon in a new course record.",
        "The coach rested three players before the cup final.",
        "A late penalty settled the derby in front of a full stadium.",
        "The relay team was disqualified for a faulty baton change.",
        "He served fifteen aces and took the match in straight sets.",
        "The club signed a young striker on a four-year contract.",
        "Rain delayed the cricket for two hours, and then it was called off.",
    ],
}

EVAL_TEXTS = [
    ("weather", "Rain."),
    ("sport", "The goalkeeper saved two penalties and the team went through to the semi-final."),
    ("weather", "Wind gusts of eighty kilometres an hour could bring down trees and power lines "
                "across the region overnight, the forecasters said."),
    ("sport", "A draw."),
    ("weather", "Clear skies tonight; a frost is likely inland."),
    ("sport", "After a slow start the champions ran away with the game, scoring four times in the "
              "second half while their defence held firm against a tired attack."),
    ("weather", "Humid, with thunder later."),
    ("sport", "The umpire's decision was overturned on review."),
]


def write_data(work: Path) -> None:
    rows = [{"text": t, "label": label} for label, texts in TOPICS.items() for t in texts]
    with open(work / "train.jsonl", "w") as f:
        for r in rows * 2:
            f.write(json.dumps(r) + "\n")
    with open(work / "eval.jsonl", "w") as f:
        for label, text in EVAL_TEXTS:
            f.write(json.dumps({"text": text, "label": label}) + "\n")


def ours(run: Path):
    """The ids and outputs `dpselft eval --logits` wrote, in the eval set's order."""
    rows = [json.loads(line) for line in open(run / "eval-logits.jsonl")]
    return [r["ids"] for r in rows], [r["logits"] for r in rows]


def compare(name, loader, ids_ours, ids_theirs, logits_ours, logits_theirs):
    import numpy as np

    same_ids = [list(a) == list(b) for a, b in zip(ids_ours, ids_theirs)]
    worst = 0.0
    for a, b in zip(logits_ours, logits_theirs):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            worst = float("inf")
            continue
        worst = max(worst, float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(a))))))
    return {
        "export": name,
        "loaded_with": loader,
        "examples": len(logits_ours),
        "outputs": len(logits_ours[0]),
        "token_ids_equal": all(same_ids) and len(ids_ours) == len(ids_theirs),
        "max_rel_diff": worst,
        "ok": all(same_ids) and worst <= TOLERANCE,
    }


def texts():
    return [t for _, t in EVAL_TEXTS]


def tokenize(tokenizer, add_special_tokens=True):
    return [tokenizer(t, add_special_tokens=add_special_tokens)["input_ids"] for t in texts()]


def check_sentence_transformers(run: Path, name: str):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(run / "model"), device="cpu")
    ids_ours, logits_ours = ours(run)
    got = model.encode(texts(), batch_size=3, convert_to_numpy=True)
    return compare(name, "sentence-transformers", ids_ours, tokenize(model.tokenizer),
                   logits_ours, list(got))


def check_peft(run: Path, name: str):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    model_dir = run / "model"
    adapter = json.load(open(model_dir / "adapter" / "adapter_config.json"))
    base = AutoModel.from_pretrained(adapter["base_model_name_or_path"])
    model = PeftModel.from_pretrained(base, str(model_dir / "adapter")).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    dense = load_file(str(model_dir / "2_Dense" / "model.safetensors"))
    batch = tokenizer(texts(), padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1)  # the export's mean pooling
        logits = pooled @ dense["linear.weight"].T + dense["linear.bias"]
    ids_ours, logits_ours = ours(run)
    return compare(name, "transformers + peft (base + adapter/)", ids_ours, tokenize(tokenizer),
                   logits_ours, logits.numpy().tolist())


def check_causal_lm(run: Path, name: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = str(run / "model")
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids_ours, logits_ours = ours(run)
    ids_theirs = tokenize(tokenizer)
    got = []
    with torch.no_grad():
        for ids in ids_theirs:
            got.append(model(torch.tensor([ids])).logits[0, -1].numpy().tolist())
    return compare(name, "transformers (AutoModelForCausalLM)", ids_ours, ids_theirs,
                   logits_ours, got)


def check(work: Path) -> int:
    rows = [
        check_sentence_transformers(work / "minilm-classifier", "MiniLM classifier (head,last:1)"),
        check_sentence_transformers(work / "minilm-lora", "MiniLM LoRA classifier, merged"),
        check_peft(work / "minilm-lora", "MiniLM LoRA classifier, PEFT adapter"),
        check_causal_lm(work / "smollm2-lm", "SmolLM2 causal LM (last:1)"),
        check_sentence_transformers(work / "smollm2-classifier", "SmolLM2 classifier (head,last:1)"),
    ]
    import peft
    import sentence_transformers
    import torch
    import transformers

    report = {
        "tolerance": TOLERANCE,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "peft": peft.__version__,
        },
        "checks": rows,
    }
    tmp = work / "report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(work / "report.json")
    print(f"{'export':40} {'loaded with':40} {'ids':>5} {'max rel diff':>13}  result")
    for r in rows:
        print(f"{r['export']:40} {r['loaded_with']:40} {'same' if r['token_ids_equal'] else 'DIFF':>5} "
              f"{r['max_rel_diff']:13.2e}  {'ok' if r['ok'] else 'FAIL'}")
    return 0 if all(r["ok"] for r in rows) else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--write-data", type=Path)
    p.add_argument("--check", type=Path)
    a = p.parse_args()
    if a.write_data:
        write_data(a.write_data)
    if a.check:
        return check(a.check)
    return 0


if __name__ == "__main__":
    sys.exit(main())
