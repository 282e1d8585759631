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

/// The Go toolchains the goroutine tests build with (`cargo xtask setup` installs them in
/// `$CARGO_HOME/stallprobe-go/<version>/bin/go`): Debian's, one of 1.21–1.25, the newest.
pub const GO_VERSIONS: [&str; 3] = ["1.19", "1.23.9", "1.27.3"];

/// How a Go workload is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoBuild {
    Plain,
    /// `-ldflags="-s -w"`: no symbol table, no DWARF.
    Stripped,
    /// `-buildmode=pie`.
    Pie,
}

/// `go` of one of [`GO_VERSIONS`] (fails, not skips, when it is missing: setup installs it).
pub fn go_toolchain(version: &str) -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo")
        });
    let go = home.join("stallprobe-go").join(version).join("bin/go");
    assert!(
        go.exists(),
        "Go {version} is not installed at {}: run `cargo xtask setup`",
        go.display()
    );
    go
}

/// Build `tests/workloads/go/<name>.go` with Go `version`, as `how` says.
pub fn build_go_with(name: &str, version: &str, how: GoBuild) -> PathBuf {
    let go = go_toolchain(version);
    let _g = build_lock().lock().unwrap_or_else(|e| e.into_inner());
    let src = repo_root()
        .join("tests/workloads/go")
        .join(format!("{name}.go"));
    let out = workload_dir().join("go").join(version);
    std::fs::create_dir_all(&out).unwrap();
    let bin = out.join(format!("{name}-{how:?}").to_lowercase());
    if is_fresh(&bin, &[&src]) {
        return bin;
    }
    let mut cmd = Command::new(&go);
    cmd.arg("build");
    match how {
        GoBuild::Plain => {}
        GoBuild::Stripped => {
            cmd.arg("-ldflags=-s -w");
        }
        GoBuild::Pie => {
            cmd.arg("-buildmode=pie");
        }
    }
    let o = cmd
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .env(
            "GOCACHE",
            workload_dir().join(format!("go-cache-{version}")),
        )
        .env("GOPATH", workload_dir().join("gopath"))
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("GOTOOLCHAIN", "local")
        .output()
        .expect("run go");
    assert!(
        o.status.success(),
        "go{version} build {name}.go ({how:?}) failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    bin
}

/// The report's goroutine groups.
pub fn goroutine_groups(report: &Value) -> &Vec<Value> {
    report["goroutine_groups"]
        .as_array()
        .unwrap_or_else(|| panic!("no goroutine_groups in the report: {}", report["notes"]))
}

/// A group (or goroutine) in a few words, for assertion messages.
pub fn describe_goroutines(report: &Value) -> String {
    let mut s = format!("summary {}\nnotes {}\n", report["summary"], report["notes"]);
    for g in report["goroutine_groups"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "  x{} {} {:?} flagged={} role={} reason={} stack={:?}\n",
            g["count"],
            g["state"],
            g["wait_reason"].as_str().unwrap_or(""),
            g["flagged"],
            g["role"],
            g["reason"],
            stack_functions(g),
        ));
    }
    s
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
        let timeout = scaled(timeout);
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        // A binary written a moment ago can be "busy" while another test thread's fork still
        // holds its write fd (until that child execs): retry briefly.
        let mut tries = 0;
        let mut child = loop {
            match cmd.spawn() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => break other.expect("start workload"),
            }
        };
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
    /// The hook the harness added to the command line (`STALLPROBE_TEST_HOOK`): its report
    /// must say that this hook ran.
    pub hook: Option<String>,
}

impl Run {
    pub fn json(&self) -> Value {
        let report = serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stallprobe did not print a JSON report ({e}); exit {}\nstdout:\n{}\nstderr:\n{}",
                self.code, self.stdout, self.stderr
            )
        });
        assert_hook(&report, self);
        report
    }
}

// ---- Other kernels (`cargo xtask test --kernel`, see xtask/src/kernel.rs) ----
//
// The kernel matrix runs these same test binaries in emulated guests, where the CPU is ~14x
// slower and fentry loads. Two environment variables adapt the harness; on the host neither is
// set and nothing changes.

