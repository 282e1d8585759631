//! Small helpers: paths, running commands with their output shown, root checks.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn step(what: &str) {
    println!("\n==> {what}");
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn require_root(why: &str) -> Result<()> {
    if !is_root() {
        bail!("{why}: run as root (sudo -E cargo xtask ...)");
    }
    Ok(())
}

/// `cargo` with the user's cargo bin dir on PATH (where bpf-linker is installed).
pub fn cargo_cmd(args: &[&str]) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut c = Command::new(cargo);
    c.args(args)
        .current_dir(root())
        .env("PATH", path_with_cargo_bin());
    c
}

pub fn cargo(args: &[&str]) -> Result<()> {
    run(&mut cargo_cmd(args))
}

pub fn run(cmd: &mut Command) -> Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(())
}

/// Run and capture stdout (stderr shown).
pub fn output(cmd: &mut Command) -> Result<String> {
    let o = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !o.status.success() {
        bail!("{cmd:?} failed ({})", o.status);
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

pub fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo")
        })
}

pub fn path_with_cargo_bin() -> std::ffi::OsString {
    let bin = cargo_home().join("bin");
    let mut paths = vec![bin];
    if let Some(p) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(paths).unwrap_or_default()
}

/// Build `tests/workloads/c/<name>.c` into target/workloads/c/ with `gcc -O2 -g`.
pub fn gcc(name: &str) -> Result<PathBuf> {
    let src = root().join("tests/workloads/c").join(format!("{name}.c"));
    let out = root().join("target/workloads/c");
    std::fs::create_dir_all(&out)?;
    let bin = out.join(name);
    run(Command::new("gcc")
        .args(["-O2", "-g", "-pthread", "-Wall", "-o"])
        .arg(&bin)
        .arg(&src))?;
    Ok(bin)
}
