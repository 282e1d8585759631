//! The options every mode takes: how to watch (threshold, grace, hook ...) and what to write
//! (`export::OutputOptions`).

use std::time::Duration;

use clap::Args;

use crate::{
    bpf::HookChoice,
    error::StallError,
    export::OutputOptions,
    session::{RuntimeAttach, SessionOptions},
    signals,
};

#[derive(Args, Debug, Clone)]
pub struct CommonOptions {
    /// A thread blocked this long is listed; a call this slow is reported.
    #[arg(long, default_value = "500ms", value_parser = parse_duration, value_name = "DUR")]
    pub threshold: Duration,

    /// Stop after this long (default: until Ctrl-C or the target exits).
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    pub duration: Option<Duration>,

    /// How often blocked threads are re-checked.
    #[arg(long, default_value = "250ms", value_parser = parse_duration, value_name = "DUR")]
    pub interval: Duration,

    /// After the first shutdown signal, wait this long for the process to exit before the verdict.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DUR")]
    pub grace: Duration,

    /// Signals that mean "shut down" (names or numbers, comma-separated).
    #[arg(long, default_value = signals::DEFAULT_SHUTDOWN, value_name = "SIGS")]
    pub signals: String,

    #[command(flatten)]
    pub output: OutputOptions,

    /// Also watch child processes the target forks (default: only the target itself; its
    /// children are reported as they start).
    #[arg(long)]
    pub follow_children: bool,

    /// Where the blocking-call probes hook in: auto picks fentry (cheapest) when the kernel
    /// allows it, else raw tracepoints; see docs/design.md.
    #[arg(long, value_enum, default_value = "auto")]
    pub hook: HookChoice,

    /// With more live threads than this, the final report has stacks only for threads asleep
    /// past the threshold.
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub max_stacks: usize,

    /// No live lines while watching; only the report.
    #[arg(short, long)]
    pub quiet: bool,

    /// Never attach to a language runtime. By default, a JVM judged stalled is asked for a
    /// thread dump through its attach mechanism (as `jstack` does: this starts its "Attach
    /// Listener" thread) and for a perf map of its JIT code. Python frames are read from
    /// memory and need no attach.
    #[arg(long, conflicts_with = "attach_runtime")]
    pub no_runtime_attach: bool,

    /// Attach to JVM targets for every report, not only when judged stalled (an on-demand
    /// `jstack`, merged into the thread view).
    #[arg(long)]
    pub attach_runtime: bool,

    /// Forward the kernel programs' debug log to stderr.
    #[arg(long, hide = true)]
    pub bpf_log: bool,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>()
        && secs >= 0.0
    {
        return Ok(Duration::from_secs_f64(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 2s, 1m30s)"))
}

impl CommonOptions {
    /// The session's settings; checks the output files first (a typo fails now, not after
    /// minutes of watching).
    pub fn session_options(&self) -> Result<SessionOptions, StallError> {
        if self.interval.is_zero() {
            return Err(StallError::Usage(
                "--interval must be greater than 0".into(),
            ));
        }
        self.output.check_outputs()?;
        Ok(SessionOptions {
            threshold: self.threshold,
            interval: self.interval,
            grace: self.grace,
            shutdown_sigmask: signals::parse_mask(&self.signals)?,
            hook: self.hook,
            follow_children: self.follow_children,
            bpf_log: self.bpf_log,
            max_stacks: self.max_stacks,
            runtime_attach: if self.no_runtime_attach {
                RuntimeAttach::Never
            } else if self.attach_runtime {
                RuntimeAttach::Always
            } else {
                RuntimeAttach::WhenStalled
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("3s").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("soon").is_err());
    }
}
