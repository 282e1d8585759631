//! `stallprobe --pid N`: attach to a running process, watch until Ctrl-C, `--duration`, its
//! exit, or the grace period after a shutdown signal; then report.

use std::time::Instant;

use super::{
    event_loop::{self, Mode, StopSignals, drop_privileges, one_shot_end},
    options::CommonOptions,
};
use crate::{error::StallError, procfs, session::Session, verdict};

struct PidMode {
    duration_end: Option<Instant>,
}

impl Mode for PidMode {
    fn deadline(&self) -> Option<Instant> {
        self.duration_end
    }

    fn tick(
        &mut self,
        session: &mut Session,
        _event_fired: bool,
    ) -> Result<Option<verdict::EndReason>, StallError> {
        Ok(one_shot_end(session, self.duration_end))
    }
}

pub async fn run(opts: CommonOptions, pid: u32) -> Result<i32, StallError> {
    let session_opts = opts.session_options()?;
    if !procfs::process_exists(pid) {
        return Err(StallError::NoSuchProcess { pid, exited: false });
    }
    let mut stops = StopSignals::install()?;
    let mut session = Session::attach(session_opts)?;
    // Nothing of the target is read before the privileges are dropped.
    drop_privileges(&[])?;
    session.add_process(pid).map_err(|e| match e {
        StallError::NoSuchProcess { pid, .. } => StallError::NoSuchProcess { pid, exited: true },
        other => other,
    })?;
    if !opts.quiet {
        let comm = procfs::read_comm(pid, pid).unwrap_or_default();
        eprintln!(
            "stallprobe: watching pid {pid} ({comm}), threshold {}; {}",
            humantime::format_duration(opts.threshold),
            match opts.duration {
                Some(d) => format!("for {}", humantime::format_duration(d)),
                None => "Ctrl-C to stop and report".into(),
            }
        );
    }
    let mut mode = PidMode {
        duration_end: opts.duration.map(|d| Instant::now() + d),
    };
    let end = event_loop::run(&mut session, &opts, &mut mode, &mut stops).await?;
    let report = session.finish(end);
    opts.output.write(&report)?;
    Ok(verdict::exit_code(report.verdict))
}
