//! Errors that stop stallprobe from doing its job. Each one says what went wrong and what to do
//! about it, and maps to exit code 2 (exit codes 0 and 1 are verdicts, see `crate::verdict`).

use thiserror::Error;

/// Exit code when stallprobe itself could not do its job.
pub const EXIT_ERROR: i32 = 2;

#[derive(Debug, Error)]
pub enum StallError {
    #[error("no process with pid {pid}{}", if *.exited { " (it exited)" } else { "" })]
    NoSuchProcess { pid: u32, exited: bool },

    #[error("{what}: missing {}\n  hint: {hint}", missing.join(", "))]
    Permission {
        what: String,
        missing: Vec<&'static str>,
        hint: String,
    },

    #[error("this kernel lacks {what}: {detail}\n  hint: {hint}")]
    KernelFeature {
        what: String,
        detail: String,
        hint: String,
    },

    #[error(
        "tracefs is not mounted and could not be mounted at /sys/kernel/tracing: {detail}\n  hint: mount it with `mount -t tracefs tracefs /sys/kernel/tracing`, or use the default --hook fentry, which does not need it"
    )]
    Tracefs { detail: String },

    #[error("the kernel refused to {action}: {detail}{}", hint.as_ref().map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
    Load {
        action: String,
        detail: String,
        hint: Option<String>,
    },

    #[error("could not drop privileges after attaching: {detail}\n  hint: {hint}")]
    Privileges { detail: String, hint: String },

    #[error("{0}")]
    Usage(String),

    #[error("cannot start `{cmd}`: {detail}")]
    Spawn { cmd: String, detail: String },

    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl StallError {
    pub fn exit_code(&self) -> i32 {
        EXIT_ERROR
    }
}
