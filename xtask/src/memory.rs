//! Memory estimates checked before allocating: what a command's sizes (a fixture's metadata, a
//! demo's flags and text) ask for, refused in one line when over a budget.
//!
//! A caller lists its large buffers as `(description, bytes)`, each computed in checked
//! arithmetic ([`bytes`], `None` when the product overflows `usize`), and [`check`] compares
//! their sum with the budget. The estimates count every buffer that grows with the sizes
//! (values, gradients, optimizer state, caches, inputs and outputs), with a few copies of slack;
//! they do not need to be exact, only to grow as the real allocations do, so a size that would
//! take tens of gigabytes is refused at once rather than after the machine runs out of memory.

/// `per_value × ∏ dims` bytes, or `None` when the product overflows.
pub fn bytes(per_value: usize, dims: &[usize]) -> Option<usize> {
    dims.iter()
        .try_fold(per_value, |acc, &d| acc.checked_mul(d))
}

/// `a + b`, `None` when either is or the sum overflows.
pub fn add(a: Option<usize>, b: Option<usize>) -> Option<usize> {
    a?.checked_add(b?)
}

/// A byte count for people: `1.5 GiB`, `300.0 MiB`, `12 B`.
pub fn human(bytes: usize) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `Ok` when the buffers' total is within `budget` bytes; otherwise the one-line error
/// `{what} need {total}, over {budget_name} ({budget}): {largest buffer} alone {its bytes}`.
/// A buffer whose size overflowed counts as more than any budget.
pub fn check(
    what: &str,
    buffers: &[(String, Option<usize>)],
    budget: usize,
    budget_name: &str,
) -> Result<(), String> {
    let total = buffers
        .iter()
        .try_fold(0usize, |sum, (_, b)| sum.checked_add((*b)?));
    if total.is_some_and(|t| t <= budget) {
        return Ok(());
    }
    let size = |b: Option<usize>| b.map_or_else(|| "more than 2^64 bytes".to_string(), human);
    // The largest buffer names the sizes to lower (an overflowing one is the largest).
    let largest = buffers
        .iter()
        .max_by_key(|(_, b)| b.map_or(u128::MAX, |b| b as u128));
    let detail = largest.map_or(String::new(), |(name, b)| {
        format!(": {name} alone {}", size(*b))
    });
    Err(format!(
        "{what} need {}, over {budget_name} of {}{detail}",
        size(total),
        human(budget)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_overflow_and_messages() {
        assert_eq!(bytes(8, &[2, 3]), Some(48));
        assert_eq!(bytes(8, &[usize::MAX, 2]), None);
        assert_eq!(add(Some(1), Some(2)), Some(3));
        assert_eq!(add(Some(usize::MAX), Some(1)), None);
        assert_eq!(human(12), "12 B");
        assert_eq!(human(3 << 29), "1.5 GiB");
        let small = [("a".to_string(), Some(10)), ("b".to_string(), Some(20))];
        assert!(check("sizes", &small, 30, "the budget").is_ok());
        let e = check("sizes", &small, 29, "the budget").unwrap_err();
        assert_eq!(e, "sizes need 30 B, over the budget of 29 B: b alone 20 B");
        let huge = [("x".to_string(), Some(1)), ("y".to_string(), None)];
        let e = check("sizes", &huge, 1 << 30, "the budget").unwrap_err();
        assert!(e.contains("y alone more than 2^64 bytes"), "{e}");
    }
}
