//! `cargo xtask dist`: what a user installs, in `target/dist/`:
//!
//! - `stallprobe-<version>-x86_64-linux-musl/stallprobe`: one static binary
//!   (`x86_64-unknown-linux-musl`, the BPF object embedded, debug info stripped);
//! - `stallprobe-<version>-x86_64-linux-musl.tar.gz`: that binary, the systemd template unit and
//!   its sysusers file, the man pages, bash/zsh/fish completions and a short README;
//! - `stallprobe_<version>-1_amd64.deb` (cargo-deb, `[package.metadata.deb]` of probe-user):
//!   `/usr/bin/stallprobe`, the unit (its `ExecStart` pointed at `/usr/bin`), the sysusers file,
//!   the man pages, the completions; its postinst creates the unit's user and enables nothing.
//!
//! The commit goes into `stallprobe --version` (`STALLPROBE_GIT_COMMIT`, `-dirty` when tracked
//! files have uncommitted changes). The man pages and completions come from the binary itself
//! (`stallprobe manpages DIR`, `stallprobe completions SHELL`, generated from its clap
//! definition), so they always match it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{setup, util};

/// Where the .deb's staged files are; `[package.metadata.deb]` in probe-user/Cargo.toml names
/// them relative to probe-user/.
const DEB_STAGE: &str = "target/dist/deb";

/// The service user, when packaging/systemd has no sysusers file of its own (it is being
/// merged): the same line, sysusers.d(5).
const DEFAULT_SYSUSERS: &str = "# The system user stallprobe@.service runs as (sysusers.d(5)).\n\
u stallprobe - \"stallprobe thread-stall profiler\" /var/lib/stallprobe /usr/sbin/nologin\n";

/// What `cargo xtask dist` made: `dir` (target/dist) holds the binary's directory, the
/// tarball and the .deb.
pub struct Dist {
    pub dir: PathBuf,
}

fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// `git rev-parse --short=12 HEAD`, with `-dirty` for uncommitted changes to tracked files.
fn commit() -> String {
    let root = util::root();
    let head = util::output(
        Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(&root),
    )
    .map(|s| s.trim().to_string())
    .unwrap_or_else(|_| "unknown".into());
    let dirty = util::output(
        Command::new("git")
            .args(["status", "--porcelain", "--untracked-files=no"])
            .current_dir(&root),
    )
    .is_ok_and(|s| !s.trim().is_empty());
    if dirty { format!("{head}-dirty") } else { head }
}

