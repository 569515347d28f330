#!/usr/bin/env python3
"""Ours against the inference anchors, one workload at a time, interleaved.

For each workload of benches/inference.json: ROUNDS rounds of `xtask bench --inference --only W`
and `inference_reference.py --only W` (ONNX Runtime for gen-*, PyTorch inference_mode for fwd-*;
the order swapped every round, so that a drift of the machine weighs on both), then ours and the
anchor (medians of the rounds' tokens/s, with their min-max spread), the ratio of the two
medians against the issue's target (3x for gen-*, 1.2x for fwd-*), and the range of the rounds'
own ratios. Needs `cargo build --release -p xtask` and `pip install torch onnx onnxruntime`.

With `--against-bin OTHER_XTASK` the other side is another build of ours
(`OTHER_XTASK bench --inference`): a before/after comparison of two commits, no torch needed.

    python3 benches/inference_vs.py [--rounds 5] [--seconds 3] [--only gen-lstm-2x256,fwd-lstm-m]
        [--reference benches/inference_reference.py] [--against-bin path/to/old/xtask]
"""
import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def target(name):
    return 3.0 if name.startswith("gen-") else 1.2


def tokens_per_s(cmd, name):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("{"):
            d = json.loads(line)
            if d["name"] == name:
                return d["tokens_per_s"]
    sys.exit(f"no result for {name} from {' '.join(cmd)}")


def k(v):
    return f"{v / 1e3:.1f}k"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--only", default="")
    ap.add_argument("--reference", default=str(ROOT / "benches/inference_reference.py"))
    ap.add_argument("--against-bin", default=None,
                    help="compare with another xtask build instead of the anchors")
    a = ap.parse_args()
    ours_bin = str(ROOT / "target/release/xtask")
    if not Path(ours_bin).exists():
        sys.exit(f"{ours_bin} not found: run `cargo build --release -p xtask` first")
    names = [n for n in a.only.split(",") if n] or [
        w["name"] for w in json.loads((ROOT / "benches/inference.json").read_text())["workloads"]]
    for name in names:
        ours_cmd = [ours_bin, "bench", "--inference", "--seconds", str(a.seconds), "--only", name]
        if a.against_bin:
            other_cmd = [a.against_bin, "bench", "--inference", "--seconds", str(a.seconds),
                         "--only", name]
            other = "other build"
        else:
            other_cmd = [sys.executable, a.reference, "--seconds", str(a.seconds),
                         "--threads", "2", "--only", name]
            other = "ONNX Runtime" if name.startswith("gen-") else "PyTorch"
        ours, theirs = [], []
        for r in range(a.rounds):
            pair = [(ours_cmd, ours), (other_cmd, theirs)]
            for cmd, acc in pair if r % 2 == 0 else reversed(pair):
                acc.append(tokens_per_s(cmd, name))
        o, t = statistics.median(ours), statistics.median(theirs)
        per_round = [x / y for x, y in zip(ours, theirs)]
        verdict = ""
        if not a.against_bin:
            verdict = f"  target {target(name):g}x: " + ("met" if o / t >= target(name) else "not met")
        print(f"{name}: ours {k(o)} ({k(min(ours))}-{k(max(ours))}), {other} {k(t)} "
              f"({k(min(theirs))}-{k(max(theirs))}) tokens/s, medians of {a.rounds} rounds; "
              f"ratio {o / t:.3f}{verdict} (rounds {min(per_round):.3f}-{max(per_round):.3f})",
              flush=True)


if __name__ == "__main__":
    main()
