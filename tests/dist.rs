//! What `cargo xtask dist` makes, installed and run the way a user would: the static binary
//! from the tarball (no dynamic dependencies; it runs the demo), and the .deb installed with
//! dpkg (the installed binary runs the demo, the unit passes `systemd-analyze verify`, the
//! service user exists, the man page and the completions work, nothing is enabled), then
//! purged with no file left.
//!
//! The artifacts come from `cargo xtask dist` (`cargo xtask test` runs it first and sets
//! `STALLPROBE_DIST_DIR`); without them these tests fail, saying how to make them.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    time::Duration,
};

use stallprobe_tests::{build_c, repo_root, require_root, run_with_timeout, thread, workload_dir};

/// dpkg runs one at a time, and the tarball test must not race the .deb's install/purge.
static SERIAL: Mutex<()> = Mutex::new(());

fn dist_dir() -> PathBuf {
    std::env::var_os("STALLPROBE_DIST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/dist"))
}

/// The one file in target/dist ending in `suffix`.
fn artifact(suffix: &str) -> PathBuf {
    let dir = dist_dir();
    let found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run `cargo xtask dist` first (`cargo xtask test` does)",
                dir.display()
            )
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "want exactly one *{suffix} in {} (run `cargo xtask dist`): {found:?}",
        dir.display()
    );
    found.into_iter().next().unwrap()
}

