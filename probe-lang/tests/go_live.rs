//! The Go goroutine reader against real Go processes: every workload in
//! `tests/workloads/go/` built with every installed toolchain (`cargo xtask setup` installs
//! them in `$CARGO_HOME/stallprobe-go/<version>/bin/go`), plain, stripped (`-s -w`) and PIE,
//! started, read through `ProcessMemory` while it runs, then killed.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use probe_lang::{
    go::{
        ChanOp, GStatus, GoBinary, GoReader, GoRole, GoSnapshot, Goroutine, Limits,
        process_load_bias,
    },
    mem::ProcessMemory,
};

/// The toolchains setup installs; the tests say so when one is missing.
const REQUIRED: &[&str] = &["1.19", "1.23.9", "1.27.3"];
const MODES: &[(&str, &[&str])] = &[
    ("plain", &[]),
    ("strip", &["-ldflags=-s -w"]),
    ("pie", &["-buildmode=pie"]),
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn work_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
        .join("workloads")
}

/// `$CARGO_HOME/stallprobe-go/<version>/bin/go` for each installed version, oldest first.
fn toolchains() -> Vec<(String, PathBuf)> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo")
        });
    let dir = home.join("stallprobe-go");
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        e.path().join("bin/go"),
                    )
                })
                .filter(|(_, go)| go.exists())
                .collect()
        })
        .unwrap_or_default();
    out.sort_by_key(|(v, _)| {
        v.split('.')
            .map(|p| p.parse::<u32>().unwrap_or(0))
            .collect::<Vec<_>>()
    });
    for r in REQUIRED {
        if !out.iter().any(|(v, _)| v == r) {
            eprintln!(
                "SKIP Go {r}: not installed in {} (run `cargo xtask setup`)",
                dir.display()
            );
        }
    }
    out
}

fn build(go: &Path, version: &str, mode: &str, flags: &[&str], name: &str) -> PathBuf {
    let src = repo_root()
        .join("tests/workloads/go")
        .join(format!("{name}.go"));
    let out = work_dir()
        .join("go-reader")
        .join(format!("{version}-{mode}"));
    std::fs::create_dir_all(&out).unwrap();
    let bin = out.join(name);
    let fresh = |b: &Path| {
        let (Ok(b), Ok(s)) = (std::fs::metadata(b), std::fs::metadata(&src)) else {
            return false;
        };
        b.modified().unwrap() >= s.modified().unwrap()
    };
    if fresh(&bin) {
        return bin;
    }
    let o = Command::new(go)
        .arg("build")
        .args(flags)
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .env("GOCACHE", work_dir().join("go-cache"))
        .env("GOPATH", work_dir().join("gopath"))
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("GOTOOLCHAIN", "local")
        .output()
        .expect("run go");
    assert!(
        o.status.success(),
        "go {version} build {name} ({mode}): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    bin
}

/// A running workload, killed on drop.
struct Proc {
    child: Child,
    facts: HashMap<String, String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn start(bin: &Path, args: &[&str]) -> Proc {
        let mut child = Command::new(bin)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start workload");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = Proc {
            child,
            facts: HashMap::new(),
        };
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("{} never said ready", bin.display()));
            if line == "ready" {
                break;
            }
            if let Some((k, v)) = line.split_once('=') {
                p.facts.insert(k.into(), v.into());
            }
        }
        p
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn fact(&self, k: &str) -> u32 {
        self.facts[k].parse().unwrap()
    }
}

struct Case<'a> {
    what: String,
    minor: u32,
    bin: &'a GoBinary,
    snap: &'a GoSnapshot,
    proc_: &'a Proc,
}

fn read(path: &Path, p: &Proc) -> (GoBinary, GoSnapshot) {
    let data = std::fs::read(path).unwrap();
    let bin = GoBinary::parse(&data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let bias = process_load_bias(p.pid(), &data).unwrap();
    let t = std::time::Instant::now();
    let snap = GoReader::new(&bin, bias)
        .snapshot(&ProcessMemory { pid: p.pid() }, Limits::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let _ = t.elapsed();
    (bin, snap)
}

/// Build `name` with every toolchain and mode, run it, read it, check it with `check`.
fn each_build(name: &str, args: &[&str], check: impl Fn(&Case)) {
    let tcs = toolchains();
    if tcs.is_empty() {
        eprintln!("SKIP {name}: no Go toolchain installed");
        return;
    }
    for (version, go) in &tcs {
        for (mode, flags) in MODES {
            let path = build(go, version, mode, flags, name);
            let p = Proc::start(&path, args);
            let (bin, snap) = read(&path, &p);
            let what = format!("{name} go{version} {mode}");
            assert!(
                bin.version().starts_with(&format!("go{version}")),
                "{what}: version {}",
                bin.version()
            );
            assert_eq!(snap.unreadable, 0, "{what}: {:?}", snap.notes);
            let minor = bin.go_version().minor;
            if *mode != "strip" {
                let both =
                    probe_lang::go::layout_from_both(&std::fs::read(&path).unwrap()).unwrap();
                let (dwarf, types) = both.expect("unstripped binaries have DWARF");
                assert_eq!(dwarf, types, "{what}: DWARF and type descriptors disagree");
            }
            check(&Case {
                what,
                minor,
                bin: &bin,
                snap: &snap,
                proc_: &p,
            });
            eprintln!(
                "ok {name} go{version} {mode}: {} goroutines",
                snap.goroutines.len()
            );
        }
    }
}

fn at_line<'a>(c: &'a Case, function: &str, line: u32) -> Vec<&'a Goroutine> {
    c.snap
        .goroutines
        .iter()
        .filter(|g| {
            g.stack
                .iter()
                .any(|f| &*f.function == function && f.line == line)
        })
        .collect()
}

