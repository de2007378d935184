"""Write the tiny PRM fixtures and their reference scores (run from the repository root).

For each recipe this writes tests/data/prm/<recipe>/{config.json, tokenizer.json,
tokenizer_config.json} and, in tests/data/prm/expected.json, the items scored and the step
scores Hugging Face `transformers` (PyTorch, f32) gives for them. The weights are not
committed: both this script and the Rust test helper (tests/common/tiny.rs) derive every
tensor from its name with the same counter-based generator (splitmix64 seeded by FNV-1a of the
name), so the test writes the identical model.safetensors itself.

The scoring below follows each PRM family's published usage, not stepkto's code:
- qwen-prm: Qwen2.5-Math-PRM model card (chat template, `<extra_0>` mask, softmax class 1);
- math-shepherd: the Math-Shepherd card (`{q} {step} ки\n...`, softmax over the `+`/`-`
  logits at the step tag). The `+` and `-` ids are those of each encoded alone (on the
  card's SentencePiece tokenizer this equals its `encode("+ -")[1:]`; on byte-level BPE the
  joint encoding gives ` -`, a different token); the tag id is the token the tag is in the
  text as scored, found by offsets, not by encoding the tag alone;
- math-shepherd-bpe: the same recipe on a Llama-shaped checkpoint whose byte-level BPE
  tokenizer has " ки" (leading space) as one added token, while "ки" alone is several byte
  tokens, as on Llama-3-based Math-Shepherd PRMs;
- rlhflow: RLHFlow's prm_evaluate.py, one forward pass PER STEP, reading position -3;
- value-head: a TRL-style `v_head.summary` Linear(h, 1) on the base model, sigmoid, read at
  the last token of each step.

Usage: python tests/prm/make_tiny_prms.py [--only NAME ...]
(needs torch, transformers, tokenizers, numpy; `--only` rewrites just those fixtures and
their entries in expected.json). Run it with the versions recorded in expected.json:
scripts/make_tiny_prms.sh makes that venv and runs this.
"""

import json
import math
import os
import sys

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

ROOT = os.path.join("tests", "data", "prm")
GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def fnv1a(name: str) -> int:
    h = 0xCBF29CE484222325
    for b in name.encode():
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def tensor_values(name: str, shape) -> np.ndarray:
    """Must match `tiny::values` in tests/common/tiny.rs bit for bit."""
    n = int(np.prod(shape))
    with np.errstate(over="ignore"):
        z = np.uint64(fnv1a(name)) + (np.arange(1, n + 1, dtype=np.uint64) * GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(40)).astype(np.float64) / 16777216.0
    c = 2.0 * u - 1.0
    if "norm" in name:
        v = 1.0 + 0.2 * c
    elif name.endswith("bias"):
        v = 0.2 * c
    elif "embed_tokens" in name or "lm_head" in name:
        v = 0.5 * c
    else:
        v = c * (1.5 / math.sqrt(shape[-1]))
    return v.astype(np.float32).reshape(shape)


def fill(module: torch.nn.Module, prefix: str = "", scale: float = 1.0):
    """Set every tensor from its name. A tied lm_head is the embedding (not written).
    `scale` multiplies the projection weights (config key `stepkto_test_init_scale`)."""
    sd = {}
    tied = getattr(getattr(module, "config", None), "tie_word_embeddings", False)
    for name, p in module.state_dict().items():
        if tied and name == "lm_head.weight":
            continue
        t = torch.from_numpy(tensor_values(prefix + name, tuple(p.shape)))
        if "proj.weight" in name:
            t = t * scale
        sd[name] = t
    missing, unexpected = module.load_state_dict(sd, strict=False)
    assert set(missing) <= {"lm_head.weight"} and not unexpected, (missing, unexpected)
    if tied and hasattr(module, "lm_head"):
        assert torch.equal(module.lm_head.weight, module.model.embed_tokens.weight)


QWEN_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


def corpus():
    out = []
    for f in ["math500_head60.jsonl", "processbench_sample.jsonl"]:
        with open(os.path.join("tests", "data", f)) as fh:
            for line in fh:
                r = json.loads(line)
                out.append(r.get("problem", ""))
                out.extend(r.get("steps", []))
    return out


