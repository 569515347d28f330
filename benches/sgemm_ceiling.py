#!/usr/bin/env python3
"""The machine's f32 matrix-product ceiling, as PyTorch's sgemm (MKL or oneDNN) reaches it.

PERF.md's "share of ceiling" column divides our GFLOP/s by this figure (2 threads). It times
`torch.mm` on square shapes large enough to run at full speed, on 1 and on 2 threads, and prints
one JSON line per (threads, n): the best of several timed runs, in GFLOP/s.

    pip install torch
    python3 benches/sgemm_ceiling.py [--sizes 1024,2048,3072] [--seconds 2]
"""
import argparse
import json
import platform
import time

import torch


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1024,2048,3072")
    ap.add_argument("--seconds", type=float, default=2.0)
    a = ap.parse_args()
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for n in map(int, a.sizes.split(",")):
            x = torch.randn(n, n)
            y = torch.randn(n, n)
            out = torch.empty(n, n)
            torch.mm(x, y, out=out)
            best = float("inf")
            start = time.perf_counter()
            while time.perf_counter() - start < a.seconds:
                t0 = time.perf_counter()
                torch.mm(x, y, out=out)
                best = min(best, time.perf_counter() - t0)
            print(json.dumps({"cpu": cpu_model(), "torch": torch.__version__, "threads": threads,
                              "n": n, "gflops": round(2 * n ** 3 / best / 1e9, 1)}), flush=True)


if __name__ == "__main__":
    main()
