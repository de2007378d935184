"""TRL's side of benches/kto_step.rs: KTOTrainer optimiser steps on the same model and the same
token ids, reference log-probabilities precomputed (not timed). Args: model dir, rows.json
([{"prompt": ids, "completion": ids, "label": bool}]), threads, steps timed after one warm-up.
Prints one JSON line."""
import json
import sys
import time

import torch
import trl
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from bench_common import peak_rss_mb
from trl import KTOConfig, KTOTrainer


class PreTokenized(KTOTrainer):
    """The rows are token ids already: skip TRL's text tokenisation, keep its KL pairing
    (completions rotated by one within each batch)."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        def add_kl(ex):
            ex["KL_completion_ids"] = [ex["completion_ids"][-1]] + ex["completion_ids"][:-1]
            return ex

        return dataset.map(add_kl, batched=True, batch_size=args.per_device_train_batch_size)


class Clock(TrainerCallback):
    def __init__(self):
        self.times, self.t = [], None

    def on_step_begin(self, args, state, control, **kw):
        self.t = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.perf_counter() - self.t)


def main():
    d, rows_file, threads, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    # "f32" trains in float32 as stepkto does; "bf16" is KTOConfig's own default (bf16=True:
    # autocast to bfloat16 for the forward and backward, AMX on CPUs that have it)
    precision = sys.argv[5] if len(sys.argv) > 5 else "f32"
    torch.set_num_threads(threads)
    rows = json.load(open(rows_file))
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(d)
    if tok.pad_token_id is None:
        tok.pad_token_id = 0
    data = Dataset.from_list(
        [{"prompt_ids": r["prompt"], "completion_ids": r["completion"], "label": r["label"]} for r in rows]
    )
    args = KTOConfig(
        output_dir="/tmp/stepkto-bench-trl",
        per_device_train_batch_size=len(rows),
        max_steps=steps + 1,
        learning_rate=1e-6,
        lr_scheduler_type="constant",
        max_grad_norm=1.0,
        precompute_ref_log_probs=True,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        dataloader_num_workers=0,
        max_length=None,
        seed=0,
        bf16=precision == "bf16",
    )
    clock = Clock()
    trainer = PreTokenized(model=model, args=args, train_dataset=data, processing_class=tok, callbacks=[clock])
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    timed = clock.times[1:]
    print(json.dumps(dict(
        seconds_per_step=sum(timed) / len(timed), best_step=min(timed), steps=len(timed),
        first_loss=losses[0],
        optimizer=str(args.optim), bf16=args.bf16, trl=trl.__version__, torch=torch.__version__,
        peak_rss_mb=peak_rss_mb())))


if __name__ == "__main__":
    main()