# Qwen2's pre-tokenizer split (digits one by one), as in the real Qwen2.5 tokenizer.json;
# transformers 5 applies it to any qwen2 checkpoint, so the qwen2 fixtures use it too.
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def make_tokenizer(specials, bos=None, extra_added=(), qwen=False):
    tok = Tokenizer(models.BPE())
    if qwen:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    if extra_added:
        tok.add_tokens(list(extra_added))
    if bos is not None:
        bid = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bid)]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


RECIPES = {
    "qwen-prm": dict(
        arch="Qwen2ForProcessRewardModel", model_type="qwen2",
        specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>"], bos=None,
        template=QWEN_TEMPLATE, tie=False, tok_cfg=dict(eos_token="<|im_end|>", pad_token="<|endoftext|>"),
    ),
    # qwen-prm on a wider, deeper and more sensitive model (projection weights x3), scored on
    # long items (about 1,000 to 2,600 tokens) with sdpa, eager and float64: the numerics test.
    "qwen-prm-long": dict(
        arch="Qwen2ForProcessRewardModel", model_type="qwen2",
        specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>"], bos=None,
        template=QWEN_TEMPLATE, tie=False, tok_cfg=dict(eos_token="<|im_end|>", pad_token="<|endoftext|>"),
        config=dict(hidden_size=256, intermediate_size=704, num_hidden_layers=6, num_attention_heads=8,
                    num_key_value_heads=4, stepkto_test_init_scale=3.0),
    ),
    # the shape of the PRM the numerics were first measured on (hidden 512, 8 layers, head_dim
    # 64, about 25M parameters, the default init scale), on items of 600 to 5,800 characters.
    "qwen-prm-wide": dict(
        arch="Qwen2ForProcessRewardModel", model_type="qwen2",
        specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>"], bos=None,
        template=QWEN_TEMPLATE, tie=False, tok_cfg=dict(eos_token="<|im_end|>", pad_token="<|endoftext|>"),
        config=dict(hidden_size=512, intermediate_size=1792, num_hidden_layers=8, num_attention_heads=8,
                    num_key_value_heads=4),
    ),
    "math-shepherd": dict(
        arch="MistralForCausalLM", model_type="mistral",
        specials=["<unk>", "<s>", "</s>"], bos="<s>", added=["ки"],
        template=None, tie=False, tok_cfg=dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>"),
    ),
    "math-shepherd-bpe": dict(
        arch="LlamaForCausalLM", model_type="llama",
        specials=["<|begin_of_text|>", "<|end_of_text|>"], bos="<|begin_of_text|>", added=[" ки"],
        template=None, tie=False,
        tok_cfg=dict(bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>"),
    ),
    "rlhflow": dict(
        arch="LlamaForCausalLM", model_type="llama",
        specials=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        bos="<|begin_of_text|>", template=LLAMA3_TEMPLATE, tie=True,
        tok_cfg=dict(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>"),
    ),
    "value-head": dict(
        arch="Qwen2ForCausalLM", model_type="qwen2",
        specials=["<|endoftext|>"], bos=None, template=None, tie=True,
        tok_cfg=dict(eos_token="<|endoftext|>"),
    ),
}


def config_for(name, spec, vocab):
    cfg = dict(
        architectures=[spec["arch"]], model_type=spec["model_type"], vocab_size=vocab,
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6,
        rope_theta=10000.0, tie_word_embeddings=spec["tie"], torch_dtype="float32",
        hidden_act="silu",
    )
    if spec["model_type"] == "llama":
        cfg["rope_scaling"] = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                   high_freq_factor=4.0, original_max_position_embeddings=64)
        cfg["attention_bias"] = False
        cfg["mlp_bias"] = False
    if spec["model_type"] == "mistral":
        cfg["sliding_window"] = None
        cfg["head_dim"] = 8
    if spec["model_type"] == "qwen2":
        cfg["use_sliding_window"] = False
    cfg.update(spec.get("config", {}))
    return cfg


def wide_items():
    """Twelve items of 600 to 5,800 characters, spread over that range, from the committed sample."""
    with open(os.path.join("tests", "data", "processbench_sample.jsonl")) as fh:
        rows = [json.loads(l) for l in fh]
    size = lambda r: len(r["problem"]) + sum(len(s) for s in r["steps"])
    fit = sorted((r for r in rows if 600 <= size(r) <= 5800), key=size)
    picked = [fit[round(i * (len(fit) - 1) / 11)] for i in range(12)]
    return [dict(id=r["id"], problem=r["problem"], steps=r["steps"]) for r in picked]


def long_items():
    """Items of 2,600 to 6,000 characters (over 1,000 tokens each) from the committed sample."""
    with open(os.path.join("tests", "data", "processbench_sample.jsonl")) as fh:
        rows = [json.loads(l) for l in fh]
    size = lambda r: len(r["problem"]) + sum(len(s) for s in r["steps"])
    picked = [r for r in rows if 2600 <= size(r) <= 6000][:4]
    return [dict(id=r["id"], problem=r["problem"], steps=r["steps"]) for r in picked]


def items():
    out = []
    with open(os.path.join("tests", "data", "processbench_sample.jsonl")) as fh:
        rows = [json.loads(l) for l in fh]
    for r in rows[0:3] + rows[100:103]:
        out.append(dict(id=r["id"], problem=r["problem"], steps=r["steps"][:6]))
    out.append(dict(id="tiny", problem="What is 2+3?", steps=["2+3 = 5.", "So the answer is $\\boxed{5}$."]))
    return out


def main():
    import transformers
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    torch.set_num_threads(1)
    only = sys.argv[sys.argv.index("--only") + 1:] if "--only" in sys.argv else list(RECIPES)
    expected = {"transformers": transformers.__version__, "torch": torch.__version__, "recipes": {}}
    path = os.path.join(ROOT, "expected.json")
    if os.path.exists(path) and only != list(RECIPES):
        with open(path) as fh:
            old = json.load(fh)
        expected["recipes"] = old["recipes"]
        for k in ("long", "wide"):
            if k in old:
                expected[k] = old[k]
        assert (old["transformers"], old["torch"]) == (expected["transformers"], expected["torch"]), (
            "regenerate every fixture, or use the versions in expected.json")
    its = items()
    for name, spec in RECIPES.items():
        if name not in only:
            continue
        d = os.path.join(ROOT, name)
        os.makedirs(d, exist_ok=True)
        tok = make_tokenizer(spec["specials"], spec.get("bos"), spec.get("added", ()),
                             qwen=spec["model_type"] == "qwen2")
        tok.save(os.path.join(d, "tokenizer.json"))
        tcfg = dict(tokenizer_class="PreTrainedTokenizerFast", model_max_length=4096, **spec["tok_cfg"])
        if spec["template"]:
            tcfg["chat_template"] = spec["template"]
        with open(os.path.join(d, "tokenizer_config.json"), "w") as fh:
            json.dump(tcfg, fh, indent=2)
        cfg = config_for(name, spec, tok.get_vocab_size())
        with open(os.path.join(d, "config.json"), "w") as fh:
            json.dump(cfg, fh, indent=2)
        hf = AutoTokenizer.from_pretrained(d)
        # transformers must tokenize exactly as tokenizer.json says (stepkto reads only that)
        raw = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        for it in its:
            text = it["problem"] + " " + " ".join(it["steps"])
            assert hf.encode(text, add_special_tokens=False) == raw.encode(text, add_special_tokens=False).ids, name
        if name in ("qwen-prm-long", "qwen-prm-wide"):
            longs = long_items() if name == "qwen-prm-long" else wide_items()
            refs = {impl: [score(name, cfg, hf, it, impl) for it in longs] for impl in ("sdpa", "eager", "f64")}
            expected[name.rsplit("-", 1)[1]] = dict(items=longs, **refs)
            print(name, "tokens", [len(hf.encode(it["problem"] + " ".join(it["steps"]))) for it in longs])
            continue
        scores = [score(name, cfg, hf, it) for it in its]
        expected["recipes"][name] = scores
        print(name, "vocab", tok.get_vocab_size(), "first", scores[0][:3])
    with open(os.path.join(ROOT, "expected.json"), "w") as fh:
        json.dump(dict(items=its, **expected), fh, indent=1)


def base_model(cfg, impl="eager"):
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    c = AutoConfig.for_model(**{k: v for k, v in cfg.items() if k != "architectures"})
    c._attn_implementation = "eager" if impl == "f64" else impl
    return c, AutoModel, AutoModelForCausalLM


@torch.no_grad()
def score(name, cfg, tok, it, impl="eager"):
    c, AutoModel, AutoModelForCausalLM = base_model(cfg, impl)
    problem, steps = it["problem"], it["steps"]
    if name.startswith("qwen-prm"):
        h = cfg["hidden_size"]
        model = AutoModel.from_config(c).eval()
        fill(model, "model.", cfg.get("stepkto_test_init_scale", 1.0))
        head = torch.nn.Sequential(torch.nn.Linear(h, h), torch.nn.ReLU(), torch.nn.Linear(h, 2))
        fill(head, "score.")
        if impl == "f64":
            model, head = model.double(), head.double()
        msgs = [
            {"role": "system", "content": "Please reason step by step, and put your final answer within \\boxed{}."},
            {"role": "user", "content": problem},
            {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"},
        ]
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
        ids = torch.tensor([tok.encode(text)])
        sep = tok.encode("<extra_0>")[0]
        h = model(ids).last_hidden_state
        p = head(h).softmax(-1)[0, :, 1]
        return p[ids[0] == sep].tolist()
    if name.startswith("math-shepherd"):
        model = AutoModelForCausalLM.from_config(c).eval()
        fill(model)
        cand = [tok.encode("+", add_special_tokens=False)[-1], tok.encode("-", add_special_tokens=False)[-1]]
        text = problem + " "
        tag_chars = []
        for s in steps:
            text += s
            tag_chars.append(len(text) + 1)  # the "к" of " ки\n"
            text += " ки\n"
        enc = tok(text, return_offsets_mapping=True)
        # the token the tag is part of, in context (offsets are character offsets)
        pos = [next(i for i, (a, b) in enumerate(enc["offset_mapping"]) if a <= ch < b) for ch in tag_chars]
        tag_ids = {enc["input_ids"][p] for p in pos}
        assert len(tag_ids) == 1, tag_ids
        ids = torch.tensor([enc["input_ids"]])
        logits = model(ids).logits[0][:, cand]
        p = logits.softmax(-1)[:, 0]
        return p[pos].tolist()
    if name == "rlhflow":
        model = AutoModelForCausalLM.from_config(c).eval()
        fill(model)
        plus, minus = tok.encode("+")[-1], tok.encode("-")[-1]
        conv, out = [], []
        for k, s in enumerate(steps):
            conv.append({"role": "user", "content": problem + " " + s if k == 0 else s})
            conv.append({"role": "assistant", "content": "+"})
            ids = tok.apply_chat_template(conv, tokenize=True, return_tensors="pt", return_dict=False)
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
            assert ids[0, -2].item() == plus
            logits = model(ids).logits[0, -3, [plus, minus]]
            out.append(logits.softmax(-1)[0].item())
        return out
    if name == "value-head":
        model = AutoModel.from_config(c).eval()
        fill(model, "model.")
        head = torch.nn.Linear(32, 1)
        fill(head, "v_head.summary.")
        text = problem + "\n\n"
        ends = []
        for s in steps:
            ends.append(len((text + s.rstrip()).encode()) - 1)
            text += s + "\n\n"
        enc = tok(text, return_offsets_mapping=True)
        # the byte offsets of the tokens; offsets from the fast tokenizer are char offsets
        char_ends = [len(text.encode()[: e + 1].decode()) - 1 for e in ends]
        pos = [next(i for i, (a, b) in enumerate(enc["offset_mapping"]) if a <= ce < b) for ce in char_ends]
        h = model(torch.tensor([enc["input_ids"]])).last_hidden_state[0]
        return torch.sigmoid(head(h)[:, 0])[pos].tolist()
    raise ValueError(name)


if __name__ == "__main__":
    main()
