use which::which;

/// Building this crate has an undeclared dependency on `bpf-linker`; rebuild when it changes
/// (the same approach as aya-template).
fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => println!("cargo:warning=bpf-linker not found in PATH: run `cargo xtask setup`"),
    }
}
