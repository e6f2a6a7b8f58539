"""The Hugging Face side of `dpselft bench generate --peer` (started by it; not a CLI).

Loads a causal-LM folder that dpselft wrote (the same weights ours samples from) and runs
transformers' `generate` on the prompts it is sent: KV cache, temperature and nucleus sampling
(top-k off, as ours), every row continued by exactly `new_tokens` tokens (min_new_tokens, so that
EOS ends nothing early: ours runs to the same count).

Protocol (one JSON object per line on stdout):
  start                -> {"ready", "torch", "transformers", "threads", "blas"}
  {"ids": [[...], ...], "new_tokens": N, "temperature": T, "top_p": P, "seed": S}
                       -> {"seconds", "generated"} (generated: new tokens over all rows)
  EOF or "quit"        -> exit
"""

import argparse
import json
import sys
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()

    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    from peer_step import blas_name

    torch.set_num_threads(a.threads)
    model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32)
    model.eval()

    def say(obj):
        print(json.dumps(obj), flush=True)

    say({"ready": True, "torch": torch.__version__, "transformers": transformers.__version__,
         "threads": torch.get_num_threads(), "blas": blas_name(torch)})
    for line in sys.stdin:
        line = line.strip()
        if not line or line == "quit":
            break
        req = json.loads(line)
        ids = torch.tensor(req["ids"], dtype=torch.long)
        n = int(req["new_tokens"])
        torch.manual_seed(int(req["seed"]) % (2**63))
        with torch.inference_mode():
            start = time.perf_counter()
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                temperature=float(req["temperature"]),
                top_p=float(req["top_p"]),
                top_k=0,
                max_new_tokens=n,
                min_new_tokens=n,
                use_cache=True,
                pad_token_id=model.config.eos_token_id or 0,
            )
            seconds = time.perf_counter() - start
        # Let OpenBLAS's threads, which spin for a while after a call, fall asleep before
        # dpselft's next run uses the same cores (not part of any timing).
        time.sleep(1.0)
        say({"seconds": seconds, "generated": int(out.shape[0] * (out.shape[1] - ids.shape[1]))})


if __name__ == "__main__":
    main()