fn describe(c: &Case) -> String {
    let mut s = String::new();
    for g in &c.snap.goroutines {
        s += &format!(
            "g{} {:?} {:?} start {:?}\n",
            g.goid, g.status, g.wait_reason, g.start_fn
        );
        for f in g.stack.iter() {
            s += &format!(
                "    {} {}:{}{}\n",
                f.function,
                f.file,
                f.line,
                if f.inlined { " (inlined)" } else { "" }
            );
        }
    }
    s
}

fn common(c: &Case) {
    let main = c
        .snap
        .goroutines
        .iter()
        .find(|g| g.goid == 1)
        .expect("main goroutine");
    assert_eq!(main.role, GoRole::Application, "{}", c.what);
    let runtime: Vec<_> = c
        .snap
        .goroutines
        .iter()
        .filter(|g| g.role == GoRole::Runtime)
        .collect();
    assert!(
        runtime
            .iter()
            .any(|g| g.start_fn.as_deref() == Some("runtime.forcegchelper")),
        "{}: no forcegc helper among runtime goroutines\n{}",
        c.what,
        describe(c)
    );
    for g in &c.snap.goroutines {
        if let Some(f) = g.start_fn.as_deref()
            && (f == "os/signal.loop"
                || f.starts_with("runtime.gcBgMarkWorker")
                || f == "runtime.bgsweep")
        {
            assert_eq!(g.role, GoRole::Runtime, "{}: {f}", c.what);
        }
    }
}

#[test]
fn select_send() {
    each_build("select_send", &["--ready"], |c| {
        common(c);
        let line = c.proc_.fact("blocking_line");
        let gs = at_line(c, "main.worker", line);
        assert_eq!(
            gs.len(),
            1,
            "{}: main.worker at select_send.go:{line}\n{}",
            c.what,
            describe(c)
        );
        let g = gs[0];
        assert!(g.stack.iter().any(|f| f.file.ends_with("select_send.go")));
        assert_eq!(g.status, GStatus::Waiting);
        assert_eq!(g.wait_reason.as_deref(), Some("chan send"), "{}", c.what);
        let w = g
            .wait
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no chan details", c.what));
        assert_eq!(
            (w.op, w.cap, w.len, w.closed, w.senders, w.receivers),
            (ChanOp::Send, 0, 0, false, 1, 0),
            "{}",
            c.what
        );
        let cb = g.created_by.as_ref().expect("created by");
        assert_eq!(
            (&*cb.function, cb.line),
            ("main.main", c.proc_.fact("go_line")),
            "{}",
            c.what
        );
        assert_eq!(g.role, GoRole::Application);
        assert!(g.thread.is_none(), "parked goroutines have no thread");
        if c.minor >= 21 {
            assert_eq!(g.parent_goid, Some(1), "{}", c.what);
        }
        assert!(!c.bin.symbolize(g.stack[0].pc - 1).is_empty());
    });
}

#[test]
fn producer_gone() {
    each_build("producer_gone", &["--ready"], |c| {
        common(c);
        let gs = at_line(c, "main.produce", c.proc_.fact("blocking_line"));
        assert_eq!(gs.len(), 1, "{}\n{}", c.what, describe(c));
        let w = gs[0].wait.as_ref().expect("chan details");
        assert_eq!(
            (w.op, w.cap, w.len, w.closed, w.senders, w.receivers),
            (ChanOp::Send, 4, 4, false, 1, 0),
            "{}",
            c.what
        );
        assert_eq!(
            gs[0].created_by.as_ref().unwrap().line,
            c.proc_.fact("go_line")
        );
    });
}

