//! What `stallprobe watch` watches: a systemd unit's cgroup, a cgroup, or one process.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

/// What the sidecar watches.
#[derive(Clone, Debug)]
pub enum Scope {
    /// A systemd unit: the processes of its cgroup, whichever they are over time.
    Unit { name: String, cgroups: Vec<PathBuf> },
    /// A cgroup directory (v2, or a v1 hierarchy): all its processes, and its sub-cgroups'.
    Cgroup(PathBuf),
    /// One process; the sidecar ends when it exits.
    Pid(u32),
}

const CGROUP_ROOTS: [&str; 3] = [
    "/sys/fs/cgroup",
    "/sys/fs/cgroup/unified",
    "/sys/fs/cgroup/systemd",
];

impl Scope {
    /// A unit's cgroup: asked from systemd when it runs, else the usual place of a system
    /// service (`/system.slice/NAME`) under each cgroup hierarchy.
    pub fn unit(name: &str) -> Scope {
        let name = if name.contains('.') {
            name.to_string()
        } else {
            format!("{name}.service")
        };
        let from_systemd = std::process::Command::new("systemctl")
            .args(["show", "-p", "ControlGroup", "--value", &name])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty());
        let rel = from_systemd.unwrap_or_else(|| format!("/system.slice/{name}"));
        let cgroups = CGROUP_ROOTS
            .iter()
            .map(|root| PathBuf::from(format!("{root}{rel}")))
            .collect();
        Scope::Unit { name, cgroups }
    }

    pub fn label(&self) -> String {
        match self {
            Scope::Unit { name, .. } => name.clone(),
            Scope::Cgroup(p) => format!("cgroup {}", p.display()),
            Scope::Pid(p) => format!("pid {p}"),
        }
    }

    /// The unit name for labels and journal fields ("" when not a unit).
    pub fn unit_name(&self) -> &str {
        match self {
            Scope::Unit { name, .. } => name,
            _ => "",
        }
    }

    /// The processes in scope right now.
    pub fn pids(&self) -> Vec<u32> {
        match self {
            Scope::Unit { cgroups, .. } => {
                let mut all = BTreeSet::new();
                for cg in cgroups {
                    all.extend(cgroup_pids(cg));
                }
                all.into_iter().collect()
            }
            Scope::Cgroup(p) => cgroup_pids(p),
            Scope::Pid(p) => vec![*p],
        }
    }
}

/// Processes of a cgroup and its descendants (`cgroup.procs` of each directory).
pub fn cgroup_pids(dir: &Path) -> Vec<u32> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(s) = std::fs::read_to_string(d.join("cgroup.procs")) {
            out.extend(s.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_get_a_suffix_and_cgroup_candidates() {
        match Scope::unit("nginx") {
            Scope::Unit { name, cgroups } => {
                assert_eq!(name, "nginx.service");
                assert!(
                    cgroups
                        .iter()
                        .any(|c| c.ends_with("system.slice/nginx.service"))
                );
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn cgroup_pids_of_a_missing_dir_is_empty() {
        assert!(cgroup_pids(Path::new("/nonexistent/cg")).is_empty());
    }
}