/// `STALLPROBE_TEST_SLOWDOWN` (default 1): every timeout the harness applies (stallprobe runs,
/// workloads getting ready, attaching) is multiplied by it.
pub fn slowdown() -> f64 {
    static S: OnceLock<f64> = OnceLock::new();
    *S.get_or_init(|| {
        std::env::var("STALLPROBE_TEST_SLOWDOWN")
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|f| f.is_finite() && *f >= 1.0)
            .unwrap_or(1.0)
    })
}

/// A timeout, scaled by [`slowdown`].
pub fn scaled(d: Duration) -> Duration {
    d.mul_f64(slowdown())
}

/// `STALLPROBE_TEST_HOOK`: the `--hook` every stallprobe the harness starts gets (unless its
/// arguments name one already), and that every report read back must name in `session.hook`.
pub fn test_hook() -> Option<String> {
    std::env::var("STALLPROBE_TEST_HOOK")
        .ok()
        .filter(|h| !h.trim().is_empty())
}

/// `args` with `--hook $STALLPROBE_TEST_HOOK` added where stallprobe takes it (after `run` or
/// `watch`, else in front of `--pid`), and the hook added. Unchanged when the variable is unset,
/// when the arguments name a hook already, or when they are not a watch (bad usage, `--help`).
pub fn with_test_hook(args: &[&str]) -> (Vec<String>, Option<String>) {
    let mut out: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let Some(hook) = test_hook() else {
        return (out, None);
    };
    let opts = args.split(|a| *a == "--").next().unwrap_or(&[]);
    if opts
        .iter()
        .any(|a| *a == "--hook" || a.starts_with("--hook="))
    {
        return (out, None);
    }
    let at = match opts.first() {
        Some(&"run") | Some(&"watch") => 1,
        _ if opts.iter().any(|a| *a == "--pid" || *a == "-p") => 0,
        _ => return (out, None),
    };
    out.splice(at..at, ["--hook".to_string(), hook.clone()]);
    (out, Some(hook))
}

/// The report says that `run.hook` (when the harness chose one) is the hook that ran.
#[track_caller]
fn assert_hook(report: &Value, run: &Run) {
    if let Some(want) = &run.hook {
        assert_eq!(
            report["session"]["hook"].as_str(),
            Some(want.as_str()),
            "the report's session.hook is not the hook asked for (--hook {want}); session: {}",
            report["session"]
        );
    }
}

/// Run stallprobe with `args` (plus the test hook, see [`with_test_hook`]), with a hard
/// timeout (scaled by [`slowdown`]).
pub fn stallprobe(args: &[&str], timeout: Duration) -> Run {
    let (args, hook) = with_test_hook(args);
    let mut cmd = Command::new(stallprobe_bin());
    cmd.args(&args);
    let mut run = run_with_timeout(&mut cmd, timeout);
    run.hook = hook;
    run
}

/// Run a command with a hard timeout (scaled by [`slowdown`]).
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Run {
    let timeout = scaled(timeout);
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
        hook: None,
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

// ---- Shutdown verdicts: a stop signal, a grace period, the report ----

/// A fresh path for a JSON report (`target/workloads/reports/<tag>-<pid>-<n>.json`). Reports are
/// left there after the test, to look at when one fails.
pub fn report_path(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let d = workload_dir().join("reports");
    std::fs::create_dir_all(&d).unwrap();
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = d.join(format!("{tag}-{}-{n}.json", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn read_report(path: &Path, run: &Run) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "stallprobe wrote no report to {} ({e}); exit {}\nstdout:\n{}\nstderr:\n{}",
            path.display(),
            run.code,
            run.stdout,
            run.stderr
        )
    });
    let report = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "the report {} is not JSON ({e}); exit {}\nstderr:\n{}",
            path.display(),
            run.code,
            run.stderr
        )
    });
    assert_hook(&report, run);
    report
}

