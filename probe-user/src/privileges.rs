//! Least privilege once attached: after the probes are loaded (and a `run` child is forked),
//! stallprobe keeps only what reading the target needs, before it reads any file the target
//! chose. Under sudo it also becomes the user who ran sudo, so that its output files are that
//! user's and are written with that user's rights (a root process without CAP_DAC_OVERRIDE could
//! not write into the user's own directories anyway).

use crate::preflight::cap;

/// Capabilities kept once the probes are attached. CAP_SYS_PTRACE: process_vm_readv of stacks,
/// goroutines and lock words, /proc/PID/{syscall,fdinfo}, pidfd_getfd; CAP_DAC_READ_SEARCH:
/// /proc files of other users' processes; CAP_CHECKPOINT_RESTORE: /proc/PID/map_files
/// (binaries that were deleted or live in another mount namespace). Maps and the task iterator
/// are used through file descriptors, which need no capability.
pub const KEPT_AFTER_ATTACH: [u32; 3] = [
    cap::SYS_PTRACE,
    cap::DAC_READ_SEARCH,
    cap::CHECKPOINT_RESTORE,
];

/// What to keep, and who to become.
#[derive(Clone, Debug, Default)]
pub struct Drop {
    /// Capabilities kept besides [`KEPT_AFTER_ATTACH`] (CAP_KILL to stop a child run as root).
    pub also_keep: Vec<u32>,
    /// (uid, gid) to become: the user who ran `sudo stallprobe`.
    pub become_user: Option<(u32, u32)>,
}

impl Drop {
    /// The plan for this process: become `$SUDO_UID`/`$SUDO_GID` when stallprobe runs as root
    /// under sudo.
    pub fn for_this_process(also_keep: &[u32]) -> Drop {
        Drop {
            also_keep: also_keep.to_vec(),
            become_user: crate::export::files::sudo_owner(),
        }
    }
}

