//! Reading the packaging files: the unit, its drop-ins, the DaemonSet, the seccomp profile.

use std::{
    collections::{BTreeSet, HashMap},
    path::PathBuf,
    process::Command,
};

use stallprobe_tests::*;

pub(crate) fn packaging_path(rel: &str) -> PathBuf {
    repo_root().join("packaging").join(rel)
}

pub(crate) fn read(rel: &str) -> String {
    std::fs::read_to_string(packaging_path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

// ---- reading the packaging files ----

/// The raw values assigned to `key` in a unit file, in order.
pub(crate) fn unit_assignments(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix(key)
                .and_then(|r| r.strip_prefix('='))
                .map(|v| v.trim().to_string())
        })
        .collect()
}

/// A list setting's words; an empty assignment resets it, as systemd does.
pub(crate) fn unit_list(unit: &str, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    for v in unit_assignments(unit, key) {
        if v.is_empty() {
            out.clear();
        } else {
            out.extend(v.split_whitespace().map(str::to_string));
        }
    }
    out
}

pub(crate) fn unit_value(unit: &str, key: &str) -> String {
    unit_assignments(unit, key)
        .pop()
        .unwrap_or_else(|| panic!("the unit sets no {key}="))
}

/// Capability numbers (linux/capability.h) of the ones the packaging uses.
pub(crate) fn cap_number(name: &str) -> u32 {
    match name.trim_start_matches("CAP_") {
        "DAC_READ_SEARCH" => 2,
        "SYS_PTRACE" => 19,
        "SYSLOG" => 34,
        "PERFMON" => 38,
        "BPF" => 39,
        "CHECKPOINT_RESTORE" => 40,
        other => panic!("capability {other}: add its number here"),
    }
}

pub(crate) fn cap_mask(caps: &[String]) -> u64 {
    caps.iter().fold(0, |m, c| m | (1u64 << cap_number(c)))
}

/// What stallprobe keeps once attached (preflight::KEPT_AFTER_ATTACH) of what it was given.
pub(crate) fn kept_after_attach(given: &[String]) -> u64 {
    let kept = ["SYS_PTRACE", "DAC_READ_SEARCH", "CHECKPOINT_RESTORE"]
        .map(|c| 1u64 << cap_number(c))
        .iter()
        .fold(0, |m, c| m | c);
    kept & cap_mask(given)
}

/// `+bpf,+perfmon,...` for setpriv.
pub(crate) fn setpriv_caps(caps: &[String]) -> String {
    caps.iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v
}

/// A system call group of `systemd-analyze syscall-filter`, expanded (a name stays itself).
pub(crate) fn syscall_group(
    name: &str,
    cache: &mut HashMap<String, BTreeSet<String>>,
) -> BTreeSet<String> {
    if !name.starts_with('@') {
        return BTreeSet::from([name.to_string()]);
    }
    if let Some(s) = cache.get(name) {
        return s.clone();
    }
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", name])
        .output()
        .expect("systemd-analyze syscall-filter");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut set = BTreeSet::new();
    for l in text.lines().skip(1) {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        set.extend(syscall_group(l, cache));
    }
    assert!(!set.is_empty(), "{name}: no system calls\n{text}");
    cache.insert(name.to_string(), set.clone());
    set
}

/// The system calls the unit's SystemCallFilter= lines allow (an allow list, then `~` lines
/// that take calls out of it).
pub(crate) fn unit_syscalls(unit: &str) -> BTreeSet<String> {
    let mut cache = HashMap::new();
    let mut allowed = BTreeSet::new();
    for (i, v) in unit_assignments(unit, "SystemCallFilter")
        .iter()
        .enumerate()
    {
        let (deny, list) = match v.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, v.as_str()),
        };
        assert!(
            !(deny && i == 0),
            "the first SystemCallFilter= must be an allow list"
        );
        for item in list.split_whitespace() {
            let set = syscall_group(item, &mut cache);
            if deny {
                allowed.retain(|s| !set.contains(s));
            } else {
                allowed.extend(set);
            }
        }
    }
    allowed
}

/// Names in a one-per-line list (`#` starts a comment).
pub(crate) fn name_list(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.split('#').next())
        .flat_map(str::split_whitespace)
        .map(str::to_string)
        .collect()
}

/// The system calls the seccomp profile allows, checked for its shape on the way.
pub(crate) fn profile_syscalls(profile: &Value) -> BTreeSet<String> {
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO", "{profile}");
    assert_eq!(
        profile["architectures"],
        serde_json::json!(["SCMP_ARCH_X86_64"])
    );
    let rules = profile["syscalls"].as_array().expect("syscalls");
    assert!(
        rules.iter().all(|r| r["action"] == "SCMP_ACT_ALLOW"),
        "only allow rules: {rules:?}"
    );
    rules
        .iter()
        .flat_map(|r| r["names"].as_array().expect("names").iter())
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

pub(crate) fn seccomp_profile() -> Value {
    serde_json::from_str(&read("kubernetes/seccomp-stallprobe.json")).expect("valid JSON")
}

/// The YAML documents of a file, as JSON (python3's yaml module parses them).
pub(crate) fn yaml_docs(rel: &str) -> Vec<Value> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(packaging_path(rel))
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{rel} does not parse (python3 yaml; Debian package python3-yaml):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub(crate) fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {docs:?}"))
}

pub(crate) struct DaemonSet {
    pub(crate) pod: Value,
    pub(crate) container: Value,
    pub(crate) labels: Value,
}

impl DaemonSet {
    pub(crate) fn load() -> DaemonSet {
        let docs = yaml_docs("kubernetes/daemonset.yaml");
        let template = &of_kind(&docs, "DaemonSet")["spec"]["template"];
        let pod = template["spec"].clone();
        let labels = template["metadata"]["labels"].clone();
        let container = pod["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "stallprobe")
            .expect("a container named stallprobe")
            .clone();
        DaemonSet {
            pod,
            container,
            labels,
        }
    }

    pub(crate) fn sc(&self, key: &str) -> &Value {
        let c = &self.container["securityContext"][key];
        if c.is_null() {
            &self.pod["securityContext"][key]
        } else {
            c
        }
    }

    /// capabilities.add, as CAP_ names.
    pub(crate) fn caps(&self) -> Vec<String> {
        self.sc("capabilities")["add"]
            .as_array()
            .expect("capabilities.add")
            .iter()
            .map(|c| format!("CAP_{}", c.as_str().unwrap()))
            .collect()
    }

    pub(crate) fn args(&self) -> Vec<String> {
        self.container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    }

    pub(crate) fn uid(&self) -> u32 {
        self.sc("runAsUser").as_u64().expect("runAsUser") as u32
    }

    pub(crate) fn gid(&self) -> u32 {
        self.sc("runAsGroup").as_u64().expect("runAsGroup") as u32
    }
}

/// The capabilities the Dockerfile's setcap gives the binary, and its flags (`p`, `ep`).
pub(crate) fn dockerfile_file_caps() -> (Vec<String>, String) {
    let d = read("kubernetes/Dockerfile");
    let arg = d
        .split_whitespace()
        .skip_while(|w| *w != "setcap")
        .nth(1)
        .expect("a setcap command in the Dockerfile");
    let (caps, flags) = arg.split_once('+').expect("caps+flags");
    (
        caps.split(',').map(|c| c.to_uppercase()).collect(),
        flags.to_string(),
    )
}