/// `stallprobe run --stop-after <stop_after> --grace <grace> --format json -o FILE -- cmd...`:
/// start `cmd` under the probes, send it SIGTERM after `stop_after`, judge its shutdown. The
/// report goes to a file, so whatever the workload prints cannot mix with it.
pub fn run_and_stop(
    tag: &str,
    cmd: &[&str],
    stop_after: &str,
    grace: &str,
    timeout: Duration,
) -> (Run, Value) {
    let out = report_path(tag);
    let mut args = vec![
        "run",
        "--stop-after",
        stop_after,
        "--grace",
        grace,
        "--format",
        "json",
        "-o",
        out.to_str().unwrap(),
        "--",
    ];
    args.extend_from_slice(cmd);
    let run = stallprobe(&args, timeout);
    let report = read_report(&out, &run);
    (run, report)
}

/// `stallprobe --pid N --grace <grace> --format json -o FILE` on a running workload; once
/// stallprobe says it is watching, wait `delay` and send the workload SIGTERM from this process
/// (`kill -TERM N`). `--duration 45s` bounds the watch should the signal go unseen (the verdict
/// is then "observed").
pub fn attach_and_stop(
    tag: &str,
    w: &Workload,
    grace: &str,
    delay: Duration,
    timeout: Duration,
) -> (Run, Value) {
    let out = report_path(tag);
    let pid = w.pid().to_string();
    let timeout = scaled(timeout);
    let start = Instant::now();
    let (args, hook) = with_test_hook(&[
        "--pid",
        &pid,
        "--grace",
        grace,
        "--duration",
        "45s",
        "--format",
        "json",
        "-o",
        out.to_str().unwrap(),
    ]);
    let mut child = Command::new(stallprobe_bin())
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start stallprobe");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stdout), &mut s);
        s
    });
    let (watching_tx, watching_rx) = std::sync::mpsc::channel::<()>();
    let err_reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("watching pid") {
                let _ = watching_tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    // Attached (or stallprobe gave up: the channel closes); then the stop signal.
    let _ = watching_rx.recv_timeout(scaled(Duration::from_secs(30)));
    std::thread::sleep(delay);
    w.signal(nix::sys::signal::Signal::SIGTERM);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for stallprobe") {
            break st;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "stallprobe --pid did not finish within {timeout:?}\nstderr:\n{}",
                err_reader.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let run = Run {
        code: status.code().unwrap_or(-1),
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
        elapsed: start.elapsed(),
        hook,
    };
    let report = read_report(&out, &run);
    (run, report)
}

/// The report in a few lines (verdict, summary, one line per thread), for assertion messages.
pub fn describe(report: &Value) -> String {
    let mut s = format!(
        "verdict {} (runtime {}), summary {}\n",
        report["verdict"], report["target"]["runtime"], report["summary"]
    );
    for t in threads(report) {
        s.push_str(&format!(
            "  tid {} {:?} state={} syscall={} flagged={} role={} woke_after_signal={} reason={} stack={:?}\n",
            t["tid"],
            t["name"].as_str().unwrap_or(""),
            t["state"],
            t["syscall"],
            t["flagged"],
            t["role"],
            t["woke_after_signal"],
            t["reason"],
            stack_functions(t),
        ));
    }
    s
}

/// The live (not exited) threads of a report.
pub fn live_threads(report: &Value) -> Vec<&Value> {
    threads(report)
        .iter()
        .filter(|t| t["state"] != "exited")
        .collect()
}

/// Verdict "stalled", exit code 1, the stop signal seen, the process still alive.
#[track_caller]
pub fn assert_stalled(run: &Run, report: &Value) {
    assert_eq!(
        report["verdict"],
        "stalled",
        "verdict\n{}stderr:\n{}",
        describe(report),
        run.stderr
    );
    assert_eq!(run.code, 1, "exit code\n{}", describe(report));
    assert_eq!(
        report["shutdown"]["signal"], "SIGTERM",
        "{}",
        report["shutdown"]
    );
    assert_eq!(
        report["shutdown"]["process_exited"], false,
        "{}",
        report["shutdown"]
    );
}

