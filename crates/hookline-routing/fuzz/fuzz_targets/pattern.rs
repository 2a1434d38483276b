//! Fuzzes the pattern parser and the index against the reference matcher.
//! Input: `pattern\nevent type`. Run with `cargo fuzz run pattern` from
//! `crates/hookline-routing` (nightly and cargo-fuzz required).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hookline_routing::fuzzing::pattern_input(data);
});
