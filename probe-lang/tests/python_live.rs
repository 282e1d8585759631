//! The CPython reader against real interpreters: each installed one runs
//! `workloads/py_stacks.py`, and its threads, frames, lines and GIL holder are read from
//! outside through process_vm_readv. Interpreters that are not installed are skipped (with a
//! message); every started process is killed by a guard.

use probe_lang::mem::ProcessMemory;
use probe_lang::ns::{innermost_id, ns_tid_map};
use probe_lang::python::{MergedFrame, PyProcess, PySnapshot, merge};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const INTERPRETERS: &[(&str, &str)] = &[
    ("3.8", "/root/.pyenv/versions/3.8.18/bin/python3.8"),
    ("3.9", "/root/.pyenv/versions/3.9.18/bin/python3.9"),
    ("3.10", "/root/.pyenv/versions/3.10.13/bin/python3.10"),
    ("3.11", "/root/.pyenv/versions/3.11.7/bin/python3.11"),
    ("3.12", "/root/.pyenv/versions/3.12.1/bin/python3.12"),
    ("3.13", "/root/.pyenv/versions/3.13.0/bin/python3.13"),
    // Debian's: statically linked, no .symtab (only .dynsym).
    ("3.11", "/usr/bin/python3.11"),
];

/// Kills and reaps the workload when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workloads/py_stacks.py")
}

/// `# @name` marker → line number in the script.
fn markers() -> HashMap<String, u32> {
    let text = std::fs::read_to_string(script()).unwrap();
    let mut m = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(pos) = line.find("# @") {
            let name: String = line[pos + 3..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            m.insert(name, i as u32 + 1);
        }
    }
    m
}

/// Start the workload and wait for `ready`; returns the guard and its `key=value` facts.
fn start(python: &str) -> (Guard, HashMap<String, String>) {
    let mut cmd = Command::new(python);
    cmd.arg(script());
    start_cmd(cmd, python)
}

fn start_cmd(mut cmd: Command, python: &str) -> (Guard, HashMap<String, String>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {python}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let guard = Guard(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut facts = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("{python}: no `ready` within 30 s"));
        if line == "ready" {
            return (guard, facts);
        }
        if let Some((k, v)) = line.split_once('=') {
            facts.insert(k.to_string(), v.to_string());
        }
    }
}