/// Verdict "clean", exit code 0, nothing flagged, the process exited (with code 0) within grace.
#[track_caller]
pub fn assert_clean(run: &Run, report: &Value) {
    assert_eq!(
        report["verdict"],
        "clean",
        "verdict\n{}stderr:\n{}",
        describe(report),
        run.stderr
    );
    assert_eq!(run.code, 0, "exit code\n{}", describe(report));
    assert_eq!(
        flagged_names(report),
        Vec::<String>::new(),
        "{}",
        describe(report)
    );
    let sd = &report["shutdown"];
    assert_eq!(sd["signal"], "SIGTERM", "{sd}");
    assert_eq!(sd["process_exited"], true, "{sd}");
    let after = sd["exited_after_ms"].as_i64().unwrap_or(i64::MAX);
    let grace = sd["grace_ms"].as_i64().unwrap_or(0);
    assert!(
        (0..=grace).contains(&after),
        "exited {after} ms after the signal, grace {grace}: {sd}"
    );
    assert_eq!(report["target"]["exited"], true, "{}", report["target"]);
}

/// Exactly these threads are flagged (names, any order; a name twice for two threads).
#[track_caller]
pub fn assert_flagged_exactly(report: &Value, names: &[&str]) {
    let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(
        flagged_names(report),
        want,
        "flagged threads\n{}",
        describe(report)
    );
}

/// The one flagged thread named `name`.
#[track_caller]
pub fn flagged_thread<'a>(report: &'a Value, name: &str) -> &'a Value {
    let v: Vec<&Value> = threads(report)
        .iter()
        .filter(|t| t["flagged"] == true && t["name"] == name)
        .collect();
    assert_eq!(
        v.len(),
        1,
        "flagged threads named {name:?}\n{}",
        describe(report)
    );
    v[0]
}

/// The thread's reason starts with `prefix` and mentions each of `contains`.
#[track_caller]
pub fn assert_reason(t: &Value, prefix: &str, contains: &[&str]) {
    let r = t["reason"].as_str().unwrap_or("");
    assert!(
        r.starts_with(prefix),
        "thread {} reason {r:?}, expected it to start with {prefix:?}",
        t["name"]
    );
    for c in contains {
        assert!(
            r.contains(c),
            "thread {} reason {r:?}, expected it to mention {c:?}",
            t["name"]
        );
    }
}

/// Compile `tests/workloads/java/<Class>.java` (javac from the JDK) and return the class
/// directory for `java -cp DIR Class`.
pub fn build_java(class: &str) -> PathBuf {
    let _g = build_lock().lock().unwrap_or_else(|e| e.into_inner());
    let src = repo_root()
        .join("tests/workloads/java")
        .join(format!("{class}.java"));
    let out = workload_dir().join("java");
    std::fs::create_dir_all(&out).unwrap();
    let class_file = out.join(format!("{class}.class"));
    if is_fresh(&class_file, &[&src]) {
        return out;
    }
    let o = Command::new("javac")
        .arg("-d")
        .arg(&out)
        .arg(&src)
        .output()
        .expect("run javac (openjdk)");
    assert!(
        o.status.success(),
        "javac {class}.java failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// `stallprobe run --stop-after 3s --grace 2s EXTRA --format json --quiet -- java Deadlock`: the
/// JVM workload with a monitor deadlock and a shutdown hook blocked on one of its monitors.
pub fn run_jvm_deadlock(extra: &[&str]) -> Run {
    let classes = build_java("Deadlock");
    let mut args = vec!["run", "--stop-after", "3s", "--grace", "2s"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--format", "json", "--quiet", "--", "java", "-cp"]);
    args.push(classes.to_str().unwrap());
    args.push("Deadlock");
    stallprobe(&args, Duration::from_secs(120))
}

/// A Node.js workload script.
pub fn node_script(name: &str) -> PathBuf {
    repo_root()
        .join("tests/workloads/node")
        .join(format!("{name}.js"))
}

/// A stallprobe started in the background, attached (its "watching pid" line was read).
pub struct Attached {
    pub child: Child,
}

impl Attached {
    /// Start `stallprobe ARGS` and wait until it has attached.
    pub fn start(args: &[&str]) -> Attached {
        let (args, _hook) = with_test_hook(args);
        let mut child = Command::new(stallprobe_bin())
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start stallprobe");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        loop {
            let l = lines
                .next()
                .expect("stallprobe ended before attaching")
                .unwrap();
            if l.contains("watching pid") {
                break;
            }
        }
        // Keep draining stderr so stallprobe never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Attached { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
