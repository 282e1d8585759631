//! Bad input and missing privileges or kernel features: a clear message and exit code 2,
//! never a panic.

use std::{os::unix::process::CommandExt, process::Command, time::Duration};

use stallprobe_tests::*;

const T: Duration = Duration::from_secs(60);

fn assert_clean_error(run: &Run, needle: &str) {
    assert_eq!(run.code, 2, "exit code; stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains(needle),
        "expected {needle:?} in stderr:\n{}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "panic:\n{}", run.stderr);
}

/// A pid that is not in use.
fn free_pid() -> String {
    let max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (1..max)
        .rev()
        .find(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
        .unwrap()
        .to_string()
}

#[test]
fn no_such_pid() {
    require_root();
    let run = stallprobe(&["--pid", &free_pid(), "--duration", "1s"], T);
    assert_clean_error(&run, "no process with pid");
    assert_clean_error(
        &run,
        "hint: list the processes with their pids: `ps -eo pid,comm,args`",
    );
}

#[test]
fn bad_usage() {
    for args in [
        &["--pid", "abc"][..],
        &["--pid", "1", "--threshold", "soon"],
        &[],
        &["--pid", "1", "--signals", "NOPE", "--duration", "1s"],
        &["--pid", "1", "--format", "xml"],
        &["run"],
    ] {
        let run = stallprobe(args, T);
        assert_eq!(run.code, 2, "{args:?}: stderr:\n{}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{args:?}: {}", run.stderr);
        assert!(
            !run.stderr.trim().is_empty(),
            "{args:?}: says what is wrong"
        );
    }
}

#[test]
fn unknown_command_in_run_mode() {
    require_root();
    let run = stallprobe(&["run", "--", "/nonexistent/command-xyz"], T);
    assert_clean_error(&run, "cannot start");
}

#[test]
fn without_privileges_names_the_capabilities() {
    require_root();
    let mut cmd = Command::new(stallprobe_bin());
    cmd.args(["--pid", "1", "--duration", "1s"])
        .uid(65534)
        .gid(65534);
    let run = run_with_timeout(&mut cmd, T);
    assert_clean_error(&run, "CAP_BPF");
    assert!(run.stderr.contains("CAP_PERFMON"), "{}", run.stderr);
    // The one command that fixes it: this command line under sudo, with the binary's full
    // path (sudo's PATH would not find a binary outside its secure_path).
    let bin = stallprobe_bin();
    let fix = format!(
        "run it as root: sudo {} --pid 1 --duration 1s",
        bin.display()
    );
    assert!(run.stderr.contains(&fix), "no {fix:?} in:\n{}", run.stderr);
}

#[test]
fn kernel_without_btf() {
    require_root();
    let mut cmd = Command::new(stallprobe_bin());
    cmd.args(["--pid", "1", "--duration", "1s"])
        .env("STALLPROBE_BTF", "/nonexistent/vmlinux");
    let run = run_with_timeout(&mut cmd, T);
    assert_clean_error(&run, "BTF");
    assert!(
        run.stderr.contains("CONFIG_DEBUG_INFO_BTF"),
        "{}",
        run.stderr
    );
}

#[test]
fn tracefs_not_mountable() {
    require_root();
    let mut cmd = Command::new(stallprobe_bin());
    cmd.args(["--pid", "1", "--duration", "1s", "--hook", "tracepoint"])
        .env("STALLPROBE_TRACEFS", "/nonexistent/tracing");
    let run = run_with_timeout(&mut cmd, T);
    assert_clean_error(&run, "tracefs");
    // Two ways out, each a command to copy: mount it, or the same command with the default hook.
    assert_clean_error(&run, "`sudo mount -t tracefs tracefs /sys/kernel/tracing`");
    let fix = format!(
        "{} --pid 1 --duration 1s --hook auto",
        stallprobe_bin().display()
    );
    assert!(run.stderr.contains(&fix), "no {fix:?} in:\n{}", run.stderr);
}
