//! GitHub Actions annotations: under `GITHUB_ACTIONS=true`, one `::error` workflow command per
//! flagged thread, at the source line where the application waits, so that the pull request's
//! diff view shows the stall on the line that caused it:
//!
//! ```text
//! ::error file=src/pool.c,line=26,title=stallprobe%3A thread locker-a stalled::blocked in futex …
//! ```
//!
//! The line is the thread's innermost *application* frame (frames of libc, the dynamic loader,
//! language runtimes and standard libraries are skipped, see [`crate::stack::is_system_frame`])
//! whose file is inside the workspace (`GITHUB_WORKSPACE`, else the current directory): GitHub
//! can only annotate files of the repository. A thread with no such frame (a stripped binary, a
//! stack entirely in dependencies or in the runtime) gets no annotation; the JUnit report, the
//! summary and the exit code still carry it. Absolute file paths (what gcc, clang, rustc, go
//! and CPython record) are placed directly; a Java frame names only its source file
//! (`Deadlock.java`), which is looked up in the workspace by its package's path.

use std::path::{Component, Path, PathBuf};

use crate::report::{Frame, Report, ThreadReport};

/// Escape a workflow command's message (GitHub's `escapeData`: `%`, CR, LF).
pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escape a workflow command's property value (GitHub's `escapeProperty`: as data, plus `:`
/// and `,`, which separate properties).
pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// `p` with `.` and `..` resolved lexically; `None` unless absolute.
fn normalize(p: &Path) -> Option<PathBuf> {
    if !p.is_absolute() {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
        }
    }
    Some(out)
}

/// `file` relative to the first of `roots` that contains it (with `/` separators), or `None`
/// when `file` is relative or outside every root.
pub fn workspace_relative(file: &str, roots: &[PathBuf]) -> Option<String> {
    let file = normalize(Path::new(file))?;
    roots.iter().find_map(|root| {
        let root = normalize(root)?;
        let rel = file.strip_prefix(&root).ok()?;
        if rel.as_os_str().is_empty() {
            return None; // the workspace itself is not a file
        }
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        Some(parts.join("/"))
    })
}

/// The frame an annotation for `t` points at, with its workspace-relative path and line.
pub fn annotation_site<'a>(
    t: &'a ThreadReport,
    roots: &[PathBuf],
) -> Option<(&'a Frame, String, u32)> {
    stack_site(super::profile_stack(t), roots)
}

/// The first application frame of `stack` in the workspace, with its relative path and line.
fn stack_site<'a>(stack: &'a [Frame], roots: &[PathBuf]) -> Option<(&'a Frame, String, u32)> {
    stack
        .iter()
        .filter(|f| f.function.is_some() && !crate::stack::is_system_frame(f))
        .find_map(|f| {
            let line = f.line.filter(|&l| l > 0)?;
            let file = f.file.as_deref()?;
            let rel = workspace_relative(file, roots).or_else(|| java_source(f, roots))?;
            Some((f, rel, line))
        })
}

/// Files looked at when searching the workspace for a Java source file.
const MAX_WORKSPACE_ENTRIES: usize = 50_000;

/// Where in the workspace a Java frame's source file is: `pkg.Class.method` in `Class.java`
/// is `…/pkg/Class.java` (relative path with `/`); the first match in a bounded walk.
fn java_source(f: &Frame, roots: &[PathBuf]) -> Option<String> {
    if f.lang != Some(crate::report::Lang::Java) {
        return None;
    }
    let file = f
        .file
        .as_deref()
        .filter(|n| n.ends_with(".java") && !n.contains('/'))?;
    // `a.b.C.m` or `a.b.C$Inner.m`: the package is everything before the class.
    let function = f.function.as_deref()?;
    let parts: Vec<&str> = function.split('.').collect();
    let package = parts
        .get(..parts.len().saturating_sub(2))
        .unwrap_or(&[])
        .join("/");
    let want = if package.is_empty() {
        file.to_string()
    } else {
        format!("{package}/{file}")
    };
    for root in roots {
        let mut seen = 0;
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                seen += 1;
                if seen > MAX_WORKSPACE_ENTRIES {
                    break;
                }
                let path = e.path();
                let name = e.file_name();
                let Ok(kind) = e.file_type() else { continue };
                if kind.is_dir() {
                    if !matches!(
                        name.to_str(),
                        Some("target" | ".git" | "node_modules" | "build")
                    ) {
                        dirs.push(path);
                    }
                } else if name.to_str() == Some(file) {
                    let rel = workspace_relative(path.to_str()?, roots)?;
                    if rel == want || rel.ends_with(&format!("/{want}")) {
                        return Some(rel);
                    }
                }
            }
        }
    }
    None
}

