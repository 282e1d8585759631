//! The guest side of the kernel matrix: `xtask guest-run PLAN`, run inside the guest (this same
//! binary, over the shared root). Each step runs alone; OUT/results.json is rewritten after
//! every step, so a guest that dies still leaves what it did.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{GUEST_HELLO, HookResult, Plan, Results, StepResult, TEST_TIMEOUT};
use crate::util;

fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// `xtask guest-run PLAN`, inside the guest: run the plan, write OUT/results.json after every
/// step, exit 1 when anything failed.
pub fn guest_run(plan_path: &Path) -> Result<()> {
    let up = uptime();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    println!("{GUEST_HELLO}: kernel {release}, {up:.1} s after boot");
    let plan: Plan = serde_json::from_str(&std::fs::read_to_string(plan_path)?)?;
    let started = Instant::now();
    let mut res = Results {
        release,
        uptime_at_start_secs: up,
        ..Default::default()
    };
    let save = |res: &Results| -> Result<()> {
        let p = plan.out.join("results.json");
        std::fs::write(&p, serde_json::to_string_pretty(res)?)?;
        Ok(())
    };
    save(&res)?;
    let logs = plan.out.join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut loaded = Vec::new();
    for h in &plan.hooks {
        let r = probe_hook(&plan, &h.name);
        println!(
            "stallprobe-guest: hook {}: {}",
            h.name,
            match &r {
                Ok(()) => "loads".to_string(),
                Err(e) => format!("does not load: {e}"),
            }
        );
        if r.is_ok() {
            loaded.push(h.name.clone());
        }
        res.hooks.push(HookResult {
            name: h.name.clone(),
            loaded: r.is_ok(),
            required: h.required,
            error: r.err().map(|e| format!("{e:#}")),
        });
        save(&res)?;
    }
    for st in plan.steps.iter().skip(plan.skip_steps) {
        if st.hook.as_ref().is_some_and(|h| !loaded.contains(h)) {
            continue;
        }
        let hook = st.hook.as_deref().unwrap_or("auto");
        let log_name = format!("{hook}-{}.log", st.name.replace("::", "-"));
        let log = logs.join(&log_name);
        println!("stallprobe-guest: {} ({hook}) ...", st.name);
        let t = Instant::now();
        let passed = match &st.bin {
            Some(bin) => run_test(&plan, bin, &st.name, st.hook.as_deref(), &log),
            None => run_demo(&plan, st.hook.as_deref(), &log),
        }
        .unwrap_or_else(|e| {
            let _ = std::fs::write(&log, format!("runner error: {e:#}\n"));
            false
        });
        let secs = t.elapsed().as_secs_f64();
        println!(
            "stallprobe-guest: {} ({hook}): {} in {secs:.0} s",
            st.name,
            if passed { "ok" } else { "FAILED" }
        );
        if !passed {
            // The end of the log, on the console too.
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            for l in &lines[lines.len().saturating_sub(40)..] {
                println!("    | {l}");
            }
        }
        res.steps.push(StepResult {
            name: st.name.clone(),
            hook: st.hook.clone(),
            passed,
            secs,
            log: format!("logs/{log_name}"),
        });
        save(&res)?;
    }
    res.total_secs = started.elapsed().as_secs_f64();
    res.finished = true;
    save(&res)?;
    let failed = res.steps.iter().filter(|s| !s.passed).count()
        + res.hooks.iter().filter(|h| h.required && !h.loaded).count();
    println!(
        "stallprobe-guest: done in {:.0} s, {failed} failure(s)",
        res.total_secs
    );
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// A process killed and reaped on drop.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run `cmd` to its end (killed after `timeout`), output into `log`.
fn run_logged(cmd: &mut Command, log: &Path, timeout: Duration) -> Result<Option<i32>> {
    let f = std::fs::File::create(log)?;
    cmd.stdout(f.try_clone()?).stderr(f).stdin(Stdio::null());
    let mut child = Reaped(cmd.spawn().with_context(|| format!("running {cmd:?}"))?);
    let start = Instant::now();
    loop {
        if let Some(st) = child.0.try_wait()? {
            return Ok(st.code());
        }
        if start.elapsed() > timeout {
            let _ = child.0.kill();
            let _ = child.0.wait();
            let mut f = std::fs::OpenOptions::new().append(true).open(log)?;
            std::io::Write::write_all(
                &mut f,
                format!("\nkilled after {} s\n", timeout.as_secs()).as_bytes(),
            )?;
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Does `--hook NAME` load here? One short watch of an idle process.
fn probe_hook(plan: &Plan, hook: &str) -> Result<()> {
    let sleeper = Reaped(Command::new("sleep").arg("600").spawn()?);
    let report = plan.out.join(format!("hook-{hook}.json"));
    let log = plan.out.join(format!("hook-{hook}.log"));
    let code = run_logged(
        Command::new(&plan.stallprobe)
            .args(["--hook", hook, "--pid"])
            .arg(sleeper.0.id().to_string())
            .args(["--duration", "1s", "--format", "json", "--quiet", "-o"])
            .arg(&report),
        &log,
        Duration::from_secs(300),
    )?;
    drop(sleeper);
    if code != Some(0) {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        bail!(
            "stallprobe --hook {hook} exited {code:?}: {}",
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .take(6)
                .collect::<Vec<_>>()
                .join(" / ")
        );
    }
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report)?)?;
    if r["session"]["hook"] != hook {
        bail!("the report says session.hook {}", r["session"]["hook"]);
    }
    Ok(())
}

fn run_test(plan: &Plan, bin: &Path, name: &str, hook: Option<&str>, log: &Path) -> Result<bool> {
    let test = name.split_once("::").map_or(name, |(_, t)| t);
    let mut cmd = Command::new(bin);
    cmd.args([test, "--exact", "--test-threads=1", "--nocapture"])
        .current_dir(util::root())
        .env("STALLPROBE_BIN", &plan.stallprobe)
        .env("STALLPROBE_TEST_SLOWDOWN", plan.slowdown.to_string())
        .env("STALLPROBE_TEST_AUTO_HOOK", &plan.auto_hook)
        .env("RUST_BACKTRACE", "1");
    match hook {
        Some(h) => cmd.env("STALLPROBE_TEST_HOOK", h),
        None => cmd.env_remove("STALLPROBE_TEST_HOOK"),
    };
    let code = run_logged(&mut cmd, log, TEST_TIMEOUT)?;
    // A filter that matched nothing would pass too: make sure the test ran.
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let ran = text.contains("test result: ok. 1 passed");
    Ok(code == Some(0) && ran)
}

/// The demo as `cargo xtask demo` runs it: `stallprobe run --stop-after 2s --grace 2s --
/// demo_service`; it must exit 1 with `worker-2` (stuck in read) and `demo_service` (joining
/// it) flagged, the entry probe must have seen worker-2's read start, the exit probe must have
/// timed a wait that SIGTERM ended (a slow call with a stack), and the report must name the hook.
fn run_demo(plan: &Plan, hook: Option<&str>, log: &Path) -> Result<bool> {
    let report = log.with_extension("json");
    let mut cmd = Command::new(&plan.stallprobe);
    cmd.arg("run");
    if let Some(h) = hook {
        cmd.args(["--hook", h]);
    }
    cmd.args([
        "--stop-after",
        "2s",
        "--grace",
        "2s",
        "--format",
        "json",
        "-o",
    ])
    .arg(&report)
    .arg("--")
    .arg(&plan.demo);
    let code = run_logged(&mut cmd, log, TEST_TIMEOUT)?;
    let mut problems = Vec::new();
    if code != Some(1) {
        problems.push(format!("exit {code:?}, expected 1 (stalled)"));
    }
    match std::fs::read_to_string(&report)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    {
        None => problems.push("no JSON report".into()),
        Some(r) => {
            if r["verdict"] != "stalled" {
                problems.push(format!("verdict {}", r["verdict"]));
            }
            let mut flagged: Vec<&str> = r["threads"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|t| t["flagged"] == true)
                        .filter_map(|t| t["name"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            flagged.sort();
            if flagged != ["demo_service", "worker-2"] {
                problems.push(format!(
                    "flagged {flagged:?}, expected demo_service and worker-2"
                ));
            }
            // The probes fire: the entry probe saw the stuck read start (not only the task
            // iterator), and the exit probe timed the waits that SIGTERM ended, with a stack.
            let worker2 = r["threads"]
                .as_array()
                .and_then(|a| a.iter().find(|t| t["name"] == "worker-2"));
            if worker2.is_none_or(|t| t["blocked_since"] != "probe") {
                problems.push(format!(
                    "worker-2 blocked_since {}, expected probe",
                    worker2.map_or(serde_json::Value::Null, |t| t["blocked_since"].clone())
                ));
            }
            let timed = r["slow_calls"].as_array().is_some_and(|a| {
                a.iter().any(|c| {
                    c["duration_ms"].as_f64().unwrap_or(0.0) >= 1000.0
                        && c["stack"].as_array().is_some_and(|s| !s.is_empty())
                })
            });
            if !timed {
                problems.push(format!(
                    "no slow call of 1 s or more with a stack: {}",
                    r["slow_calls"]
                ));
            }
            let want = hook.unwrap_or(&plan.auto_hook);
            if r["session"]["hook"] != want {
                problems.push(format!(
                    "session.hook {}, expected {want}",
                    r["session"]["hook"]
                ));
            }
        }
    }
    let mut f = std::fs::OpenOptions::new().append(true).open(log)?;
    let verdict = if problems.is_empty() {
        "demo: ok\n".to_string()
    } else {
        format!("demo: FAILED: {}\n", problems.join("; "))
    };
    std::io::Write::write_all(&mut f, verdict.as_bytes())?;
    Ok(problems.is_empty())
}
