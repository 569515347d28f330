#!/usr/bin/env python3
"""Ours against PyTorch, one workload at a time, interleaved.

For each workload: ROUNDS rounds of `xtask bench --only W` and `torch_reference.py --only W`
(the order swapped every round, so that a drift of the machine weighs on both), then the ratio
of the two medians of tokens/s, and the range of the rounds' own ratios (how far one round's
pair can stray from the run's figure). Both sides run with the same thread count, `--threads`
(default 2). Needs `cargo build --release -p xtask` and `pip install torch`.

With `--against-bin OTHER_XTASK` the other side is another build of ours (`OTHER_XTASK bench`)
instead of PyTorch: a before/after comparison of two commits on the same machine, no torch needed.

    python3 benches/vs_torch.py [--rounds 5] [--seconds 3] [--threads 2] [--only lstm-m,gru-m]
        [--torch-script benches/torch_reference.py] [--against-bin path/to/old/xtask]
"""
import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"seed": 50, "small": 3, "rnn-m": 1.5, "lstm-m": 1.2, "gru-m": 2, "lstm-l": 1.2,
           "lstm-m-varlen": 3}


def tokens_per_s(cmd, name):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("{"):
            d = json.loads(line)
            if d["name"] == name:
                return d["tokens_per_s"]
    sys.exit(f"no result for {name} from {' '.join(cmd)}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--threads", type=int, default=2,
                    help="threads for both sides (ours: xtask bench --threads; torch: set_num_threads)")
    ap.add_argument("--only", default=",".join(TARGETS))
    ap.add_argument("--torch-script",
                    default=str(ROOT / "benches/torch_reference.py"))
    ap.add_argument("--against-bin", default=None,
                    help="compare with another xtask build instead of PyTorch")
    a = ap.parse_args()
    ours_bin = str(ROOT / "target/release/xtask")
    if not Path(ours_bin).exists():
        sys.exit(f"{ours_bin} not found: run `cargo build --release -p xtask` first")
    for name in a.only.split(","):
        threads = ["--threads", str(a.threads)]
        ours_cmd = [ours_bin, "bench", "--seconds", str(a.seconds), *threads, "--only", name]
        if a.against_bin:
            torch_cmd = [a.against_bin, "bench", "--seconds", str(a.seconds), *threads,
                         "--only", name]
        else:
            torch_cmd = [sys.executable, a.torch_script, "--seconds", str(a.seconds), *threads,
                         "--only", name]
        ours, torch = [], []
        for r in range(a.rounds):
            pair = [(ours_cmd, ours), (torch_cmd, torch)]
            for cmd, acc in pair if r % 2 == 0 else reversed(pair):
                acc.append(tokens_per_s(cmd, name))
        o, t = statistics.median(ours), statistics.median(torch)
        target = TARGETS.get(name)
        verdict = ""
        if target is not None:
            verdict = f"  target {target:g}: " + ("met" if o / t >= target else "not met")
        per_round = [x / y for x, y in zip(ours, torch)]
        other = "other build" if a.against_bin else "PyTorch"
        if a.against_bin:
            verdict = ""
        print(f"{name}: ours {o / 1e3:.1f}k, {other} {t / 1e3:.1f}k tokens/s (medians of "
              f"{a.rounds} rounds, {a.threads} threads), ratio {o / t:.3f}{verdict} (rounds "
              f"{min(per_round):.3f}-{max(per_round):.3f})", flush=True)


if __name__ == "__main__":
    main()
