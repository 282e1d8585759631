//! Hostile targets: stallprobe runs as root next to code it does not trust. A process that
//! names itself and its files to confuse its watcher, output paths it could have planted, perf
//! maps it chooses, a flood of connections to the metrics endpoint, a reused pid — none of it
//! may make stallprobe lie, hang, bloat, panic, or write where it should not.

use std::{
    io::Read,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use stallprobe_tests::*;

const RUN_TIMEOUT: Duration = Duration::from_secs(90);

fn scratch(tag: &str) -> PathBuf {
    let d = workload_dir()
        .join("hostile")
        .join(format!("{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// No terminal escape and no line that GitHub would take as a workflow command (every `::`
/// line must be one of stallprobe's own annotations).
#[track_caller]
fn assert_clean_output(what: &str, text: &[u8]) {
    assert!(
        !text.contains(&0x1b),
        "{what} carries a raw ESC:\n{}",
        String::from_utf8_lossy(text)
    );
    for line in String::from_utf8_lossy(text).lines() {
        if line.starts_with("::") {
            assert!(
                line.starts_with("::error file=") || line.starts_with("::error title="),
                "{what} has an injected workflow command: {line:?}"
            );
            assert!(!line.contains("::error::pwn"), "{what}: {line:?}");
        }
    }
}

/// A process whose name is not UTF-8 and whose threads and files are named to break outputs:
/// it is still alive (stalled, exit 1), and no output carries the raw bytes.
#[test]
fn hostile_names_stay_alive_and_reach_no_output_raw() {
    require_root();
    let bin = build_c("hostile_names");
    let dir = scratch("names");
    let step_summary = dir.join("step-summary.md");
    std::fs::write(&step_summary, "").unwrap();
    let mut outs = vec![];
    let mut cmd = Command::new(stallprobe_bin());
    cmd.args(["run", "--stop-after", "1s", "--grace", "1s"]);
    for (flag, name) in [
        ("--junit", "junit.xml"),
        ("--summary", "summary.md"),
        ("--pprof", "blocked.pb.gz"),
        ("--flamegraph", "offcpu.svg"),
        ("-o", "report.txt"),
    ] {
        let p = dir.join(name);
        cmd.arg(flag).arg(&p);
        outs.push(p);
    }
    cmd.args(["--color", "never", "--"])
        .arg(&bin)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_WORKSPACE", repo_root())
        .env("GITHUB_STEP_SUMMARY", &step_summary);
    let run = run_with_timeout(&mut cmd, RUN_TIMEOUT);
    // Alive and stalled, whatever its name.
    assert_eq!(run.code, 1, "stalled: exit 1\n{}", run.stderr);
    assert_clean_output("stdout", run.stdout.as_bytes());
    assert_clean_output("stderr (live lines)", run.stderr.as_bytes());
    assert!(
        run.stdout.lines().any(|l| l.starts_with("::error file=")),
        "annotations were written: {}",
        run.stdout
    );
    outs.push(step_summary);
    for p in &outs {
        let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        // The profile is binary protobuf (an ESC byte may be a length): check what its readers
        // show, `go tool pprof -raw`.
        let bytes = if p.extension().is_some_and(|e| e == "gz") {
            let o = Command::new("go")
                .args(["tool", "pprof", "-raw"])
                .arg(p)
                .env("HOME", workload_dir())
                .env("PPROF_TMPDIR", workload_dir())
                .output()
                .expect("go tool pprof");
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            assert!(
                String::from_utf8_lossy(&o.stdout).contains(r"\x1b[31mred"),
                "the profile has the escaped thread name"
            );
            o.stdout
        } else {
            bytes
        };
        assert_clean_output(&p.display().to_string(), &bytes);
    }
    let text = std::fs::read_to_string(dir.join("report.txt")).unwrap();
    assert!(text.contains("verdict: stalled"), "{text}");
    assert!(text.contains(r"\xff\xfebad-utf8"), "{text}");
    assert!(text.contains(r"\x1b[31mred"), "{text}");
    assert!(text.contains(r"\x0a::error::pwn"), "{text}");

    // JSON: the same names, escaped the same way; every thread still judged.
    let (run, r) = run_and_stop(
        "hostile-json",
        &[bin.to_str().unwrap()],
        "1s",
        "1s",
        RUN_TIMEOUT,
    );
    assert_stalled(&run, &r);
    assert_clean_output("JSON report", serde_json::to_string(&r).unwrap().as_bytes());
    let names: Vec<String> = threads(&r)
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    for want in [
        r"\xff\xfebad-utf8",
        r"\x1b[31mred\x1b[0m",
        r"\x0a::error::pwn",
        r"ééééééé\xc3",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    assert_eq!(flagged_names(&r).len(), 4, "{}", describe(&r));
    let _ = std::fs::remove_dir_all(&dir);
    for e in std::fs::read_dir("/tmp").unwrap().flatten() {
        if e.file_name()
            .to_string_lossy()
            .starts_with("stallprobe-hostile-")
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The same process watched through `--pid`: a name that is not UTF-8 is no reason to think it
/// exited.
#[test]
fn a_non_utf8_name_does_not_look_like_an_exit() {
    require_root();
    let w = Workload::start(
        &mut Command::new(build_c("hostile_names")),
        Duration::from_secs(30),
    );
    let (run, r) = attach_and_stop(
        "hostile-attach",
        &w,
        "1s",
        Duration::from_millis(800),
        RUN_TIMEOUT,
    );
    assert_stalled(&run, &r);
    assert_eq!(r["target"]["exited"], false, "{}", r["target"]);
    assert_eq!(r["target"]["comm"], r"\xff\xfebad-utf8");
}

/// Output files are written atomically, never through a symlink someone planted, and under sudo
/// belong to the user who ran it.
#[test]
fn output_files_refuse_symlinks_and_are_replaced_atomically() {
    require_root();
    let dir = scratch("outputs");
    let victim = dir.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let link = dir.join("report.json");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let sleeper = Workload::start(
        Command::new("sh").args(["-c", "echo ready; exec sleep 60"]),
        Duration::from_secs(10),
    );
    let pid = sleeper.pid().to_string();
    for flag in ["-o", "--junit", "--summary", "--pprof", "--flamegraph"] {
        let run = stallprobe(
            &[
                "--pid",
                &pid,
                "--duration",
                "1s",
                flag,
                link.to_str().unwrap(),
            ],
            RUN_TIMEOUT,
        );
        assert_eq!(run.code, 2, "{flag} to a symlink: exit 2\n{}", run.stderr);
        assert!(
            run.stderr.contains("symlink") && run.stderr.contains(link.to_str().unwrap()),
            "{flag}: says why: {}",
            run.stderr
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert!(link.is_symlink(), "the link is left as it was");
    }
    // Not a regular file (a FIFO someone put there): refused too, without blocking.
    let fifo = dir.join("fifo.xml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let run = stallprobe(
        &[
            "--pid",
            &pid,
            "--duration",
            "1s",
            "--junit",
            fifo.to_str().unwrap(),
        ],
        RUN_TIMEOUT,
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("not a regular file"), "{}", run.stderr);

    // A regular file is replaced whole; under sudo stallprobe becomes the invoking user once
    // attached, so the file is that user's (here nobody's, writing in a directory of theirs).
    let mine = dir.join("nobody");
    std::fs::create_dir_all(&mine).unwrap();
    nix::unistd::chown(&mine, Some(65534.into()), Some(65534.into())).unwrap();
    let out = mine.join("good.json");
    std::fs::write(&out, "old").unwrap();
    let mut cmd = Command::new(stallprobe_bin());
    cmd.args(["--pid", &pid, "--duration", "1s", "--format", "json", "-o"])
        .arg(&out)
        .env("SUDO_UID", "65534")
        .env("SUDO_GID", "65534");
    let run = run_with_timeout(&mut cmd, RUN_TIMEOUT);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        serde_json::from_str::<Value>(&text).is_ok(),
        "whole JSON: {text}"
    );
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&out).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (65534, 65534),
        "owned by SUDO_UID/SUDO_GID"
    );
    assert!(
        std::fs::read_dir(&mine)
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().contains(".stallprobe-tmp")),
        "no temporary file left"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A perf map the target chose — a FIFO, a huge file, a symlink out of its root — neither
/// blocks nor bloats stallprobe; the report says it was skipped.
#[test]
fn perf_maps_the_target_chooses_are_read_safely() {
    require_root();
    let bin = build_c("deadlock");
    for kind in ["fifo", "huge", "symlink"] {
        let w = Workload::start(Command::new(&bin).arg("--ready"), Duration::from_secs(30));
        let map = PathBuf::from(format!("/tmp/perf-{}.map", w.pid()));
        let _ = std::fs::remove_file(&map);
        match kind {
            "fifo" => {
                nix::unistd::mkfifo(&map, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap()
            }
            "huge" => {
                let f = std::fs::File::create(&map).unwrap();
                f.set_len(1 << 30).unwrap(); // 1 GiB, sparse
            }
            _ => std::os::unix::fs::symlink("/etc/shadow", &map).unwrap(),
        }
        let start = Instant::now();
        let run = stallprobe(
            &[
                "--pid",
                &w.pid().to_string(),
                "--duration",
                "2s",
                "--format",
                "json",
            ],
            RUN_TIMEOUT,
        );
        let _ = std::fs::remove_file(&map);
        assert_eq!(run.code, 0, "{kind}: {}", run.stderr);
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{kind}: stallprobe did not hang on the perf map"
        );
        let r = run.json();
        let rss = r["session"]["peak_rss_kb"].as_u64().unwrap();
        assert!(rss < 200 * 1024, "{kind}: peak RSS {rss} kB");
        assert!(
            r["notes"].to_string().contains("perf map"),
            "{kind}: the report says the perf map was skipped: {}",
            r["notes"]
        );
    }
}

/// 1,100 idle connections to the metrics endpoint: the sidecar goes on watching (it neither
/// runs out of file descriptors nor mistakes the target for gone) and still serves metrics.
#[test]
fn idle_metrics_connections_do_not_stop_the_watching() {
    require_root();
    let w = Workload::start(
        Command::new(build_c("deadlock")).arg("--ready"),
        Duration::from_secs(30),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut sp = Command::new(stallprobe_bin())
        .args(["watch", "--pid", &w.pid().to_string(), "--grace", "1s"])
        .args(["--metrics-addr", &addr, "--format", "json", "--quiet"])
        .env("STALLPROBE_JOURNAL_SOCKET", "/nonexistent")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the endpoint.
    let t = Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(t.elapsed() < Duration::from_secs(30), "no metrics endpoint");
        std::thread::sleep(Duration::from_millis(100));
    }
    // This test process may need more fds than its default limit.
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 4096, 4096);
    let idle: Vec<std::net::TcpStream> = (0..1100)
        .filter_map(|_| std::net::TcpStream::connect(&addr).ok())
        .collect();
    assert!(idle.len() >= 1000, "opened {} connections", idle.len());
    std::thread::sleep(Duration::from_secs(2));
    // The verdict still comes when the target is stopped.
    w.signal(nix::sys::signal::Signal::SIGTERM);
    std::thread::sleep(Duration::from_secs(4));
    drop(idle);
    // And metrics are still served.
    let mut body = String::new();
    let got = std::net::TcpStream::connect(&addr).and_then(|mut s| {
        use std::io::Write;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
        s.read_to_string(&mut body)
    });
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sp.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let st = sp.wait().unwrap();
    let mut out = String::new();
    sp.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let mut err = String::new();
    sp.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(
        got.is_ok() && body.contains("stallprobe_processes"),
        "{got:?} {body}\n{err}"
    );
    assert_eq!(st.code(), Some(0), "{err}");
    let r: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    assert_eq!(
        r["verdict"], "stalled",
        "the episode was judged: {}",
        r["summary"]
    );
}

/// `sudo stallprobe run -- CMD` runs CMD as the user who ran sudo (files it makes are theirs),
/// and `--as-root` keeps root for commands that need it.
#[test]
fn under_sudo_run_starts_the_command_as_the_invoking_user() {
    require_root();
    let dir = scratch("sudo-run");
    nix::unistd::chown(&dir, Some(65534.into()), Some(65534.into())).unwrap();
    for (extra, want_uid) in [(None, "65534"), (Some("--as-root"), "0")] {
        let made = dir.join(format!("made-by-{want_uid}"));
        let report = dir.join(format!("report-{want_uid}.json"));
        let script = format!("id -u > {0}; id -g >> {0}", made.display());
        let mut cmd = Command::new(stallprobe_bin());
        cmd.args(["run", "--format", "json", "-o"]).arg(&report);
        if let Some(flag) = extra {
            cmd.arg(flag);
        }
        cmd.args(["--", "sh", "-c", &script])
            .env("SUDO_UID", "65534")
            .env("SUDO_GID", "65534");
        let run = run_with_timeout(&mut cmd, RUN_TIMEOUT);
        assert_eq!(run.code, 0, "{extra:?}: {}", run.stderr);
        let ids = std::fs::read_to_string(&made).unwrap();
        let want = if want_uid == "0" {
            "0\n0\n"
        } else {
            "65534\n65534\n"
        };
        assert_eq!(ids, want, "{extra:?}: the command ran as uid/gid {ids:?}");
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&made).unwrap();
        assert_eq!(
            meta.uid().to_string(),
            want_uid,
            "{extra:?}: owner of what CMD made"
        );
        // The report is the invoking user's either way.
        let meta = std::fs::metadata(&report).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (65534, 65534),
            "{extra:?}: report owner"
        );
        assert_eq!(
            meta.mode() & 0o022,
            0,
            "{extra:?}: report not writable by others"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The capabilities in the `CapEff:` line of /proc/PID/status.
fn effective_caps(pid: u32) -> Option<(u64, String)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    let caps = u64::from_str_radix(&field("CapEff:")?, 16).ok()?;
    Some((caps, field("Uid:")?))
}

/// Once attached, an attaching stallprobe keeps only what reading the target needs: under sudo
/// it is the invoking user, with CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH and CAP_CHECKPOINT_RESTORE
/// (CAP_BPF too on kernels before 6.5 where bpf() needs it for every map read) — and it still
/// finds the deadlock.
#[test]
fn attached_stallprobe_keeps_only_what_it_needs() {
    require_root();
    let w = Workload::start(
        &mut Command::new(build_c("foundation")),
        Duration::from_secs(30),
    );
    let sp = Command::new(stallprobe_bin())
        .args([
            "--pid",
            &w.pid().to_string(),
            "--duration",
            "6s",
            "--format",
            "json",
        ])
        .env("SUDO_UID", "65534")
        .env("SUDO_GID", "65534")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let mut seen = None;
    while t.elapsed() < Duration::from_secs(30) {
        match effective_caps(sp.id()) {
            Some((caps, uid)) if uid.starts_with("65534") => {
                seen = Some((caps, uid));
                break;
            }
            Some(_) => std::thread::sleep(Duration::from_millis(20)),
            None => break,
        }
    }
    let out = sp.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (caps, uid) = seen.unwrap_or_else(|| panic!("stallprobe never became uid 65534: {stderr}"));
    assert_eq!(
        uid.split_whitespace().collect::<Vec<_>>(),
        ["65534"; 4],
        "real, effective, saved and fs uid"
    );
    const DAC_READ_SEARCH: u64 = 1 << 2;
    const SYS_PTRACE: u64 = 1 << 19;
    const BPF: u64 = 1 << 39;
    const CHECKPOINT_RESTORE: u64 = 1 << 40;
    let allowed = DAC_READ_SEARCH | SYS_PTRACE | CHECKPOINT_RESTORE | BPF;
    assert_eq!(caps & !allowed, 0, "kept more than it needs: {caps:#x}");
    assert_eq!(
        caps & SYS_PTRACE,
        SYS_PTRACE,
        "CAP_SYS_PTRACE kept: {caps:#x}"
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Reading lock words and stacks still works with what was kept.
    assert_eq!(
        r["deadlocks"].as_array().map(Vec::len),
        Some(1),
        "the mutex deadlock is still found: {}",
        r["deadlocks"]
    );
}
