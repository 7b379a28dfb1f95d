//! Turns `cfg(loom)` on for this crate only, so the engine files it
//! includes by path (`sync.rs`, `latch.rs`, `buffer/dirty.rs`,
//! `buffer/eviction.rs`, `buffer/removal.rs`, `frame/capture.rs`) compile
//! against loom's atomics.

fn main() {
    println!("cargo:rustc-check-cfg=cfg(loom)");
    println!("cargo:rustc-cfg=loom");
    println!("cargo:rerun-if-changed=build.rs");
}
