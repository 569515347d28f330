//! Finite-difference gradient checking, in f64.
//!
//! For every scalar `θ` (each parameter value of a [`Module`], or each input element), the
//! numerical derivative is the central difference `(L(θ+ε) − L(θ−ε)) / 2ε` with `ε = 1e-5`
//! (truncation error `O(ε²)`, about 1e-10 here, and rounding about `1e-16·|L|/ε`). It is compared
//! with the analytic gradient `a` by the relative error
//! `|a − n| / max(|a|, |n|, FLOOR)` with `FLOOR = 1e-3`: gradients far below the floor, where
//! the difference quotient's own noise dominates, are compared on the floor's scale.
//! The report names the worst element; tests ask for `max_rel_error ≤ 1e-6`.

use crate::{Module, Result};
use nalgebra::DMatrix;

/// Step of the central difference.
pub const EPS: f64 = 1e-5;
/// Denominator floor of the relative error.
pub const FLOOR: f64 = 1e-3;

/// The outcome of a gradient check.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The largest relative error over all checked elements.
    pub max_rel_error: f64,
    /// Where it was: `"name[index]"` (column-major index).
    pub worst: String,
    /// The analytic and numerical values there.
    pub analytic: f64,
    /// See `analytic`.
    pub numerical: f64,
    /// How many elements were checked.
    pub checked: usize,
}

impl Report {
    fn new() -> Self {
        Report {
            max_rel_error: 0.0,
            worst: String::new(),
            analytic: 0.0,
            numerical: 0.0,
            checked: 0,
        }
    }

    fn add(&mut self, name: &str, index: usize, a: f64, n: f64) {
        let err = relative_error(a, n);
        self.checked += 1;
        if err > self.max_rel_error || (err.is_nan() && !self.max_rel_error.is_nan()) {
            self.max_rel_error = err;
            self.worst = format!("{name}[{index}]");
            self.analytic = a;
            self.numerical = n;
        }
    }
}

/// `|a − n| / max(|a|, |n|, FLOOR)`.
pub fn relative_error(a: f64, n: f64) -> f64 {
    (a - n).abs() / a.abs().max(n.abs()).max(FLOOR)
}

/// Checks the gradients a model's backward computes for all its parameters.
///
/// `f(model)` must run the forward pass, the backward pass (adding into the parameters'
/// gradients) and return the loss. It is called once with zeroed gradients for the analytic
/// values, then twice per parameter element with that element moved by `±ε`.
pub fn check_params<M: Module<f64>>(
    model: &mut M,
    mut f: impl FnMut(&mut M) -> Result<f64>,
) -> Result<Report> {
    model.zero_grad();
    f(model)?;
    let mut analytic: Vec<(String, DMatrix<f64>)> = Vec::new();
    model.visit(&mut |name, p| analytic.push((name.to_string(), p.grad.clone())));
    let mut report = Report::new();
    for (pi, (name, grad)) in analytic.iter().enumerate() {
        for k in 0..grad.len() {
            let nudge = |model: &mut M, delta: f64| {
                let mut i = 0;
                model.visit_mut(&mut |_, p| {
                    if i == pi {
                        p.value.as_mut_slice()[k] += delta;
                    }
                    i += 1;
                });
            };
            nudge(model, EPS);
            let plus = f(model)?;
            nudge(model, -2.0 * EPS);
            let minus = f(model)?;
            nudge(model, EPS);
            report.add(name, k, grad.as_slice()[k], (plus - minus) / (2.0 * EPS));
        }
    }
    model.zero_grad();
    Ok(report)
}

/// Checks an input gradient: `analytic` must be `∂f/∂x` at `x`, where `f(x)` is the loss.
pub fn check_input(
    x: &DMatrix<f64>,
    analytic: &DMatrix<f64>,
    mut f: impl FnMut(&DMatrix<f64>) -> Result<f64>,
) -> Result<Report> {
    let mut report = Report::new();
    let mut xp = x.clone();
    for k in 0..x.len() {
        let orig = xp.as_slice()[k];
        xp.as_mut_slice()[k] = orig + EPS;
        let plus = f(&xp)?;
        xp.as_mut_slice()[k] = orig - EPS;
        let minus = f(&xp)?;
        xp.as_mut_slice()[k] = orig;
        report.add(
            "input",
            k,
            analytic.as_slice()[k],
            (plus - minus) / (2.0 * EPS),
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catches_a_wrong_gradient() {
        let x = DMatrix::from_column_slice(2, 1, &[1.0, 2.0]);
        let right = x.map(|v| 2.0 * v);
        let wrong = x.map(|v| 2.1 * v);
        let sq = |x: &DMatrix<f64>| Ok(x.norm_squared());
        assert!(check_input(&x, &right, sq).unwrap().max_rel_error < 1e-8);
        let r = check_input(&x, &wrong, sq).unwrap();
        assert!(r.max_rel_error > 0.01);
        assert_eq!(r.checked, 2);
    }
}
