//! The number of cases each property test runs: `PROPTEST_CASES=N` when set to a number, else
//! the test file's own default (chosen to take a few seconds in the dev profile).

/// `PROPTEST_CASES` parsed as a number, or `default` when it is unset or not a number.
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
