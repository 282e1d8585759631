//! The DaemonSet, run for real.

use std::{
    collections::BTreeSet,
    os::unix::{
        fs::{MetadataExt, PermissionsExt},
        process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use stallprobe_tests::*;

use crate::sidecar_support::Cgroup;
use crate::{files::*, machinery::*};

// ---- the DaemonSet ----

/// The manifests parse and agree with each other, the image and the unit: the liveness
/// probe on the metrics port, a read-only root, all capabilities dropped but the unit's,
/// which the image's binary carries; non-root, no privilege escalation, the Localhost
/// seccomp profile, limits; the NetworkPolicy lets only Prometheus reach the metrics port;
/// the profile allows exactly the observed and the listed extra system calls, each a real
/// x86_64 system call, and none that writes into other processes or escapes a container.
#[test]
fn kubernetes_manifests_are_consistent() {
    let ds = DaemonSet::load();
    let c = &ds.container;
    assert_eq!(ds.pod["hostPID"], true);
    assert_ne!(
        ds.pod["hostNetwork"], true,
        "the NetworkPolicy needs the pod network"
    );
    assert_eq!(ds.pod["automountServiceAccountToken"], false);
    // Metrics: one port, served where the liveness probe and the policy expect it.
    let port = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("a metrics port")["containerPort"]
        .as_u64()
        .unwrap();
    assert!(
        ds.args()
            .iter()
            .any(|a| a == &format!("--metrics-addr=0.0.0.0:{port}")),
        "{:?}",
        ds.args()
    );
    let probe = &c["livenessProbe"]["httpGet"];
    assert_eq!(probe["path"], "/metrics");
    assert_eq!(probe["port"], "metrics");
    assert!(ds.args().iter().any(|a| a.starts_with("--cgroup=/host/")));
    // securityContext.
    assert_eq!(ds.sc("runAsNonRoot"), true);
    assert_ne!(ds.uid(), 0);
    assert_ne!(ds.gid(), 0);
    assert_eq!(ds.sc("allowPrivilegeEscalation"), false);
    assert_ne!(ds.sc("privileged"), true);
    assert_eq!(ds.sc("readOnlyRootFilesystem"), true);
    assert_eq!(ds.sc("capabilities")["drop"], serde_json::json!(["ALL"]));
    let unit = read("systemd/stallprobe@.service");
    let unit_caps = sorted(&unit_list(&unit, "AmbientCapabilities"));
    assert_eq!(
        sorted(&ds.caps()),
        unit_caps,
        "the DaemonSet's caps vs the unit's"
    );
    assert_eq!(
        ds.sc("seccompProfile"),
        &serde_json::json!({"type": "Localhost", "localhostProfile": "profiles/stallprobe.json"})
    );
    for r in ["memory", "cpu"] {
        assert!(c["resources"]["limits"][r].is_string(), "limits.{r}");
    }
    // The uploader is confined too.
    let up = ds.pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "pprof-uploader")
        .unwrap();
    assert_eq!(up["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(up["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(
        up["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    // The image: the same capabilities, permitted only, a non-root user.
    let (file_caps, flags) = dockerfile_file_caps();
    assert_eq!(
        sorted(&file_caps),
        unit_caps,
        "the Dockerfile's setcap vs the unit"
    );
    assert_eq!(flags, "p", "permitted only: stallprobe raises them itself");
    assert!(read("kubernetes/Dockerfile").contains(&format!("USER {}:{}", ds.uid(), ds.gid())));

    // The NetworkPolicy.
    let np = yaml_docs("kubernetes/networkpolicy.yaml");
    let np = of_kind(&np, "NetworkPolicy");
    assert_eq!(np["metadata"]["namespace"], "monitoring");
    assert_eq!(np["spec"]["podSelector"]["matchLabels"], ds.labels);
    let types = np["spec"]["policyTypes"].as_array().unwrap();
    assert!(types.contains(&Value::from("Ingress")) && types.contains(&Value::from("Egress")));
    let ingress = np["spec"]["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 1, "one way in: {ingress:?}");
    assert_eq!(
        ingress[0]["ports"],
        serde_json::json!([{"protocol": "TCP", "port": port}])
    );
    let from = ingress[0]["from"].as_array().unwrap();
    assert!(
        from.iter().all(
            |f| f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                == "monitoring"
                && f["podSelector"].is_object()
        ),
        "only Prometheus pods of the monitoring namespace: {from:?}"
    );

    // The seccomp profile: observed + extra, nothing else, all real system calls.
    let allowed = profile_syscalls(&seccomp_profile());
    let observed = name_list(&read("kubernetes/syscalls-observed.txt"));
    let extra = name_list(&read("kubernetes/syscalls-extra.txt"));
    let want: BTreeSet<String> = observed.union(&extra).cloned().collect();
    assert_eq!(
        allowed.symmetric_difference(&want).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "seccomp-stallprobe.json must allow syscalls-observed.txt + syscalls-extra.txt"
    );
    for s in [
        "ptrace",
        "process_vm_writev",
        "process_madvise",
        "open_by_handle_at",
        "mount",
        "umount2",
        "unshare",
        "setns",
        "init_module",
        "finit_module",
        "kexec_load",
        "keyctl",
        "userfaultfd",
        "syslog",
    ] {
        assert!(!allowed.contains(s), "the profile allows {s}");
    }
    let names: Vec<&str> = allowed.iter().map(String::as_str).collect();
    let out = Command::new(PYTHON)
        .args([
            "-c",
            "import ctypes, sys\n\
             s = ctypes.CDLL('libseccomp.so.2')\n\
             s.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]\n\
             print(' '.join(n for n in sys.argv[1:] if s.seccomp_syscall_resolve_name(n.encode()) < 0))",
        ])
        .args(&names)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "",
        "not x86_64 system calls (libseccomp)"
    );
}

/// A container of the DaemonSet: runc, or the same done by hand.
pub(crate) struct Container {
    pub(crate) child: Child,
    pub(crate) stderr: Arc<Mutex<String>>,
    /// runc binary, its state directory, the container id.
    pub(crate) runc: Option<(PathBuf, PathBuf, String)>,
}

impl Container {
    /// stallprobe's pid on the host.
    pub(crate) fn pid(&self) -> u32 {
        let Some((runc, root, id)) = &self.runc else {
            return self.child.id();
        };
        let t = Instant::now();
        loop {
            let out = Command::new(runc)
                .arg("--root")
                .arg(root)
                .args(["state", id])
                .output()
                .unwrap();
            if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout)
                && v["status"] == "running"
            {
                return v["pid"].as_u64().unwrap() as u32;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "the container does not run:\n{}",
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Its exit code (within 60 s), after SIGTERM when `stop`.
    pub(crate) fn wait(&mut self, stop: bool) -> Option<i32> {
        if stop {
            match &self.runc {
                Some((runc, root, id)) => {
                    let _ = Command::new(runc)
                        .arg("--root")
                        .arg(root)
                        .args(["kill", id, "TERM"])
                        .output();
                }
                None => sigterm(self.child.id()),
            }
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Some((runc, root, id)) = &self.runc {
            let _ = Command::new(runc)
                .arg("--root")
                .arg(root)
                .args(["delete", "-f", id])
                .output();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `256Mi` -> bytes, `500m` -> millicores.
pub(crate) fn quantity(v: &Value) -> u64 {
    let s = v.as_str().expect("a quantity");
    if let Some(n) = s.strip_suffix("Mi") {
        n.parse::<u64>().unwrap() << 20
    } else if let Some(n) = s.strip_suffix('m') {
        n.parse().unwrap()
    } else {
        s.parse::<u64>().unwrap() * 1000
    }
}

/// The image, as the Dockerfile makes it, without docker: the binary with its file
/// capabilities and the shared libraries it needs.
pub(crate) fn rootfs(scratch: &Scratch, file_caps: &str) -> (PathBuf, PathBuf) {
    let bundle = scratch.dir("bundle", 0o755);
    let root = bundle.join("rootfs");
    for d in [
        "usr/local/bin",
        "proc",
        "sys",
        "dev",
        "tmp",
        "host/sys/fs/cgroup",
        "reports",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let bin = root.join("usr/local/bin/stallprobe");
    std::fs::copy(stallprobe_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ldd = Command::new("ldd").arg(&bin).output().expect("ldd");
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let dst = root.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(lib, &dst).unwrap();
    }
    setcap(file_caps, &bin);
    (bundle, bin)
}

pub(crate) fn setcap(caps: &str, bin: &Path) {
    let out = Command::new(need("setcap", "libcap2-bin"))
        .arg(caps)
        .arg(bin)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "setcap {caps}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run the DaemonSet's container: `args` as in the manifest (paths inside the container).
pub(crate) fn start_container(
    ds: &DaemonSet,
    scratch: &Scratch,
    bundle: &Path,
    bin: &Path,
    args: &[String],
    reports: &Path,
    tag: &str,
) -> Container {
    let caps = ds.caps();
    let no_new_privs = ds.sc("allowPrivilegeEscalation") == false;
    let read_only = ds.sc("readOnlyRootFilesystem") == true;
    let profile = packaging_path("kubernetes/seccomp-stallprobe.json");
    if let Some(runc) = which("runc") {
        let out = Command::new(&runc)
            .args(["spec", "--bundle"])
            .arg(bundle)
            .output()
            .unwrap();
        let config = bundle.join("config.json");
        if !out.status.success() && !config.exists() {
            panic!("runc spec: {}", String::from_utf8_lossy(&out.stderr));
        }
        let mut c: Value =
            serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
        let p = &mut c["process"];
        p["terminal"] = false.into();
        p["user"] = serde_json::json!({"uid": ds.uid(), "gid": ds.gid()});
        let mut argv = vec!["/usr/local/bin/stallprobe".to_string()];
        argv.extend(args.iter().cloned());
        p["args"] = serde_json::json!(argv);
        // What containerd's CRI does with capabilities.add for any user: bounding,
        // effective and permitted; no inheritable, no ambient.
        p["capabilities"] = serde_json::json!({
            "bounding": caps, "effective": caps, "permitted": caps,
            "inheritable": [], "ambient": []
        });
        p["noNewPrivileges"] = no_new_privs.into();
        c["root"]["readonly"] = read_only.into();
        c["hostname"] = "stallprobe".into();
        // hostPID: no pid namespace. The pod's own network namespace is left out: the
        // test reaches the metrics on the host's loopback (the NetworkPolicy is checked
        // by kubernetes_manifests_are_consistent).
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "pid" && n["type"] != "network");
        let mounts = c["mounts"].as_array_mut().unwrap();
        mounts.push(
            serde_json::json!({"destination": "/host/sys/fs/cgroup", "type": "bind",
            "source": "/sys/fs/cgroup", "options": ["rbind", "ro"]}),
        );
        mounts.push(
            serde_json::json!({"destination": "/reports", "type": "bind",
            "source": reports, "options": ["rbind", "rw"]}),
        );
        c["linux"]["seccomp"] =
            serde_json::from_str(&std::fs::read_to_string(&profile).unwrap()).unwrap();
        let limits = &ds.container["resources"]["limits"];
        c["linux"]["resources"]["memory"] =
            serde_json::json!({"limit": quantity(&limits["memory"])});
        c["linux"]["resources"]["cpu"] =
            serde_json::json!({"quota": quantity(&limits["cpu"]) * 100, "period": 100_000});
        let id = format!("stallprobe-{tag}-{}", std::process::id());
        c["linux"]["cgroupsPath"] = format!("/{id}").into();
        std::fs::write(&config, serde_json::to_string_pretty(&c).unwrap()).unwrap();
        let state = scratch.dir("runc", 0o700);
        let mut child = Command::new(&runc)
            .arg("--root")
            .arg(&state)
            .args(["run", "--bundle"])
            .arg(bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = collect_stderr(&mut child);
        return Container {
            child,
            stderr,
            runc: Some((runc, state, id)),
        };
    }
    // No runc: the same by hand. The filter is loaded as root with no_new_privs (as runc
    // does), then setpriv switches to the pod's user (keeping the permitted set, as runc
    // does) with the bounding set, and execs the binary with its file capabilities.
    assert!(
        no_new_privs,
        "the emulation assumes allowPrivilegeEscalation: false"
    );
    let wrapper = scratch.file("seccomp-exec.py", SECCOMP_EXEC);
    let host_args: Vec<String> = args
        .iter()
        .map(|a| {
            a.replace("=/host/", "=/")
                .replace("=/reports/", &format!("={}/", reports.display()))
        })
        .collect();
    let mut cmd = Command::new(PYTHON);
    cmd.env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .arg(&wrapper)
        .arg("--profile")
        .arg(&profile)
        .arg("--")
        .arg(need("setpriv", "util-linux"))
        .arg(format!("--reuid={}", ds.uid()))
        .arg(format!("--regid={}", ds.gid()))
        .arg("--clear-groups")
        .arg(format!("--bounding-set=-all,{}", setpriv_caps(&caps)))
        .arg("--")
        .arg(bin)
        .args(&host_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let writable = cstring(reports);
    // SAFETY: only unshare/mount (async-signal-safe) between fork and exec.
    unsafe {
        cmd.pre_exec(move || private_mounts(None, read_only, Some(&writable)));
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = collect_stderr(&mut child);
    Container {
        child,
        stderr,
        runc: None,
    }
}

/// The DaemonSet's stallprobe container, run: the image's binary (the Dockerfile's file
/// capabilities), the pod's user, capabilities, no_new_privs, read-only root, seccomp
/// profile, memory and CPU limits, host pids, the cgroup and reports volumes and its own
/// arguments, in a real runc container (else the same by hand). It watches a deadlocked
/// process in a cgroup, answers the liveness probe, writes the report and the profile, and
/// keeps only what it needs. Without the file capabilities it gets none (Kubernetes adds
/// no ambient capabilities): it says so and exits 2.
#[test]
fn daemonset_runs_with_its_security_context() {
    require_root();
    let ds = DaemonSet::load();
    let (file_caps, flags) = dockerfile_file_caps();
    let file_caps = format!(
        "{}+{flags}",
        file_caps
            .iter()
            .map(|c| c.to_lowercase())
            .collect::<Vec<_>>()
            .join(",")
    );
    let scratch = Scratch::new("daemonset");
    let reports = scratch.dir("reports", 0o777); // an emptyDir
    let (bundle, bin) = rootfs(&scratch, &file_caps);
    let cg = Cgroup::for_unit(&format!("stallprobe-ds-{}.scope", std::process::id()));
    let target = Guard(cg.start(&build_c("deadlock"), &[]));
    std::thread::sleep(Duration::from_millis(500));
    let addr = format!("127.0.0.1:{}", free_port());
    // The manifest's arguments, on the test's cgroup, a loopback port, a short grace.
    let args: Vec<String> = ds
        .args()
        .into_iter()
        .map(|a| match a.split_once('=') {
            Some(("--cgroup", _)) => format!("--cgroup=/host{}", cg.0.display()),
            Some(("--metrics-addr", _)) => format!("--metrics-addr={addr}"),
            Some(("--grace", _)) => "--grace=1s".to_string(),
            _ => a,
        })
        .collect();
    for a in [
        "--output=/reports/last-report.json",
        "--pprof=/reports/blocked.pb.gz",
    ] {
        assert!(args.iter().any(|x| x == a), "{args:?}");
    }
    let runtime = if which("runc").is_some() {
        "runc"
    } else {
        "setpriv + seccomp"
    };
    eprintln!("container: {runtime}");

    let mut ctr = start_container(&ds, &scratch, &bundle, &bin, &args, &reports, "ds");
    let pid = ctr.pid();
    // The liveness probe's request, answered, once attached.
    let body = metrics_with_blocked_lockers(&addr, runtime);
    assert!(body.trim_end().ends_with("# EOF"));
    assert_credentials(pid, ds.uid(), kept_after_attach(&ds.caps()), true);

    crate::sidecar_support::term(&target.0);
    let r = wait_for_report(&reports.join("last-report.json"), runtime, &ctr.stderr);
    assert_full_verdict(&r);
    let pprof = std::fs::metadata(reports.join("blocked.pb.gz")).expect("the pprof output");
    assert_eq!(pprof.uid(), ds.uid());
    assert_eq!(ctr.wait(true), Some(0), "{}", ctr.stderr.lock().unwrap());
    let err = ctr.stderr.lock().unwrap().clone();
    for bad in ["could not drop privileges", "panicked"] {
        assert!(!err.contains(bad), "{bad}:\n{err}");
    }
    drop(ctr);
    drop(target);

    // The same container, the binary without file capabilities.
    let out = Command::new(need("setcap", "libcap2-bin"))
        .arg("-r")
        .arg(&bin)
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut ctr = start_container(&ds, &scratch, &bundle, &bin, &args, &reports, "ds-nocaps");
    assert_eq!(ctr.wait(false), Some(2), "{}", ctr.stderr.lock().unwrap());
    let err = ctr.stderr.lock().unwrap().clone();
    assert!(
        err.contains("missing CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE"),
        "{err}"
    );
}

/// Every system call of a traced run of the DaemonSet's mode (watch a cgroup, metrics
/// scraped, outputs written, a verdict), as the unit's user with its capabilities, is in
/// syscalls-observed.txt, hence in the seccomp profile. `STALLPROBE_BLESS=1` adds the new
/// ones to the list (then regenerate the profile: packaging/kubernetes/seccomp-profile.py).
#[test]
fn seccomp_profile_covers_traced_syscalls() {
    require_root();
    let strace = need("strace", "strace");
    let user = packaged_user();
    let caps = unit_list(&read("systemd/stallprobe@.service"), "AmbientCapabilities");
    let scratch = Scratch::new("strace");
    let sp = scratch.exe(&stallprobe_bin(), "stallprobe");
    let out = scratch.dir("out", 0o700);
    std::os::unix::fs::chown(&out, Some(user.uid), Some(user.gid)).unwrap();
    let cg = Cgroup::for_unit(&format!("stallprobe-strace-{}.scope", std::process::id()));
    let target = Guard(cg.start(&build_c("deadlock"), &[]));
    std::thread::sleep(Duration::from_millis(500));
    let addr = format!("127.0.0.1:{}", free_port());
    let summary = scratch.0.join("strace.txt");
    let c = setpriv_caps(&caps);
    let mut child = Guard(
        Command::new(strace)
            .args(["-f", "-qq", "-c", "-U", "name", "-o"])
            .arg(&summary)
            .args([
                "setpriv",
                "--reuid",
                &user.name,
                "--regid",
                &user.name,
                "--init-groups",
            ])
            .arg("--no-new-privs")
            .arg(format!("--inh-caps=-all,{c}"))
            .arg(format!("--ambient-caps=-all,{c}"))
            .arg("--")
            .arg(&sp)
            .arg("watch")
            .arg("--cgroup")
            .arg(&cg.0)
            .args(["--grace", "1s", "--metrics-addr", &addr, "--format", "json"])
            .arg(format!("--pprof={}/blocked.pb.gz", out.display()))
            .arg(format!("--output={}/last-report.json", out.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("strace"),
    );
    let stderr = collect_stderr(&mut child.0);
    metrics_with_blocked_lockers(&addr, "traced");
    crate::sidecar_support::term(&target.0);
    let r = wait_for_report(&out.join("last-report.json"), "traced", &stderr);
    assert_eq!(r["verdict"], "stalled", "{}", describe(&r));
    http_get(&addr, "/metrics");
    // Stop stallprobe (strace's child), then strace writes its summary.
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.0.id())).unwrap();
    for p in children.split_whitespace() {
        sigterm(p.parse().unwrap());
    }
    let st = child.0.wait().unwrap();
    drop(target);
    assert!(st.success(), "strace: {st:?}\n{}", stderr.lock().unwrap());
    let text = std::fs::read_to_string(&summary).unwrap();
    let seen: BTreeSet<String> = text
        .lines()
        .skip(2)
        .take_while(|l| !l.starts_with('-'))
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    assert!(
        seen.contains("bpf") && seen.contains("process_vm_readv"),
        "{text}"
    );
    let list = read("kubernetes/syscalls-observed.txt");
    let observed = name_list(&list);
    let missing: Vec<&String> = seen.difference(&observed).collect();
    if std::env::var_os("STALLPROBE_BLESS").is_some() && !missing.is_empty() {
        let mut all: BTreeSet<String> = observed.clone();
        all.extend(missing.iter().map(|s| s.to_string()));
        let header: String = list
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        let body: String = all.iter().map(|s| format!("{s}\n")).collect();
        std::fs::write(
            packaging_path("kubernetes/syscalls-observed.txt"),
            header + &body,
        )
        .unwrap();
        eprintln!("added to syscalls-observed.txt: {missing:?}");
        return;
    }
    assert!(
        missing.is_empty(),
        "system calls not in packaging/kubernetes/syscalls-observed.txt (nor the seccomp \
         profile): {missing:?}; STALLPROBE_BLESS=1 adds them"
    );
}
