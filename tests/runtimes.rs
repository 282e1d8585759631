//! Language-level stacks: Python frames read from a CPython interpreter's memory (every
//! CPython build the machine has: pyenv's with symbols, Debian's stripped one), the GIL holder,
//! and a HotSpot JVM's thread dump through its attach mechanism (Java frames, monitors, the
//! deadlock cycle, JIT frames named) — only when the JVM is judged stalled, unless asked.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use stallprobe_tests::*;

const RUN: Duration = Duration::from_secs(120);

/// The CPython builds to test: pyenv's 3.11 (symbols) and Debian's /usr/bin/python3.11
/// (stripped) must be there; other pyenv versions 3.8–3.13 are tested when present.
fn pythons() -> (Vec<PathBuf>, Vec<PathBuf>) {
    let pyenv = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root/.pyenv"))
        .join("versions");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(&pyenv)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    versions.sort();
    let find = |minor: u32| {
        versions
            .iter()
            .filter(|v| {
                v.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("3.{minor}.")))
            })
            .map(|v| v.join(format!("bin/python3.{minor}")))
            .find(|p| p.exists())
    };
    let pyenv311 = find(11).unwrap_or_else(|| {
        panic!(
            "no pyenv CPython 3.11 under {} (the machine's Python with symbols)",
            pyenv.display()
        )
    });
    let debian = PathBuf::from("/usr/bin/python3.11");
    assert!(debian.exists(), "Debian's python3.11 is missing");
    let others = [8, 9, 10, 12, 13].into_iter().filter_map(find).collect();
    (vec![pyenv311, debian], others)
}

/// The line of `needle` in `file` (1-based).
fn line_of(file: &Path, needle: &str) -> u64 {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in {}", file.display())) as u64
        + 1
}

/// The thread's Python frame for `function`.
#[track_caller]
fn python_frame<'a>(t: &'a Value, function: &str) -> &'a Value {
    t["stack"]
        .as_array()
        .and_then(|s| {
            s.iter()
                .find(|f| f["function"] == function && f["lang"] == "python")
        })
        .unwrap_or_else(|| {
            panic!(
                "{}: no Python frame {function}: {:?} ({})",
                t["name"],
                stack_functions(t),
                t["lang_note"]
            )
        })
}

fn run_service(python: &Path) -> (Run, Value) {
    let script = python_script("py_service");
    let run = stallprobe(
        &[
            "run",
            "--stop-after",
            "2s",
            "--grace",
            "2s",
            "--format",
            "json",
            "--quiet",
            "--",
            python.to_str().unwrap(),
            script.to_str().unwrap(),
        ],
        RUN,
    );
    let r = run.json();
    (run, r)
}

/// The acceptance scenario on both of the machine's CPython 3.11 builds: every flagged thread
/// shows the service's own functions at their `.py` lines, and the thread that waits for the
/// GIL names the thread holding it.
#[test]
fn a_python_service_that_hangs_shows_its_python_frames_and_the_gil_holder() {
    require_root();
    let script = python_script("py_service");
    let (required, _) = pythons();
    for python in required {
        let (run, r) = run_service(&python);
        let what = python.display();
        assert_stalled(&run, &r);
        assert_eq!(r["target"]["runtime"], "cpython", "{what}");
        assert_flagged_exactly(&r, &["consumer", "flusher", "handler", "heartbeat", "main"]);
        for (thread, function, needle) in [
            ("consumer", "Consumer.next_job", "return jobs.get()"),
            ("handler", "fetch_status", "return ours.recv(4096)"),
            ("flusher", "flush_to_disk", "_libc_holding_gil.read("),
            ("heartbeat", "beat", "    time.sleep(0.05)"),
        ] {
            let t = flagged_thread(&r, thread);
            let f = python_frame(t, function);
            assert!(
                f["file"].as_str().unwrap().ends_with("py_service.py"),
                "{what}: {thread}: {f}"
            );
            assert_eq!(f["line"], line_of(&script, needle), "{what}: {thread}: {f}");
        }
        assert_eq!(
            python_frame(flagged_thread(&r, "main"), "shutdown")["file"]
                .as_str()
                .map(|f| f.ends_with("py_service.py")),
            Some(true)
        );
        // The heartbeat waits for the GIL, which the flusher holds (inside a C call).
        let hb = flagged_thread(&r, "heartbeat");
        assert_eq!(
            hb["wait"]["runtime_object"], "waiting for the GIL",
            "{what}: {}",
            hb["wait"]
        );
        assert_eq!(
            hb["wait"]["owner_name"], "flusher",
            "{what}: {}",
            hb["wait"]
        );
        assert_eq!(
            hb["wait"]["owner"],
            flagged_thread(&r, "flusher")["tid"],
            "{what}"
        );
        assert!(
            hb["reason"].as_str().unwrap().contains("held by"),
            "{what}: {}",
            hb["reason"]
        );
        assert_eq!(
            flagged_thread(&r, "flusher")["holds"][0],
            "the GIL",
            "{what}"
        );
        let notes = r["notes"].to_string();
        assert!(notes.contains("CPython 3.11"), "{what}: {notes}");
        assert!(
            !notes.contains("-X perf"),
            "{what}: no advice to restart with -X perf when the frames were read: {notes}"
        );
    }
}

