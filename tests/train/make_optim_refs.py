"""AdamW, clipping and schedule references from PyTorch and transformers (tests/train_loss.rs,
adamw_* tests): two parameters, fixed gradients per step, torch.optim.AdamW with weight decay
after torch.nn.utils.clip_grad_norm_, and transformers' cosine schedule with warmup.
Run through scripts/make_train_refs.sh. Writes tests/data/train/optim.json."""
import json
import os

import torch
from transformers import get_cosine_schedule_with_warmup


def main():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(3, 4, generator=g)
    b = torch.randn(5, generator=g)
    grads = [[(torch.randn(3, 4, generator=g) * s).tolist(), (torch.randn(5, generator=g) * s).tolist()]
             for s in (0.1, 3.0, 0.5, 10.0, 0.01)]
    pa, pb = torch.nn.Parameter(a.clone()), torch.nn.Parameter(b.clone())
    opt = torch.optim.AdamW([pa, pb], lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=5)
    norms, lrs = [], []
    for ga, gb in grads:
        lrs.append(opt.param_groups[0]["lr"])
        pa.grad, pb.grad = torch.tensor(ga), torch.tensor(gb)
        norms.append(torch.nn.utils.clip_grad_norm_([pa, pb], 1.0).item())
        opt.step()
        sched.step()
    out = dict(torch=torch.__version__, a=a.tolist(), b=b.tolist(), grads=grads, lrs=lrs, norms=norms,
               final_a=pa.detach().tolist(), final_b=pb.detach().tolist())
    with open(os.path.join("tests", "data", "train", "optim.json"), "w") as fh:
        json.dump(out, fh, indent=1)
    print("lrs", lrs, "norms", norms)


if __name__ == "__main__":
    main()
