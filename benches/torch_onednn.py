#!/usr/bin/env python3
"""How much of PyTorch's CPU speed on a workload comes from oneDNN (MKL-DNN).

Runs `torch_reference.py` (its own measurement, in this process) on each workload with oneDNN
enabled and disabled (`torch.backends.mkldnn`), alternating the two for a few rounds, and prints
the median of the rounds' median step times. On the CPU, PyTorch runs `nn.LSTM` through oneDNN's
fused RNN primitive when it is enabled (the default), and `nn.GRU` and `nn.RNN` through its own
per-step operators either way; see PERF.md.

Usage: python3 benches/torch_onednn.py [--threads 2] [--seconds 2] [--rounds 3] [--only lstm-m,gru-m]
Needs torch. Not part of any test run.
"""
import argparse, contextlib, io, json, statistics, sys, warnings

import torch

import torch_reference


def step_ms(name, threads, seconds, onednn):
    """One run of torch_reference.py on workload `name`: its median step in ms."""
    torch.backends.mkldnn.enabled = onednn
    out = io.StringIO()
    argv = sys.argv
    sys.argv = ["torch_reference.py", "--only", name, "--threads", str(threads),
                "--seconds", str(seconds)]
    try:
        with contextlib.redirect_stdout(out):
            torch_reference.main()
    finally:
        sys.argv = argv
        torch.backends.mkldnn.enabled = True
    return json.loads(out.getvalue())["step_ms"]


def main():
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="lstm-m,gru-m")
    a = ap.parse_args()
    for name in filter(None, a.only.split(",")):
        ms = {True: [], False: []}
        for r in range(a.rounds):
            for onednn in ([True, False] if r % 2 == 0 else [False, True]):
                ms[onednn].append(step_ms(name, a.threads, a.seconds, onednn))
        on, off = statistics.median(ms[True]), statistics.median(ms[False])
        print(json.dumps({"name": name, "threads": a.threads, "rounds": a.rounds,
                          "onednn_step_ms": round(on, 3), "no_onednn_step_ms": round(off, 3),
                          "onednn_speedup": round(off / on, 3)}), flush=True)


if __name__ == "__main__":
    main()
