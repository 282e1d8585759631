//! The attach client and the dump parser against a real HotSpot JVM running
//! `workloads/JavaStacks.java`: frames and lines, monitors and their owners, the deadlock
//! cycle, nid → tid, `Compiler.perfmap`, the shutdown hook blocked after SIGTERM, and the
//! refusals (attach disabled, SIGQUIT not caught). Every JVM is killed by a guard, which also
//! removes the files the JVM leaves in /tmp.

use probe_lang::java::{self, AttachError, LockKind, Source, ThreadDump};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(30);

struct Jvm {
    child: Child,
    cwd: PathBuf,
}

impl Drop for Jvm {
    fn drop(&mut self) {
        let pid = self.child.id();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // SIGKILL leaves the socket and the perf map behind.
        let _ = std::fs::remove_file(format!("/tmp/.java_pid{pid}"));
        let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));
        let _ = std::fs::remove_dir_all(&self.cwd);
    }
}

impl Jvm {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Compile the workload once per test binary run; None (with a message) without a JDK.
fn classes() -> Option<PathBuf> {
    static ONCE: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("java-classes");
        std::fs::create_dir_all(&out).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workloads/JavaStacks.java");
        match Command::new("javac").arg("-d").arg(&out).arg(&src).output() {
            Err(e) => {
                eprintln!("skipped: no javac ({e}): the JDK is not installed");
                None
            }
            Ok(o) => {
                assert!(
                    o.status.success(),
                    "javac: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                Some(out)
            }
        }
    })
    .clone()
}

/// `// @name` markers of the workload → line numbers.
fn markers() -> HashMap<String, u32> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workloads/JavaStacks.java");
    let text = std::fs::read_to_string(src).unwrap();
    let mut m = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(pos) = line.find("// @") {
            let name: String = line[pos + 4..]
                .chars()
                .take_while(|c| c.is_alphanumeric())
                .collect();
            m.insert(name, i as u32 + 1);
        }
    }
    m
}

/// Start the workload (in a fresh cwd) and wait for `ready`.
fn start(jvm_args: &[&str]) -> Option<Jvm> {
    let classes = classes()?;
    let mut cmd = Command::new("java");
    cmd.args(jvm_args)
        .arg("-cp")
        .arg(&classes)
        .arg("JavaStacks");
    Some(start_cmd(cmd, &jvm_args.join("")))
}

/// Run `cmd` (the workload, perhaps wrapped) in a fresh cwd and wait for `ready`.
fn start_cmd(mut cmd: Command, tag: &str) -> Jvm {
    // A cwd of its own per JVM (tests run in parallel; each removes its cwd when done).
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let cwd = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "jvm-cwd-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        tag.replace(['+', '-', ':'], "")
    ));
    std::fs::create_dir_all(&cwd).unwrap();
    let mut child = cmd
        .current_dir(&cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start java");
    let stdout = child.stdout.take().unwrap();
    let jvm = Jvm { child, cwd };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l == "ready" => return jvm,
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("JavaStacks: no `ready` within {TIMEOUT:?}")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("JavaStacks exited before printing `ready`")
            }
        }
    }
}

fn frame_at(d: &ThreadDump, thread: &str, method: &str, line: u32) {
    let t = d
        .thread(thread)
        .unwrap_or_else(|| panic!("no thread {thread}"));
    let f = t
        .frames
        .iter()
        .find(|f| f.method == method)
        .unwrap_or_else(|| panic!("{thread}: no frame {method}: {:#?}", t.frames));
    assert_eq!(
        f.source,
        Source::File {
            file: "JavaStacks.java".into(),
            line: Some(line)
        },
        "{thread}: {method}"
    );
}

