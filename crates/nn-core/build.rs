//! Sets `cfg(host_avx512)` / `cfg(host_avx2_fma)` when the building CPU has those features, so
//! that tests needing them are marked ignored elsewhere instead of passing without checking.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(host_avx512, host_avx2_fma)");
    #[cfg(target_arch = "x86_64")]
    {
        use std::is_x86_feature_detected as has;
        if has!("avx2") && has!("fma") {
            println!("cargo::rustc-cfg=host_avx2_fma");
            if has!("avx512f") && has!("avx512vl") {
                println!("cargo::rustc-cfg=host_avx512");
            }
        }
    }
}
