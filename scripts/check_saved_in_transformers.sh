#!/usr/bin/env bash
# A checkpoint the trainer saved (after three KTO steps on a tiny tied Llama) loads in
# transformers with the same log-probabilities as stepkto's (issue 10). Needs torch and
# transformers in .venv-prm (scripts/make_train_refs.sh installs them). Fails above 1e-4.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(mktemp -d)/saved"
STEPKTO_KEEP_SAVED="$out" cargo test -q --test train save_a_trained_checkpoint_for_transformers -- --ignored
.venv-prm/bin/python - "$out" <<'PY'
import json, sys, torch
from transformers import AutoModelForCausalLM
d = sys.argv[1]
m = AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager").eval()
r = json.load(open(f"{d}/stepkto_logprobs.json"))
x = torch.tensor([r["ids"]])
with torch.no_grad():
    lp = torch.log_softmax(m(x).logits[0].float(), -1)[:-1].gather(-1, x[0, 1:, None])[:, 0]
diff = (lp - torch.tensor(r["logprobs"])).abs().max().item()
print(f"saved checkpoint in transformers: max |transformers - stepkto| log-prob {diff:.2e}")
sys.exit(0 if diff < 1e-4 else 1)
PY
