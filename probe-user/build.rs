//! Builds the kernel programs (probe-ebpf's binary, for `bpfel-unknown-none`) and puts the object
//! in OUT_DIR, where `src/bpf/mod.rs` embeds it.

use std::process::Command;

fn main() -> anyhow::Result<()> {
    git_commit();
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

/// `STALLPROBE_GIT_COMMIT` for `stallprobe --version`: as given (`cargo xtask dist` sets it, with
/// `-dirty` for a tree with uncommitted changes), else `git rev-parse --short=12 HEAD`, else
/// `unknown` (a source tarball). Rebuilt when HEAD moves, not at every edit.
fn git_commit() {
    println!("cargo:rerun-if-env-changed=STALLPROBE_GIT_COMMIT");
    let git = |args: &[&str]| -> Option<String> {
        let o = Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let commit = std::env::var("STALLPROBE_GIT_COMMIT")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=STALLPROBE_GIT_COMMIT={commit}");
    println!(
        "cargo:rustc-env=STALLPROBE_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
    // HEAD (a worktree's own), the branch it points at, and packed refs.
    let mut watch = Vec::new();
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        watch.push(std::path::Path::new(&dir).join("HEAD"));
    }
    if let (Some(common), Some(head_ref)) = (
        git(&["rev-parse", "--path-format=absolute", "--git-common-dir"]),
        git(&["symbolic-ref", "-q", "HEAD"]),
    ) {
        watch.push(std::path::Path::new(&common).join(&head_ref));
        watch.push(std::path::Path::new(&common).join("packed-refs"));
    }
    for p in watch.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}
