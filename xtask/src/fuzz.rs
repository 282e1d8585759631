//! `cargo xtask fuzz`: the cargo-fuzz (libFuzzer) targets in `fuzz/`, each for a bounded time;
//! `cargo xtask test --soak` runs them too. cargo-fuzz itself is installed by `cargo xtask
//! setup` ([`missing`]), at a pinned version.
//!
//! Layout (DEVELOPERS.md, "Fuzzing"): `fuzz/fuzz_targets/<target>.rs` (one line each, around
//! `stallprobe::fuzzing::<target>`), the committed seed corpus `fuzz/corpus/<target>/`, inputs
//! that once crashed (kept after the fix) in `fuzz/regressions/<target>/`; libFuzzer's working
//! corpus `fuzz/work/<target>/` and its crash reports `fuzz/artifacts/<target>/` are not
//! committed.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::util::{self, path_with_cargo_bin, step};

/// cargo-fuzz version the targets are run with.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Seconds per target in `cargo xtask test --soak`.
pub const SOAK_SECS: u64 = 60;

/// libFuzzer options for every run: a slow input (a hang) and any single allocation over
/// 512 MiB count as crashes, well above stallprobe's own caps (256 MiB inflated per module).
const LIBFUZZER_OPTS: &[&str] = &[
    "-timeout=30",
    "-rss_limit_mb=2048",
    "-malloc_limit_mb=512",
    "-print_final_stats=1",
];

/// Largest new input `--minimize` adds to the committed corpus (the corpus stays small).
const MAX_NEW_CORPUS_INPUT: u64 = 256 << 10;

fn fuzz_dir() -> PathBuf {
    util::root().join("fuzz")
}

/// `cargo +nightly fuzz …` in the repository root, for the fuzz crate's own workspace. Always
/// with `-O`: cargo-fuzz's default adds debug assertions and overflow checks to every crate,
/// where `fuzz/Cargo.toml` wants them in stallprobe's crates only (third-party crates as they
/// ship, so a finding is something the real binary does).
fn cargo_fuzz(args: &[&str]) -> Command {
    let mut c = Command::new("cargo");
    c.arg("+nightly")
        .arg("fuzz")
        .args(args)
        .current_dir(util::root())
        .env("PATH", path_with_cargo_bin())
        // The fuzz targets need probe-user's library, not its kernel programs.
        .env("AYA_BUILD_SKIP", "1");
    c
}

fn cargo_fuzz_ok() -> bool {
    Command::new("cargo")
        .args(["fuzz", "--version"])
        .env("PATH", path_with_cargo_bin())
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION)
        })
}

fn install_cargo_fuzz() -> Result<()> {
    util::run(
        Command::new("cargo")
            .args([
                "install",
                "cargo-fuzz",
                "--locked",
                "--force",
                "--version",
                &format!("={CARGO_FUZZ_VERSION}"),
            ])
            .env("PATH", path_with_cargo_bin()),
    )
}

/// How setup installs something missing.
pub type Fix = Box<dyn Fn() -> Result<()>>;

/// What `cargo xtask setup` should install for fuzzing: (what, fix), when it is missing.
pub fn missing() -> Option<(String, Fix)> {
    (!cargo_fuzz_ok()).then(|| {
        (
            format!("cargo-fuzz {CARGO_FUZZ_VERSION} (`cargo xtask fuzz`, the soak run)"),
            Box::new(install_cargo_fuzz) as Fix,
        )
    })
}

/// The targets: `fuzz/fuzz_targets/*.rs`, by name, sorted.
pub fn targets() -> Result<Vec<String>> {
    let dir = fuzz_dir().join("fuzz_targets");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".rs")
                .map(str::to_string)
        })
        .collect();
    names.sort();
    Ok(names)
}

/// The line of libFuzzer's output that names the saved crash input, if any.
fn crash_input(output: &str) -> Option<String> {
    output.lines().find_map(|l| {
        let (_, rest) = l.split_once("Test unit written to ")?;
        Some(rest.trim().to_string())
    })
}

/// The final stats libFuzzer printed (`stat::number_of_executed_units: …`), and its last
/// status line (coverage, corpus), for the summary.
fn summary(output: &str) -> String {
    let stat = |key: &str| {
        output.lines().find_map(|l| {
            l.strip_prefix(&format!("stat::{key}:"))
                .map(|v| v.trim().to_string())
        })
    };
    let last = output
        .lines()
        .rev()
        .find(|l| l.starts_with('#') && l.contains("cov:"))
        .map(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "cov:")
                .take(6)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    format!(
        "{} execs, {} exec/s, peak rss {} MB; {last}",
        stat("number_of_executed_units").unwrap_or_else(|| "?".into()),
        stat("average_exec_per_sec").unwrap_or_else(|| "?".into()),
        stat("peak_rss_mb").unwrap_or_else(|| "?".into()),
    )
}

