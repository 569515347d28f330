#!/usr/bin/env python3
"""PyTorch counterpart of `cargo xtask demo adding`, for comparing time to solve.

Usage: python3 benches/torch/adding.py [--len 100] [--cell lstm] [--seconds 120] [--threads 2]
Same setup as the demo: each step is (value from U[0,1], marker), two markers (one per half), the
target is the sum of the marked values read at the last step; an LSTM of 64 units and a Linear
head, batch 32, Adam lr 0.005, clipping at global norm 1; every 100 steps the MSE on a fixed test
set of 1000 sequences is checked, and training stops when it is under 0.01. `train_s` is wall
time including the checks. Needs torch. Not part of any test run.
"""
import argparse, json, time

import torch

ap = argparse.ArgumentParser()
ap.add_argument("--len", type=int, default=100)
ap.add_argument("--cell", default="lstm")
ap.add_argument("--seconds", type=float, default=120)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
T, half = a.len, (a.len + 1) // 2


def batch(n):
    x = torch.zeros(T, n, 2)
    x[:, :, 0] = torch.rand(T, n)
    first = torch.randint(0, half, (n,))
    second = half + torch.randint(0, T - half, (n,))
    idx = torch.arange(n)
    x[first, idx, 1] = 1.0
    x[second, idx, 1] = 1.0
    y = x[first, idx, 0] + x[second, idx, 0]
    return x, y.unsqueeze(1)


cell = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[a.cell]
rnn, head = cell(2, 64), torch.nn.Linear(64, 1)
params = list(rnn.parameters()) + list(head.parameters())
opt = torch.optim.Adam(params, lr=0.005)
test_x, test_y = batch(1000)


def predict(x):
    out, _ = rnn(x)
    return head(out[-1])


start, steps, test_mse = time.perf_counter(), 0, float("nan")
while time.perf_counter() - start < a.seconds:
    x, y = batch(32)
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(predict(x), y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    steps += 1
    if steps % 100 == 0:
        with torch.no_grad():
            test_mse = torch.nn.functional.mse_loss(predict(test_x), test_y).item()
        if test_mse < 0.01:
            break
print(json.dumps({"framework": "pytorch", "cell": a.cell, "len": T, "steps": steps,
                  "test_mse": test_mse, "solved": test_mse < 0.01,
                  "train_s": time.perf_counter() - start}), flush=True)
