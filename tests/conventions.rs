//! Command-line conventions, through the real binary: `--version` (commit, hooks), completions
//! and man pages from the clap definition, colour (`--color`, `NO_COLOR`), the one-line status
//! of a long watch on a terminal (and none off a terminal), and GitHub annotations for stacks
//! outside the workspace.
//!
//! A terminal is a pseudo-terminal from util-linux's `script`, which copies everything written
//! to it (stallprobe's stdout and stderr) to its own stdout.

use std::{process::Command, time::Duration};

use stallprobe_tests::*;

const T: Duration = Duration::from_secs(90);

#[test]
fn version_names_the_commit_and_the_hooks() {
    let run = run_with_timeout(Command::new(stallprobe_bin()).arg("--version"), T);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    let v = &run.stdout;
    assert!(v.starts_with("stallprobe 0."), "{v}");
    assert!(
        v.contains(&format!("(commit {head}")),
        "not HEAD {head}: {v}"
    );
    assert!(v.contains("BPF hooks in the embedded object:"), "{v}");
    for hook in ["fentry, fexit:", "__x64_sys_futex", "tp_btf:", "iter: task"] {
        assert!(v.contains(hook), "no {hook:?} in {v}");
    }
}

#[test]
fn completions_and_man_pages_come_from_the_options() {
    let bin = stallprobe_bin();
    for (shell, marker) in [
        ("bash", "complete -F _stallprobe"),
        ("zsh", "#compdef stallprobe"),
        ("fish", "complete -c stallprobe"),
    ] {
        let run = run_with_timeout(Command::new(&bin).args(["completions", shell]), T);
        assert_eq!(run.code, 0, "{shell}: {}", run.stderr);
        assert!(run.stdout.contains(marker), "{shell}: {}", run.stdout);
        assert!(run.stdout.contains("stop-after"), "{shell}: {}", run.stdout);
        assert!(run.stdout.contains("html"), "{shell}: {}", run.stdout);
    }
    let bad = run_with_timeout(Command::new(&bin).args(["completions", "tcsh"]), T);
    assert_eq!(bad.code, 2);

    let dir = workload_dir().join(format!("man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = run_with_timeout(Command::new(&bin).arg("manpages").arg(&dir), T);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let man = run_with_timeout(
        Command::new("man")
            .args(["-P", "cat", "-l"])
            .arg(dir.join("stallprobe-run.1"))
            .env("MANWIDTH", "100"),
        T,
    );
    assert_eq!(man.code, 0, "{}", man.stderr);
    assert!(man.stdout.contains("--stop-after"), "{}", man.stdout);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `stallprobe ARGS` on a pseudo-terminal: everything it wrote there.
fn on_terminal(args: &str, env: &[(&str, &str)]) -> Run {
    let mut c = Command::new("script");
    c.args([
        "-qfec",
        &format!("{} {args}", stallprobe_bin().display()),
        "/dev/null",
    ]);
    c.env_remove("NO_COLOR");
    for (k, v) in env {
        c.env(k, v);
    }
    run_with_timeout(&mut c, T)
}

fn has_colour(s: &str) -> bool {
    // An SGR sequence: ESC [ digits/semicolons m.
    s.split("\x1b[").skip(1).any(|rest| {
        let end = rest.find(|c: char| !c.is_ascii_digit() && c != ';');
        end.is_some_and(|i| rest[i..].starts_with('m'))
    })
}

/// Status lines (`… N threads watched in 1 process, B blocked, F flagged`) in what went to
/// the terminal, as (watched, blocked, flagged).
fn status_lines(out: &str) -> Vec<(u64, u64, u64)> {
    out.split("\r\x1b[2K")
        .filter_map(|seg| {
            let seg = strip_sgr(seg);
            let rest = seg.split("s] ").nth(1)?;
            let (watched, rest) = rest.split_once(" thread")?;
            let rest = rest.split_once(" process")?.1;
            let blocked = rest.split(", ").nth(1)?.strip_suffix(" blocked")?;
            let flagged = rest.split(", ").nth(2)?.split(' ').next()?;
            Some((
                watched.parse().ok()?,
                blocked.parse().ok()?,
                flagged.parse().ok()?,
            ))
        })
        .collect()
}

fn strip_sgr(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.split("\x1b[");
    out.push_str(it.next().unwrap_or(""));
    for part in it {
        match part.find('m') {
            Some(i) if part[..i].chars().all(|c| c.is_ascii_digit() || c == ';') => {
                out.push_str(&part[i + 1..])
            }
            _ => {
                out.push_str("\x1b[");
                out.push_str(part)
            }
        }
    }
    out
}

#[test]
fn a_long_watch_shows_a_status_line_on_a_terminal_only() {
    require_root();
    let bin = build_c("deadlock");
    let w = Workload::start(Command::new(&bin).arg("--ready"), T);
    let args = format!("--pid {} --duration 3s", w.pid());

    // On a terminal: the status line, redrawn; the two deadlocked lockers blocked and flagged;
    // colour in the report.
    let tty = on_terminal(&args, &[]);
    let statuses = status_lines(&tty.stdout);
    assert!(
        statuses.len() >= 3,
        "status redrawn each interval: {statuses:?}\n{:?}",
        tty.stdout
    );
    assert!(
        statuses
            .iter()
            .any(|&(watched, blocked, flagged)| watched >= 3 && blocked >= 2 && flagged >= 2),
        "{statuses:?}"
    );
    assert!(has_colour(&tty.stdout), "{:?}", tty.stdout);
    // The report does not start on the status line: it was erased first (what a terminal
    // shows of a line is what follows its last carriage return).
    let plain = strip_sgr(&tty.stdout);
    let header = plain
        .lines()
        .find(|l| l.contains(" · threshold "))
        .unwrap_or_else(|| panic!("no report header: {plain:?}"));
    let visible = header.trim_end_matches('\r').rsplit('\r').next().unwrap();
    let visible = visible.replace("\x1b[2K", "");
    assert!(
        visible.starts_with(&format!("stallprobe pid {} ", w.pid())),
        "{visible:?}"
    );

    // NO_COLOR and --color never: no colour, the status line still there.
    for (extra, env) in [("", vec![("NO_COLOR", "1")]), (" --color never", vec![])] {
        let run = on_terminal(&format!("{args}{extra}"), &env);
        assert!(
            !has_colour(&run.stdout),
            "{extra} {env:?}: {:?}",
            run.stdout
        );
        assert!(!status_lines(&run.stdout).is_empty(), "{extra} {env:?}");
    }

    // Not a terminal (a log): no status line, no erase codes; colour only when asked for.
    let piped = stallprobe(&["--pid", &w.pid().to_string(), "--duration", "2s"], T);
    assert!(!piped.stderr.contains("watched in"), "{}", piped.stderr);
    assert!(!piped.stderr.contains('\r'), "{:?}", piped.stderr);
    assert!(!has_colour(&piped.stdout) && !has_colour(&piped.stderr));
    let always = stallprobe(
        &[
            "--pid",
            &w.pid().to_string(),
            "--duration",
            "2s",
            "--color",
            "always",
        ],
        T,
    );
    assert!(has_colour(&always.stdout), "{}", always.stdout);
    assert!(!always.stderr.contains("watched in"));
}

#[test]
fn annotations_without_a_workspace_frame_still_fail_the_run() {
    require_root();
    let bin = build_c("deadlock");
    let out = report_path("annotations-outside");
    let mut c = Command::new(stallprobe_bin());
    c.args([
        "run",
        "--stop-after",
        "1s",
        "--grace",
        "2s",
        "--format",
        "json",
        "-o",
    ])
    .arg(&out)
    .arg("--")
    .arg(&bin)
    .env("GITHUB_ACTIONS", "true")
    // The workload's sources are not in this workspace.
    .env("GITHUB_WORKSPACE", "/nonexistent/workspace")
    .env_remove("GITHUB_STEP_SUMMARY")
    .current_dir("/");
    let run = run_with_timeout(&mut c, T);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let errors: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("::error"))
        .collect();
    assert_eq!(errors.len(), 3, "one per flagged thread: {errors:#?}");
    for name in ["locker-a", "locker-b", "main"] {
        let want = format!("::error title=stallprobe%3A thread {name} stalled::");
        assert!(
            errors.iter().any(|l| l.starts_with(&want)),
            "no {want:?} in {errors:#?}"
        );
    }
    assert!(errors.iter().all(|l| !l.contains("file=")), "{errors:#?}");
    let _ = std::fs::remove_file(&out);
}
