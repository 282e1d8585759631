//! The CI exports, end to end: the real stallprobe binary runs a workload with `--junit`,
//! `--summary`, `--pprof`, `--flamegraph` (and `--format folded`) as a GitHub Actions job would
//! (`GITHUB_ACTIONS=true`, `GITHUB_WORKSPACE`, `GITHUB_STEP_SUMMARY`), and each output is read
//! by what consumes it: junitparser for the JUnit XML, `go tool pprof` for the profile, an XML
//! parser for the SVG, the workload's own source for the annotations' lines.
//!
//! Needs root (real probes), Debian's /usr/bin/python3 with python3-junitparser, and go:
//! `cargo xtask setup` installs them.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use stallprobe_tests::*;

const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const DEADLOCK_SRC: &str = "tests/workloads/c/deadlock.c";

/// Fresh paths for one run's exports, under `target/workloads/exports/<tag>-<pid>/` (left there
/// to look at when a test fails).
struct Outputs {
    dir: PathBuf,
    junit: PathBuf,
    summary: PathBuf,
    step_summary: PathBuf,
    pprof: PathBuf,
    flamegraph: PathBuf,
}

impl Outputs {
    fn new(tag: &str) -> Outputs {
        let dir = workload_dir()
            .join("exports")
            .join(format!("{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // Not created here: stallprobe creates the directories of its output files.
        Outputs {
            junit: dir.join("junit.xml"),
            summary: dir.join("summary.md"),
            step_summary: dir.join("step-summary.md"),
            pprof: dir.join("blocked.pb.gz"),
            flamegraph: dir.join("offcpu.svg"),
            dir,
        }
    }

    fn args(&self) -> Vec<String> {
        [
            ("--junit", &self.junit),
            ("--summary", &self.summary),
            ("--pprof", &self.pprof),
            ("--flamegraph", &self.flamegraph),
        ]
        .iter()
        .flat_map(|(flag, p)| [flag.to_string(), p.to_str().unwrap().to_string()])
        .collect()
    }
}

/// What a run printed on stdout: the `::` workflow commands and the rest (the report).
struct Stdout {
    commands: Vec<String>,
    report: String,
}

fn split_stdout(s: &str) -> Stdout {
    let (commands, report): (Vec<&str>, Vec<&str>) = s.lines().partition(|l| l.starts_with("::"));
    Stdout {
        commands: commands.into_iter().map(str::to_string).collect(),
        report: report.join("\n"),
    }
}

/// `stallprobe run --stop-after 2s --grace 2s <exports> --format json -- cmd` as a GitHub
/// Actions step in this repository. `$GITHUB_STEP_SUMMARY` already holds an earlier step's
/// summary, which must stay.
fn run_as_github_step(tag: &str, cmd: &[&str]) -> (Run, Stdout, Value, Outputs) {
    require_root();
    let out = Outputs::new(tag);
    std::fs::create_dir_all(&out.dir).unwrap();
    std::fs::write(&out.step_summary, "earlier step\n").unwrap();
    let mut c = Command::new(stallprobe_bin());
    c.args(["run", "--stop-after", "2s", "--grace", "2s"])
        .args(out.args())
        .args(["--format", "json", "--"])
        .args(cmd)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_WORKSPACE", repo_root())
        .env("GITHUB_STEP_SUMMARY", &out.step_summary)
        .current_dir("/");
    let run = run_with_timeout(&mut c, RUN_TIMEOUT);
    let stdout = split_stdout(&run.stdout);
    let report: Value = serde_json::from_str(&stdout.report).unwrap_or_else(|e| {
        panic!(
            "no JSON report on stdout ({e}); exit {}\nstdout:\n{}\nstderr:\n{}",
            run.code, run.stdout, run.stderr
        )
    });
    (run, stdout, report, out)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `check_exports.py KIND FILE` with Debian's python3 (where python3-junitparser lives).
fn check(kind: &str, file: &Path) -> Value {
    let script = repo_root().join("tests/harness/check_exports.py");
    let o = Command::new("/usr/bin/python3")
        .arg(&script)
        .arg(kind)
        .arg(file)
        .output()
        .expect("run /usr/bin/python3 (installed by `cargo xtask setup`)");
    assert!(
        o.status.success(),
        "{kind} check of {} failed (is python3-junitparser installed? `cargo xtask setup`):\n{}",
        file.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The one `<testsuite>` of a JUnit report, checked to be what stallprobe promises.
fn junit_suite(file: &Path) -> Value {
    let j = check("junit", file);
    let suites = j["suites"].as_array().unwrap();
    assert_eq!(suites.len(), 1, "one testsuite: {j}");
    let s = suites[0].clone();
    assert_eq!(s["name"], "stallprobe", "{s}");
    assert_eq!(
        s["declared"], s["counted"],
        "declared and counted statistics agree"
    );
    s
}

/// Sample values of `go tool pprof -raw FILE`, with the whole output.
fn pprof_samples(file: &Path) -> (Vec<u64>, String) {
    let o = Command::new("go")
        .args(["tool", "pprof", "-raw"])
        .arg(file)
        .env("HOME", workload_dir())
        .env("PPROF_TMPDIR", workload_dir())
        .output()
        .expect("run go tool pprof (golang-go, installed by `cargo xtask setup`)");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "go tool pprof -raw {} failed:\n{}\n{text}",
        file.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        text.contains("blocked/milliseconds"),
        "sample type blocked/milliseconds:\n{text}"
    );
    // Samples:
    // blocked/milliseconds[dflt]
    //        4001: 1 2 3 ...
    //                 call:[futex] ...
    let mut values = Vec::new();
    let mut in_samples = false;
    for line in text.lines() {
        if line.starts_with("Samples:") {
            in_samples = true;
            continue;
        }
        if line.starts_with("Locations") {
            break;
        }
        if !in_samples {
            continue;
        }
        if let Some((v, rest)) = line.trim().split_once(':')
            && let Ok(v) = v.parse::<u64>()
            && rest.trim().split(' ').all(|id| id.parse::<u64>().is_ok())
        {
            values.push(v);
        }
    }
    (values, text)
}

/// The weight the profile exports give a thread of a JSON report (see
/// `stallprobe::export::weight_ms`): blocked ms for blocked and sleeping threads, at least 1 for
/// flagged ones, nothing for the others.
fn weight(t: &Value) -> Option<u64> {
    let state = t["state"].as_str().unwrap_or("");
    let blocked = match state {
        "blocked" | "sleeping" => t["blocked_ms"].as_u64().unwrap_or(0),
        _ => 0,
    };
    if t["flagged"] == true && state != "exited" {
        Some(blocked.max(1))
    } else {
        (blocked > 0).then_some(blocked)
    }
}

fn total_weight(report: &Value) -> u64 {
    threads(report).iter().filter_map(weight).sum()
}

/// 1-based line of the first line containing `needle` after the first containing `after`.
fn source_line(src: &str, after: &str, needle: &str) -> u32 {
    let start = src
        .lines()
        .position(|l| l.contains(after))
        .unwrap_or_else(|| panic!("no {after:?} in the source"));
    let i = src
        .lines()
        .skip(start)
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no {needle:?} after {after:?} in the source"));
    (start + i + 1) as u32
}

/// GitHub's escaping of a workflow command's message.
fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

#[test]
fn stalled_run_writes_every_export() {
    let bin = build_c("deadlock");
    let (run, stdout, r, out) = run_as_github_step("deadlock", &[bin.to_str().unwrap()]);

    // The verdict, as without the exports.
    assert_stalled(&run, &r);
    assert_flagged_exactly(&r, &["locker-a", "locker-b", "main"]);
    let flagged: Vec<&Value> = threads(&r)
        .iter()
        .filter(|t| t["flagged"] == true)
        .collect();

    // JUnit: one failing test case per flagged thread, read by junitparser.
    let suite = junit_suite(&out.junit);
    assert_eq!(suite["declared"]["tests"], 3, "{suite}");
    assert_eq!(suite["declared"]["failures"], 3, "{suite}");
    assert_eq!(suite["declared"]["errors"], 0, "{suite}");
    assert_eq!(suite["properties"]["verdict"], "stalled");
    let cases = suite["cases"].as_array().unwrap();
    assert_eq!(cases.len(), flagged.len());
    for t in &flagged {
        let name = format!("tid {} ({})", t["tid"], t["name"].as_str().unwrap());
        let case = cases
            .iter()
            .find(|c| c["name"] == name.as_str())
            .unwrap_or_else(|| panic!("no test case {name:?}: {suite}"));
        assert_eq!(case["classname"], r["target"]["comm"], "{case}");
        let results = case["results"].as_array().unwrap();
        assert_eq!(results.len(), 1, "{case}");
        assert_eq!(results[0]["kind"], "failure", "{case}");
        assert_eq!(results[0]["message"], t["reason"], "{case}");
        let body = results[0]["text"].as_str().unwrap();
        assert!(
            body.starts_with(t["reason"].as_str().unwrap()),
            "the body starts with the reason: {body}"
        );
        // The symbolized user stack (with file and line) and the kernel stack.
        let app = if t["name"] == "main" {
            "shutdown_and_join"
        } else {
            "take_second_lock"
        };
        assert!(
            body.contains(app) && body.contains("deadlock.c:"),
            "user stack in the body: {body}"
        );
        // The kernel stack, when /proc had one for the thread.
        if let Some(k) = t["kernel_stack"].as_array().and_then(|k| k.first()) {
            let f = k["function"].as_str().unwrap();
            assert!(
                body.contains(&format!("kernel stack:\n  {f}\n")),
                "kernel stack in the body: {body}"
            );
        }
    }

    // Markdown summary: written to --summary and appended to $GITHUB_STEP_SUMMARY.
    let md = read(&out.summary);
    assert!(md.contains("stalled"), "{md}");
    assert!(
        md.contains("| tid | name | call | waits on | for | reason |"),
        "{md}"
    );
    for t in &flagged {
        let row = format!("| {} | {} | futex |", t["tid"], t["name"].as_str().unwrap());
        assert!(md.contains(&row), "no row {row:?} in\n{md}");
    }
    assert_eq!(md.matches("<details>").count(), 3, "{md}");
    assert!(md.contains("take_second_lock"), "{md}");
    let step = read(&out.step_summary);
    assert!(
        step.starts_with("earlier step\n"),
        "appended, not overwritten"
    );
    assert!(step.ends_with(&format!("{md}\n")), "{step}");

    // Annotations at the line where each locker waits: the pthread_mutex_lock call of
    // take_second_lock (each locker's second lock); main at its pthread_join.
    let src = read(&repo_root().join(DEADLOCK_SRC));
    let lock_line = source_line(&src, "void take_second_lock(", "pthread_mutex_lock(");
    let join_line = source_line(&src, "int shutdown_and_join(", "pthread_join(");
    assert_eq!(
        stdout.commands.len(),
        3,
        "one annotation per flagged thread: {:#?}",
        stdout.commands
    );
    for t in &flagged {
        let name = t["name"].as_str().unwrap();
        let line = if name == "main" { join_line } else { lock_line };
        let want = format!(
            "::error file={DEADLOCK_SRC},line={line},title=stallprobe%3A thread {name} stalled::{}",
            escape_data(t["reason"].as_str().unwrap())
        );
        assert!(
            stdout.commands.contains(&want),
            "no {want:?} in {:#?}",
            stdout.commands
        );
    }

    // pprof: go tool pprof loads it; one sample per included thread; the total is the blocked
    // time.
    let (values, raw) = pprof_samples(&out.pprof);
    let included = threads(&r).iter().filter(|t| weight(t).is_some()).count();
    assert_eq!(values.len(), included, "{raw}");
    assert_eq!(values.iter().sum::<u64>(), total_weight(&r), "{raw}");
    let blocked: u64 = flagged
        .iter()
        .map(|t| t["blocked_ms"].as_u64().unwrap())
        .sum();
    assert!(
        values.iter().sum::<u64>() >= blocked,
        "the flagged threads' blocked time is in the total"
    );
    for t in &flagged {
        assert!(
            raw.contains(&format!("thread:[{}]", t["name"].as_str().unwrap())),
            "label thread:[{}] in\n{raw}",
            t["name"]
        );
    }
    for label in [
        "call:[futex]",
        "flagged:[true]",
        "role:[app]",
        "state:[blocked]",
    ] {
        assert!(raw.contains(label), "label {label} in\n{raw}");
    }
    assert!(
        raw.contains("take_second_lock /") && raw.contains("deadlock.c:"),
        "locations with file and line:\n{raw}"
    );

    // The flame graph: XML, with the flagged threads' own functions.
    let svg = check("svg", &out.flamegraph);
    assert_eq!(svg["root"], "{http://www.w3.org/2000/svg}svg");
    let titles = svg["titles"].to_string();
    for f in [
        "locker_a",
        "locker_b",
        "take_second_lock",
        "shutdown_and_join",
    ] {
        assert!(titles.contains(f), "{f} in the SVG's frames: {titles}");
    }
    assert!(
        svg["texts"]
            .to_string()
            .contains("stallprobe: blocked time (ms)"),
        "title: {}",
        svg["texts"]
    );
}

#[test]
fn clean_run_writes_a_passing_junit_and_no_annotation() {
    let bin = build_c("clean_shutdown");
    let (run, stdout, r, out) = run_as_github_step("clean", &[bin.to_str().unwrap()]);
    assert_clean(&run, &r);
    assert!(stdout.commands.is_empty(), "{:#?}", stdout.commands);

    let suite = junit_suite(&out.junit);
    assert_eq!(suite["declared"]["tests"], 1, "{suite}");
    assert_eq!(suite["declared"]["failures"], 0, "{suite}");
    assert_eq!(suite["declared"]["errors"], 0, "{suite}");
    let case = &suite["cases"][0];
    assert_eq!(case["name"], "shutdown", "{suite}");
    assert_eq!(case["classname"], r["target"]["comm"], "{suite}");
    assert_eq!(case["results"], serde_json::json!([]), "passing: {suite}");
    assert_eq!(suite["properties"]["verdict"], "clean");

    let md = read(&out.summary);
    assert!(
        md.contains("clean") && md.contains("No thread flagged."),
        "{md}"
    );
    assert!(read(&out.step_summary).starts_with("earlier step\n"));

    // Everything exited: the profile and the flame graph are empty, but valid.
    let (values, raw) = pprof_samples(&out.pprof);
    assert_eq!(values.iter().sum::<u64>(), total_weight(&r), "{raw}");
    let svg = check("svg", &out.flamegraph);
    assert_eq!(svg["root"], "{http://www.w3.org/2000/svg}svg");
}

#[test]
fn pid_mode_folded_stacks_agree_with_the_profile() {
    require_root();
    let bin = build_c("deadlock");
    let w = Workload::start(Command::new(&bin).arg("--ready"), Duration::from_secs(20));
    let out = Outputs::new("pid-folded");
    let folded = out.dir.join("stacks.folded");
    let pid = w.pid().to_string();
    // No shutdown signal: a watch of 2 s, verdict "observed", exit 0.
    let mut c = Command::new(stallprobe_bin());
    c.args([
        "--pid",
        &pid,
        "--duration",
        "2s",
        "--format",
        "folded",
        "-o",
    ])
    .arg(&folded)
    .args(out.args())
    .env_remove("GITHUB_ACTIONS")
    .env_remove("GITHUB_STEP_SUMMARY");
    let run = run_with_timeout(&mut c, RUN_TIMEOUT);
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    assert_eq!(run.stdout, "", "the report went to -o, no annotations");

    // Folded: `name;outermost;...;innermost;kernel_[k]... ms`.
    let text = read(&folded);
    let lines: Vec<&str> = text.lines().collect();
    let mut total = 0;
    for name in ["locker-a", "locker-b"] {
        let l = lines
            .iter()
            .find(|l| l.starts_with(&format!("{name};")))
            .unwrap_or_else(|| panic!("no stack of {name} in\n{text}"));
        let (stack, ms) = l.rsplit_once(' ').unwrap();
        let frames: Vec<&str> = stack.split(';').collect();
        let func = if name == "locker-a" {
            "locker_a"
        } else {
            "locker_b"
        };
        let at = |f: &str| frames.iter().position(|x| *x == f);
        let (outer, inner) = (at(func), at("take_second_lock"));
        assert!(
            outer.is_some() && inner.is_some() && outer < inner,
            "{func} before (outside) take_second_lock: {l}"
        );
        // Kernel frames (when /proc had them), after every user frame.
        if let Some(k) = frames.iter().position(|f| f.ends_with("_[k]")) {
            assert!(
                frames[k..].iter().all(|f| f.ends_with("_[k]")),
                "kernel frames last: {l}"
            );
        }
        // Blocked since before the attach: at least the watch.
        assert!(ms.parse::<u64>().unwrap() >= 1500, "{l}");
    }
    for l in &lines {
        let (_, ms) = l.rsplit_once(' ').expect("`stack weight`");
        total += ms.parse::<u64>().expect("an integer weight");
    }

    // The same run's pprof profile has the same total.
    let (values, raw) = pprof_samples(&out.pprof);
    assert_eq!(values.iter().sum::<u64>(), total, "{raw}\nfolded:\n{text}");

    // JUnit without a shutdown signal: the passing `shutdown` case.
    let suite = junit_suite(&out.junit);
    assert_eq!(suite["properties"]["verdict"], "observed");
    assert_eq!(suite["declared"]["failures"], 0, "{suite}");
    assert_eq!(suite["cases"][0]["name"], "shutdown");
    assert!(read(&out.summary).contains("no shutdown signal was seen"));
}

#[test]
fn an_export_that_cannot_be_written_is_exit_code_2_before_watching() {
    let dir = workload_dir().join("exports");
    std::fs::create_dir_all(&dir).unwrap();
    let dir_s = dir.to_str().unwrap();
    for args in [
        vec!["--junit", "/proc/self/nope/junit.xml"],
        vec!["--flamegraph", dir_s],
    ] {
        let mut all = vec!["run", "--stop-after", "1s"];
        all.extend(&args);
        all.extend(["--", "sleep", "30"]);
        let run = stallprobe(&all, RUN_TIMEOUT);
        assert_eq!(run.code, 2, "{args:?}: stderr:\n{}", run.stderr);
        assert!(
            run.stderr.contains(args[0]),
            "{args:?}: names the flag: {}",
            run.stderr
        );
        assert!(
            run.elapsed < Duration::from_secs(10),
            "fails before running the command"
        );
    }
}

/// A Go service that does not shut down: the exports name the goroutines, not the idle
/// runtime threads — a failing JUnit case and an annotation per flagged goroutine group (at
/// the goroutine's own line), the Markdown table, and goroutine stacks in the profiles.
#[test]
fn go_stall_exports_name_the_goroutines() {
    let bin = build_go_with("select_send", "1.23.9", GoBuild::Plain);
    let (run, stdout, r, out) = run_as_github_step("go-select-send", &[bin.to_str().unwrap()]);
    assert_stalled(&run, &r);
    let groups: Vec<&Value> = goroutine_groups(&r)
        .iter()
        .filter(|g| g["flagged"] == true)
        .collect();
    assert_eq!(groups.len(), 2, "{}", describe_goroutines(&r));
    let worker = groups
        .iter()
        .find(|g| stack_functions(g).iter().any(|f| f == "main.worker"))
        .unwrap_or_else(|| panic!("{}", describe_goroutines(&r)));
    let line = frame(worker, "main.worker").unwrap()["line"]
        .as_u64()
        .unwrap();

    // JUnit: one failing case per flagged thread and per flagged goroutine group.
    let suite = junit_suite(&out.junit);
    let flagged_threads = threads(&r).iter().filter(|t| t["flagged"] == true).count();
    assert_eq!(
        suite["counted"]["failures"].as_u64(),
        Some((flagged_threads + groups.len()) as u64),
        "{suite}"
    );
    let xml = read(&out.junit);
    assert!(
        xml.contains(&format!("main.worker (select_send.go:{line})")),
        "{xml}"
    );

    // The annotation points at the goroutine's blocking statement in the workspace.
    let want = format!(
        "::error file=tests/workloads/go/select_send.go,line={line},title=stallprobe%3A goroutine {} stalled::",
        worker["goids"][0]
    );
    assert!(
        stdout.commands.iter().any(|c| c.starts_with(&want)),
        "{want}\n{:?}",
        stdout.commands
    );

    // Markdown, in the file and appended to the step summary.
    for md in [read(&out.summary), read(&out.step_summary)] {
        assert!(md.contains("#### Flagged goroutines"), "{md}");
        assert!(md.contains("main.worker"), "{md}");
    }

    // Profiles: the goroutine groups are samples, weighted count × waited ms.
    let (values, text) = pprof_samples(&out.pprof);
    let group_weight: u64 = goroutine_groups(&r)
        .iter()
        .map(|g| {
            let waited = g["waiting_ms"].as_u64().unwrap_or(0) * g["count"].as_u64().unwrap();
            if g["flagged"] == true {
                waited.max(g["count"].as_u64().unwrap())
            } else {
                waited
            }
        })
        .sum();
    assert_eq!(
        values.iter().sum::<u64>(),
        total_weight(&r) + group_weight,
        "{text}"
    );
    assert!(text.contains("main.worker"), "{text}");
    let svg = read(&out.flamegraph);
    assert!(svg.contains("main.worker"), "flame graph has the goroutine");
}

/// Python frames read from the interpreter go wherever a stack goes: the JUnit body, the
/// annotation at the `.py` line in the workspace, the Markdown, the profile and the flame graph.
#[test]
fn python_frames_reach_every_export() {
    let script = python_script("py_service");
    let src = "tests/workloads/python/py_service.py";
    let (run, stdout, r, out) =
        run_as_github_step("python", &["/usr/bin/python3.11", script.to_str().unwrap()]);
    assert_stalled(&run, &r);
    let consumer = flagged_thread(&r, "consumer");
    let frame = consumer["stack"]
        .as_array()
        .and_then(|s| s.iter().find(|f| f["function"] == "Consumer.next_job"))
        .unwrap_or_else(|| panic!("no Python frame: {:?}", stack_functions(consumer)));
    assert_eq!(frame["lang"], "python", "{frame}");
    let line = frame["line"].as_u64().unwrap();
    assert_eq!(
        line,
        source_line(
            &read(&repo_root().join(src)),
            "class Consumer",
            "return jobs.get()"
        ) as u64
    );

    let xml = read(&out.junit);
    assert!(
        xml.contains(&format!("Consumer.next_job (py_service.py:{line})")),
        "{xml}"
    );
    let want = format!("::error file={src},line={line},");
    assert!(
        stdout.commands.iter().any(|c| c.starts_with(&want)),
        "{want}\n{:?}",
        stdout.commands
    );
    for md in [read(&out.summary), read(&out.step_summary)] {
        assert!(md.contains("Consumer.next_job"), "{md}");
    }
    let (_, text) = pprof_samples(&out.pprof);
    assert!(text.contains("Consumer.next_job"), "{text}");
    let svg = read(&out.flamegraph);
    assert!(
        svg.contains("Consumer.next_job"),
        "flame graph has the Python frame"
    );
}