fn sh(cmd: &mut Command) -> (bool, String) {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

fn must(cmd: &mut Command) -> String {
    let (ok, text) = sh(cmd);
    assert!(ok, "{cmd:?} failed:\n{text}");
    text
}

/// The demo through `bin`: the verdict the demo promises (stalled; worker-2 and its main
/// thread, named demo_service, flagged), exit code 1.
fn run_demo(bin: &Path) {
    let demo = build_c("demo_service");
    let out = workload_dir().join(format!("dist-demo-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&out);
    let run = run_with_timeout(
        Command::new(bin)
            .args([
                "run",
                "--stop-after",
                "2s",
                "--grace",
                "2s",
                "--format",
                "json",
                "-o",
            ])
            .arg(&out)
            .arg("--")
            .arg(&demo),
        Duration::from_secs(60),
    );
    let text = std::fs::read_to_string(&out).unwrap_or_else(|e| {
        panic!(
            "{} wrote no report ({e}); exit {}\n{}",
            bin.display(),
            run.code,
            run.stderr
        )
    });
    let _ = std::fs::remove_file(&out);
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(run.code, 1, "stalled: exit 1\n{}", run.stderr);
    assert_eq!(report["verdict"], "stalled", "{text}");
    for name in ["worker-2", "demo_service"] {
        assert_eq!(thread(&report, name)["flagged"], true, "{name}: {text}");
    }
}

/// (PT_INTERP present, DT_NEEDED count) of an ELF64 little-endian file.
fn elf_dynamic(data: &[u8]) -> (bool, usize) {
    let u16_at = |o: usize| u16::from_le_bytes(data[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(data[o..o + 8].try_into().unwrap()) as usize;
    assert_eq!(&data[..6], b"\x7fELF\x02\x01", "not an ELF64 LE file");
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    let (mut interp, mut needed) = (false, 0);
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        match u32_at(ph) {
            3 => interp = true,
            2 => {
                let (off, size) = (u64_at(ph + 8), u64_at(ph + 32));
                for e in (off..off + size).step_by(16) {
                    match u64_at(e) {
                        0 => break,
                        1 => needed += 1,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (interp, needed)
}

#[test]
fn the_tarball_holds_a_static_binary_that_runs_the_demo() {
    require_root();
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tarball = artifact("-x86_64-linux-musl.tar.gz");
    let dir = workload_dir().join(format!("dist-tar-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    must(
        Command::new("tar")
            .arg("-C")
            .arg(&dir)
            .arg("-xzf")
            .arg(&tarball),
    );
    let top = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .expect("an empty tarball")
        .unwrap()
        .path();
    for f in [
        "stallprobe",
        "stallprobe@.service",
        "stallprobe.sysusers",
        "README",
        "man/stallprobe.1",
        "man/stallprobe-run.1",
        "man/stallprobe-watch.1",
        "completions/stallprobe.bash",
        "completions/_stallprobe",
        "completions/stallprobe.fish",
        "dropins/metrics-remote.conf",
    ] {
        assert!(
            top.join(f).is_file(),
            "{f} missing from {}",
            tarball.display()
        );
    }
    let bin = top.join("stallprobe");

    // No program interpreter, no shared library: `file` says so, and the ELF headers.
    let file = must(Command::new("file").arg("-b").arg(&bin));
    assert!(
        file.contains("statically linked") || file.contains("static-pie linked"),
        "{file}"
    );
    assert_eq!(
        elf_dynamic(&std::fs::read(&bin).unwrap()),
        (false, 0),
        "{}: PT_INTERP or DT_NEEDED",
        bin.display()
    );
    let (ok, ldd) = sh(Command::new("ldd").arg(&bin));
    assert!(
        !ok || ldd.contains("statically linked") || ldd.contains("not a dynamic"),
        "{ldd}"
    );

    // --version: the commit it was built from, static, and the hooks it carries.
    let v = must(Command::new(&bin).arg("--version"));
    let head = must(
        Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(repo_root()),
    );
    assert!(v.contains("(commit "), "{v}");
    assert!(
        v.contains(&format!("(commit {}", head.trim())),
        "built from another commit than HEAD (re-run `cargo xtask dist`): {v}"
    );
    assert!(
        v.contains("x86_64-unknown-linux-musl, statically linked"),
        "{v}"
    );
    assert!(v.contains("BPF hooks in the embedded object:"), "{v}");
    assert!(v.contains("tp_btf:") && v.contains("sys_enter"), "{v}");

    run_demo(&bin);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Files (not directories) the package owns, from `dpkg -L`.
fn package_files() -> Vec<PathBuf> {
    must(Command::new("dpkg").args(["-L", "stallprobe"]))
        .lines()
        .map(PathBuf::from)
        .filter(|p| p.is_file() || p.is_symlink())
        .collect()
}

#[test]
fn the_deb_installs_works_enables_nothing_and_purges_cleanly() {
    require_root();
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let deb = artifact("_amd64.deb");
    // A previous run that died half-way.
    let _ = sh(Command::new("dpkg").args(["--purge", "stallprobe"]));
    let enabled_before =
        must(Command::new("find").args(["/etc/systemd/system", "-name", "stallprobe*"]));

    let user_before = sh(Command::new("getent").args(["passwd", "stallprobe"])).0;
    let out = must(Command::new("dpkg").arg("-i").arg(&deb));
    let files = package_files();
    for want in [
        "/usr/bin/stallprobe",
        "/usr/lib/systemd/system/stallprobe@.service",
        "/usr/lib/sysusers.d/stallprobe.conf",
        "/usr/share/man/man1/stallprobe.1.gz",
        "/usr/share/man/man1/stallprobe-run.1.gz",
        "/usr/share/man/man1/stallprobe-watch.1.gz",
        "/usr/share/bash-completion/completions/stallprobe",
        "/usr/share/zsh/vendor-completions/_stallprobe",
        "/usr/share/fish/vendor_completions.d/stallprobe.fish",
        "/usr/share/doc/stallprobe/examples/dropins/metrics-remote.conf",
    ] {
        assert!(
            files.contains(&PathBuf::from(want)),
            "{want} not installed; dpkg -i said:\n{out}\nfiles: {files:?}"
        );
    }
    let bin = Path::new("/usr/bin/stallprobe");
    let v = must(Command::new(bin).arg("--version"));
    assert!(v.contains("(commit ") && v.contains("BPF hooks"), "{v}");
    run_demo(bin);

    // The unit: ExecStart is the installed binary, and systemd accepts it.
    let unit = std::fs::read_to_string("/usr/lib/systemd/system/stallprobe@.service").unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/stallprobe watch"),
        "{unit}"
    );
    let (ok, verify) = sh(Command::new("systemd-analyze").args([
        "verify",
        "--man=no",
        // An instance of the installed template, by path (not a unit of the same name
        // elsewhere on the unit path).
        "/usr/lib/systemd/system/stallprobe@nginx.service",
    ]));
    assert!(
        ok && !verify.contains("stallprobe@"),
        "systemd-analyze verify:\n{verify}"
    );
    // Its user exists, with no login; the package enabled nothing. When the user was there
    // before (another install, a test of the unit), the installed sysusers file must still
    // create it on a system without it: applied to an empty root.
    let user = must(Command::new("getent").args(["passwd", "stallprobe"]));
    assert!(user.trim_end().ends_with(":/usr/sbin/nologin"), "{user}");
    if user_before {
        let root = workload_dir().join(format!("sysusers-root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("etc")).unwrap();
        must(
            Command::new("systemd-sysusers")
                .arg(format!("--root={}", root.display()))
                .arg("/usr/lib/sysusers.d/stallprobe.conf"),
        );
        let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&root);
        assert!(
            passwd
                .lines()
                .any(|l| l.starts_with("stallprobe:") && l.ends_with(":/usr/sbin/nologin")),
            "{passwd}"
        );
    }
    let enabled = must(Command::new("find").args(["/etc/systemd/system", "-name", "stallprobe*"]));
    assert_eq!(enabled, enabled_before, "the package enabled something");

    // The man page renders; bash completes the options.
    let man = must(
        Command::new("man")
            .args(["-P", "cat", "stallprobe"])
            .env("MANWIDTH", "100"),
    );
    assert!(
        man.contains("EXIT STATUS AND EXAMPLES") && man.contains("--threshold"),
        "{man}"
    );
    let completion = must(Command::new("bash").arg("-c").arg(
        "source /usr/share/bash-completion/completions/stallprobe; \
         COMP_WORDS=(stallprobe run --stop); COMP_CWORD=2; _stallprobe stallprobe --stop run; \
         printf '%s\\n' \"${COMPREPLY[@]}\"",
    ));
    assert!(
        completion.lines().any(|l| l == "--stop-after"),
        "{completion}"
    );

    // Purge: every file of the package is gone, dpkg forgets it.
    must(Command::new("dpkg").args(["--purge", "stallprobe"]));
    let left: Vec<&PathBuf> = files.iter().filter(|p| p.exists()).collect();
    assert!(left.is_empty(), "left after purge: {left:?}");
    let (installed, status) = sh(Command::new("dpkg").args(["-s", "stallprobe"]));
    assert!(!installed, "{status}");
    assert!(!bin.exists());
}
