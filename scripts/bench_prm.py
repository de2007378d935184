"""The transformers side of benches/prm_throughput.rs (run by it; not on its own).

Loads the same Qwen2-shaped PRM checkpoint stepkto scores (Qwen2Model + the
Qwen2.5-Math-PRM head: score.0 Linear(h,h) -> ReLU -> score.2 Linear(h,2)), renders each item
with the checkpoint's chat template as the Qwen2.5-Math-PRM model card does, and times
end-to-end scoring (template + tokenize + forward + read at <extra_0>) of the same items in
two ways: one item per forward pass (the model card's way) and padded batches of the items
sorted by length. Prints one JSON line with the timings and every item's scores.

Usage: python scripts/bench_prm.py CHECKPOINT_DIR ITEMS_JSONL THREADS
"""

import json
import sys
import time

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoTokenizer

SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


def main():
    ckpt, items_path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(threads)
    cfg = json.load(open(f"{ckpt}/config.json"))
    c = AutoConfig.for_model(**{k: v for k, v in cfg.items() if k != "architectures"})
    model = AutoModel.from_config(c).eval()
    h = cfg["hidden_size"]
    head = torch.nn.Sequential(torch.nn.Linear(h, h), torch.nn.ReLU(), torch.nn.Linear(h, 2)).eval()
    sd = load_file(f"{ckpt}/model.safetensors")
    model.load_state_dict({k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")})
    head.load_state_dict({k[len("score."):]: v for k, v in sd.items() if k.startswith("score.")})
    tok = AutoTokenizer.from_pretrained(ckpt)
    sep = tok.encode("<extra_0>")[0]
    items = [json.loads(l) for l in open(items_path)]

    def encode(it):
        msgs = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": it["problem"]},
            {"role": "assistant", "content": "<extra_0>".join(it["steps"]) + "<extra_0>"},
        ]
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
        return tok.encode(text)

    @torch.no_grad()
    def one_by_one(its):
        out = []
        for it in its:
            ids = torch.tensor([encode(it)])
            hs = model(input_ids=ids).last_hidden_state
            p = head(hs).softmax(-1)[0, :, 1]
            out.append(p[ids[0] == sep].tolist())
        return out

    @torch.no_grad()
    def batched(its, bs=8):
        enc = [encode(it) for it in its]
        order = sorted(range(len(its)), key=lambda i: -len(enc[i]))
        out = [None] * len(its)
        for k in range(0, len(order), bs):
            idx = order[k:k + bs]
            t = max(len(enc[i]) for i in idx)
            ids = torch.zeros((len(idx), t), dtype=torch.long)
            mask = torch.zeros((len(idx), t), dtype=torch.long)
            for r, i in enumerate(idx):
                ids[r, :len(enc[i])] = torch.tensor(enc[i])
                mask[r, :len(enc[i])] = 1
            hs = model(input_ids=ids, attention_mask=mask).last_hidden_state
            p = head(hs).softmax(-1)[:, :, 1]
            for r, i in enumerate(idx):
                out[i] = p[r, :len(enc[i])][ids[r, :len(enc[i])] == sep].tolist()
        return out

    one_by_one(items[:2])  # warm-up
    t0 = time.perf_counter()
    scores = one_by_one(items)
    t1 = time.perf_counter()
    batched(items[:8])
    t2 = time.perf_counter()
    scores_b = batched(items)
    t3 = time.perf_counter()
    tok_t0 = time.perf_counter()
    ntok = sum(len(encode(it)) for it in items)
    tok_s = time.perf_counter() - tok_t0
    diff = max(abs(a - b) for x, y in zip(scores, scores_b) for a, b in zip(x, y))
    print(json.dumps({
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "attn": model.config._attn_implementation,
        "single_s": t1 - t0, "batched_s": t3 - t2, "tokenize_s": tok_s, "tokens": ntok,
        "batched_vs_single_max_diff": diff, "scores": scores,
    }))


if __name__ == "__main__":
    main()