/// Run each target for `secs` seconds (all targets when `only` is empty). A crash (panic,
/// over-allocation, timeout, sanitizer report) fails the run and names the saved input.
/// `minimize`: afterwards, fold the small new inputs that add coverage into `fuzz/corpus/`.
pub fn run(only: &[String], secs: u64, minimize: bool) -> Result<()> {
    if !cargo_fuzz_ok() {
        step(&format!("installing cargo-fuzz {CARGO_FUZZ_VERSION}"));
        install_cargo_fuzz()?;
    }
    let all = targets()?;
    let chosen: Vec<String> = if only.is_empty() {
        all.clone()
    } else {
        for t in only {
            if !all.contains(t) {
                bail!("no fuzz target {t} (there are: {})", all.join(", "));
            }
        }
        only.to_vec()
    };
    step(
        "building the fuzz targets (nightly, libFuzzer, AddressSanitizer; fuzz/Cargo.toml: overflow checks in stallprobe's crates)",
    );
    util::run(&mut cargo_fuzz(&["build", "-O"]))?;
    let mut failed = Vec::new();
    let mut report = Vec::new();
    for t in &chosen {
        step(&format!("fuzzing {t} for {secs} s"));
        let work = fuzz_dir().join("work").join(t);
        let corpus = fuzz_dir().join("corpus").join(t);
        std::fs::create_dir_all(&work)?;
        let mut cmd = cargo_fuzz(&["run", "-O", t]);
        cmd.arg(&work).arg(&corpus);
        let regressions = fuzz_dir().join("regressions").join(t);
        if regressions.is_dir() {
            cmd.arg(&regressions);
        }
        cmd.arg("--")
            .arg(format!("-max_total_time={secs}"))
            .arg(format!("-max_len={}", max_len(&corpus)))
            .args(LIBFUZZER_OPTS)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = cmd
            .output()
            .with_context(|| format!("running cargo fuzz run {t}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let line = format!("{t}: {}", summary(&text));
        println!("  {line}");
        report.push(line);
        if !out.status.success() {
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            let input = crash_input(&text).unwrap_or_else(|| "(no input saved)".into());
            failed.push(format!(
                "{t}: crashed (exit {:?}); input saved at {input}\n    reproduce: AYA_BUILD_SKIP=1 cargo +nightly fuzz run -O {t} {input}\n    after the fix, keep it: cp {input} fuzz/regressions/{t}/ (cargo test replays it)",
                out.status.code()
            ));
        } else if minimize {
            fold_into_corpus(t, &work, &corpus)?;
        }
    }
    step("fuzzing summary");
    for l in &report {
        println!("  {l}");
    }
    if !failed.is_empty() {
        bail!(
            "{} fuzz target(s) crashed:\n  {}",
            failed.len(),
            failed.join("\n  ")
        );
    }
    Ok(())
}

/// libFuzzer's input size limit for a target: its largest seed (at least 4 KiB). libFuzzer's
/// own guess stops at 1 MiB and would cut the Go binaries of `go_binary`'s corpus short.
fn max_len(corpus: &Path) -> u64 {
    std::fs::read_dir(corpus)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok().map(|m| m.len()))
        .max()
        .unwrap_or(0)
        .max(4096)
}

/// Add the inputs of `work` that bring coverage `corpus` lacks (libFuzzer `-merge=1`), up to
/// [`MAX_NEW_CORPUS_INPUT`] bytes each.
fn fold_into_corpus(target: &str, work: &Path, corpus: &Path) -> Result<()> {
    let tmp = fuzz_dir().join("work").join(format!("{target}.merge"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let mut cmd = cargo_fuzz(&["run", "-O", target]);
    cmd.arg(&tmp)
        .arg(corpus)
        .arg(work)
        .args(["--", "-merge=1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    util::run(&mut cmd)?;
    let have: Vec<Vec<u8>> = std::fs::read_dir(corpus)?
        .flatten()
        .filter_map(|e| std::fs::read(e.path()).ok())
        .collect();
    let mut added = 0;
    for e in std::fs::read_dir(&tmp)?.flatten() {
        let small = e.metadata().is_ok_and(|m| m.len() <= MAX_NEW_CORPUS_INPUT);
        let Ok(data) = std::fs::read(e.path()) else {
            continue;
        };
        if small && !have.contains(&data) {
            std::fs::copy(e.path(), corpus.join(e.file_name()))?;
            added += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    println!("  {target}: {added} input(s) added to {}", corpus.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_output() {
        let out = "#1024\tpulse  cov: 812 ft: 2291 corp: 63/40Kb exec/s: 341 rss: 120Mb\n\
                   #2048\tDONE   cov: 830 ft: 2400 corp: 70/44Kb lim: 4096 exec/s: 340 rss: 121Mb\n\
                   ==1== ERROR: libFuzzer: deadly signal\n\
                   artifact_prefix='fuzz/artifacts/procfs/'; Test unit written to fuzz/artifacts/procfs/crash-abc\n\
                   stat::number_of_executed_units: 2048\nstat::average_exec_per_sec:     340\nstat::peak_rss_mb:              121\n";
        assert_eq!(
            crash_input(out).as_deref(),
            Some("fuzz/artifacts/procfs/crash-abc")
        );
        assert_eq!(
            summary(out),
            "2048 execs, 340 exec/s, peak rss 121 MB; cov: 830 ft: 2400 corp: 70/44Kb"
        );
    }
}
