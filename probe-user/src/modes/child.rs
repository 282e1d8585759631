//! The command `stallprobe run` starts: forked paused (so that it is in the target set before
//! it execs), released, signalled as a process group, reaped.

use std::{
    ffi::CString,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use nix::{
    fcntl::OFlag,
    sys::{
        signal::{SigHandler, SigSet, SigmaskHow, Signal, kill, signal, sigprocmask},
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::{ForkResult, Pid, close, execv, fork, pipe2, read, setpgid, write},
};
use tokio::io::unix::AsyncFd;

use crate::error::StallError;

/// A child process stallprobe started (run mode): signals are forwarded to it, it is reaped.
pub struct Child {
    pub pid: u32,
    pidfd: Option<AsyncFd<OwnedFd>>,
    pub status: Option<WaitStatus>,
}

impl Child {
    pub fn new(pid: u32) -> Child {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
        let pidfd = (fd >= 0)
            .then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
            .and_then(|fd| {
                // SAFETY: the pidfd is owned by the AsyncFd and closed only when it drops.
                unsafe { AsyncFd::register(fd) }.ok()
            });
        Child {
            pid,
            pidfd,
            status: None,
        }
    }

    pub fn alive(&self) -> bool {
        self.status.is_none()
    }

    /// Signal the child's process group (it leads one: see run.rs), like a terminal would:
    /// its own children, e.g. the test binaries under `cargo test`, get it too.
    pub fn signal(&self, sig: Signal) {
        if self.alive() && kill(Pid::from_raw(-(self.pid as i32)), sig).is_err() {
            let _ = kill(Pid::from_raw(self.pid as i32), sig);
        }
    }

    /// Resolves when the child has exited (not reaped yet).
    pub async fn exited(&self) {
        match &self.pidfd {
            Some(fd) if self.alive() => {
                let _ = fd.readable().await;
            }
            _ => std::future::pending::<()>().await,
        }
    }

    /// Reap the child if it has exited.
    pub fn try_reap(&mut self) -> Option<WaitStatus> {
        if self.status.is_some() {
            return self.status;
        }
        match waitpid(Pid::from_raw(self.pid as i32), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => None,
            Ok(st @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                self.status = Some(st);
                self.status
            }
            Ok(_) => None,
            Err(_) => {
                // Not our child any more (or already reaped): treat as gone.
                self.status = Some(WaitStatus::Exited(Pid::from_raw(self.pid as i32), -1));
                self.status
            }
        }
    }

    /// Reap the child, waiting at most `limit` for it to become reapable.
    pub fn reap_within(&mut self, limit: Duration) -> Option<WaitStatus> {
        let until = Instant::now() + limit;
        loop {
            if let Some(st) = self.try_reap() {
                return Some(st);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kill and reap (used when the report is done and `--keep` was not given).
    pub fn kill_and_reap(&mut self) {
        if self.try_reap().is_some() {
            return;
        }
        self.signal(Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(self.pid as i32), None);
        self.status = Some(WaitStatus::Signaled(
            Pid::from_raw(self.pid as i32),
            Signal::SIGKILL,
            false,
        ));
    }
}

/// A forked child waiting for the go-ahead before it execs CMD.
pub struct Paused {
    pub pid: u32,
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

/// Who the command runs as when stallprobe runs under sudo: the user who ran sudo, with their
/// groups and HOME, USER and LOGNAME (so `sudo stallprobe run -- cargo test` leaves no
/// root-owned files in the checkout).
pub struct RunAs {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
    env: Vec<CString>,
}

impl RunAs {
    /// `$SUDO_UID`/`$SUDO_GID` when stallprobe runs as root under sudo; `None` otherwise.
    pub fn sudo_user() -> Option<RunAs> {
        let (uid, gid) = crate::export::files::sudo_owner()?;
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten();
        let groups = user
            .as_ref()
            .and_then(|u| {
                let name = CString::new(u.name.as_bytes()).ok()?;
                nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(gid)).ok()
            })
            .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_else(|| vec![gid]);
        let mut env: Vec<CString> = std::env::vars_os()
            .filter(|(k, _)| !matches!(k.to_str(), Some("HOME" | "USER" | "LOGNAME")))
            .filter_map(|(k, v)| {
                let mut kv = k.into_encoded_bytes();
                kv.push(b'=');
                kv.extend(v.into_encoded_bytes());
                CString::new(kv).ok()
            })
            .collect();
        if let Some(u) = &user {
            for (k, v) in [
                ("HOME", u.dir.as_os_str().as_encoded_bytes().to_vec()),
                ("USER", u.name.clone().into_bytes()),
                ("LOGNAME", u.name.clone().into_bytes()),
            ] {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend(v);
                if let Ok(c) = CString::new(kv) {
                    env.push(c);
                }
            }
        }
        Some(RunAs {
            uid,
            gid,
            groups,
            env,
        })
    }
}

pub fn spawn_paused(cmd: &[String], run_as: Option<&RunAs>) -> Result<Paused, StallError> {
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
    // (close, read, setpgid, sigprocmask, signal, setgroups, setresgid, setresuid, execv(e),
    // write, _exit) on data prepared above.
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
            let errno = match run_as {
                None => match execv(&c_path, &c_args) {
                    Err(e) => e as i32,
                    Ok(_) => 0,
                },
                Some(u) => {
                    // SAFETY: set*id and setgroups with prepared integers and a vector.
                    let dropped = unsafe {
                        libc::setgroups(u.groups.len(), u.groups.as_ptr()) == 0
                            && libc::setresgid(u.gid, u.gid, u.gid) == 0
                            && libc::setresuid(u.uid, u.uid, u.uid) == 0
                    };
                    if !dropped {
                        nix::errno::Errno::last() as i32
                    } else {
                        match nix::unistd::execve(&c_path, &c_args, &u.env) {
                            Err(e) => e as i32,
                            Ok(_) => 0,
                        }
                    }
                }
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
    pub fn release(self) -> Result<u32, StallError> {
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

    pub fn abort(self) {
        let _ = nix::sys::signal::kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(Pid::from_raw(self.pid as i32), None);
    }
}