/// Every other CPython the machine has (pyenv 3.8–3.13): the layouts of each version.
#[test]
fn python_frames_on_every_other_cpython_version_here() {
    require_root();
    let (_, others) = pythons();
    for python in others {
        let (run, r) = run_service(&python);
        let what = python.display();
        assert_eq!(run.code, 1, "{what}: {}", run.stderr);
        // Before 3.11 code objects have no qualified name: `next_job`, not `Consumer.next_job`.
        let consumer = flagged_thread(&r, "consumer");
        let named = |t: &Value, short: &str| {
            t["stack"].as_array().unwrap().iter().any(|f| {
                f["lang"] == "python"
                    && f["function"]
                        .as_str()
                        .is_some_and(|n| n == short || n.ends_with(&format!(".{short}")))
                    && f["file"]
                        .as_str()
                        .is_some_and(|p| p.ends_with("py_service.py"))
            })
        };
        assert!(
            named(consumer, "next_job"),
            "{what}: {:?}",
            stack_functions(consumer)
        );
        let handler = flagged_thread(&r, "handler");
        assert!(
            named(handler, "fetch_status"),
            "{what}: {:?}",
            stack_functions(handler)
        );
        eprintln!("{what}: Python frames read ({})", r["notes"]);
    }
}

/// Attached with `--pid`, no signal: Python frames need no attach and are there too.
#[test]
fn python_frames_when_attached_to_a_running_service() {
    require_root();
    let (required, _) = pythons();
    let w = Workload::start(
        Command::new(&required[0])
            .arg(python_script("py_service"))
            .arg("--ready"),
        Duration::from_secs(30),
    );
    let run = stallprobe(
        &[
            "--pid",
            &w.pid().to_string(),
            "--duration",
            "1s",
            "--format",
            "json",
            "--quiet",
        ],
        RUN,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = run.json();
    python_frame(thread(&r, "consumer"), "Consumer.next_job");
    python_frame(thread(&r, "handler"), "fetch_status");
}

/// The threads of a JVM, as /proc names them.
fn jvm_thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .map(|c| c.trim().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The acceptance scenario for Java: a monitor deadlock and a shutdown hook blocked on one of
/// the monitors. The JVM is judged stalled, so stallprobe asks it for a thread dump: Java
/// frames at their `.java` lines, the monitors held and waited for, the cycle in `deadlocks`,
/// and no JIT frame left unnamed.
#[test]
fn a_stalled_jvm_shows_java_frames_monitors_and_the_deadlock_cycle() {
    require_root();
    let src = repo_root().join("tests/workloads/java/Deadlock.java");
    let run = run_jvm_deadlock(&[]);
    let r = run.json();
    assert_stalled(&run, &r);
    assert_eq!(flagged_names(&r), ["locker-a", "locker-b", "shutdown-hook"]);
    let inner = line_of(&src, "synchronized (second)");
    for name in ["locker-a", "locker-b"] {
        let t = flagged_thread(&r, name);
        let java: Vec<&Value> = t["stack"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["lang"] == "java")
            .collect();
        assert!(!java.is_empty(), "{name}: {:?}", stack_functions(t));
        assert_eq!(java[0]["function"], "Deadlock.lockBoth", "{name}");
        assert_eq!(java[0]["file"], "Deadlock.java", "{name}");
        // HotSpot gives a thread blocked entering a monitor the line of its `synchronized` or
        // the next one (the bci is past the monitorenter).
        let line = java[0]["line"].as_u64().unwrap();
        assert!((inner..=inner + 1).contains(&line), "{name}: line {line}");
        assert_eq!(
            t["lang_note"],
            "Java thread state: BLOCKED (on object monitor)"
        );
        let other = if name == "locker-a" {
            "locker-b"
        } else {
            "locker-a"
        };
        assert_eq!(t["wait"]["owner_name"], other, "{name}: {}", t["wait"]);
        assert!(
            t["wait"]["runtime_object"].as_str().is_some_and(|w| w
                .starts_with("waiting to lock <0x")
                && w.ends_with("(a java.lang.Object)")),
            "{name}: {}",
            t["wait"]
        );
        assert!(
            t["holds"][0]
                .as_str()
                .is_some_and(|h| h.starts_with("locked <0x")),
            "{name}: {}",
            t["holds"]
        );
        assert!(
            t["stack"]
                .as_array()
                .unwrap()
                .iter()
                .all(|f| !f["function"].is_null()),
            "{name}: every frame named (the JVM wrote its perf map): {:?}",
            stack_functions(t)
        );
    }
    // The cycle, with the Java threads in it.
    let d = r["deadlocks"].as_array().unwrap();
    assert_eq!(d.len(), 1, "{}", r["deadlocks"]);
    let mut names: Vec<&str> = d[0]["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["locker-a", "locker-b"]);
    // The hook waits for the monitor locker-a holds.
    let hook = flagged_thread(&r, "shutdown-hook");
    assert_eq!(hook["wait"]["owner_name"], "locker-a", "{}", hook["wait"]);
    let notes = r["notes"].to_string();
    assert!(notes.contains("attached to the JVM"), "{notes}");
    assert!(notes.contains("Java-level deadlock"), "{notes}");
    assert!(!notes.contains("JIT frames unsymbolized"), "{notes}");
}

/// Nothing is attached to a JVM that is not judged stalled, unless asked (`--attach-runtime`);
/// never with `--no-runtime-attach`.
#[test]
fn a_jvm_is_attached_to_only_when_judged_stalled_or_asked() {
    require_root();
    let classes = build_java("Deadlock");
    let jvm = Workload::start(
        Command::new("java")
            .arg("-cp")
            .arg(&classes)
            .args(["Deadlock", "--ready"]),
        Duration::from_secs(60),
    );
    let pid = jvm.pid().to_string();
    let attached = || {
        jvm_thread_names(jvm.pid())
            .iter()
            .any(|n| n == "Attach Listener")
    };
    assert!(!attached(), "a fresh JVM has no attach listener");
    // Watching without a signal: no verdict, no attach.
    let run = stallprobe(
        &[
            "--pid",
            &pid,
            "--duration",
            "2s",
            "--format",
            "json",
            "--quiet",
        ],
        RUN,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        !attached(),
        "stallprobe attached to a JVM it did not judge stalled"
    );
    let r = run.json();
    assert!(
        !r["threads"].to_string().contains("\"lang\":\"java\""),
        "no Java frames without an attach"
    );
    // --no-runtime-attach with --attach-runtime is refused; --attach-runtime asks.
    let both = stallprobe(
        &["--pid", &pid, "--no-runtime-attach", "--attach-runtime"],
        RUN,
    );
    assert_eq!(both.code, 2, "{}", both.stderr);
    let run = stallprobe(
        &[
            "--pid",
            &pid,
            "--duration",
            "2s",
            "--attach-runtime",
            "--format",
            "json",
            "--quiet",
        ],
        RUN,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(attached(), "--attach-runtime attached");
    let r = run.json();
    let a = thread(&r, "locker-a");
    assert!(
        a["stack"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["function"] == "Deadlock.lockBoth"),
        "{:?}",
        stack_functions(a)
    );
}

/// `--no-runtime-attach`: a stalled JVM is judged as before, and the report says why there are
/// no Java frames.
#[test]
fn no_runtime_attach_leaves_a_stalled_jvm_alone() {
    require_root();
    let run = run_jvm_deadlock(&["--no-runtime-attach"]);
    let r = run.json();
    assert_stalled(&run, &r);
    assert_eq!(flagged_names(&r), ["locker-a", "locker-b", "shutdown-hook"]);
    assert!(
        !r["threads"].to_string().contains("\"lang\":\"java\""),
        "no Java frames"
    );
    assert!(
        r["threads"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["name"] != "Attach Listener"),
        "no attach listener was started"
    );
    let notes = r["notes"].to_string();
    assert!(notes.contains("--no-runtime-attach"), "{notes}");
}
