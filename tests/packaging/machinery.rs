//! The machinery: the unit's user, scratch directories, seccomp, mounts, credentials.

use std::{
    ffi::CString,
    os::unix::{ffi::OsStrExt, fs::PermissionsExt},
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use stallprobe_tests::*;

use crate::files::*;

// ---- the machinery: user, scratch directory, seccomp, mounts ----

/// Installs an allow-list seccomp filter (from a name list or a Kubernetes/OCI profile) and
/// execs the command. `--mdwe`: PR_SET_MDWE (what MemoryDenyWriteExecute= enforces),
/// `--umask`: the umask. libseccomp turns no_new_privs on, as both systemd (with
/// NoNewPrivileges=yes) and runc (with allowPrivilegeEscalation: false) have.
pub(crate) const SECCOMP_EXEC: &str = r##"
import ctypes, json, os, sys
a = sys.argv[1:]
allow, errno_ret, mdwe = None, 1, False
while a and a[0] != "--":
    o = a.pop(0)
    if o == "--allow":
        allow = [w for l in open(a.pop(0)) for w in l.split("#", 1)[0].split()]
    elif o == "--profile":
        p = json.load(open(a.pop(0)))
        errno_ret = p.get("defaultErrnoRet", 1)
        allow = [n for r in p["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]]
    elif o == "--mdwe":
        mdwe = True
    elif o == "--umask":
        os.umask(int(a.pop(0), 8))
    else:
        sys.exit("seccomp-exec: unknown option " + o)
a.pop(0)
libc = ctypes.CDLL(None, use_errno=True)
if mdwe and libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit("seccomp-exec: PR_SET_MDWE: errno %d" % ctypes.get_errno())
s = ctypes.CDLL("libseccomp.so.2")
s.seccomp_init.restype = ctypes.c_void_p
s.seccomp_init.argtypes = [ctypes.c_uint32]
s.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
s.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
s.seccomp_load.argtypes = [ctypes.c_void_p]
ctx = s.seccomp_init(0x00050000 | errno_ret)  # SCMP_ACT_ERRNO(errno)
for n in allow:
    nr = s.seccomp_syscall_resolve_name(n.encode())
    if nr >= 0 and s.seccomp_rule_add(ctx, 0x7FFF0000, nr, 0) != 0:  # SCMP_ACT_ALLOW
        sys.exit("seccomp-exec: cannot allow " + n)
if s.seccomp_load(ctx) != 0:
    sys.exit("seccomp-exec: seccomp_load failed")
os.execv(a[0], a)
"##;

/// Debian's python3 (the pyenv shims under /root are not readable by other users).
pub(crate) const PYTHON: &str = "/usr/bin/python3";

/// A scratch directory under /tmp, readable by everyone (the unprivileged users run from
/// it), removed on drop.
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    pub(crate) fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("stallprobe-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        Scratch(p)
    }

    pub(crate) fn dir(&self, name: &str, mode: u32) -> PathBuf {
        let d = self.0.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
        d
    }

    /// A copy of an executable (the repository may sit where other users cannot read).
    pub(crate) fn exe(&self, src: &Path, name: &str) -> PathBuf {
        let dst = self.0.join(name);
        std::fs::copy(src, &dst).unwrap();
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).unwrap();
        dst
    }

    pub(crate) fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The unit's user, created from the sysusers snippet as a package would (and removed
/// again when the last test using it ends, unless it was there before).
pub(crate) struct SysUser {
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) created: bool,
}

pub(crate) static SYSUSER: Mutex<Weak<SysUser>> = Mutex::new(Weak::new());

pub(crate) fn getent(db: &str, name: &str) -> Option<Vec<String>> {
    let out = Command::new("getent").args([db, name]).output().ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .split(':')
            .map(str::to_string)
            .collect()
    })
}

pub(crate) fn sysusers_name() -> String {
    read("systemd/stallprobe.sysusers")
        .lines()
        .map(str::split_whitespace)
        .find_map(|mut w| (w.next() == Some("u")).then(|| w.next().unwrap().to_string()))
        .expect("a `u` line in stallprobe.sysusers")
}

