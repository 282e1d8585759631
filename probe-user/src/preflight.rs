//! Checks before loading anything, so that a missing privilege or kernel feature is reported
//! as such, not as an `EPERM` from deep inside the loader.

use std::path::Path;

use crate::error::StallError;

/// Linux capability numbers stallprobe cares about.
pub mod cap {
    pub const DAC_READ_SEARCH: u32 = 2;
    pub const KILL: u32 = 5;
    pub const SETGID: u32 = 6;
    pub const SETUID: u32 = 7;
    pub const SETPCAP: u32 = 8;
    pub const SYS_PTRACE: u32 = 19;
    pub const SYS_ADMIN: u32 = 21;
    pub const PERFMON: u32 = 38;
    pub const BPF: u32 = 39;
    pub const CHECKPOINT_RESTORE: u32 = 40;
}

/// The effective capability set of this process (`CapEff` in /proc/self/status).
pub fn effective_caps() -> u64 {
    cap_set("CapEff")
}

/// The permitted capability set of this process (`CapPrm` in /proc/self/status).
pub fn permitted_caps() -> u64 {
    cap_set("CapPrm")
}

fn cap_set(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| crate::procfs::status_field(&s, field).map(str::to_owned))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

fn has(caps: u64, c: u32) -> bool {
    caps & (1u64 << c) != 0
}

/// Which of the capabilities needed to load and attach the probes and read the target are
/// missing from `caps`. CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON (older kernels).
pub fn missing_caps(caps: u64) -> Vec<&'static str> {
    let admin = has(caps, cap::SYS_ADMIN);
    let mut missing = Vec::new();
    if !admin && !has(caps, cap::BPF) {
        missing.push("CAP_BPF");
    }
    if !admin && !has(caps, cap::PERFMON) {
        missing.push("CAP_PERFMON");
    }
    if !has(caps, cap::SYS_PTRACE) {
        missing.push("CAP_SYS_PTRACE");
    }
    missing
}

/// The inheritable capability set of this process (`CapInh` in /proc/self/status).
pub fn inheritable_caps() -> u64 {
    cap_set("CapInh")
}

pub fn check_privileges() -> Result<(), StallError> {
    let _ = crate::privileges::raise_effective();
    let missing = missing_caps(effective_caps());
    if missing.is_empty() {
        return Ok(());
    }
    Err(StallError::Permission {
        what: "stallprobe needs privileges to load BPF programs and read the target's stacks".into(),
        missing,
        hint: "run it as root (sudo stallprobe ...), or grant the binary the capabilities: \
               sudo setcap cap_bpf,cap_perfmon,cap_sys_ptrace,cap_dac_read_search,cap_checkpoint_restore+ep $(command -v stallprobe)"
            .into(),
    })
}

/// The proc inode of the initial pid namespace (PROC_PID_INIT_INO): the same on every kernel.
const INIT_PID_NS_INO: u64 = 0xEFFF_FFFC;

/// The probes see host pids; stallprobe must see the same ones (a container needs --pid=host).
pub fn check_pid_namespace() -> Result<(), StallError> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata("/proc/self/ns/pid") {
        Ok(m) if m.ino() != INIT_PID_NS_INO => Err(StallError::KernelFeature {
            what: "a view of the host's processes".into(),
            detail: "stallprobe runs in a child pid namespace, where pids differ from the ones the kernel probes see".into(),
            hint: "run it in the host's pid namespace: `docker run --pid=host --privileged ...`, `hostPID: true` in Kubernetes".into(),
        }),
        _ => Ok(()),
    }
}

pub fn check_kernel() -> Result<(), StallError> {
    check_pid_namespace()?;
    let btf = vmlinux_btf_path();
    if !btf.exists() {
        return Err(StallError::KernelFeature {
            what: "BTF type information".into(),
            detail: format!("{} does not exist", btf.display()),
            hint:
                "stallprobe needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (Linux 5.15 or later \
                   recommended); most distribution kernels have it."
                    .into(),
        });
    }
    if std::env::consts::ARCH != "x86_64" {
        return Err(StallError::KernelFeature {
            what: "x86_64 support".into(),
            detail: format!("this is {}", std::env::consts::ARCH),
            hint: "stallprobe currently attaches to x86_64 syscall entry points only.".into(),
        });
    }
    Ok(())
}

pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Make sure tracefs is mounted (only the `tracepoint` hook needs it). `$STALLPROBE_TRACEFS`
/// overrides the mount point.
pub fn ensure_tracefs() -> Result<(), StallError> {
    let dir = std::env::var("STALLPROBE_TRACEFS").unwrap_or_else(|_| TRACEFS.to_string());
    if Path::new(&dir).join("events").exists() {
        return Ok(());
    }
    nix::mount::mount(
        Some("tracefs"),
        dir.as_str(),
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| StallError::Tracefs {
        detail: e.to_string(),
    })?;
    if Path::new(&dir).join("events").exists() {
        Ok(())
    } else {
        Err(StallError::Tracefs {
            detail: "mounted, but it has no events directory".into(),
        })
    }
}

/// Where the kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The kernel BTF file: `$STALLPROBE_BTF` when set (a BTFHub file for a kernel that does not
/// expose its own), else /sys/kernel/btf/vmlinux.
pub fn vmlinux_btf_path() -> std::path::PathBuf {
    std::env::var_os("STALLPROBE_BTF")
        .map(Into::into)
        .unwrap_or_else(|| VMLINUX_BTF.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_caps_are_enough() {
        assert!(missing_caps(u64::MAX).is_empty());
    }

    #[test]
    fn no_caps_names_all_three() {
        assert_eq!(
            missing_caps(0),
            vec!["CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE"]
        );
    }

    #[test]
    fn sys_admin_stands_in_for_bpf_and_perfmon() {
        let caps = (1 << cap::SYS_ADMIN) | (1 << cap::SYS_PTRACE);
        assert!(missing_caps(caps).is_empty());
    }
}