/// The syscall number a thread is in (`/proc/PID/task/TID/syscall`), if it is in one.
fn syscall_of(pid: u32, tid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

const SYS_FUTEX: u64 = 202;

/// What a correct snapshot of the workload looks like; Err says what is not there (yet).
fn check(
    s: &PySnapshot,
    pid: u32,
    tid: &dyn Fn(&str) -> u32,
    lines: &HashMap<String, u32>,
    minor: u32,
) -> Result<(), String> {
    let ours = |f: &probe_lang::python::PyFrame| f.file.ends_with("py_stacks.py");
    let frames = |name: &str| -> Result<&Vec<probe_lang::python::PyFrame>, String> {
        let t = s
            .thread(tid(name))
            .ok_or_else(|| format!("no thread state with the tid of {name}"))?;
        if t.frames.is_empty() {
            return Err(format!("{name}: no frames: {:?}", t.why_empty));
        }
        Ok(&t.frames)
    };
    let at = |name: &str, function: &str, marker: &str| -> Result<(), String> {
        let fr = frames(name)?;
        let f = fr
            .iter()
            .find(|f| ours(f))
            .ok_or_else(|| format!("{name}: no frame of the script: {fr:?}"))?;
        if f.function != function || f.line != Some(lines[marker]) {
            return Err(format!(
                "{name}: innermost script frame {f:?}, want {function} at line {} (@{marker})",
                lines[marker]
            ));
        }
        Ok(())
    };
    at("main", "spin", "spin")?;
    at("receiver", "receive", "recv")?;
    at("dozer", "doze", "sleep")?;
    at("getter", "get_item", "get")?;
    // The getter is inside queue.get → Condition.wait, in the standard library.
    let g = frames("getter")?;
    let want_wait = if minor >= 11 {
        "Condition.wait"
    } else {
        "wait"
    };
    let want_get = if minor >= 11 { "Queue.get" } else { "get" };
    if g[0].function != want_wait
        || !g[0].file.ends_with("threading.py")
        || g[1].function != want_get
        || !g[1].file.ends_with("queue.py")
    {
        return Err(format!("getter: {g:?}"));
    }
    // main → spin: main() and <module> below it, at their call lines; the outermost is entry.
    let m = frames("main")?;
    let names: Vec<(&str, Option<u32>)> = m.iter().map(|f| (f.function.as_str(), f.line)).collect();
    let want = [
        ("spin", Some(lines["spin"])),
        ("main", Some(lines["main"])),
        ("<module>", Some(lines["module"])),
    ];
    if names != want {
        return Err(format!("main thread: {names:?}, want {want:?}"));
    }
    if !m.last().unwrap().entry {
        return Err("the outermost frame is not an entry frame".into());
    }
    if minor >= 11 && (m[0].entry || m[1].entry) {
        return Err(format!(
            "3.11+: spin and main run in <module>'s eval call: {m:?}"
        ));
    }
    // The dozer's sleep has returned and it waits for the GIL the spinning main thread holds.
    if s.gil_holder != Some(tid("main")) {
        return Err(format!("GIL holder {:?}, want main {}", s.gil, tid("main")));
    }
    if syscall_of(pid, tid("dozer")) != Some(SYS_FUTEX) {
        return Err("the dozer is not (yet) waiting for the GIL in a futex".into());
    }
    // Every tid is a real thread of the process.
    for t in &s.threads {
        let t = t.tid.ok_or("a thread state without tid")?;
        if !Path::new(&format!("/proc/{pid}/task/{t}")).exists() {
            return Err(format!("tid {t} is not a thread of {pid}"));
        }
    }
    Ok(())
}

fn run_one(want_minor: &str, python: &str) {
    let lines = markers();
    let (guard, facts) = start(python);
    let pid = guard.0.id();
    let tid = |name: &str| -> u32 {
        facts[&format!("tid_{name}")]
            .parse()
            .unwrap_or_else(|_| panic!("tid_{name}"))
    };
    let p = PyProcess::locate_pid(pid).unwrap_or_else(|e| panic!("{python}: {e}"));
    assert!(
        p.version().starts_with(&format!("{want_minor}.")),
        "{python}: version {} from {}",
        p.version(),
        p.module().display()
    );
    let minor: u32 = want_minor[2..].parse().unwrap();
    let mem = ProcessMemory { pid };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let snap = p.threads(&mem).unwrap_or_else(|e| panic!("{python}: {e}"));
        match check(&snap, pid, &tid, &lines, minor) {
            Ok(()) => {
                eprintln!(
                    "{python}: CPython {} from {}: {} threads, GIL held by {:?}; notes: {:?}",
                    p.version(),
                    p.module().display(),
                    snap.threads.len(),
                    snap.gil_holder,
                    snap.notes
                );
                if std::env::var_os("PY_LIVE_DUMP").is_some() {
                    eprintln!("{snap:#?}");
                }
                return;
            }
            Err(e) if Instant::now() > deadline => {
                panic!("{python}: {e}\nsnapshot: {snap:#?}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[test]
fn cpython_threads_frames_lines_and_gil_holder() {
    let mut ran = 0;
    for &(minor, python) in INTERPRETERS {
        if !Path::new(python).exists() {
            eprintln!("skipped: {python} (CPython {minor}) is not installed");
            continue;
        }
        run_one(minor, python);
        ran += 1;
    }
    eprintln!("{ran} interpreters checked");
}

#[test]
fn a_process_without_python_is_refused_with_a_reason() {
    let child = Command::new("sleep").arg("30").spawn().unwrap();
    let g = Guard(child);
    let e = PyProcess::locate_pid(g.0.id()).unwrap_err();
    assert!(
        e.to_string().starts_with("no CPython interpreter found"),
        "{e}"
    );
}

#[test]
fn cpython_in_its_own_pid_namespace() {
    // As in a container: the tids CPython records are its namespace's; map_tids renumbers them.
    // 3.10 reads them from glibc's struct pthread, 3.12 from native_thread_id.
    for python in [INTERPRETERS[2].1, INTERPRETERS[4].1] {
        if !Path::new(python).exists() {
            eprintln!("skipped: {python} is not installed");
            continue;
        }
        let mut cmd = Command::new("unshare");
        cmd.args(["--pid", "--fork", "--kill-child", "--mount-proc", python])
            .arg(script());
        let (guard, facts) = start_cmd(cmd, python);
        let unshare = guard.0.id();
        let children =
            std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children")).unwrap();
        let pid: u32 = children.split_whitespace().next().unwrap().parse().unwrap();
        let p = PyProcess::locate_pid(pid).unwrap_or_else(|e| panic!("{python}: {e}"));
        let mut snap = p
            .threads(&ProcessMemory { pid })
            .unwrap_or_else(|e| panic!("{python}: {e}"));
        let ns_main: u32 = facts["tid_main"].parse().unwrap();
        assert_eq!(ns_main, 1, "python is pid 1 of its namespace");
        let mut ns_tids: Vec<u32> = snap.threads.iter().filter_map(|t| t.tid).collect();
        let mut want: Vec<u32> = ["main", "getter", "receiver", "dozer"]
            .iter()
            .map(|n| facts[&format!("tid_{n}")].parse().unwrap())
            .collect();
        ns_tids.sort();
        want.sort();
        assert_eq!(ns_tids, want, "{python}");
        snap.map_tids(&ns_tid_map(pid));
        assert_eq!(snap.thread(pid).unwrap().frames[0].function, "spin");
        for t in &snap.threads {
            let tid = t.tid.unwrap();
            let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
            assert!(want.contains(&innermost_id(&status).unwrap()), "{python}");
        }
    }
}

/// Native stacks of every thread (LWP → function names, innermost first), from gdb.
fn gdb_stacks(pid: u32) -> Option<HashMap<u32, Vec<String>>> {
    let out = Command::new("gdb")
        .args(["-batch", "-nx", "-p", &pid.to_string()])
        .args(["-ex", "set pagination off", "-ex", "thread apply all bt"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut stacks = HashMap::new();
    let mut cur: Option<(u32, Vec<String>)> = None;
    for line in text.lines() {
        if let Some(i) = line.find("(LWP ") {
            if let Some((tid, frames)) = cur.take() {
                stacks.insert(tid, frames);
            }
            let tid = line[i + 5..].split(')').next()?.parse().ok()?;
            cur = Some((tid, Vec::new()));
        } else if let (Some(rest), Some((_, frames))) = (line.strip_prefix('#'), cur.as_mut()) {
            let mut words = rest.split_whitespace().skip(1);
            let mut w = words.next().unwrap_or("");
            if w.starts_with("0x") {
                words.next(); // "in"
                w = words.next().unwrap_or("");
            }
            frames.push(w.to_string());
        }
    }
    if let Some((tid, frames)) = cur {
        stacks.insert(tid, frames);
    }
    Some(stacks)
}

#[test]
fn merged_with_real_native_stacks() {
    // gdb stands in for stallprobe's unwinder here: its native frames, merged with the
    // Python frames read by this crate, put every Python frame in place of an eval frame.
    if Command::new("gdb").arg("--version").output().is_err() {
        eprintln!("skipped: gdb is not installed (it provides the native stacks here)");
        return;
    }
    for &(minor, python) in INTERPRETERS {
        if !Path::new(python).exists() {
            eprintln!("skipped: {python} (CPython {minor}) is not installed");
            continue;
        }
        let (guard, facts) = start(python);
        let pid = guard.0.id();
        let dozer: u32 = facts["tid_dozer"].parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while syscall_of(pid, dozer) != Some(SYS_FUTEX) {
            assert!(
                Instant::now() < deadline,
                "{python}: the dozer never waited for the GIL"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let native = gdb_stacks(pid).expect("gdb output");
        let p = PyProcess::locate_pid(pid).unwrap();
        let snap = p.threads(&ProcessMemory { pid }).unwrap();
        for name in ["main", "getter", "receiver", "dozer"] {
            let tid: u32 = facts[&format!("tid_{name}")].parse().unwrap();
            let py = &snap.thread(tid).unwrap().frames;
            let nat = &native[&tid];
            let names: Vec<&str> = nat.iter().map(String::as_str).collect();
            let m = merge(&names, py);
            assert!(
                m.ok,
                "{python} {name}: {:?}\nnative {names:?}\npython {py:#?}",
                m.reason
            );
            let placed = m
                .frames
                .iter()
                .filter(|f| matches!(f, MergedFrame::Python(_)))
                .count();
            assert_eq!(placed, py.len(), "{python} {name}");
            assert_eq!(m.frames.len(), nat.len() - eval_count(&names) + py.len());
        }
        eprintln!("{python}: native and Python stacks merged for 4 threads");
    }
}

fn eval_count(names: &[&str]) -> usize {
    names
        .iter()
        .filter(|n| n.starts_with("_PyEval_EvalFrameDefault"))
        .count()
}
