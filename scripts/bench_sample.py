"""transformers' side of benches/sample_throughput.rs: greedy generate on a left-padded batch.
Args: model dir, prompts.json (token id lists), threads, new tokens. Prints JSON."""
import json
import sys
import time

import torch
from transformers import AutoModelForCausalLM

from bench_common import peak_rss_mb


def main():
    d, pfile, threads, new = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    prompts = json.load(open(pfile))
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    # the best of three runs: the machines this runs on are shared and noisy
    secs = float("inf")
    with torch.no_grad():
        for _ in range(3):
            t = time.perf_counter()
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=new,
                                 min_new_tokens=new, pad_token_id=0, eos_token_id=None)
            secs = min(secs, time.perf_counter() - t)
    gen = out[:, width:].tolist()
    print(json.dumps(dict(seconds=secs, tokens=sum(len(g) for g in gen), generated=gen, torch=torch.__version__,
                          peak_rss_mb=peak_rss_mb())))


if __name__ == "__main__":
    main()
