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

fn capset(keep: u64) -> Result<(), String> {
    let mut hdr = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let (lo, hi) = (keep as u32, (keep >> 32) as u32);
    let data = [
        Data {
            effective: lo,
            permitted: lo,
            inheritable: 0,
        },
        Data {
            effective: hi,
            permitted: hi,
            inheritable: 0,
        },
    ];
    // SAFETY: capset with a valid header and two data words, as the ABI requires.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut Header, data.as_ptr()) };
    if r != 0 {
        return Err(format!("capset: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Drop every capability but the kept ones (effective, permitted and inheritable sets, and the
/// bounding set so an exec cannot bring them back), after becoming the sudo user if asked. An
/// error means stallprobe would go on with more privilege than it says: the caller stops.
pub fn drop_privileges(plan: &Drop) -> Result<(), String> {
    let bpf = bpf_calls_need_cap_bpf().then_some(cap::BPF);
    let keep: u64 = KEPT_AFTER_ATTACH
        .iter()
        .chain(plan.also_keep.iter())
        .chain(bpf.iter())
        .fold(0, |m, &c| m | (1u64 << c));
    cut_bounding_set(keep)?;
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
pub fn limit_to(caps: &[u32]) -> Result<(), String> {
    let keep = caps.iter().fold(0u64, |m, &c| m | (1u64 << c));
    cut_bounding_set(keep)?;
    capset(keep)
}

/// Keep only `caps` in the permitted and effective sets (the bounding set stays as it is:
/// changing it needs CAP_SETPCAP).
pub fn keep_only(caps: &[u32]) -> Result<(), String> {
    capset(caps.iter().fold(0u64, |m, &c| m | (1u64 << c)))
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
    use super::kernel_before;

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
