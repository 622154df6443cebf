#![no_std]
// Present so that `cargo clippy --all-targets` has a library target; the programs live in main.rs.
