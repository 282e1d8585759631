//! The bench workloads (C programs in tests/workloads/bench/, protocol in bench.h): building
//! them, starting a target with its load generator, and reading its throughput.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use super::proc::{Pipes, Proc};
use crate::util;

/// Programs built from tests/workloads/bench/*.c.
const PROGRAMS: [&str; 10] = [
    "pingpong",
    "mutex",
    "getppid",
    "yield",
    "epoll_server",
    "epoll_client",
    "udp_recv",
    "udp_send",
    "many_threads",
    "ignore_term",
];

/// Connections the epoll load generator keeps busy (one request in flight on each).
const EPOLL_CONNS: u32 = 8;
/// Sender threads of the UDP load generator: two keep the receiver busy on this 2-CPU VM
/// (with one, the receiver mostly waits for the sender).
const UDP_SENDERS: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    Pingpong,
    Mutex,
    Epoll,
    Udp,
    /// No tool watches it: what a syscall costs everyone else.
    Getppid,
    /// No tool watches it: what a context switch costs everyone else.
    Yield,
}

impl Workload {
    pub const ALL: [Workload; 6] = [
        Workload::Pingpong,
        Workload::Mutex,
        Workload::Epoll,
        Workload::Udp,
        Workload::Getppid,
        Workload::Yield,
    ];

    /// A process no tool watches (the tools watch an idle process): it measures what a tool
    /// costs the rest of the host.
    pub fn unrelated(self) -> bool {
        matches!(self, Workload::Getppid | Workload::Yield)
    }

    pub fn name(self) -> &'static str {
        match self {
            Workload::Pingpong => "pingpong",
            Workload::Mutex => "mutex",
            Workload::Epoll => "epoll",
            Workload::Udp => "udp",
            Workload::Getppid => "getppid",
            Workload::Yield => "yield",
        }
    }

    /// One line on what it does and what one op is.
    pub fn describe(self) -> String {
        match self {
            Workload::Pingpong => {
                "2 threads pinned to CPU 0 passing a token through 2 futexes; op = round trip"
                    .into()
            }
            Workload::Mutex => {
                "8 threads, one pthread mutex + condvar work queue; op = item processed".into()
            }
            Workload::Epoll => format!(
                "1-thread epoll TCP echo server, {EPOLL_CONNS} loopback connections from a separate client; op = round trip"
            ),
            Workload::Udp => format!(
                "1-thread recvfrom loop, {UDP_SENDERS} sender threads in a separate process; op = datagram received"
            ),
            Workload::Getppid => {
                "1 thread calling getppid in a loop, not watched (tools watch an idle process); op = call"
                    .into()
            }
            Workload::Yield => {
                "2 threads pinned to CPU 0 calling sched_yield, not watched (tools watch an idle process); op = call"
                    .into()
            }
        }
    }

    /// `--only pingpong,udp` -> those workloads, in the canonical order.
    pub fn select(only: Option<&str>) -> Result<Vec<Workload>> {
        let Some(only) = only else {
            return Ok(Workload::ALL.to_vec());
        };
        let mut picked = Vec::new();
        for name in only.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match Workload::ALL.iter().find(|w| w.name() == name) {
                Some(w) => picked.push(*w),
                None => bail!(
                    "unknown workload `{name}` in --only (known: {})",
                    Workload::ALL.map(|w| w.name()).join(", ")
                ),
            }
        }
        if picked.is_empty() {
            bail!("--only names no workload");
        }
        Ok(Workload::ALL
            .into_iter()
            .filter(|w| picked.contains(w))
            .collect())
    }

    /// Start the target (and its load generator), both set up and waiting for the go byte.
    pub fn start(self, bins: &Path, secs: f64) -> Result<Running> {
        let secs = format!("{secs}");
        let (prog, driver) = match self {
            Workload::Pingpong => ("pingpong", None),
            Workload::Mutex => ("mutex", None),
            Workload::Epoll => ("epoll_server", Some(("epoll_client", EPOLL_CONNS))),
            Workload::Udp => ("udp_recv", Some(("udp_send", UDP_SENDERS))),
            Workload::Getppid => ("getppid", None),
            Workload::Yield => ("yield", None),
        };
        let mut target = Proc::spawn(
            prog,
            Command::new(bins.join(prog)).arg(&secs),
            Pipes {
                stdin: true,
                stdout: true,
                stderr: true,
            },
        )?;
        let ready = target.stdout_line("ready", Duration::from_secs(20))?;
        let kv = parse_kv(&ready);
        let driver = match driver {
            None => None,
            Some((name, n)) => {
                let port =
                    *kv.get("port")
                        .context("the target's ready line has no port")? as u16;
                let mut d = Proc::spawn(
                    name,
                    Command::new(bins.join(name))
                        .arg(port.to_string())
                        .arg(n.to_string()),
                    Pipes {
                        stdin: true,
                        stdout: true,
                        stderr: true,
                    },
                )?;
                d.stdout_line("ready", Duration::from_secs(20))?;
                Some(d)
            }
        };
        Ok(Running { target, driver })
    }
}

