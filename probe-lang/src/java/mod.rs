//! HotSpot JVM thread dumps from outside: the attach protocol client ([`attach_command`]) and
//! a parser of the dump ([`parse_thread_dump`]).

pub mod attach;
pub mod dump;

pub use attach::{AttachError, AttachReply, attach_command};
pub use dump::{
    Deadlock, DeadlockLink, JavaFrame, JavaThread, Lock, LockKind, LockLine, Source, ThreadDump,
    Wait, parse_thread_dump,
};

pub use crate::ns::ns_tid_map;
use std::path::PathBuf;
use std::time::Duration;

/// `jstack -l`: the thread dump with locks, parsed (and the raw text, for the report).
pub fn thread_dump(pid: u32, timeout: Duration) -> Result<(ThreadDump, AttachReply), AttachError> {
    let reply = attach_command(pid, "threaddump", &["-l"], timeout)?;
    let mut dump = parse_thread_dump(&reply.text);
    if reply.truncated {
        dump.notes.push(format!(
            "the dump was longer than {} MiB and was cut",
            attach::MAX_OUTPUT >> 20
        ));
    }
    Ok((dump, reply))
}

/// `jcmd PID Compiler.perfmap`: the JVM writes `/tmp/perf-<NSPID>.map` (in its own /tmp) with
/// its JIT-compiled methods. Returns that file's path as seen from here
/// (`/proc/PID/root/tmp/perf-<NSPID>.map`).
pub fn write_perf_map(pid: u32, timeout: Duration) -> Result<PathBuf, AttachError> {
    attach_command(pid, "jcmd", &["Compiler.perfmap"], timeout)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| AttachError::NoProcess(format!("process {pid}: {e}")))?;
    let ns_pid = attach::parse_status(pid, &status).ns_pid;
    let path = PathBuf::from(format!("/proc/{pid}/root/tmp/perf-{ns_pid}.map"));
    if !path.exists() {
        return Err(AttachError::Io(format!(
            "Compiler.perfmap answered but {} does not exist",
            path.display()
        )));
    }
    Ok(path)
}