#[repr(C)]
struct Header {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// capset(2) on this thread: `keep` effective and permitted, nothing inheritable.
fn capset(keep: u64) -> Result<(), String> {
    capset3(keep, keep, 0)
}

/// capset(2) on this thread: the three sets, as 64-bit masks.
fn capset3(effective: u64, permitted: u64, inheritable: u64) -> Result<(), String> {
    let mut hdr = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let word = |i: u32| Data {
        effective: (effective >> (32 * i)) as u32,
        permitted: (permitted >> (32 * i)) as u32,
        inheritable: (inheritable >> (32 * i)) as u32,
    };
    let data = [word(0), word(1)];
    // SAFETY: capset with a valid header and two data words, as the ABI requires.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut Header, data.as_ptr()) };
    if r != 0 {
        return Err(format!("capset: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Make every permitted capability effective. A binary given file capabilities without the
/// effective bit (`setcap ...+p`, as the container image does) starts with them permitted
/// only; raising them here lets it run with any subset of them (a `+ep` binary refuses to
/// start when the bounding set, e.g. a DaemonSet's `capabilities.add`, lacks one of them).
pub fn raise_effective() -> Result<(), String> {
    let permitted = crate::preflight::permitted_caps();
    if crate::preflight::effective_caps() == permitted {
        return Ok(());
    }
    capset3(permitted, permitted, crate::preflight::inheritable_caps())
}

/// The capabilities to keep, given the permitted set: capset(2) cannot add a capability that
/// is not permitted, and asking for one fails the whole call (nothing would be dropped), so a
/// stallprobe started without, say, CAP_CHECKPOINT_RESTORE keeps the others.
pub fn kept_caps(wanted: &[u32], permitted: u64) -> u64 {
    wanted.iter().fold(0u64, |m, &c| m | (1u64 << c)) & permitted
}

/// Drop every capability but the kept ones (effective, permitted, inheritable and ambient
/// sets, and the bounding set so an exec cannot bring them back), after becoming the sudo user
/// if asked. Works for root and for a non-root user given ambient or file capabilities (the
/// systemd unit, the DaemonSet): without CAP_SETPCAP the bounding set stays, and
/// `NoNewPrivileges=`/`allowPrivilegeEscalation: false` keep an exec from regaining anything.
/// An error means stallprobe would go on with more privilege than it says: the caller stops.
pub fn drop_privileges(plan: &Drop) -> Result<(), String> {
    let bpf = bpf_calls_need_cap_bpf().then_some(cap::BPF);
    let wanted: Vec<u32> = KEPT_AFTER_ATTACH
        .iter()
        .chain(plan.also_keep.iter())
        .chain(bpf.iter())
        .copied()
        .collect();
    let keep = kept_caps(&wanted, crate::preflight::permitted_caps());
    if crate::preflight::effective_caps() & (1u64 << cap::SETPCAP) != 0 {
        cut_bounding_set(keep)?;
    }
    if let Some((uid, gid)) = plan.become_user {
        // Keep the permitted capabilities across the uid change (they are cut below).
        // SAFETY: prctl and set*id with integer arguments.
        unsafe {
            if libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0
                || libc::setgroups(1, &gid) != 0
                || libc::setresgid(gid, gid, gid) != 0
                || libc::setresuid(uid, uid, uid) != 0
            {
                return Err(format!(
                    "becoming uid {uid} gid {gid} (the sudo user): {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    capset(keep)?;
    // An empty inheritable set already empties the ambient set; say so explicitly anyway.
    // SAFETY: prctl with integer arguments.
    let _ = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    // A uid change keeps no capability in the effective set without this: check they are there.
    let eff = crate::preflight::effective_caps();
    if eff & keep != keep {
        return Err(format!(
            "the capabilities kept ({keep:#x}) are not all effective ({eff:#x})"
        ));
    }
    Ok(())
}

/// Remove every capability not in `keep` from the bounding set (needs CAP_SETPCAP, so before
/// the permitted set is cut): no exec can bring them back.
fn cut_bounding_set(keep: u64) -> Result<(), String> {
    for c in 0..64u32 {
        if keep & (1u64 << c) == 0 {
            // SAFETY: prctl with integer arguments.
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, c as libc::c_ulong, 0, 0, 0) };
            // EINVAL: a capability number this kernel does not have.
            if r != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
                return Err(format!(
                    "dropping capability {c} from the bounding set: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    Ok(())
}

/// Keep exactly `caps` (bounding, permitted and effective sets), staying the same user.
/// (Those not permitted are left out; without CAP_SETPCAP the bounding set stays as it is.)
pub fn limit_to(caps: &[u32]) -> Result<(), String> {
    let keep = kept_caps(caps, crate::preflight::permitted_caps());
    if crate::preflight::effective_caps() & (1u64 << cap::SETPCAP) != 0 {
        cut_bounding_set(keep)?;
    }
    capset(keep)
}

/// Keep only `caps` in the permitted and effective sets (the bounding set stays as it is:
/// changing it needs CAP_SETPCAP).
pub fn keep_only(caps: &[u32]) -> Result<(), String> {
    capset(kept_caps(caps, crate::preflight::permitted_caps()))
}

/// Before Linux 6.5 every bpf() command — a map lookup too, on a map already open — is refused
/// without CAP_BPF while `kernel.unprivileged_bpf_disabled` is set (Debian sets it): there
/// CAP_BPF is kept.
fn bpf_calls_need_cap_bpf() -> bool {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
        .map(|s| s.trim() != "0")
        .unwrap_or(true);
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    disabled && kernel_before(&release, (6, 5))
}

/// Whether a `uname -r` release ("6.1.0-28-amd64") is older than (major, minor); an
/// unreadable one counts as older (keeping a capability is the safe mistake).
fn kernel_before(release: &str, (major, minor): (u32, u32)) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) < (major, minor),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::{kept_caps, kernel_before};
    use crate::preflight::cap;

    #[test]
    fn kept_caps_are_the_permitted_ones() {
        let wanted = super::KEPT_AFTER_ATTACH;
        let all =
            (1 << cap::SYS_PTRACE) | (1 << cap::DAC_READ_SEARCH) | (1 << cap::CHECKPOINT_RESTORE);
        assert_eq!(kept_caps(&wanted, u64::MAX), all);
        // Started without CAP_CHECKPOINT_RESTORE (and with CAP_BPF, dropped): keep the other two.
        let started = (1 << cap::BPF) | (1 << cap::SYS_PTRACE) | (1 << cap::DAC_READ_SEARCH);
        assert_eq!(
            kept_caps(&wanted, started),
            (1 << cap::SYS_PTRACE) | (1 << cap::DAC_READ_SEARCH)
        );
        assert_eq!(kept_caps(&wanted, 0), 0);
    }

    #[test]
    fn kernel_releases_compare_by_major_and_minor() {
        assert!(kernel_before("6.1.0-28-amd64", (6, 5)));
        assert!(kernel_before("5.15.0", (6, 5)));
        assert!(!kernel_before("6.5.0", (6, 5)));
        assert!(!kernel_before("6.12.48+deb13-amd64", (6, 5)));
        assert!(!kernel_before("6.18.0", (6, 5)));
        assert!(kernel_before("garbage", (6, 5)));
    }
}