/// A started workload: the probed target and its load generator, if it has one.
pub struct Running {
    pub target: Proc,
    pub driver: Option<Proc>,
}

/// What a workload reported at the end of its measured window.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Measurement {
    pub ops: u64,
    pub secs: f64,
    pub ops_per_sec: f64,
    /// Anything else the workload printed (e.g. pingpong's `futex_per_op`).
    pub extra: BTreeMap<String, f64>,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.target.pid()
    }

    /// Our processes (so they are not mistaken for someone else's tracers).
    pub fn pids(&self) -> Vec<u32> {
        let mut v = vec![self.target.pid()];
        v.extend(self.driver.as_ref().map(|d| d.pid()));
        v
    }

    /// Start the measured window: the target first (it starts its clock after a warm-up),
    /// then the load generator.
    pub fn go(&mut self) -> Result<()> {
        self.target.send_go()?;
        if let Some(d) = self.driver.as_mut() {
            d.send_go()?;
        }
        Ok(())
    }

    /// Wait for the target's result line.
    pub fn result(&mut self, secs: f64) -> Result<Measurement> {
        let timeout = Duration::from_secs_f64(secs + 30.0);
        let line = self.target.stdout_line("ops=", timeout)?;
        let mut kv = parse_kv(&line);
        let mut take = |k: &str| {
            kv.remove(k)
                .with_context(|| format!("no {k}= in the result line `{line}`"))
        };
        let ops = take("ops")? as u64;
        let secs = take("secs")?;
        let ops_per_sec = take("ops_per_sec")?;
        if ops == 0 {
            bail!("the workload made no progress (`{line}`)");
        }
        Ok(Measurement {
            ops,
            secs,
            ops_per_sec,
            extra: kv,
        })
    }

    /// Freeze both processes (SIGSTOP) once the window is over: the target stays alive for the
    /// tool to detach from, but the host goes quiet. Detaching syscall tracepoints waits for an
    /// RCU-tasks-trace grace period per probe, which busy workloads can stretch past 15 s.
    pub fn freeze(&mut self) {
        if let Some(d) = self.driver.as_mut() {
            d.signal(libc::SIGSTOP);
        }
        self.target.signal(libc::SIGSTOP);
    }

    /// Kill and reap both processes.
    pub fn stop(mut self) {
        if let Some(mut d) = self.driver.take() {
            d.kill();
        }
        self.target.kill();
    }
}

/// `key=value` pairs of a line, numeric values only.
pub fn parse_kv(line: &str) -> BTreeMap<String, f64> {
    line.split_whitespace()
        .filter_map(|w| {
            let (k, v) = w.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Where the built programs go.
pub fn bin_dir() -> PathBuf {
    util::root().join("target/workloads/bench")
}

/// Build every bench program with `gcc -O2 -g -pthread` (sources: tests/workloads/bench/).
pub fn build() -> Result<PathBuf> {
    let src = util::root().join("tests/workloads/bench");
    let out = bin_dir();
    std::fs::create_dir_all(&out)?;
    for name in PROGRAMS {
        util::run(
            Command::new("gcc")
                .args(["-O2", "-g", "-pthread", "-Wall", "-Werror", "-o"])
                .arg(out.join(name))
                .arg(src.join(format!("{name}.c"))),
        )?;
    }
    println!("  {} ({})", out.display(), PROGRAMS.join(", "));
    Ok(out)
}
