//! `cargo xtask bench --inference`: a short run of one generation and one forward-only workload
//! prints one JSON line each, with the fields the comparison script reads.

use std::process::Command;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn bench_inference_prints_one_json_line_per_workload() {
    let (ok, stdout, stderr) = run(&[
        "bench",
        "--inference",
        "--only",
        "gen-lstm-1x64,fwd-lstm-b1",
        "--seconds",
        "0.05",
    ]);
    assert!(ok, "{stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = lines.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["gen-lstm-1x64", "fwd-lstm-b1"]);
    for v in &lines {
        let tps = v["tokens_per_s"].as_f64().unwrap();
        let us = v["us_per_token"].as_f64().unwrap();
        assert!(tps > 0.0 && (tps * us / 1e6 - 1.0).abs() < 1e-9, "{v}");
        assert!(v["threads"].as_u64().unwrap() >= 1);
        assert!(!v["cpu"].as_str().unwrap().is_empty());
    }
}

#[test]
fn bench_inference_refuses_an_unknown_workload() {
    let (ok, _, stderr) = run(&["bench", "--inference", "--only", "nope"]);
    assert!(!ok);
    assert!(
        stderr.contains("no inference workload named `nope`"),
        "{stderr}"
    );
}
