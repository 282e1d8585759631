//! `stallprobe run -- CMD`: start CMD with the probes attached before it execs, forward
//! Ctrl-C/SIGTERM to it, optionally stop it after a while, judge its shutdown, clean up.

use std::{
    ffi::CString,
    os::fd::{AsRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use nix::{
    fcntl::OFlag,
    sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, signal, sigprocmask},
    unistd::{ForkResult, Pid, close, execv, fork, pipe2, read, setpgid, write},
};

use crate::{
    cli::RunArgs,
    driver::{Child, ChildPlan, drive},
    error::StallError,
    session::Session,
    signals, verdict,
};

/// A forked child waiting for the go-ahead before it execs CMD.
struct Paused {
    pid: u32,
    go: OwnedFd,
    exec_err: OwnedFd,
    cmd: String,
}

/// Find `prog` on PATH the way execvp would (done before fork: the child may only make
/// async-signal-safe calls).
fn resolve(prog: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        return Some(PathBuf::from(prog));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn spawn_paused(cmd: &[String]) -> Result<Paused, StallError> {
    let display = cmd.join(" ");
    let spawn_err = |detail: String| StallError::Spawn {
        cmd: display.clone(),
        detail,
    };
    let path =
        resolve(&cmd[0]).ok_or_else(|| spawn_err(format!("`{}` not found on PATH", cmd[0])))?;
    let c_path = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| spawn_err("the path contains a NUL byte".into()))?;
    let c_args: Vec<CString> = cmd
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| spawn_err("an argument contains a NUL byte".into()))?;
    let (go_r, go_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| spawn_err(e.to_string()))?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| spawn_err(e.to_string()))?;
    // SAFETY: between fork and exec/_exit the child only makes async-signal-safe calls
    // (close, read, setpgid, sigprocmask, signal, execv, write, _exit) on data prepared above.
    match unsafe { fork() }.map_err(|e| spawn_err(e.to_string()))? {
        ForkResult::Child => {
            drop(go_w);
            drop(err_r);
            let mut b = [0u8; 1];
            // Wait until the parent has added us to the target set (or died: EOF).
            let ok = matches!(read(&go_r, &mut b), Ok(1));
            if !ok {
                unsafe { libc::_exit(127) };
            }
            // Own process group: a terminal's Ctrl-C reaches stallprobe, which forwards it once.
            let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
            // Rust ignores SIGPIPE; an exec'd program expects the default.
            let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
            let errno = match execv(&c_path, &c_args) {
                Err(e) => e as i32,
                Ok(_) => 0,
            };
            let _ = write(&err_w, &errno.to_ne_bytes());
            unsafe { libc::_exit(127) };
        }
        ForkResult::Parent { child } => {
            drop(go_r);
            drop(err_w);
            Ok(Paused {
                pid: child.as_raw() as u32,
                go: go_w,
                exec_err: err_r,
                cmd: display,
            })
        }
    }
}

impl Paused {
    /// Let the child exec; report an exec failure as an error.
    fn release(self) -> Result<u32, StallError> {
        write(&self.go, b"g").map_err(|e| StallError::Spawn {
            cmd: self.cmd.clone(),
            detail: e.to_string(),
        })?;
        let _ = close(self.go.as_raw_fd());
        std::mem::forget(self.go);
        let mut b = [0u8; 4];
        match read(&self.exec_err, &mut b) {
            Ok(4) => {
                let errno = nix::errno::Errno::from_raw(i32::from_ne_bytes(b));
                let _ = nix::sys::wait::waitpid(Pid::from_raw(self.pid as i32), None);
                Err(StallError::Spawn {
                    cmd: self.cmd,
                    detail: errno.desc().to_string(),
                })
            }
            _ => Ok(self.pid), // EOF: the pipe closed on exec
        }
    }

    fn abort(self) {
        let _ = nix::sys::signal::kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(Pid::from_raw(self.pid as i32), None);
    }
}

pub async fn run(args: RunArgs) -> Result<i32, StallError> {
    let opts = args.watch.session_options()?;
    let stop_sig = signals::parse(&args.stop_signal)?;
    let mut stops = crate::driver::StopSignals::install()?;
    let mut session = Session::attach(opts)?;
    let paused = spawn_paused(&args.cmd)?;
    if let Err(e) = session.add_process(paused.pid) {
        paused.abort();
        return Err(e);
    }
    let pid = paused.release()?;
    crate::driver::drop_privileges_or_warn(args.watch.quiet);
    let mut plan = ChildPlan {
        child: Child::new(pid),
        stop: args.stop_after.or(args.timeout).map(|d| (d, stop_sig)),
    };
    if !args.watch.quiet {
        eprintln!(
            "stallprobe: started pid {pid}: {}{}",
            args.cmd.join(" "),
            match (args.stop_after, args.timeout) {
                (Some(d), _) => format!(
                    " (will send {} after {})",
                    stop_sig.as_str(),
                    humantime::format_duration(d)
                ),
                (None, Some(d)) => format!(
                    " (timeout {}: then {}, grace, verdict)",
                    humantime::format_duration(d),
                    stop_sig.as_str()
                ),
                _ => String::new(),
            }
        );
    }
    let end = drive(&mut session, &args.watch, Some(&mut plan), &mut stops).await;
    let end = match end {
        Ok(e) => e,
        Err(e) => {
            plan.child.kill_and_reap();
            return Err(e);
        }
    };
    let report = session.finish(end);
    // With --timeout, a command that finished by itself before it ends like itself.
    let own_exit = match (args.timeout, plan.child.status) {
        (Some(_), Some(nix::sys::wait::WaitStatus::Exited(_, code)))
            if report.shutdown.is_none() =>
        {
            Some(code)
        }
        (Some(_), Some(nix::sys::wait::WaitStatus::Signaled(_, sig, _)))
            if report.shutdown.is_none() =>
        {
            Some(128 + sig as i32)
        }
        _ => None,
    };
    if !args.keep {
        plan.child.kill_and_reap();
    }
    args.watch.emit(&report)?;
    Ok(own_exit.unwrap_or_else(|| verdict::exit_code(report.verdict)))
}
