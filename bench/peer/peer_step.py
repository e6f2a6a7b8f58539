"""The PyTorch / Opacus side of `dpselft bench dp-overhead --peer` (started by it; not a CLI).

Times the same step as dpselft's bench on the same model folder and shapes: a mean-pooled
classifier on the Hugging Face encoder, random token ids of exactly SEQ_LEN tokens, AdamW;
non-private with plain PyTorch, DP with Opacus (per-sample gradients by hooks, clipping to 1,
noise multiplier 1). The trainable set is dpselft's spec (`head`, `last:K`, `block.I`, `all`).

Protocol (one JSON object per line on stdout):
  start          -> {"ready", "torch", "opacus", "transformers", "threads", "blas"}
  "warmup\n"     -> one step of each kind, {"ok": true}
  "rep R\n"      -> one step of each kind (non-private first for even R), {"nonprivate_s", "dp_s",
                    "nonprivate_peak_mib", "dp_peak_mib"} (peak: the process's VmHWM over the step,
                    after resetting it: weights, data and the step, as dpselft's probe; on a GPU
                    the device memory PyTorch allocated, its peak over the step)

--device cuda[:N] runs both steps on that GPU (timed between two torch.cuda.synchronize()).
  EOF or "quit"  -> exit
"""

import argparse
import copy
import json
import sys
import time


def vm_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return float(line.split()[1])
    return float("nan")


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--trainable", required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--seq-len", type=int, required=True)
    p.add_argument("--labels", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()

    import torch
    import opacus
    import transformers
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer
    from transformers import AutoModel

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    dev = torch.device(a.device)
    on_gpu = dev.type == "cuda"

    def sync():
        if on_gpu:
            torch.cuda.synchronize(dev)

    def reset_step_peak():
        if on_gpu:
            torch.cuda.reset_peak_memory_stats(dev)
        else:
            reset_peak()

    def step_peak_mib():
        if on_gpu:
            return torch.cuda.max_memory_allocated(dev) / 2**20
        return vm_kib("VmHWM") / 1024.0

    class Classifier(torch.nn.Module):
        def __init__(self, body, labels):
            super().__init__()
            self.body = body
            self.head = torch.nn.Linear(body.config.hidden_size, labels)

        def forward(self, ids, mask):
            # Position and token-type ids of the batch's shape: with the (1, T) defaults,
            # Opacus's per-sample gradients of those embeddings would have a batch of 1.
            b, t = ids.shape
            positions = torch.arange(t, device=ids.device).unsqueeze(0).expand(b, t)
            h = self.body(input_ids=ids, attention_mask=mask, position_ids=positions,
                          token_type_ids=torch.zeros_like(ids)).last_hidden_state
            m = mask.unsqueeze(-1).to(h.dtype)
            return self.head((h * m).sum(1) / m.sum(1))

    body = AutoModel.from_pretrained(a.model, torch_dtype=torch.float32)
    # dpselft's encoder has no [CLS] pooler; with it, `all` would train a layer outside the loss.
    body.pooler = None
    body.train()
    model = Classifier(body, a.labels).to(dev)
    for prm in model.parameters():
        prm.requires_grad_(False)
    layers = body.encoder.layer
    for item in [s.strip() for s in a.trainable.replace(";", ",").split(",") if s.strip()]:
        if item == "all":
            modules = [model]
        elif item == "head":
            modules = [model.head]
        elif item.startswith("last:"):
            modules = list(layers[len(layers) - int(item[5:]):])
        elif item.startswith("block."):
            modules = [layers[int(item[6:])]]
        else:
            sys.exit(f"peer_step.py: trainable item {item!r}: expected head, last:K, block.I, all")
        for mod in modules:
            for prm in mod.parameters():
                prm.requires_grad_(True)

    vocab = body.config.vocab_size
    ids = torch.randint(5, vocab, (a.batch, a.seq_len)).to(dev)
    mask = torch.ones_like(ids)
    labels = torch.randint(0, a.labels, (a.batch,)).to(dev)
    loss_fn = torch.nn.CrossEntropyLoss()

    def trainable(m):
        return [prm for prm in m.parameters() if prm.requires_grad]

    np_model = model
    np_opt = torch.optim.AdamW(trainable(np_model), lr=1e-4)
    dp_model = GradSampleModule(copy.deepcopy(model))
    dp_opt = DPOptimizer(torch.optim.AdamW(trainable(dp_model), lr=1e-4), noise_multiplier=1.0,
                         max_grad_norm=1.0, expected_batch_size=a.batch)

    def step(m, opt):
        sync()
        reset_step_peak()
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(m(ids, mask), labels).backward()
        opt.step()
        sync()
        return time.perf_counter() - start, step_peak_mib()

    def say(obj):
        print(json.dumps(obj), flush=True)

    say({"ready": True, "torch": torch.__version__, "opacus": opacus.__version__,
         "transformers": transformers.__version__, "threads": torch.get_num_threads(),
         "blas": f"cuda {torch.version.cuda}" if on_gpu else blas_name(torch)})
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        if cmd[0] == "warmup":
            step(np_model, np_opt)
            step(dp_model, dp_opt)
            time.sleep(1.0)
            say({"ok": True})
        elif cmd[0] == "rep":
            r = int(cmd[1])
            if r % 2 == 0:
                np_s, np_mem = step(np_model, np_opt)
                dp_s, dp_mem = step(dp_model, dp_opt)
            else:
                dp_s, dp_mem = step(dp_model, dp_opt)
                np_s, np_mem = step(np_model, np_opt)
            # Let OpenBLAS's threads, which spin for a while after a call, fall asleep before
            # dpselft's next step runs on the same cores (not part of any timing).
            if not on_gpu:
                time.sleep(1.0)
            say({"nonprivate_s": np_s, "dp_s": dp_s, "nonprivate_peak_mib": np_mem,
                 "dp_peak_mib": dp_mem})


def blas_name(torch):
    """Which BLAS the distribution's PyTorch ended up with (it follows the system's libblas)."""
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        return "unknown"
    for name in ["openblas", "mkl", "blis", "libblas"]:
        if name in maps:
            return name
    return "unknown"


if __name__ == "__main__":
    main()