pub fn run() -> Result<Dist> {
    setup::ensure()?;
    let root = util::root();
    let commit = commit();
    util::step(&format!(
        "building the static binary ({}, commit {commit})",
        setup::MUSL_TARGET
    ));
    let mut build = util::cargo_cmd(&[
        "build",
        "--release",
        "-p",
        "probe-user",
        "--bin",
        "stallprobe",
        "--target",
        setup::MUSL_TARGET,
    ]);
    build.env("STALLPROBE_GIT_COMMIT", &commit);
    util::run_quiet_nested(&mut build)?;
    let built = root.join(format!("target/{}/release/stallprobe", setup::MUSL_TARGET));
    check_static(&built)?;

    let dist = root.join("target/dist");
    let name = format!("stallprobe-{}-x86_64-linux-musl", version());
    let stage = dist.join(&name);
    fresh_dir(&stage)?;
    let binary = stage.join("stallprobe");
    util::run(
        Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&binary)
            .arg(&built),
    )?;
    let version_line = util::output(Command::new(&binary).arg("--version"))?;
    if !version_line.contains(&commit) {
        bail!(
            "{} --version does not name commit {commit}:\n{version_line}",
            binary.display()
        );
    }

    util::step("man pages and completions (from the binary's clap definition)");
    let man = stage.join("man");
    util::run(
        Command::new(&binary)
            .arg("manpages")
            .arg(&man)
            .stdout(std::process::Stdio::null()),
    )?;
    let comp = stage.join("completions");
    std::fs::create_dir_all(&comp)?;
    for (shell, file) in [
        ("bash", "stallprobe.bash"),
        ("zsh", "_stallprobe"),
        ("fish", "stallprobe.fish"),
    ] {
        let script = util::output(Command::new(&binary).args(["completions", shell]))?;
        std::fs::write(comp.join(file), script)?;
    }
    let systemd = root.join("packaging/systemd");
    let unit = std::fs::read_to_string(systemd.join("stallprobe@.service"))?;
    std::fs::write(stage.join("stallprobe@.service"), &unit)?;
    let sysusers = std::fs::read_to_string(systemd.join("stallprobe.sysusers"))
        .unwrap_or_else(|_| DEFAULT_SYSUSERS.to_string());
    std::fs::write(stage.join("stallprobe.sysusers"), &sysusers)?;
    // The unit's optional drop-ins (README: "Next to a service"), when there are any.
    if let Ok(dropins) = std::fs::read_dir(systemd.join("dropins")) {
        std::fs::create_dir_all(stage.join("dropins"))?;
        for d in dropins {
            let d = d?.path();
            std::fs::copy(&d, stage.join("dropins").join(d.file_name().unwrap()))?;
        }
    }
    std::fs::write(stage.join("README"), tarball_readme(&version_line))?;

    util::step("tarball");
    let tarball = dist.join(format!("{name}.tar.gz"));
    util::run(
        Command::new("tar")
            .arg("-C")
            .arg(&dist)
            .args([
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "--sort=name",
                "-czf",
            ])
            .arg(&tarball)
            .arg(&name),
    )?;

    util::step(&format!(
        "the .deb (cargo-deb {})",
        setup::CARGO_DEB_VERSION
    ));
    let deb_stage = root.join(DEB_STAGE);
    fresh_dir(&deb_stage)?;
    // Installed under /usr/bin, not /usr/local/bin (which belongs to the administrator).
    let deb_unit = unit.replace("/usr/local/bin/stallprobe", "/usr/bin/stallprobe");
    if deb_unit == unit {
        bail!(
            "packaging/systemd/stallprobe@.service: no ExecStart=/usr/local/bin/stallprobe to point at /usr/bin"
        );
    }
    std::fs::write(deb_stage.join("stallprobe@.service"), deb_unit)?;
    std::fs::write(deb_stage.join("stallprobe.sysusers"), &sysusers)?;
    for page in std::fs::read_dir(&man)? {
        let page = page?.path();
        let gz = deb_stage.join(format!(
            "{}.gz",
            page.file_name().unwrap().to_string_lossy()
        ));
        let out = util::output_bytes(Command::new("gzip").args(["-9n", "-c"]).arg(&page))?;
        std::fs::write(gz, out)?;
    }
    for f in ["stallprobe.bash", "_stallprobe", "stallprobe.fish"] {
        std::fs::copy(comp.join(f), deb_stage.join(f))?;
    }
    let debs = dist.join("deb-out");
    fresh_dir(&debs)?;
    let mut deb = util::cargo_cmd(&[
        "deb",
        "-p",
        "probe-user",
        "--no-build",
        "--target",
        setup::MUSL_TARGET,
        // Debug info is not shipped (as in the tarball).
        "--strip",
        "--no-separate-debug-symbols",
        "--no-dbgsym",
        "--deb-version",
        &format!("{}-1", version()),
        "--output",
    ]);
    deb.arg(&debs);
    util::run(&mut deb)?;
    let made = std::fs::read_dir(&debs)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("cargo deb wrote no .deb")?;
    let deb = dist.join(made.file_name().unwrap());
    std::fs::rename(&made, &deb)?;
    let _ = std::fs::remove_dir(&debs);

    println!("  {}", binary.display());
    println!("  {}", tarball.display());
    println!("  {}", deb.display());
    Ok(Dist { dir: dist })
}

fn fresh_dir(p: &Path) -> Result<()> {
    if p.exists() {
        std::fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))?;
    }
    std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))
}

/// The binary is static: no program interpreter, no shared library it needs.
fn check_static(bin: &Path) -> Result<()> {
    let data = std::fs::read(bin).with_context(|| format!("reading {}", bin.display()))?;
    let deps =
        dynamic_deps(&data).with_context(|| format!("{}: not an ELF64 file", bin.display()))?;
    if deps.interp || deps.needed > 0 {
        bail!(
            "{} is not static: program interpreter {}, {} DT_NEEDED entries",
            bin.display(),
            deps.interp,
            deps.needed
        );
    }
    Ok(())
}

/// What makes an ELF file dynamically linked.
#[derive(Debug, PartialEq, Eq)]
pub struct DynamicDeps {
    /// A `PT_INTERP` program header (the dynamic loader).
    pub interp: bool,
    /// `DT_NEEDED` entries in the `PT_DYNAMIC` segment (a static-pie has the segment, for its
    /// own relocations, but needs nothing).
    pub needed: usize,
}

