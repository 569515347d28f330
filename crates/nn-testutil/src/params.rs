//! A module's parameters gathered through [`Module::visit`], in its visiting order: copies of
//! the values or gradients (to compare a model before and after, or two models), the `f32`
//! values' bit patterns (to compare runs bit for bit), and whether every gradient is finite.

use crate::matrices::all_finite;
use nalgebra::DMatrix;
use nn_core::{Float, Module, Param};

/// Copies of every parameter's value.
pub fn param_values<T: Float>(m: &impl Module<T>) -> Vec<DMatrix<T>> {
    let mut v = Vec::new();
    m.visit(&mut |_, p: &Param<T>| v.push(p.value.clone()));
    v
}

/// Copies of every parameter's gradient.
pub fn param_grads<T: Float>(m: &impl Module<T>) -> Vec<DMatrix<T>> {
    let mut v = Vec::new();
    m.visit(&mut |_, p: &Param<T>| v.push(p.grad.clone()));
    v
}

/// The bit patterns of every `f32` parameter value, one flat list.
pub fn param_bits(m: &impl Module<f32>) -> Vec<u32> {
    let mut v = Vec::new();
    m.visit(&mut |_, p: &Param<f32>| v.extend(p.value.iter().map(|x| x.to_bits())));
    v
}

/// Whether every gradient value is finite.
pub fn grads_finite<T: Float>(m: &impl Module<T>) -> bool {
    let mut ok = true;
    m.visit(&mut |_, p: &Param<T>| ok &= all_finite(&p.grad));
    ok
}