#[test]
fn pool_gone() {
    each_build("pool_gone", &["--ready"], |c| {
        common(c);
        let n = c.proc_.fact("submitters") as usize;
        let gs = at_line(c, "main.submit", c.proc_.fact("blocking_line"));
        assert_eq!(gs.len(), n, "{}", c.what);
        let chan = gs[0].wait.as_ref().expect("chan details").addr;
        for g in &gs {
            assert_eq!(g.wait_reason.as_deref(), Some("chan send"));
            assert_eq!(g.role, GoRole::Application);
            let w = g.wait.as_ref().unwrap();
            assert_eq!(
                (w.addr, w.senders as usize, w.receivers, w.cap),
                (chan, n, 0, 0),
                "{}",
                c.what
            );
            assert_eq!(g.created_by.as_ref().unwrap().line, c.proc_.fact("go_line"));
        }
    });
}

#[test]
fn mutex_abba() {
    each_build("mutex_abba", &["--ready"], |c| {
        common(c);
        let reason = if c.minor >= 20 {
            "sync.Mutex.Lock"
        } else {
            "semacquire"
        };
        for (f, k) in [("main.lockAB", "ab_line"), ("main.lockBA", "ba_line")] {
            let gs = at_line(c, f, c.proc_.fact(k));
            assert_eq!(gs.len(), 1, "{}: {f}\n{}", c.what, describe(c));
            let g = gs[0];
            assert_eq!(g.wait_reason.as_deref(), Some(reason), "{}", c.what);
            assert!(
                g.stack
                    .iter()
                    .any(|f| f.function.contains("Mutex") && f.function.contains("Lock")),
                "{}: no Mutex.Lock frame\n{}",
                c.what,
                describe(c)
            );
        }
    });
}

#[test]
fn wg_wait() {
    each_build("wg_wait", &["--ready"], |c| {
        common(c);
        let gs = at_line(c, "main.readLine", c.proc_.fact("blocking_line"));
        assert_eq!(gs.len(), 1, "{}\n{}", c.what, describe(c));
        let g = gs[0];
        assert_eq!(g.status, GStatus::Syscall, "{}", c.what);
        assert!(
            g.stack.iter().any(|f| &*f.function == "main.reader"),
            "{}\n{}",
            c.what,
            describe(c)
        );
        let tid = g.thread.unwrap_or_else(|| panic!("{}: no thread", c.what));
        assert!(
            Path::new(&format!("/proc/{}/task/{tid}", c.proc_.pid())).exists(),
            "{}: {tid} is not a thread of the process",
            c.what
        );
    });
}

#[test]
fn clean_ctx() {
    each_build("clean_ctx", &["--ready"], |c| {
        common(c);
        let workers: Vec<_> = c
            .snap
            .goroutines
            .iter()
            .filter(|g| g.stack.iter().any(|f| &*f.function == "main.worker"))
            .collect();
        assert_eq!(
            workers.len(),
            c.proc_.fact("workers") as usize,
            "{}\n{}",
            c.what,
            describe(c)
        );
        for g in workers {
            assert_eq!(g.wait_reason.as_deref(), Some("select"), "{}", c.what);
            let w = g.wait.as_ref().expect("select details");
            assert_eq!((w.op, w.cases), (ChanOp::Select, 2), "{}", c.what);
        }
        // SIGTERM: everything returns.
        let pid = c.proc_.pid() as i32;
        assert_eq!(unsafe_kill(pid), 0);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while Path::new(&format!("/proc/{pid}/task")).exists() && !is_zombie(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "{}: did not exit on SIGTERM",
                c.what
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}

fn unsafe_kill(pid: i32) -> i32 {
    match Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
    {
        Ok(s) if s.success() => 0,
        _ => 1,
    }
}

/// 100,000 parked goroutines: time and memory of one snapshot (by hand:
/// `cargo test -p probe-lang --release --test go_live -- --ignored --nocapture scale`).
#[test]
#[ignore]
fn scale_100k() {
    let tcs = toolchains();
    let (version, go) = tcs.last().expect("a Go toolchain");
    let path = build(go, version, "plain", &[], "many_parked");
    let p = Proc::start(&path, &["--ready", "100000"]);
    let data = std::fs::read(&path).unwrap();
    let bin = GoBinary::parse(&data).unwrap();
    let bias = process_load_bias(p.pid(), &data).unwrap();
    let reader = GoReader::new(&bin, bias);
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let snap = reader
            .snapshot(&ProcessMemory { pid: p.pid() }, Limits::default())
            .unwrap();
        let dt = t.elapsed();
        let rss = std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find(|l| l.starts_with("VmHWM"))
            .unwrap()
            .to_string();
        let parked = snap
            .goroutines
            .iter()
            .filter(|g| g.stack.iter().any(|f| &*f.function == "main.park"))
            .count();
        eprintln!(
            "go{version}: {} goroutines ({parked} parked in main.park) in {dt:?}; {rss}",
            snap.goroutines.len()
        );
        assert!(parked >= 100_000);
        // The goal is < 1 s (measured 0.9–1.1 s on 2 shared, busy cores); this guards
        // against gross regressions only, the printed number is the measurement.
        assert!(dt < Duration::from_secs(3), "{dt:?}");
    }
}