/// Read from the program headers of a little-endian ELF64 file (enough for x86_64: a dozen
/// lines instead of an ELF crate in xtask).
pub fn dynamic_deps(data: &[u8]) -> Option<DynamicDeps> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(data.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(data.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(data.get(o..o + 8)?.try_into().ok()?));
    if data.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let phoff = u64_at(0x20)? as usize;
    let phentsize = u16_at(0x36)? as usize;
    let phnum = u16_at(0x38)? as usize;
    let mut deps = DynamicDeps {
        interp: false,
        needed: 0,
    };
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        match u32_at(ph)? {
            3 => deps.interp = true, // PT_INTERP
            2 => {
                // PT_DYNAMIC: (d_tag, d_val) pairs up to DT_NULL; DT_NEEDED is 1.
                let off = u64_at(ph + 8)? as usize;
                let size = u64_at(ph + 32)? as usize;
                for e in (off..off.checked_add(size)?).step_by(16) {
                    match u64_at(e)? {
                        0 => break,
                        1 => deps.needed += 1,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(deps)
}

fn tarball_readme(version_line: &str) -> String {
    let first = version_line.lines().next().unwrap_or("").trim();
    format!(
        "stallprobe {first}
An eBPF profiler that says which threads keep a Linux process from shutting down, and why.

One static binary (x86_64, Linux 5.15 or newer with BTF; no libraries, no toolchain):

  sudo install -m 0755 stallprobe /usr/local/bin/
  sudo stallprobe run -- ./my-service          # start a command, stop it, report
  sudo stallprobe --pid 1234                    # attach to a running process; Ctrl-C reports

Also in this directory:
  stallprobe@.service   systemd sidecar for a service (runs as the user `stallprobe`):
                          sudo install -m 0644 stallprobe@.service /etc/systemd/system/
                          sudo install -m 0644 stallprobe.sysusers /usr/lib/sysusers.d/stallprobe.conf
                          sudo systemd-sysusers && sudo systemctl daemon-reload
                          sudo systemctl enable --now stallprobe@nginx.service
  dropins/              optional drop-ins for the unit (metrics from another host, stricter)
  man/                  man pages:   sudo install -m 0644 man/*.1 /usr/local/share/man/man1/
  completions/          bash, zsh and fish completions

The Debian/Ubuntu package (stallprobe_*.deb, same release) installs all of this and enables
nothing. Documentation: https://github.com/stallprobe/stallprobe
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ELF64 header with the given program headers; a PT_DYNAMIC gets `dyn_tags`.
    fn elf(phdrs: &[u32], dyn_tags: &[u64]) -> Vec<u8> {
        let mut d = vec![0u8; 64];
        d[..6].copy_from_slice(b"\x7fELF\x02\x01");
        d[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        d[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        d[0x38..0x3a].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        let dyn_off = 64 + 56 * phdrs.len();
        for &t in phdrs {
            let mut ph = vec![0u8; 56];
            ph[..4].copy_from_slice(&t.to_le_bytes());
            ph[8..16].copy_from_slice(&(dyn_off as u64).to_le_bytes());
            ph[32..40].copy_from_slice(&((dyn_tags.len() * 16) as u64).to_le_bytes());
            d.extend(ph);
        }
        for &tag in dyn_tags {
            d.extend(tag.to_le_bytes());
            d.extend(0u64.to_le_bytes());
        }
        d
    }

    #[test]
    fn static_pie_and_dynamic_binaries() {
        // PT_LOAD and a PT_DYNAMIC with only relocation tags (DT_RELA = 7): a static-pie.
        assert_eq!(
            dynamic_deps(&elf(&[1, 2], &[7, 0])),
            Some(DynamicDeps {
                interp: false,
                needed: 0
            })
        );
        // A PT_INTERP and two DT_NEEDED before DT_NULL (the one after it does not count).
        assert_eq!(
            dynamic_deps(&elf(&[3, 1, 2], &[1, 7, 1, 0, 1])),
            Some(DynamicDeps {
                interp: true,
                needed: 2
            })
        );
        assert_eq!(dynamic_deps(b"#!/bin/sh\n"), None);
        // Truncated: no panic.
        assert_eq!(dynamic_deps(&elf(&[2], &[1])[..100]), None);
    }

    #[test]
    fn the_deb_unit_is_the_packaged_one_pointed_at_usr_bin() {
        let unit =
            std::fs::read_to_string(util::root().join("packaging/systemd/stallprobe@.service"))
                .unwrap();
        assert!(
            unit.contains("ExecStart=/usr/local/bin/stallprobe "),
            "{unit}"
        );
    }
}
