"""KTO reference values from TRL's own loss code (tests/train.rs, kto_* tests).

TRL 1.16 computes the KTO loss inside `KTOTrainer._compute_loss`; this script calls that
method unchanged on a stand-in trainer (the attributes it reads) and a stand-in model whose
"fused head" returns given per-token log-probabilities, so that TRL's code turns the same
summed log-probabilities as stepkto's test into a loss, its metrics and the gradient of the
loss with respect to each completion's log-probability. Run through scripts/make_train_refs.sh
(TRL pinned there). Writes tests/data/train/kto.json.
"""
import collections
import json
import os
import types

import torch

from trl import KTOTrainer
import trl


class Accel:
    device = torch.device("cpu")

    @staticmethod
    def gather_for_metrics(x):
        return x


class Model:
    """Returns `lp` (main call) or `kl_lp` (KL call) as one completion token per row."""

    training = True

    def __init__(self, lp, kl_lp):
        self.lp, self.kl_lp = lp, kl_lp

    def __call__(self, input_ids, labels, **kw):
        lp = self.kl_lp if bool((input_ids == 7).all()) else self.lp
        n = input_ids.shape[0]
        return types.SimpleNamespace(log_probs=lp[:, None], entropy=torch.zeros(n, 1),
                                     mean_logits=torch.zeros(n, 1))


def run(case):
    n = len(case["labels"])
    lp = torch.tensor(case["policy"], dtype=torch.float64, requires_grad=True)
    kl_lp = torch.tensor(case["policy_kl"], dtype=torch.float64)
    model = Model(lp, kl_lp)
    stub = types.SimpleNamespace(
        model=model, accelerator=Accel(), aux_loss_enabled=False, precompute_ref_logps=True,
        calculate_KL=case["loss_type"] != "apo_zero_unpaired", loss_type=case["loss_type"],
        beta=case["beta"], desirable_weight=case["desirable_weight"],
        undesirable_weight=case["undesirable_weight"], _metrics=collections.defaultdict(
            lambda: collections.defaultdict(list)), _total_train_tokens=0, _tp_size=1)
    stub._compute_kl_logps = lambda m, b: KTOTrainer._compute_kl_logps(stub, m, b)
    batch = {
        "input_ids": torch.zeros(n, 2, dtype=torch.long),
        "attention_mask": torch.ones(n, 2, dtype=torch.long),
        "completion_mask": torch.tensor([[0, 1]] * n),
        "KL_input_ids": torch.full((n, 2), 7, dtype=torch.long),
        "KL_attention_mask": torch.ones(n, 2, dtype=torch.long),
        "KL_completion_mask": torch.tensor([[0, 1]] * n),
        "label": torch.tensor(case["labels"], dtype=torch.bool),
        "ref_logps": torch.tensor(case["reference"], dtype=torch.float64),
        "ref_KL_logps": torch.tensor(case["reference_kl"], dtype=torch.float64),
    }
    loss = KTOTrainer._compute_loss(stub, model, batch, False)
    loss.backward()
    metrics = {k: v[-1] for k, v in stub._metrics["train"].items() if k in (
        "kl", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected")}
    return dict(loss=loss.item(), grad=lp.grad.tolist(), metrics=metrics)


def main():
    g = torch.Generator().manual_seed(0)

    def logps(n, scale=20.0):
        return (-(torch.rand(n, generator=g, dtype=torch.float64) * scale) - 1).tolist()

    cases = []
    for name, labels, loss_type, beta, wd, wu in [
        ("mixed-8", [1, 0, 1, 1, 0, 0, 1, 0], "kto", 0.1, 1.0, 1.0),
        ("odd-5", [1, 0, 0, 1, 0], "kto", 0.5, 1.0, 1.33),
        ("no-undesirable", [1, 1, 1, 1], "kto", 0.1, 1.0, 1.0),
        ("no-desirable", [0, 0, 0], "kto", 0.2, 1.0, 1.0),
        ("weights", [1, 0, 0, 0, 0, 1], "kto", 0.1, 2.5, 0.75),
        ("apo-mixed", [1, 0, 1, 0, 0], "apo_zero_unpaired", 0.1, 1.0, 1.0),
        ("apo-no-desirable", [0, 0], "apo_zero_unpaired", 0.3, 1.0, 1.0),
    ]:
        n = len(labels)
        policy, reference = logps(n), logps(n)
        # the KL pairs: this trainer's policy and reference on mismatched completions; for
        # kl < 0 (clamped) one case is made with policy below reference throughout
        policy_kl = logps(n)
        reference_kl = [x + (0.7 if name == "odd-5" else -0.4) for x in policy_kl]
        case = dict(name=name, labels=labels, loss_type=loss_type, beta=beta, desirable_weight=wd,
                    undesirable_weight=wu, policy=policy, reference=reference, policy_kl=policy_kl,
                    reference_kl=reference_kl)
        case.update(run(case))
        cases.append(case)
        print(name, "loss", case["loss"], case["metrics"])
    out = {"trl": trl.__version__, "torch": torch.__version__, "cases": cases}
    with open(os.path.join("tests", "data", "train", "kto.json"), "w") as fh:
        json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
