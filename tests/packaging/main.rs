//! Least privilege, as packaged: the systemd unit (its user, capabilities and sandbox) and the
//! DaemonSet (its securityContext and seccomp profile), run for real.
//!
//! systemd is not PID 1 on the test machines and there is no cluster, so these tests take the
//! packaging files apart and do what systemd and the container runtime would do with them,
//! with the real tools: the user from the sysusers snippet (`systemd-sysusers`), capabilities,
//! bounding set and no_new_privs (`setpriv`), the system call filter (libseccomp through
//! python3's ctypes, the groups expanded by `systemd-analyze syscall-filter`),
//! MemoryDenyWriteExecute (PR_SET_MDWE), the umask, and a private mount namespace that hides
//! the service's binary the way ProtectHome=/PrivateTmp= can. The DaemonSet runs in a real runc
//! container when runc is installed (else the same emulation). `systemd-analyze verify` and
//! `systemd-analyze security` judge the rest of the unit.

#[path = "../sidecar_support.rs"]
mod sidecar_support;

mod daemonset;
mod files;
mod machinery;
mod unit;
