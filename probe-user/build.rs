//! Builds the kernel programs (probe-ebpf's binary, for `bpfel-unknown-none`) and puts the object
//! in OUT_DIR, where `src/bpf/mod.rs` embeds it.

use std::process::Command;

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let skip = std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v == "true");
    if !skip {
        // Fail with the fix, not with a linker error several screens long.
        let linker_ok = Command::new("bpf-linker")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !linker_ok {
            anyhow::bail!(
                "bpf-linker is not on PATH: the kernel programs cannot be built.\n\
                 Run `cargo xtask setup` (it installs bpf-linker and the nightly rust-src component)."
            );
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../probe-ebpf");
    let root = root.canonicalize()?;
    let root = root
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "probe-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )?;
    if skip {
        // Let `include_bytes!` find something: an empty object makes `load` fail clearly.
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("stallprobe-ebpf");
        if !out.exists() {
            std::fs::write(out, [])?;
        }
    }
    Ok(())
}
