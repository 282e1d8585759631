//! Installing what the kernel matrix needs: Debian's kernel packages, unpacked in a cache, and
//! virtme-ng in a venv. Used by `cargo xtask setup` (setup.rs).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result};

use super::{KERNELS, Kernel, VNG_VERSION, kernels_dir, vng_dir};
use crate::util;

/// The kernel's number in a package name (`57` of `linux-image-6.1.0-57-amd64-unsigned`).
pub(super) fn package_number(k: &Kernel, pkg: &str) -> Option<u32> {
    pkg.strip_prefix(k.prefix)?
        .strip_suffix(k.suffix)?
        .parse()
        .ok()
}

/// The newest package of the series that apt knows of (None: apt's lists have none).
fn newest_available(k: &Kernel) -> Option<String> {
    let pattern = format!(
        "^{}[0-9]+{}$",
        regex_escape(k.prefix),
        regex_escape(k.suffix)
    );
    let out = Command::new("apt-cache")
        .args(["search", "--names-only", &pattern])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|p| package_number(k, p).map(|n| (n, p.to_string())))
        .max()
        .map(|(_, p)| p)
}

pub(super) fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let esc = matches!(c, '.' | '+' | '*' | '?' | '(' | ')' | '[' | ']' | '^' | '$');
            esc.then_some('\\').into_iter().chain(std::iter::once(c))
        })
        .collect()
}

/// A kernel unpacked in the cache.
pub struct Unpacked {
    pub package: String,
    pub vmlinuz: PathBuf,
    /// `uname -r` in the guest, e.g. `6.1.0-57-amd64`.
    pub release: String,
}

/// The cache directory of a package: `$CARGO_HOME/stallprobe-kernels/<package>/`.
fn package_dir(pkg: &str) -> PathBuf {
    kernels_dir().join(pkg)
}

fn unpacked_in(dir: &Path, pkg: &str) -> Option<Unpacked> {
    if !dir.join(".complete").is_file() {
        return None;
    }
    let boot = dir.join("boot");
    let vmlinuz = std::fs::read_dir(&boot)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })?;
    let release = vmlinuz
        .file_name()?
        .to_string_lossy()
        .trim_start_matches("vmlinuz-")
        .to_string();
    Some(Unpacked {
        package: pkg.to_string(),
        vmlinuz,
        release,
    })
}

/// The newest complete unpacked kernel of the series in the cache.
pub fn cached(k: &Kernel) -> Option<Unpacked> {
    let mut best: Option<(u32, Unpacked)> = None;
    for e in std::fs::read_dir(kernels_dir()).ok()?.flatten() {
        let pkg = e.file_name().to_string_lossy().into_owned();
        let Some(n) = package_number(k, &pkg) else {
            continue;
        };
        if best.as_ref().is_some_and(|(b, _)| *b >= n) {
            continue;
        }
        if let Some(u) = unpacked_in(&e.path(), &pkg) {
            best = Some((n, u));
        }
    }
    best.map(|(_, u)| u)
}

/// What is missing for the kernel matrix, as (what, package to fetch) for the kernels.
pub fn missing_kernels() -> Vec<(&'static Kernel, Option<String>)> {
    let mut out = Vec::new();
    for k in KERNELS {
        let newest = newest_available(k);
        let have = cached(k);
        match (&newest, &have) {
            (Some(n), Some(h)) if *n == h.package => {}
            // apt's lists do not have the series (not updated yet): what is cached will do.
            (None, Some(_)) => {}
            _ => out.push((k, newest)),
        }
    }
    out
}

/// Fetch and unpack `pkg`, or the newest package of the series after an `apt-get update` (when
/// apt's lists have none, or `pkg` cannot be downloaded any more).
pub fn fetch_kernel(k: &Kernel, pkg: Option<&str>) -> Result<()> {
    if let Some(p) = pkg {
        match fetch_package(k, p) {
            Ok(()) => return Ok(()),
            // apt's lists may be older than the mirror (the package replaced by a newer one).
            Err(e) => println!("  {e:#}: updating apt's lists and trying again"),
        }
    }
    util::run(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let pkg = newest_available(k).with_context(|| {
        format!(
            "apt knows no package {}N{} (are Debian bookworm and its security updates in the \
             apt sources?)",
            k.prefix, k.suffix
        )
    })?;
    fetch_package(k, &pkg)
}

fn fetch_package(k: &Kernel, pkg: &str) -> Result<()> {
    let pkg = pkg.to_string();
    let dir = package_dir(&pkg);
    let dl = kernels_dir().join(format!(".download-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dl);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dl)?;
    println!("  apt-get download {pkg}");
    // (As root, not apt's `_apt` user: it cannot reach $CARGO_HOME.)
    util::run(
        Command::new("apt-get")
            .args(["-o", "APT::Sandbox::User=root", "download", &pkg])
            .current_dir(&dl),
    )?;
    let deb = std::fs::read_dir(&dl)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download left no .deb")?;
    println!("  dpkg-deb -x {} {}", deb.display(), dir.display());
    util::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir))?;
    std::fs::remove_dir_all(&dl)?;
    // The package ships no modules.dep (its postinst makes it): make it once here, where
    // virtme-ng looks for the modules (9p is a module), instead of at every boot.
    let modules = dir.join("lib/modules");
    for e in std::fs::read_dir(&modules)
        .with_context(|| format!("{} has no lib/modules", dir.display()))?
        .flatten()
    {
        let release = e.file_name().to_string_lossy().into_owned();
        util::run(
            Command::new("depmod")
                .args(["-a", "-b"])
                .arg(&dir)
                .arg(&release),
        )?;
    }
    std::fs::write(dir.join(".complete"), format!("{pkg}\n"))?;
    let u = unpacked_in(&dir, &pkg).context("no boot/vmlinuz-* in the package")?;
    println!("  {} ({})", u.vmlinuz.display(), u.release);
    // Older packages of the series are no longer used.
    for e in std::fs::read_dir(kernels_dir())?.flatten() {
        let other = e.file_name().to_string_lossy().into_owned();
        if other != pkg && package_number(k, &other).is_some() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    Ok(())
}

pub(super) fn vng_bin() -> PathBuf {
    vng_dir().join("bin/vng")
}

pub fn vng_ok() -> bool {
    Command::new(vng_bin())
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .last()
                    .is_some_and(|v| v == VNG_VERSION)
        })
}

/// A venv (Debian's python3) with virtme-ng from PyPI.
pub fn install_vng() -> Result<()> {
    let dir = vng_dir();
    let _ = std::fs::remove_dir_all(&dir);
    util::run(
        Command::new("/usr/bin/python3")
            .args(["-m", "venv"])
            .arg(&dir),
    )?;
    util::run(
        Command::new(dir.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("virtme-ng=={VNG_VERSION}")),
    )
}

/// PATH for vng: it runs `virtme-run` and friends from its venv.
pub(super) fn vng_path() -> std::ffi::OsString {
    let mut paths = vec![vng_dir().join("bin")];
    if let Some(p) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(paths).unwrap_or_default()
}
