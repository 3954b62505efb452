"""Writes tests/fixtures/autograd/optim_torch.safetensors: torch.optim trajectories the C++ optimizers
must reproduce.

float32 parameters and gradients; for each optimizer the initial values, the gradient of every step
and the parameters after every step. Two AdamW parameter groups (different lr, weight decay, betas,
eps), SGD with momentum + dampening + weight decay and SGD with nesterov, and clip_grad_norm_.
All single-tensor (foreach=False) code paths, as on the CPU. Run with the pinned venv:
    tools/reference/.venv/bin/python tools/reference/gen_optim_fixture.py
"""
from pathlib import Path

import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "autograd" / "optim_torch.safetensors"
STEPS = 4

torch.manual_seed(0)
out = {}


def run(prefix, make_opt, shapes):
    params = [torch.randn(*s, dtype=torch.float32).requires_grad_() for s in shapes]
    for i, p in enumerate(params):
        out[f"{prefix}.p{i}.init"] = p.detach().clone()
    opt = make_opt(params)
    for step in range(STEPS):
        for i, p in enumerate(params):
            g = torch.randn_like(p)
            p.grad = g
            out[f"{prefix}.p{i}.grad{step}"] = g.clone()
        opt.step()
        for i, p in enumerate(params):
            out[f"{prefix}.p{i}.step{step}"] = p.detach().clone()


run("adamw", lambda ps: torch.optim.AdamW(
    [{"params": [ps[0]], "lr": 1e-2, "weight_decay": 0.1},
     {"params": [ps[1]], "lr": 3e-3, "weight_decay": 0.0, "betas": (0.8, 0.99), "eps": 1e-6}],
    foreach=False), [(4, 5), (5,)])
run("sgd", lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01,
                                      foreach=False), [(4, 5), (5,)])
run("nesterov", lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01,
                                           foreach=False), [(4, 5), (5,)])

# clip_grad_norm_: gradients before, the returned norm, gradients after.
params = [torch.zeros(4, 5, requires_grad=True), torch.zeros(7, requires_grad=True)]
for i, p in enumerate(params):
    p.grad = torch.randn_like(p) * 3
    out[f"clip.p{i}.grad"] = p.grad.clone()
norm = torch.nn.utils.clip_grad_norm_(params, max_norm=1.0, foreach=False)
out["clip.norm"] = norm.detach().to(torch.float64).reshape(())
for i, p in enumerate(params):
    out[f"clip.p{i}.clipped"] = p.grad.clone()

OUT.parent.mkdir(parents=True, exist_ok=True)
save_file(out, str(OUT), metadata={"torch": torch.__version__})
print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