fn comm(pid: u32, tid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

#[test]
fn thread_dump_perf_map_and_blocked_shutdown_hook() {
    let Some(jvm) = start(&[]) else { return };
    let pid = jvm.pid();
    let m = markers();
    assert!(
        !Path::new(&format!("/tmp/.java_pid{pid}")).exists(),
        "no attach socket before the first attach"
    );

    let (d, reply) = java::thread_dump(pid, TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(!reply.truncated);
    assert!(d.vm.as_deref().unwrap().contains("OpenJDK"), "{:?}", d.vm);
    // The trigger file is gone, the socket stays.
    assert!(!jvm.cwd.join(format!(".attach_pid{pid}")).exists());
    assert!(Path::new(&format!("/tmp/.java_pid{pid}")).exists());

    // Frames and lines of the workload.
    frame_at(&d, "locker-a", "JavaStacks.lockBoth", m["second"]);
    frame_at(&d, "locker-b", "JavaStacks.lockBoth", m["second"]);
    frame_at(&d, "holder", "JavaStacks.hold", m["hold"]);
    frame_at(&d, "parker", "JavaStacks.park", m["park"]);
    frame_at(&d, "waiter", "JavaStacks.waitForever", m["wait"]);
    frame_at(&d, "main", "JavaStacks.main", m["join"]);
    assert_eq!(
        d.thread("locker-a").unwrap().state.as_deref(),
        Some("BLOCKED (on object monitor)")
    );

    // Monitors and owners.
    let a = d.wait_of(d.thread("locker-a").unwrap()).unwrap();
    assert_eq!(a.kind, LockKind::WaitingToLock);
    assert_eq!(a.lock.class.as_deref(), Some("java.lang.Object"));
    assert_eq!(a.owner.as_deref(), Some("locker-b"));
    let b = d.wait_of(d.thread("locker-b").unwrap()).unwrap();
    assert_eq!(b.owner.as_deref(), Some("locker-a"));
    assert_eq!(
        d.thread("locker-a").unwrap().monitors_held()[0].address,
        b.lock.address,
        "locker-a holds what locker-b wants"
    );
    let p = d.wait_of(d.thread("parker").unwrap()).unwrap();
    assert_eq!(p.kind, LockKind::ParkingFor);
    assert_eq!(
        p.lock.class.as_deref(),
        Some("java.util.concurrent.locks.ReentrantLock$NonfairSync")
    );
    assert_eq!(p.owner.as_deref(), Some("holder"));
    let w = d.wait_of(d.thread("waiter").unwrap()).unwrap();
    assert_eq!((w.kind, w.owner), (LockKind::WaitingOn, None));

    // The JVM's deadlock report: locker-a ⇄ locker-b.
    assert_eq!(d.deadlocks.len(), 1, "{:#?}", d.deadlocks);
    let mut cycle: Vec<(String, Option<String>)> = d.deadlocks[0]
        .links
        .iter()
        .map(|l| (l.thread.clone(), l.held_by.clone()))
        .collect();
    cycle.sort();
    assert_eq!(
        cycle,
        [
            ("locker-a".to_string(), Some("locker-b".to_string())),
            ("locker-b".to_string(), Some("locker-a".to_string()))
        ]
    );

    // nid is the OS tid: every one is a thread of the process, and the JVM named ours.
    for t in &d.threads {
        let nid = t.nid.unwrap_or_else(|| panic!("{}: no nid", t.name));
        assert!(
            Path::new(&format!("/proc/{pid}/task/{nid}")).exists(),
            "{}: nid {nid} is not a thread of {pid}",
            t.name
        );
    }
    for name in ["locker-a", "locker-b", "holder", "parker", "waiter"] {
        let nid = d.thread(name).unwrap().nid.unwrap();
        assert_eq!(comm(pid, nid), name);
    }

    // Compiler.perfmap: the JIT-compiled hot() is named in the map.
    let map = java::write_perf_map(pid, TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(&map).unwrap();
    assert!(
        text.lines().any(|l| l.ends_with("JavaStacks.hot(int)")),
        "{} has no JavaStacks.hot:\n{}",
        map.display(),
        text.lines().take(20).collect::<Vec<_>>().join("\n")
    );

    // SIGTERM: the shutdown hook blocks on A, which locker-a holds; attaching still works.
    // SAFETY: kill(2) on our own child.
    assert_eq!(
        unsafe { nix::libc::kill(pid as i32, nix::libc::SIGTERM) },
        0
    );
    let deadline = Instant::now() + TIMEOUT;
    let hook = loop {
        let (d, _) = java::thread_dump(pid, TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
        if let Some(h) = d.thread("shutdown-hook")
            && h.state.as_deref() == Some("BLOCKED (on object monitor)")
        {
            break d;
        }
        assert!(Instant::now() < deadline, "the hook never blocked");
        std::thread::sleep(Duration::from_millis(200));
    };
    frame_at(
        &hook,
        "shutdown-hook",
        "JavaStacks.lambda$main$1",
        m["hook"],
    );
    let h = hook.wait_of(hook.thread("shutdown-hook").unwrap()).unwrap();
    assert_eq!(h.owner.as_deref(), Some("locker-a"));
    assert_eq!(h.lock.address, b.lock.address, "A");
}

#[test]
fn attach_disabled_is_refused_before_any_signal() {
    let Some(jvm) = start(&["-XX:+DisableAttachMechanism"]) else {
        return;
    };
    let r = java::attach_command(jvm.pid(), "threaddump", &[], TIMEOUT);
    match r {
        Err(AttachError::Refused(why)) => assert!(why.contains("DisableAttachMechanism"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(!jvm.cwd.join(format!(".attach_pid{}", jvm.pid())).exists());
}

#[test]
fn a_jvm_that_does_not_catch_sigquit_is_not_signalled() {
    // -Xrs: HotSpot does not catch SIGQUIT, and opens its attach socket at startup instead.
    let Some(jvm) = start(&["-Xrs"]) else { return };
    let pid = jvm.pid();
    let (d, _) = java::thread_dump(pid, TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(d.thread("locker-a").is_some());
    // Without the socket, attaching would need SIGQUIT, which would kill this JVM: refused.
    std::fs::remove_file(format!("/tmp/.java_pid{pid}")).unwrap();
    let r = java::attach_command(pid, "threaddump", &[], TIMEOUT);
    match r {
        Err(AttachError::Refused(why)) => assert!(why.contains("SIGQUIT"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(
        Path::new(&format!("/proc/{pid}/task")).exists(),
        "still alive"
    );
    assert!(!jvm.cwd.join(format!(".attach_pid{pid}")).exists());
}

#[test]
fn an_unknown_command_is_an_error_with_the_jvms_words() {
    let Some(jvm) = start(&[]) else { return };
    let r = java::attach_command(jvm.pid(), "jcmd", &["No.such.command"], TIMEOUT);
    match r {
        Err(e @ AttachError::Command { .. }) => {
            assert!(e.to_string().contains("Unknown diagnostic command"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

/// The java process under `unshare` (its only child), as seen from here.
fn child_of(pid: u32) -> u32 {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let c =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        if let Some(c) = c.split_whitespace().next().and_then(|c| c.parse().ok()) {
            return c;
        }
        assert!(Instant::now() < deadline, "unshare has no child");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_jvm_in_its_own_pid_and_mount_namespaces() {
    // As in a container: the JVM is pid 1 of its namespace and has a /tmp of its own, so the
    // socket and the trigger file are named after its namespace pid and reached through
    // /proc/PID/root and /proc/PID/cwd.
    let Some(classes) = classes() else { return };
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "sh",
        "-c",
    ])
    // The classes are reached through an fd opened before the mount: a checkout under /tmp
    // (a CI runner's) would be hidden by the namespace's own /tmp.
    .arg(format!(
        "exec 3<'{}' && mount -t tmpfs tmpfs /tmp && exec java -cp /proc/self/fd/3 JavaStacks",
        classes.display()
    ));
    let jvm = start_cmd(cmd, "ns");
    let pid = child_of(jvm.pid());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let target = java::attach::parse_status(pid, &status);
    assert_eq!(target.ns_pid, 1, "{status}");
    let (d, _) = java::thread_dump(pid, TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.deadlocks.len(), 1);
    // nids are tids in the JVM's own namespace; ns_tid_map gives ours.
    let tids = java::ns_tid_map(pid);
    for name in ["locker-a", "locker-b", "holder", "parker", "waiter"] {
        let nid = d.thread(name).unwrap().nid.unwrap();
        let tid = tids[&nid];
        assert_ne!(nid, tid, "{name}: namespaced tids differ");
        assert_eq!(comm(pid, tid), name);
    }
    assert!(Path::new(&format!("/proc/{pid}/root/tmp/.java_pid1")).exists());
    assert!(!Path::new("/tmp/.java_pid1").exists(), "not in our /tmp");
    let map = java::write_perf_map(pid, TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        map,
        PathBuf::from(format!("/proc/{pid}/root/tmp/perf-1.map"))
    );
}
