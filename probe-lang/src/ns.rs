//! Thread ids across pid namespaces. A runtime reports its threads' ids as its own pid
//! namespace numbers them (a JVM's `nid`, CPython's `native_thread_id`); for a target in a
//! container those are not the ids seen from here.

use std::collections::HashMap;

/// The last NSpid field of a `/proc/PID/task/TID/status` text: the id in the innermost
/// namespace.
pub fn innermost_id(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|v| v.split_whitespace().last())
        .and_then(|s| s.parse().ok())
}

/// The tids of process `pid`, as its own pid namespace numbers them → as seen from here
/// (`/proc/PID/task/TID`). The identity when both are in one namespace; empty if the process
/// is gone.
pub fn ns_tid_map(pid: u32) -> HashMap<u32, u32> {
    let mut m = HashMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return m;
    };
    for t in tasks.flatten() {
        let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        m.insert(innermost_id(&status).unwrap_or(tid), tid);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert_eq!(innermost_id("Name:\tx\nNSpid:\t4242\t7\n"), Some(7));
        assert_eq!(innermost_id("NSpid:\t12\n"), Some(12));
        assert_eq!(innermost_id(""), None);
        let me = std::process::id();
        assert_eq!(ns_tid_map(me).get(&me), Some(&me));
    }
}
