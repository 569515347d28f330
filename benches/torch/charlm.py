#!/usr/bin/env python3
"""PyTorch counterpart of `cargo xtask demo charlm`, for comparing validation loss at equal time.

Usage: python3 benches/torch/charlm.py TEXT [--seconds 120] [--threads 2] [--embed N] [--dropout P]
Same model and settings as the demo's target run: one-hot characters (with --embed N, an
nn.Embedding(V, N) fed the character ids, as the demo's --embed), a 2-layer LSTM of 256 units
(dropout=P between the layers in training, as the demo's --dropout),
a Linear head, random windows of --seq 64 (batch 32) from a zero state, Adam lr 0.002, gradient
clipping at global norm 5. The last 10% of the text is validation: mean cross-entropy in nats per
character over non-overlapping windows of --seq characters, each from a zero state.
Needs torch (pip install torch). Not part of any test run.
"""
import argparse, json, time

import torch

ap = argparse.ArgumentParser()
ap.add_argument("text")
ap.add_argument("--seconds", type=float, default=120)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--seq", type=int, default=64)
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--embed", type=int, default=0)
ap.add_argument("--dropout", type=float, default=0.0)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)

text = open(a.text, encoding="utf-8").read()
vocab = sorted(set(text))
lut = {c: i for i, c in enumerate(vocab)}
ids = torch.tensor([lut[c] for c in text])
V, split = len(vocab), len(ids) - len(ids) // 10
train, valid = ids[:split], ids[split:]

embed = torch.nn.Embedding(V, a.embed) if a.embed else None
rnn = torch.nn.LSTM(a.embed or V, 256, num_layers=2, dropout=a.dropout)
head = torch.nn.Linear(256, V)
params = list(rnn.parameters()) + list(head.parameters())
if embed is not None:
    params = list(embed.parameters()) + params
opt = torch.optim.Adam(params, lr=0.002)
eye = torch.eye(V)


def loss_of(windows):  # windows: [B, seq+1]
    tokens = windows[:, :-1].T  # [T, B]
    x = embed(tokens) if embed is not None else eye[tokens]  # [T, B, E or V]
    out, _ = rnn(x)
    logits = head(out).reshape(-1, V)
    return torch.nn.functional.cross_entropy(logits, windows[:, 1:].T.reshape(-1))


steps, trained, start = 0, 0.0, time.perf_counter()
while trained < a.seconds:
    t0 = time.perf_counter()
    starts = torch.randint(0, len(train) - a.seq - 1, (a.batch,))
    w = torch.stack([train[s : s + a.seq + 1] for s in starts])
    opt.zero_grad()
    loss = loss_of(w)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 5.0)
    opt.step()
    trained += time.perf_counter() - t0
    steps += 1

rnn.eval()  # no dropout in validation
with torch.no_grad():
    n = (len(valid) - 1) // a.seq
    w = torch.stack([valid[i * a.seq : i * a.seq + a.seq + 1] for i in range(n)])
    total = sum(loss_of(w[i : i + 256]).item() * len(w[i : i + 256]) for i in range(0, n, 256))
print(json.dumps({"framework": "pytorch", "steps": steps, "train_s": trained,
                  "tokens_per_s": steps * a.batch * a.seq / trained,
                  "train_loss": loss.item(), "val_loss": total / n}), flush=True)
