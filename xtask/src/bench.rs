//! `cargo xtask bench [--only a,b] [--seconds S] [--threads N]`: the reference workloads
//! (`--inference`: those of `benches/inference.json` instead, see [`crate::bench_inference`]).
//!
//! Each workload of `benches/workloads.json` (a copy of the shared `configs.json`) is one
//! training step as PyTorch's `torch_reference.py` runs it: a one-layer recurrent layer over `T`
//! steps of `B` random `I`-feature sequences (f32), a Dense head `H -> V` on every step, mean
//! softmax cross-entropy over all `T*B` random targets, full backward, clipping by global norm
//! 5, and a plain SGD update (lr 0.1). Weights use PyTorch's default initialization.
//!
//! After 5 warm-up steps, steps are timed one by one until `--seconds` have passed (and at least
//! 5 ran); the median step time gives `tokens_per_s = B*T / median` (`min_step_ms` is the fastest
//! step, steadier than the median on a noisy machine). One JSON line per workload, in the
//! PyTorch script's form, plus `cpu` (the model name, so every figure names its CPU) and
//! `peak_rss_mib`: the process's peak resident memory so far (meaningful per workload when run
//! alone with `--only`).
//!
//! Threads: `--threads N` sets `nn_core::set_threads(N)` (1: everything on the calling thread);
//! without it, the library's default (`NN_NUM_THREADS`, else the machine's available
//! parallelism). Every JSON line carries the thread count used.

use crate::cli;
pub use benches::{Step, Workload};
use serde_json::json;
use std::time::Instant;

/// Median and fastest of the step times of `w` over at least `seconds` (and 5 steps), after 5
/// warm-up steps, and how many steps ran.
pub fn measure(w: &Workload, seconds: f64) -> Result<(f64, f64, usize), String> {
    let mut step = Step::new(w, 0)?;
    for _ in 0..5 {
        step.run()?;
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < seconds || times.len() < 5 {
        let t0 = Instant::now();
        step.run()?;
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], times[0], times.len()))
}

/// Peak resident memory of this process in MiB (`VmHWM`), when the OS tells it.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The reference workloads' training steps, timed.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "bench",
    bin_name = "cargo xtask bench",
    after_help = "Runs the training-step workloads of benches/workloads.json and prints one JSON line each:
{\"name\",\"cpu\",\"threads\",\"tokens_per_s\",\"step_ms\",\"min_step_ms\",\"runs\",\"gflops\",\"peak_rss_mib\"}.
With --inference: the workloads of benches/inference.json (gen-*: batch-1 generation, a whole token each;
fwd-*: forward-only passes), one line each: {\"name\",\"cpu\",\"threads\",\"tokens_per_s\",\"us_per_token\",\"runs\",\"peak_rss_mib\"}."
)]
pub struct Args {
    /// Only these workloads (names from the file, comma-separated).
    #[arg(long, value_name = "a,b", value_delimiter = ',')]
    pub only: Vec<String>,
    /// Time each workload for at least S seconds.
    #[arg(long, value_name = "S", default_value_t = 3.0, value_parser = cli::positive_f64)]
    pub seconds: f64,
    /// Threads for products, time loops and losses (1: one thread) [default: `NN_NUM_THREADS`,
    /// else the number of cores].
    #[arg(long, value_name = "N", value_parser = cli::positive_usize)]
    pub threads: Option<usize>,
    /// Run the inference workloads of benches/inference.json instead (generation, forward only).
    #[arg(long)]
    pub inference: bool,
}

/// The CPU's model name (`model name` of `/proc/cpuinfo`), or the architecture where the OS does
/// not tell: every figure names the CPU it was measured on.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The command.
pub fn run(args: &Args) -> Result<bool, String> {
    if let Some(threads) = args.threads {
        nn_core::set_threads(threads).map_err(|e| format!("--threads: {e}"))?;
    }
    if args.inference {
        return crate::bench_inference::run(&args.only, args.seconds);
    }
    let path = crate::project_root().join("benches/workloads.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let all = Workload::parse_all(&text)?;
    let only: Vec<&String> = args.only.iter().filter(|n| !n.is_empty()).collect();
    if let Some(unknown) = only.iter().find(|n| !all.iter().any(|w| &&w.name == *n)) {
        return Err(format!("--only: no workload named `{unknown}`"));
    }
    let cpu = cpu_model();
    for w in all
        .iter()
        .filter(|w| only.is_empty() || only.contains(&&w.name))
    {
        let (median, fastest, runs) = measure(w, args.seconds)?;
        let tokens = (w.batch * w.steps) as f64;
        cli::print(format_args!(
            "{}\n",
            json!({
                "name": w.name,
                "cpu": cpu,
                "threads": nn_core::kernels::pool::threads(),
                "tokens_per_s": tokens / median,
                "step_ms": median * 1e3,
                "min_step_ms": fastest * 1e3,
                "runs": runs,
                "gflops": w.flops_per_token() * tokens / median / 1e9,
                "peak_rss_mib": peak_rss_mib(),
            })
        ))?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workloads_file_parses_and_a_step_trains() {
        let text =
            std::fs::read_to_string(crate::project_root().join("benches/workloads.json")).unwrap();
        let all = Workload::parse_all(&text).unwrap();
        assert_eq!(all.len(), 7);
        let varlen = &all[6];
        assert_eq!(
            (varlen.name.as_str(), varlen.lengths),
            ("lstm-m-varlen", Some(benches::LengthDist::Uniform))
        );
        let seed = &all[0];
        assert_eq!((seed.name.as_str(), seed.hidden), ("seed", 16));
        let mut step = Step::new(seed, 1).unwrap();
        let first = step.run().unwrap();
        let mut last = first;
        for _ in 0..30 {
            last = step.run().unwrap();
        }
        assert!(last < first, "{first} -> {last}");
        assert!(Workload::parse_all("{}").is_err());
        assert!(Workload::parse_all(r#"{"workloads":[{"name":"x"}]}"#).is_err());
    }

    #[test]
    fn figures_name_the_cpu() {
        let cpu = cpu_model();
        assert!(!cpu.is_empty() && !cpu.contains('\n'), "{cpu:?}");
    }
}
