"""Reference values for the trainer's parity tests (tests/train.rs), from transformers.

For each case (a tiny fixture of tests/data/prm, whose weights tests/common/tiny.rs writes
from tensor names, plus an optional config patch): per-token log-probabilities of fixed
token sequences, and greedy continuations of fixed prompts (generate, do_sample=False).
Run through scripts/make_train_refs.sh, which installs the versions pinned in
tests/data/prm/expected.json into .venv-prm. Writes tests/data/train/expected.json.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join("tests", "prm"))
from make_tiny_prms import fill  # noqa: E402  (same tensor values as tiny.rs)

CASES = {
    "mistral": ("math-shepherd", {}),
    "mistral-window": ("math-shepherd", {"sliding_window": 6}),
    "llama3": ("math-shepherd-bpe", {}),
    "llama-tied": ("rlhflow", {}),
    "qwen2-tied": ("value-head", {}),
}


def sequences(vocab):
    return [[(i * 7 + 3 + s * 11) % vocab for i in range(n)] for s, n in enumerate([17, 40, 5])]


def prompts(vocab):
    return [[(i * 13 + 5) % vocab for i in range(6)], [(i * 3 + 1) % vocab for i in range(11)]]


@torch.no_grad()
def main():
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    torch.set_num_threads(1)
    out = {"transformers": transformers.__version__, "torch": torch.__version__, "cases": {}}
    for case, (fixture, patch) in CASES.items():
        with open(os.path.join("tests", "data", "prm", fixture, "config.json")) as fh:
            cfg = json.load(fh)
        cfg.update(patch)
        arch = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
        c = AutoConfig.for_model(**{k: v for k, v in cfg.items() if k != "architectures"})
        c.architectures = [arch[cfg["model_type"]]]
        c._attn_implementation = "eager"
        model = AutoModelForCausalLM.from_config(c).eval()
        fill(model)
        vocab = cfg["vocab_size"]
        lps = []
        for ids in sequences(vocab):
            x = torch.tensor([ids])
            logits = model(x).logits[0].float()
            lp = torch.log_softmax(logits, -1)[:-1].gather(-1, x[0, 1:, None])[:, 0]
            lps.append(lp.tolist())
        gens = []
        for p in prompts(vocab):
            g = model.generate(torch.tensor([p]), do_sample=False, max_new_tokens=64, min_new_tokens=64,
                               pad_token_id=0, eos_token_id=None)
            gens.append(g[0, len(p):].tolist())
        out["cases"][case] = dict(fixture=fixture, patch=patch, sequences=sequences(vocab), logprobs=lps,
                                  prompts=prompts(vocab), greedy=gens)
        print(case, "vocab", vocab, "first logprobs", [round(v, 4) for v in lps[0][:3]], "greedy", gens[0][:8])
    with open(os.path.join("tests", "data", "train", "expected.json"), "w") as fh:
        json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
