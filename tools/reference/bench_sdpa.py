"""Times PyTorch's scaled_dot_product_attention (cuDNN backend where it takes the call, else PyTorch's
choice) forward+backward at the shapes of bench_cuda's BM_AttentionFwdBwd (block-per-row kernels) and
BM_AttentionFwdBwdTc (tensor-core kernels), and prints the ratio of each vlpeft time to it (issue #3's target: <= 1.5). Run by tools/gpu-check.sh on the GPU machine, whose
image has PyTorch:  python3 tools/reference/bench_sdpa.py <bench.json from bench_cuda>"""
import json
import sys

import torch
import torch.nn.functional as F


def time_ms(fn, iters=20):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def sdpa_case(T, t5):
    B, H, D = 8, 12, 64
    dev, dt = "cuda", torch.bfloat16
    q, k, v = (torch.randn(B, H, T, D, device=dev, dtype=dt, requires_grad=True) for _ in range(3))
    dout = torch.randn(B, H, T, D, device=dev, dtype=dt)
    bias = torch.randn(1, H, T, T, device=dev, dtype=dt, requires_grad=True) if t5 else None

    def step():
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=not t5,
                                             scale=1.0 if t5 else 0.125)
        out.backward(dout)

    backend = "default"
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            ms = time_ms(step)
        backend = "cudnn"
    except Exception:  # cuDNN refused these inputs (e.g. a bias that needs a gradient): PyTorch's choice
        ms = time_ms(step)
    return ms, backend


def main():
    ours = {}
    if len(sys.argv) > 1:
        for b in json.load(open(sys.argv[1])).get("benchmarks", []):
            if b["name"].startswith("BM_AttentionFwdBwd") and not b.get("error_occurred"):
                scale = {"ms": 1.0, "us": 1e-3, "ns": 1e-6}[b["time_unit"]]
                parts = b["name"].split("/")  # BM_AttentionFwdBwd (auto), ...Rows, ...Tc
                variant = {"BM_AttentionFwdBwd": "auto", "BM_AttentionFwdBwdRows": "rows",
                           "BM_AttentionFwdBwdTc": "tc"}.get(parts[0])
                if variant is None:
                    continue
                ours[(variant, int(parts[1]), int(parts[2]))] = b["real_time"] * scale
    print(f"{'attention fwd+bwd (bf16, B 8, H 12, D 64)':44} {'vlpeft ms':>10} {'torch ms':>10} {'ratio':>7}  backend")
    for T, t5 in ((1024, 0), (512, 1)):
        ms, backend = sdpa_case(T, bool(t5))
        for variant in ("auto", "rows", "tc"):
            mine = ours.get((variant, T, t5))
            name = f"{'T5-base bias+mask' if t5 else 'GPT-2 causal'} T={T} ({variant})"
            ratio = f"{mine / ms:7.2f}" if mine else "      -"
            print(f"{name:44} {mine if mine else float('nan'):10.2f} {ms:10.2f} {ratio}  {backend}")


if __name__ == "__main__":
    main()
