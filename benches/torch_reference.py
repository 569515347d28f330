#!/usr/bin/env python3
"""PyTorch CPU reference for the workloads in configs.json.

(A copy of the project's shared PyTorch reference script that reads the same workloads from
workloads.json beside it, the repository's copy of configs.json, so it runs from a fresh clone.)

Usage: python3 torch_reference.py [--threads N] [--seconds S] [--only NAME,...] [--autocast-bf16]
Prints one JSON object per workload: name, tokens_per_s, step_ms (median).
Needs torch (pip install torch). Not part of any test run.
"""
import argparse, json, os, statistics, time

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

here = os.path.dirname(os.path.abspath(__file__))


def make(cfg, autocast=False):
    cell = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cfg["cell"]]
    rec = cell(cfg["input"], cfg["hidden"])
    head = torch.nn.Linear(cfg["hidden"], cfg["vocab"])
    params = list(rec.parameters()) + list(head.parameters())
    x = torch.randn(cfg["steps"], cfg["batch"], cfg["input"])
    y = torch.randint(0, cfg["vocab"], (cfg["steps"] * cfg["batch"],))
    opt = torch.optim.SGD(params, lr=0.1)
    lens = None
    if cfg.get("lengths") == "uniform":
        lens = torch.randint(1, cfg["steps"] + 1, (cfg["batch"],)); lens[0] = cfg["steps"]
        pad = torch.arange(cfg["steps"])[:, None] >= lens[None, :]
        y = y.reshape(cfg["steps"], cfg["batch"]).masked_fill(pad, -100).reshape(-1)

    def step():
        opt.zero_grad(set_to_none=False)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            if lens is None:
                out, _ = rec(x)
            else:
                out, _ = rec(pack_padded_sequence(x, lens, enforce_sorted=False))
                out, _ = pad_packed_sequence(out, total_length=cfg["steps"])
            logits = head(out.reshape(-1, cfg["hidden"])).float()
        loss = torch.nn.functional.cross_entropy(logits, y, ignore_index=-100)
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
    ap.add_argument("--autocast-bf16", action="store_true",
                    help="run forward under torch.autocast('cpu', bfloat16) (mixed precision)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfgs = json.load(open(os.path.join(here, "workloads.json")))["workloads"]
    only = set(filter(None, a.only.split(",")))
    for cfg in cfgs:
        if only and cfg["name"] not in only:
            continue
        step = make(cfg, a.autocast_bf16)
        for _ in range(5):
            step()
        times, start = [], time.perf_counter()
        while time.perf_counter() - start < a.seconds or len(times) < 5:
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        print(json.dumps({"name": cfg["name"], "threads": a.threads,
                          "precision": "autocast-bf16" if a.autocast_bf16 else "f32",
                          "tokens_per_s": cfg["batch"] * cfg["steps"] / med,
                          "step_ms": med * 1e3, "runs": len(times)}), flush=True)


if __name__ == "__main__":
    main()