/// The `::error` lines for a report (without trailing newlines). `roots` are the workspace
/// directory as given and, when it differs, as resolved through symlinks.
pub fn annotations(r: &Report, roots: &[PathBuf]) -> Vec<String> {
    let line = |file: &str, line: u32, title: &str, message: &str| {
        format!(
            "::error file={},line={line},title={}::{}",
            escape_property(file),
            escape_property(title),
            escape_data(message)
        )
    };
    let threads = r.flagged().filter_map(|t| {
        let (_, file, l) = annotation_site(t, roots)?;
        let title = format!("stallprobe: thread {} stalled", t.name);
        Some(line(
            &file,
            l,
            &title,
            t.reason.as_deref().unwrap_or("flagged"),
        ))
    });
    // Goroutines at their own source line (the blocking statement).
    let groups = r.flagged_groups().filter_map(|g| {
        let (_, file, l) = stack_site(&g.stack, roots)?;
        let title = format!("stallprobe: {} stalled", g.who());
        Some(line(
            &file,
            l,
            &title,
            g.reason.as_deref().unwrap_or("flagged"),
        ))
    });
    threads.chain(groups).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::testutil;

    #[test]
    fn escaping_follows_the_actions_toolkit() {
        assert_eq!(
            escape_data("100% done\r\nnext: a,b"),
            "100%25 done%0D%0Anext: a,b"
        );
        assert_eq!(
            escape_property("100% done\r\nnext: a,b"),
            "100%25 done%0D%0Anext%3A a%2Cb"
        );
        // `%` first, so that an escape is never escaped twice.
        assert_eq!(escape_property("%3A:"), "%253A%3A");
    }

    #[test]
    fn workspace_relative_paths() {
        let roots = [PathBuf::from("/ws")];
        assert_eq!(
            workspace_relative("/ws/src/main.c", &roots).as_deref(),
            Some("src/main.c")
        );
        assert_eq!(
            workspace_relative("/ws/build/../src/./x.c", &roots).as_deref(),
            Some("src/x.c")
        );
        // A sibling directory sharing the prefix is outside.
        assert_eq!(workspace_relative("/ws2/src/main.c", &roots), None);
        assert_eq!(workspace_relative("/usr/include/stdio.h", &roots), None);
        assert_eq!(workspace_relative("/ws/../etc/passwd", &roots), None);
        // Relative DWARF paths (glibc's `./nptl/...`) cannot be placed.
        assert_eq!(workspace_relative("./nptl/futex-internal.c", &roots), None);
        assert_eq!(workspace_relative("/ws", &roots), None);
        // A trailing slash or `..` in the root is fine; the second root also counts.
        let roots = [PathBuf::from("/link/"), PathBuf::from("/real/x/../ws/")];
        assert_eq!(
            workspace_relative("/real/ws/a/b.rs", &roots).as_deref(),
            Some("a/b.rs")
        );
    }

    #[test]
    fn one_error_per_flagged_thread_at_its_application_frame() {
        let r = testutil::report();
        let a = annotations(&r, &[PathBuf::from("/ws")]);
        assert_eq!(
            a,
            vec![
                "::error file=tests/workloads/c/deadlock.c,line=54,title=stallprobe%3A thread main stalled::blocked joining thread 101 (locker-a), which has not exited".to_string(),
                "::error file=tests/workloads/c/deadlock.c,line=26,title=stallprobe%3A thread locker-a stalled::blocked in futex on FUTEX_WAIT_PRIVATE 0x55550000101 since before SIGTERM (4s) and never woke up at take_second_lock (deadlock.c:26)".to_string(),
                "::error file=tests/workloads/c/deadlock.c,line=26,title=stallprobe%3A thread locker-b stalled::blocked in futex on FUTEX_WAIT_PRIVATE 0x55550000102 since before SIGTERM (4s) and never woke up at take_second_lock (deadlock.c:26)".to_string(),
            ]
        );
        // Outside the workspace: nothing to annotate.
        assert!(annotations(&r, &[PathBuf::from("/elsewhere")]).is_empty());
        assert!(annotations(&testutil::clean_report(), &[PathBuf::from("/ws")]).is_empty());
    }

    #[test]
    fn skips_system_frames_and_frames_outside_the_workspace() {
        let mut r = testutil::report();
        let t = &mut r.threads[1];
        // The innermost application frame is in a dependency outside the workspace: the
        // annotation goes to the first application frame inside it.
        t.stack.insert(
            3,
            testutil::frame(
                "dep_lock",
                "/home/u/.cargo/registry/dep/src/lib.rs",
                7,
                testutil::EXE,
            ),
        );
        // A frame inside the workspace that belongs to libc is skipped too.
        t.stack.insert(
            0,
            testutil::frame("syscall", "/ws/vendor/glibc/syscall.S", 38, testutil::LIBC),
        );
        t.name = "a,b:c".into();
        t.reason = Some("50% of\nthe time".into());
        let (f, file, line) = annotation_site(t, &[PathBuf::from("/ws")]).unwrap();
        assert_eq!(f.function.as_deref(), Some("take_second_lock"));
        assert_eq!((file.as_str(), line), ("tests/workloads/c/deadlock.c", 26));
        let a = annotations(&r, &[PathBuf::from("/ws")]);
        assert_eq!(
            a[1],
            "::error file=tests/workloads/c/deadlock.c,line=26,title=stallprobe%3A thread a%2Cb%3Ac stalled::50%25 of%0Athe time"
        );
        // No line number: no annotation for that frame.
        let mut r = testutil::report();
        for f in &mut r.threads[0].stack {
            f.line = None;
        }
        assert_eq!(annotations(&r, &[PathBuf::from("/ws")]).len(), 2);
    }
}
