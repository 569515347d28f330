#!/usr/bin/env python3
"""PyTorch CPU reference for the workloads in configs.json.

(A copy of the project's shared PyTorch reference script that reads the same workloads from
workloads.json beside it, the repository's copy of configs.json, so it runs from a fresh clone.)

Usage: python3 torch_reference.py [--threads N] [--seconds S] [--only NAME,...]
Prints one JSON object per workload: name, tokens_per_s, step_ms (median).
Needs torch (pip install torch). Not part of any test run.
"""
import argparse, json, os, statistics, time

import torch

here = os.path.dirname(os.path.abspath(__file__))


def make(cfg):
    cell = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cfg["cell"]]
    rec = cell(cfg["input"], cfg["hidden"])
    head = torch.nn.Linear(cfg["hidden"], cfg["vocab"])
    params = list(rec.parameters()) + list(head.parameters())
    x = torch.randn(cfg["steps"], cfg["batch"], cfg["input"])
    y = torch.randint(0, cfg["vocab"], (cfg["steps"] * cfg["batch"],))
    opt = torch.optim.SGD(params, lr=0.1)

    def step():
        opt.zero_grad(set_to_none=False)
        out, _ = rec(x)
        logits = head(out.reshape(-1, cfg["hidden"]))
        loss = torch.nn.functional.cross_entropy(logits, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        return loss

    return step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfgs = json.load(open(os.path.join(here, "workloads.json")))["workloads"]
    only = set(filter(None, a.only.split(",")))
    for cfg in cfgs:
        if only and cfg["name"] not in only:
            continue
        step = make(cfg)
        for _ in range(5):
            step()
        times, start = [], time.perf_counter()
        while time.perf_counter() - start < a.seconds or len(times) < 5:
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        print(json.dumps({"name": cfg["name"], "threads": a.threads,
                          "tokens_per_s": cfg["batch"] * cfg["steps"] / med,
                          "step_ms": med * 1e3, "runs": len(times)}), flush=True)


if __name__ == "__main__":
    main()