pub(crate) fn packaged_user() -> Arc<SysUser> {
    let mut g = SYSUSER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(u) = g.upgrade() {
        return u;
    }
    let name = sysusers_name();
    let existed = getent("passwd", &name).is_some();
    if !existed {
        let out = Command::new("systemd-sysusers")
            .arg(packaging_path("systemd/stallprobe.sysusers"))
            .output()
            .expect("systemd-sysusers");
        assert!(
            out.status.success(),
            "systemd-sysusers: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let pw = getent("passwd", &name).expect("the user exists after systemd-sysusers");
    let u = Arc::new(SysUser {
        uid: pw[2].parse().unwrap(),
        gid: pw[3].parse().unwrap(),
        name,
        created: !existed,
    });
    *g = Arc::downgrade(&u);
    u
}

impl Drop for SysUser {
    fn drop(&mut self) {
        let _g = SYSUSER.lock().unwrap_or_else(|e| e.into_inner());
        if self.created {
            let _ = Command::new("userdel").arg(&self.name).output();
            if getent("group", &self.name).is_some() {
                let _ = Command::new("groupdel").arg(&self.name).output();
            }
        }
    }
}

pub(crate) fn cstring(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// In a forked child before exec: a private mount namespace, with `hide` covered by an
/// empty tmpfs, and when `read_only_root` the root file system read-only except
/// `writable` (bind-mounted onto itself first, like a volume).
pub(crate) fn private_mounts(
    hide: Option<&CString>,
    read_only_root: bool,
    writable: Option<&CString>,
) -> std::io::Result<()> {
    let check = |r: libc::c_int| {
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    let none = std::ptr::null();
    // SAFETY: unshare/mount with valid NUL-terminated strings; async-signal-safe.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS))?;
        check(libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            none,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        if let Some(h) = hide {
            check(libc::mount(
                c"tmpfs".as_ptr(),
                h.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                c"mode=0755".as_ptr().cast(),
            ))?;
        }
        if let Some(w) = writable {
            check(libc::mount(
                w.as_ptr(),
                w.as_ptr(),
                none,
                libc::MS_BIND,
                std::ptr::null(),
            ))?;
        }
        if read_only_root {
            check(libc::mount(
                none,
                c"/".as_ptr(),
                none,
                libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
                std::ptr::null(),
            ))?;
        }
    }
    Ok(())
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut b = String::new();
    s.read_to_string(&mut b).ok()?;
    Some(b)
}

/// The metrics endpoint, once it shows the two deadlocked lockers as blocked.
pub(crate) fn metrics_with_blocked_lockers(addr: &str, what: &str) -> String {
    let t = Instant::now();
    loop {
        if let Some(b) = http_get(addr, "/metrics")
            && b.lines().any(|l| {
                l.strip_prefix("stallprobe_blocked_threads{call=\"futex\",role=\"app\"")
                    .and_then(|r| r.rsplit(' ').next()?.parse::<u64>().ok())
                    .is_some_and(|n| n >= 2)
            })
        {
            assert!(b.starts_with("HTTP/1.1 200 OK"), "{b}");
            return b;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{what}: no metrics with the blocked lockers on {addr}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A report written by `watch` (`-o`), once it has a verdict.
pub(crate) fn wait_for_report(path: &Path, what: &str, stderr: &Mutex<String>) -> Value {
    let t = Instant::now();
    loop {
        if let Some(r) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .filter(|r| r["verdict"].is_string())
        {
            return r;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{what}: no report at {}\nstderr:\n{}",
            path.display(),
            stderr.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Keep reading a child's stderr into a string (stallprobe never blocks on it).
pub(crate) fn collect_stderr(child: &mut Child) -> Arc<Mutex<String>> {
    let err = Arc::new(Mutex::new(String::new()));
    let mut pipe = child.stderr.take().unwrap();
    let e = err.clone();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            e.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    err
}

pub(crate) fn status_field(pid: u32, field: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default()
}

pub(crate) fn hex(v: &str) -> u64 {
    u64::from_str_radix(v, 16).unwrap()
}

/// Every thread of `pid` runs as `uid` with exactly `kept` (effective and permitted), no
/// ambient or inheritable capabilities, under a seccomp filter.
#[track_caller]
pub(crate) fn assert_credentials(pid: u32, uid: u32, kept: u64, no_new_privs: bool) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert_eq!(
        status_field(pid, "Uid"),
        [uid; 4].map(|u| u.to_string()).join("\t"),
        "uids of stallprobe:\n{status}"
    );
    assert_eq!(
        status_field(pid, "NoNewPrivs"),
        if no_new_privs { "1" } else { "0" }
    );
    assert_eq!(
        status_field(pid, "Seccomp"),
        "2",
        "a seccomp filter:\n{status}"
    );
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let tid = task.unwrap().file_name();
        let s =
            std::fs::read_to_string(format!("/proc/{pid}/task/{}/status", tid.to_string_lossy()))
                .unwrap_or_default();
        if s.is_empty() {
            continue; // the thread ended meanwhile
        }
        let f = |k: &str| {
            hex(s
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k}:")))
                .unwrap()
                .trim())
        };
        assert_eq!(
            (f("CapEff"), f("CapPrm"), f("CapAmb"), f("CapInh")),
            (kept, kept, 0, 0),
            "capabilities of thread {} once attached (want {kept:#x}):\n{s}",
            tid.to_string_lossy()
        );
    }
}

/// The deadlock's verdict, read by an unprivileged stallprobe: everything a root one says.
#[track_caller]
pub(crate) fn assert_full_verdict(r: &Value) {
    assert_eq!(r["verdict"], "stalled", "{}", describe(r));
    assert_flagged_exactly(r, &["locker-a", "locker-b", "main"]);
    for name in ["locker-a", "locker-b"] {
        let t = flagged_thread(r, name);
        // The service's binary is hidden from stallprobe's mounts: named through
        // /proc/PID/map_files (CAP_CHECKPOINT_RESTORE).
        assert!(
            stack_functions(t).iter().any(|f| f == "take_second_lock"),
            "{name}: user stack {:?}",
            stack_functions(t)
        );
        // Lock owners come from /proc/PID/task/TID/syscall (CAP_DAC_READ_SEARCH: the
        // service runs as root, its files are 0400).
        assert!(
            t["reason"].as_str().unwrap().contains("deadlocked"),
            "{name}: {}",
            t["reason"]
        );
        // Kernel frames by name (/proc/kallsyms addresses: CAP_SYSLOG).
        let k: Vec<&str> = t["kernel_stack"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f["function"].as_str())
            .collect();
        assert!(
            !k.is_empty() && k.iter().all(|f| !f.starts_with("0x")),
            "{name}: kernel stack {k:?}"
        );
        assert!(k.iter().any(|f| f.contains("futex")), "{name}: {k:?}");
    }
}

pub(crate) fn the_deadlock_in(dir: &Path) -> PathBuf {
    let dst = dir.join("deadlock");
    std::fs::copy(build_c("deadlock"), &dst).unwrap();
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).unwrap();
    dst
}

pub(crate) fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(tool))
            .find(|f| f.is_file())
    })
}

#[track_caller]
pub(crate) fn need(tool: &str, package: &str) -> PathBuf {
    which(tool).unwrap_or_else(|| {
        panic!("{tool} is missing: `apt-get install {package}` (cargo xtask setup should)")
    })
}

/// A child process, SIGKILLed (with the processes it traces, for strace) and reaped on
/// drop: also when an assertion fails first.
pub(crate) struct Guard(pub(crate) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        // Only while it runs: once reaped, its pid may be someone else's.
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        let pid = self.0.id();
        if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
            for c in children.split_whitespace() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(c.parse().unwrap_or(0)),
                    Signal::SIGKILL,
                );
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn sigterm(pid: u32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGTERM);
}
