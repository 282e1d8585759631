//! The goroutine reader at scale: stallprobe watching a Go program with 100,000 parked
//! goroutines (tests/workloads/go/many_parked.go, built with the newest Go the setup installs).
//! Measured from stallprobe's own report: the longest read of every goroutine
//! (`session.goroutine_read_ms`) and its peak resident memory (`session.peak_rss_kb`).

use std::{path::PathBuf, process::Command, time::Duration};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{
    proc::{Pipes, Proc},
    report::median,
    tools::Tools,
};
use crate::util;

/// The Go the workload is built with (installed by `cargo xtask setup`).
const GO_VERSION: &str = "1.27.3";

#[derive(Clone, Debug, serde::Serialize)]
pub struct Goroutines {
    pub goroutines: u64,
    pub go_version: String,
    /// The longest read of all goroutines in each run, in ms.
    pub read_ms: Vec<u64>,
    pub read_ms_median: f64,
    /// stallprobe's peak RSS (VmHWM) in each run, in KiB.
    pub peak_rss_kb: Vec<u64>,
    pub peak_rss_kb_max: u64,
}

fn build(go: &std::path::Path) -> Result<PathBuf> {
    let src = util::root().join("tests/workloads/go/many_parked.go");
    let dir = util::root().join("target/bench/go");
    std::fs::create_dir_all(&dir)?;
    let bin = dir.join("many_parked");
    let st = Command::new(go)
        .args(["build", "-o"])
        .arg(&bin)
        .arg(&src)
        .env("GOCACHE", dir.join("cache"))
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("GOTOOLCHAIN", "local")
        .status()
        .with_context(|| format!("running {}", go.display()))?;
    if !st.success() {
        bail!("building {} failed", src.display());
    }
    Ok(bin)
}

pub fn measure(tools: &Tools, goroutines: u64, runs: usize) -> Result<Goroutines> {
    let go = util::cargo_home()
        .join("stallprobe-go")
        .join(GO_VERSION)
        .join("bin/go");
    if !go.exists() {
        bail!("Go {GO_VERSION} is not installed: run `cargo xtask setup`");
    }
    let bin = build(&go)?;
    let mut target = Proc::spawn(
        "many_parked",
        Command::new(&bin).args(["--ready", &goroutines.to_string()]),
        Pipes {
            stdin: false,
            stdout: true,
            stderr: true,
        },
    )?;
    target.stdout_line("ready", Duration::from_secs(60))?;
    let report = tools.scratch.join("goroutines.json");
    let (mut read_ms, mut rss) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let _ = std::fs::remove_file(&report);
        let st = Command::new(&tools.stallprobe)
            .args(["--pid", &target.pid().to_string(), "--duration", "3s"])
            .args(["--quiet", "--format", "json", "-o"])
            .arg(&report)
            .status()?;
        if !st.success() {
            bail!("stallprobe on the goroutine target exited with {st}");
        }
        let r: Value = serde_json::from_str(&std::fs::read_to_string(&report)?)?;
        let total = r["goroutines_total"].as_u64().unwrap_or(0);
        if total < goroutines {
            bail!(
                "stallprobe read {total} goroutines of {goroutines}: {}",
                r["notes"]
            );
        }
        read_ms.push(
            r["session"]["goroutine_read_ms"]
                .as_u64()
                .unwrap_or(u64::MAX),
        );
        rss.push(r["session"]["peak_rss_kb"].as_u64().unwrap_or(0));
    }
    target.kill();
    let samples: Vec<f64> = read_ms.iter().map(|&v| v as f64).collect();
    Ok(Goroutines {
        goroutines,
        go_version: GO_VERSION.into(),
        read_ms_median: median(&samples),
        read_ms,
        peak_rss_kb_max: rss.iter().copied().max().unwrap_or(0),
        peak_rss_kb: rss,
    })
}
