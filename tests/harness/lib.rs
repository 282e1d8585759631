//! Harness for the integration tests: build the workloads, start them, run the real
//! `stallprobe` binary against them and read what it reports.
//!
//! These tests load real BPF programs, so they run as root (CI does). They never mock the
//! kernel.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

pub use serde_json::Value;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Where built workloads go.
pub fn workload_dir() -> PathBuf {
    let d = repo_root().join("target").join("workloads");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Fail (not skip) when not root: these tests are the proof that the probes work.
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!(
            "integration tests load BPF programs and must run as root: use `sudo cargo xtask test`"
        );
    }
}

/// The stallprobe binary under test: `$STALLPROBE_BIN` (set by `cargo xtask test`), else built
/// here once with cargo.
pub fn stallprobe_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("STALLPROBE_BIN") {
            return PathBuf::from(p);
        }
        let st = Command::new(env!("CARGO"))
            .args([
                "build",
                "--release",
                "-p",
                "probe-user",
                "--bin",
                "stallprobe",
            ])
            .current_dir(repo_root())
            .status()
            .expect("run cargo build");
        assert!(st.success(), "building stallprobe failed");
        repo_root().join("target/release/stallprobe")
    })
    .clone()
}

fn build_lock() -> &'static Mutex<()> {
    static L: OnceLock<Mutex<()>> = OnceLock::new();
    L.get_or_init(|| Mutex::new(()))
}

/// Build `tests/workloads/c/<name>.c` with `gcc -O2 -g` (no frame pointers, like distro code).
pub fn build_c(name: &str) -> PathBuf {
    let _g = build_lock().lock().unwrap_or_else(|e| e.into_inner());
    let src = repo_root()
        .join("tests/workloads/c")
        .join(format!("{name}.c"));
    let out = workload_dir().join("c");
    std::fs::create_dir_all(&out).unwrap();
    let bin = out.join(name);
    if is_fresh(&bin, &[&src]) {
        return bin;
    }
    let tmp = out.join(format!(".{name}.{}", std::process::id()));
    let o = Command::new("gcc")
        .args(["-O2", "-g", "-pthread", "-Wall", "-o"])
        .arg(&tmp)
        .arg(&src)
        .output()
        .expect("run gcc");
    assert!(
        o.status.success(),
        "gcc {name}.c failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::rename(&tmp, &bin).unwrap();
    bin
}

/// Build the Rust workloads crate (release, with debug info) and return the path of `bin`.
pub fn build_rust(bin: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let _g = build_lock().lock().unwrap_or_else(|e| e.into_inner());
        let st = Command::new(env!("CARGO"))
            .args(["build", "--release", "-p", "workloads-rust", "--bins"])
            .current_dir(repo_root())
            .status()
            .expect("run cargo build");
        assert!(st.success(), "building the Rust workloads failed");
    });
    repo_root().join("target/release").join(bin)
}

/// Build `tests/workloads/go/<name>.go` with Debian's go.
pub fn build_go(name: &str) -> PathBuf {
    let _g = build_lock().lock().unwrap_or_else(|e| e.into_inner());
    let src = repo_root()
        .join("tests/workloads/go")
        .join(format!("{name}.go"));
    let out = workload_dir().join("go");
    std::fs::create_dir_all(&out).unwrap();
    let bin = out.join(name);
    if is_fresh(&bin, &[&src]) {
        return bin;
    }
    let cache = workload_dir().join("go-cache");
    let o = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(&src)
        .env("GOCACHE", &cache)
        .env("GOPATH", workload_dir().join("gopath"))
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .output()
        .expect("run go (installed by `cargo xtask setup`)");
    assert!(
        o.status.success(),
        "go build {name}.go failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    bin
}

/// A Python workload script.
pub fn python_script(name: &str) -> PathBuf {
    repo_root()
        .join("tests/workloads/python")
        .join(format!("{name}.py"))
}

fn is_fresh(bin: &Path, srcs: &[&Path]) -> bool {
    let Ok(b) = std::fs::metadata(bin).and_then(|m| m.modified()) else {
        return false;
    };
    srcs.iter().all(|s| {
        std::fs::metadata(s)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t <= b)
    })
}

