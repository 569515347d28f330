#!/usr/bin/env python3
"""How much of PyTorch's CPU speed on a workload comes from oneDNN (MKL-DNN).

Runs `torch_reference.py`'s training step for each workload with oneDNN enabled and disabled
(`torch.backends.mkldnn.flags`), alternating the two for a few rounds, and prints the median step
time of each. On the CPU, PyTorch runs `nn.LSTM` through oneDNN's fused RNN primitive when it
is enabled (the default), and `nn.GRU` and `nn.RNN` through its own per-step operators either
way; see PERF.md.

Usage: python3 benches/torch_onednn.py [--threads 2] [--seconds 2] [--rounds 3] [--only lstm-m,gru-m]
Needs torch. Not part of any test run.
"""
import argparse, json, os, statistics, time, warnings

import torch

from torch_reference import here, make


def median_step_ms(step, seconds):
    for _ in range(5):
        step()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 5:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main():
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="lstm-m,gru-m")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfgs = json.load(open(os.path.join(here, "workloads.json")))["workloads"]
    only = set(filter(None, a.only.split(",")))
    for cfg in cfgs:
        if only and cfg["name"] not in only:
            continue
        ms = {True: [], False: []}
        for r in range(a.rounds):
            for enabled in ([True, False] if r % 2 == 0 else [False, True]):
                with torch.backends.mkldnn.flags(enabled=enabled):
                    ms[enabled].append(median_step_ms(make(cfg), a.seconds))
        on, off = statistics.median(ms[True]), statistics.median(ms[False])
        print(json.dumps({
            "name": cfg["name"],
            "threads": a.threads,
            "onednn_step_ms": round(on, 3),
            "no_onednn_step_ms": round(off, 3),
            "onednn_speedup": round(off / on, 3),
        }))


if __name__ == "__main__":
    main()
