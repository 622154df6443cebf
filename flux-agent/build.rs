use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

/// Builds `flux-ebpf` for the BPF target (nightly + bpf-linker) and drops the object in OUT_DIR,
/// where `flux_agent::EBPF_OBJECT` includes it.
fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf_package = packages
        .into_iter()
        .find(|cargo_metadata::Package { name, .. }| name.as_str() == "flux-ebpf")
        .ok_or_else(|| anyhow!("flux-ebpf package not found"))?;
    let cargo_metadata::Package {
        name,
        manifest_path,
        ..
    } = ebpf_package;
    let ebpf_package = aya_build::Package {
        name: name.as_str(),
        root_dir: manifest_path
            .parent()
            .ok_or_else(|| anyhow!("no parent for {manifest_path}"))?
            .as_str(),
        ..Default::default()
    };
    // aya-build turns every stderr line of the inner cargo into a `cargo:warning`, and cargo
    // replays a build script's warnings at every build of the package, even when nothing was
    // rebuilt: 35 lines of "Compiling core ..." in front of every `cargo xtask run`. A quiet
    // inner cargo still prints what matters, the eBPF crate's own errors and warnings.
    // SAFETY: nothing else runs in this build script yet; no thread reads the environment.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    aya_build::build_ebpf([ebpf_package], Toolchain::default())
}