/// A running workload. Killed (SIGKILL) and reaped on drop.
pub struct Workload {
    pub child: Child,
    /// `key=value` lines the workload printed before `ready`.
    pub facts: HashMap<String, String>,
}

impl Workload {
    /// Start `cmd` and wait until it prints `ready` (at most `timeout`).
    pub fn start(cmd: &mut Command, timeout: Duration) -> Workload {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start workload");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut facts = HashMap::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.trim() == "ready" {
                    let _ = tx.send(Some(facts.clone()));
                    // keep draining so the workload never blocks on a full stdout pipe
                    continue;
                }
                if let Some((k, v)) = line.split_once('=') {
                    facts.insert(k.trim().to_string(), v.trim().to_string());
                }
            }
            let _ = tx.send(None);
        });
        match rx.recv_timeout(timeout) {
            Ok(Some(facts)) => Workload { child, facts },
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("workload did not print `ready` within {timeout:?} ({other:?})");
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig);
    }

    pub fn fact(&self, key: &str) -> &str {
        self.facts
            .get(key)
            .unwrap_or_else(|| panic!("workload did not print {key}=..."))
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a stallprobe run produced.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stallprobe did not print a JSON report ({e}); exit {}\nstdout:\n{}\nstderr:\n{}",
                self.code, self.stdout, self.stderr
            )
        })
    }
}

/// Run stallprobe with `args`, with a hard timeout.
pub fn stallprobe(args: &[&str], timeout: Duration) -> Run {
    let mut cmd = Command::new(stallprobe_bin());
    cmd.args(args);
    run_with_timeout(&mut cmd, timeout)
}

pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Run {
    let start = Instant::now();
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start stallprobe");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel::<Output>();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output().expect("wait for stallprobe"));
    });
    let out = match rx.recv_timeout(timeout) {
        Ok(o) => o,
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let o = rx.recv().unwrap();
            panic!(
                "stallprobe did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
    };
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

/// The report's thread named `name` (panics with the thread list when absent).
pub fn thread<'a>(report: &'a Value, name: &str) -> &'a Value {
    threads(report)
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| {
            let names: Vec<String> = threads(report)
                .iter()
                .map(|t| format!("{}:{}", t["tid"], t["name"]))
                .collect();
            panic!("no thread named {name} in the report; threads: {names:?}")
        })
}

pub fn threads(report: &Value) -> &Vec<Value> {
    report["threads"].as_array().expect("threads array")
}

/// Names of the flagged threads, sorted.
pub fn flagged_names(report: &Value) -> Vec<String> {
    let mut v: Vec<String> = threads(report)
        .iter()
        .filter(|t| t["flagged"] == true)
        .map(|t| t["name"].as_str().unwrap_or("").to_string())
        .collect();
    v.sort();
    v
}

/// Function names of a thread's user stack.
pub fn stack_functions(t: &Value) -> Vec<String> {
    t["stack"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f["function"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The frame of `function` in a thread's stack, if present.
pub fn frame<'a>(t: &'a Value, function: &str) -> Option<&'a Value> {
    t["stack"]
        .as_array()?
        .iter()
        .find(|f| f["function"].as_str() == Some(function))
}

/// Assert that the thread's stack names `function` with a file ending in `file` and a line.
#[track_caller]
pub fn assert_frame(t: &Value, function: &str, file: &str) {
    let f = frame(t, function).unwrap_or_else(|| {
        panic!(
            "thread {} has no frame {function}; stack: {:?}",
            t["name"],
            stack_functions(t)
        )
    });
    let got = f["file"].as_str().unwrap_or("");
    assert!(
        got.ends_with(file),
        "frame {function}: file {got:?}, expected …{file}"
    );
    assert!(
        f["line"].as_u64().unwrap_or(0) > 0,
        "frame {function} has no line: {f}"
    );
}
