//! Child processes for the bench: spawn with piped output, wait for a line with a timeout,
//! stop with a signal, and always kill + reap on drop (so an error anywhere leaves nothing
//! behind). Plus the few /proc and clock readings the bench needs.

use std::{
    io::{BufRead, BufReader, Read, Write},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::mpsc::{Receiver, RecvTimeoutError, channel},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// The lines a child writes on one stream, read by a background thread.
pub struct Lines {
    rx: Receiver<String>,
    /// Every line received so far (for error messages and after-the-fact checks).
    pub seen: Vec<String>,
    closed: bool,
}

impl Lines {
    fn new(stream: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
            closed: false,
        }
    }

    /// The first line (from now on) that satisfies `want`; `None` when the stream ends first.
    pub fn wait_for(
        &mut self,
        want: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<Option<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.closed {
                return Ok(None);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return Ok(Some(line));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => self.closed = true,
                Err(RecvTimeoutError::Timeout) => bail!("no such line within {timeout:?}"),
            }
        }
    }

    /// Collect what is left until the stream ends (or `timeout`).
    pub fn finish(&mut self, timeout: Duration) {
        let _ = self.wait_for(|_| false, timeout);
    }

    /// The last few lines seen, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let from = self.seen.len().saturating_sub(n);
        self.seen[from..].join("\n")
    }
}

/// A child process that is killed and reaped when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    pub stdout: Option<Lines>,
    pub stderr: Option<Lines>,
    status: Option<ExitStatus>,
}

/// Which of the child's streams to pipe (the others go to /dev/null; stdin is piped whenever
/// `stdin` is set, so that the child can be given the go byte).
#[derive(Clone, Copy, Default)]
pub struct Pipes {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, pipes: Pipes) -> Result<Proc> {
        let io = |piped: bool| if piped { Stdio::piped() } else { Stdio::null() };
        let mut child = cmd
            .stdin(io(pipes.stdin))
            .stdout(io(pipes.stdout))
            .stderr(io(pipes.stderr))
            .spawn()
            .with_context(|| format!("starting {name} ({cmd:?})"))?;
        Ok(Proc {
            name: name.to_string(),
            stdin: child.stdin.take(),
            stdout: child.stdout.take().map(Lines::new),
            stderr: child.stderr.take().map(Lines::new),
            child,
            status: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Write one byte on the child's stdin (the bench workloads' go signal).
    pub fn send_go(&mut self) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin is not piped")?;
        stdin
            .write_all(b"g")
            .and_then(|_| stdin.flush())
            .with_context(|| format!("sending the go byte to {}", self.name))
    }

    /// Wait for a stdout line starting with `prefix`.
    pub fn stdout_line(&mut self, prefix: &str, timeout: Duration) -> Result<String> {
        let name = self.name.clone();
        let out = self.stdout.as_mut().context("stdout is not piped")?;
        match out.wait_for(|l| l.starts_with(prefix), timeout) {
            Ok(Some(l)) => Ok(l),
            Ok(None) => bail!(
                "{name} ended its output without a `{prefix}` line ({}){}",
                self.describe_exit(),
                self.stderr_tail()
            ),
            Err(e) => bail!("{name}: waiting for `{prefix}`: {e}{}", self.stderr_tail()),
        }
    }

    /// Wait for a stderr line containing `needle`.
    pub fn stderr_line(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let name = self.name.clone();
        let err = self.stderr.as_mut().context("stderr is not piped")?;
        match err.wait_for(|l| l.contains(needle), timeout) {
            Ok(Some(l)) => Ok(l),
            Ok(None) => bail!(
                "{name} exited before saying `{needle}` ({}){}",
                self.describe_exit(),
                self.stderr_tail()
            ),
            Err(e) => bail!("{name}: waiting for `{needle}`: {e}{}", self.stderr_tail()),
        }
    }

    fn stderr_tail(&self) -> String {
        match &self.stderr {
            Some(l) if !l.seen.is_empty() => format!("; its stderr:\n{}", l.tail(8)),
            _ => String::new(),
        }
    }

    fn describe_exit(&mut self) -> String {
        match self.try_wait() {
            Some(st) => st.to_string(),
            None => "still running".into(),
        }
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    pub fn signal(&mut self, sig: libc::c_int) {
        if self.try_wait().is_none() {
            // SAFETY: kill(2) on our own, not yet reaped, child.
            unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        }
    }

    /// Wait up to `timeout` for the child to exit; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Send `sig`, wait up to `timeout` for the exit, then SIGKILL. Returns the exit status and
    /// whether it had to be killed.
    pub fn stop(&mut self, sig: libc::c_int, timeout: Duration) -> (ExitStatus, bool) {
        self.signal(sig);
        if let Some(st) = self.wait_timeout(timeout) {
            return (st, false);
        }
        (self.kill(), true)
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(st) = self.try_wait() {
            return st;
        }
        let _ = self.child.kill();
        let st = self.child.wait().expect("waiting for a child we spawned");
        self.status = Some(st);
        st
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stdin.take();
        self.kill();
    }
}

/// CLOCK_MONOTONIC in ns: the clock the C workloads print, comparable across processes.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// utime + stime of a process (all its threads), in seconds.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised comm: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clk_tck())
}

