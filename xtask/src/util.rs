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

/// Run a `cargo` command with the nested kernel-program build's progress lines left out:
/// aya-build relays every `Compiling …` line of that build as a `warning: probe-user@…:` line.
/// Its real warnings and errors still show, and a failed build prints the build script's whole
/// output.
pub fn run_quiet_nested(cmd: &mut Command) -> Result<()> {
    use std::io::{BufRead, IsTerminal};
    if std::io::stderr().is_terminal() {
        cmd.env("CARGO_TERM_COLOR", "always");
    }
    let mut child = cmd
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    let stderr = child.stderr.take().expect("piped stderr");
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    // A thread copies the output, so that a process that outlives cargo while holding its
    // stderr (a leaked test workload) cannot keep this waiting for an end of file.
    std::thread::spawn(move || {
        let mut stderr = std::io::BufReader::new(stderr);
        let mut buf = Vec::new();
        while stderr.read_until(b'\n', &mut buf).unwrap_or(0) > 0 {
            let line = String::from_utf8_lossy(&buf);
            if !is_nested_progress(line.trim_end_matches('\n')) {
                eprint!("{line}");
            }
            buf.clear();
        }
        let _ = done_tx.send(());
    });
    let st = child.wait()?;
    if done_rx
        .recv_timeout(std::time::Duration::from_secs(5))
        .is_err()
    {
        eprintln!(
            "warning: a process started by `{}` outlived it and still holds its output open \
             (a leaked child: see `ps -ef`)",
            cmd.get_args()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(())
}

/// `warning: probe-user@0.1.0:    Compiling core v0.0.0 (…)` and the like, colour codes aside.
fn is_nested_progress(line: &str) -> bool {
    let plain: String = strip_ansi(line);
    let Some(rest) = plain.strip_prefix("warning: probe-user@") else {
        return false;
    };
    let Some((_, msg)) = rest.split_once(": ") else {
        return false;
    };
    let msg = msg.trim_start();
    [
        "Compiling ",
        "Finished ",
        "Fresh ",
        "Checking ",
        "Updating ",
        "Locking ",
        "Downloaded ",
        "Downloading ",
    ]
    .iter()
    .any(|p| msg.starts_with(p))
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The pids of all processes on the host (that /proc lists to us).
pub fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
}

/// Processes running a test workload of this checkout (binaries under `target/workloads`, or
/// interpreters running something from `tests/workloads`): pid and command line.
pub fn workload_processes() -> Vec<(u32, String)> {
    let root = root();
    let marks = [
        root.join("target/workloads").to_string_lossy().into_owned(),
        root.join("tests/workloads").to_string_lossy().into_owned(),
    ];
    let me = std::process::id();
    let mut out = Vec::new();
    for pid in pids().filter(|&p| p != me) {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .replace('\0', " ")
                    .trim()
                    .to_string()
            })
            .unwrap_or_default();
        if marks
            .iter()
            .any(|m| exe.starts_with(m.as_str()) || cmdline.contains(m.as_str()))
        {
            out.push((pid, cmdline));
        }
    }
    out
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
    output_bytes(cmd).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Run and capture stdout as bytes (stderr shown).
pub fn output_bytes(cmd: &mut Command) -> Result<Vec<u8>> {
    let o = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !o.status.success() {
        bail!("{cmd:?} failed ({})", o.status);
    }
    Ok(o.stdout)
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

#[cfg(test)]
mod tests {
    #[test]
    fn nested_progress_lines_are_recognised() {
        use super::is_nested_progress as p;
        assert!(p(
            "warning: probe-user@0.1.0:    Compiling core v0.0.0 (/x)"
        ));
        assert!(p(
            "warning: probe-user@0.1.0:     Finished `release` profile"
        ));
        assert!(p(
            "\x1b[1m\x1b[33mwarning\x1b[0m: probe-user@0.1.0:    Compiling aya-ebpf v0.2.1"
        ));
        assert!(!p(
            "warning: probe-user@0.1.0: warning: unused variable: `x`"
        ));
        assert!(!p("warning: unused import"));
        assert!(!p("   Compiling probe-user v0.1.0"));
    }
}