/// Host CPU use over a run, split into ours and everyone else's.
pub struct HostCpu {
    /// user + nice + system ticks of all CPUs (irq/softirq excluded: they are not charged to
    /// processes either), and steal ticks.
    busy_ticks: u64,
    steal_ticks: u64,
    ours_secs: f64,
    at: Instant,
}

/// How busy the host was during a run, besides our own processes.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct HostLoad {
    /// CPU time of every other process, in % of one CPU.
    pub others_cpu_pct: f64,
    /// Time the hypervisor ran something else, in % of one CPU.
    pub steal_pct: f64,
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

impl HostCpu {
    pub fn now(ours: &[u32]) -> HostCpu {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let f: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let at = |i: usize| f.get(i).copied().unwrap_or(0);
        HostCpu {
            busy_ticks: at(0) + at(1) + at(2),
            steal_ticks: at(7),
            ours_secs: ours.iter().filter_map(|&p| cpu_secs(p)).sum(),
            at: Instant::now(),
        }
    }

    /// From `self` to `later`.
    pub fn load_until(&self, later: &HostCpu) -> HostLoad {
        let wall = later.at.duration_since(self.at).as_secs_f64().max(1e-3);
        let busy = later.busy_ticks.saturating_sub(self.busy_ticks) as f64 / clk_tck();
        let ours = later.ours_secs - self.ours_secs;
        let steal = later.steal_ticks.saturating_sub(self.steal_ticks) as f64 / clk_tck();
        HostLoad {
            others_cpu_pct: (100.0 * (busy - ours) / wall).max(0.0),
            steal_pct: 100.0 * steal / wall,
        }
    }
}

/// Wait until the host is quiet: other processes using less than `max_pct` % of one CPU over
/// a 200 ms look. Gives up after `budget`; returns how long it waited beyond the first look.
pub fn wait_for_quiet(max_pct: f64, budget: Duration) -> Duration {
    const LOOK: Duration = Duration::from_millis(200);
    let t0 = Instant::now();
    let me = [std::process::id()];
    loop {
        let a = HostCpu::now(&me);
        std::thread::sleep(LOOK);
        let load = a.load_until(&HostCpu::now(&me));
        let waited = t0.elapsed().saturating_sub(LOOK);
        if load.others_cpu_pct < max_pct || waited >= budget {
            return waited;
        }
    }
}

/// A `kB` field of /proc/PID/status (VmRSS, VmHWM, ...), in bytes.
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// The top `n` functions of each thread's kernel stack, e.g. `__wait_rcu_gp <- ...`.
pub fn kernel_stack(pid: u32, n: usize) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return "gone".into();
    };
    let mut out = Vec::new();
    for t in tasks.flatten() {
        let stack = std::fs::read_to_string(t.path().join("stack")).unwrap_or_default();
        let frames: Vec<&str> = stack
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .map(|f| f.split('+').next().unwrap_or(f))
            .take(n)
            .collect();
        if !frames.is_empty() {
            out.push(frames.join(" <- "));
        }
    }
    out.sort();
    out.dedup();
    if out.is_empty() {
        "running in user space".into()
    } else {
        out.join(" | ")
    }
}

/// The syscall number a process's main thread is in (None: running, or unreadable).
pub fn current_syscall(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// One BPF map a process holds an fd on, from /proc/PID/fdinfo.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MapInfo {
    pub map_id: u64,
    pub map_type: u64,
    pub max_entries: u64,
    pub memlock: u64,
}

/// The BPF maps behind a process's fds (each map once, even when several fds point at it).
pub fn bpf_maps(pid: u32) -> Vec<MapInfo> {
    let mut maps: Vec<MapInfo> = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return maps;
    };
    for e in dir.flatten() {
        let Ok(info) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let field = |name: &str| -> Option<u64> {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse().ok())
        };
        let (Some(map_type), Some(memlock)) = (field("map_type"), field("memlock")) else {
            continue;
        };
        let map_id = field("map_id").unwrap_or(0);
        if map_id != 0 && maps.iter().any(|m| m.map_id == map_id) {
            continue;
        }
        maps.push(MapInfo {
            map_id,
            map_type,
            max_entries: field("max_entries").unwrap_or(0),
            memlock,
        });
    }
    maps.sort_by_key(|m| m.map_id);
    maps
}

/// Other tracers running on the host (not started by us): they add probe overhead to every
/// configuration, the baseline included, so their presence is recorded with each run.
pub fn foreign_tracers(ours: &[u32]) -> Vec<String> {
    const TRACERS: [&str; 6] = [
        "stallprobe",
        "bpftrace",
        "offcputime",
        "perf",
        "strace",
        "ltrace",
    ];
    let mut found = Vec::new();
    for pid in crate::util::pids().filter(|p| !ours.contains(p)) {
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
            continue;
        };
        let comm = comm.trim();
        if TRACERS.contains(&comm) {
            found.push(format!("{pid} {comm}"));
        }
    }
    found.sort();
    found
}
