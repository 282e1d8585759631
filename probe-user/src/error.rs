//! Errors that stop stallprobe from doing its job. Each one says what went wrong and what to do
//! about it, and maps to exit code 2 (exit codes 0 and 1 are verdicts, see `crate::verdict`).

use thiserror::Error;

/// Exit code when stallprobe itself could not do its job.
pub const EXIT_ERROR: i32 = 2;

#[derive(Debug, Error)]
pub enum StallError {
    #[error("no process with pid {pid}{}\n  hint: list the processes with their pids: `ps -eo pid,comm,args`", if *.exited { " (it exited)" } else { "" })]
    NoSuchProcess { pid: u32, exited: bool },

    #[error("{what}: missing {}\n  hint: {hint}", missing.join(", "))]
    Permission {
        what: String,
        missing: Vec<&'static str>,
        hint: String,
    },

    #[error("this kernel lacks {what}: {detail}\n  hint: {hint}")]
    KernelFeature {
        what: String,
        detail: String,
        hint: String,
    },

    #[error(
        "tracefs is not mounted and could not be mounted at /sys/kernel/tracing: {detail}\n  hint: mount it: `sudo mount -t tracefs tracefs /sys/kernel/tracing` (or use the default hook, which does not need it: {})",
        with_hook("auto")
    )]
    Tracefs { detail: String },

    #[error("the kernel refused to {action}: {detail}{}", hint.as_ref().map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
    Load {
        action: String,
        detail: String,
        hint: Option<String>,
    },

    #[error("could not drop privileges after attaching: {detail}\n  hint: {hint}")]
    Privileges { detail: String, hint: String },

    #[error("{0}")]
    Usage(String),

    #[error("cannot start `{cmd}`: {detail}{}", spawn_hint(cmd, detail))]
    Spawn { cmd: String, detail: String },

    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// For a command that is not found: under sudo, PATH is sudo's `secure_path`, so the fix is
/// the full path, which the user's own shell knows.
fn spawn_hint(cmd: &str, detail: &str) -> String {
    let prog = cmd.split(' ').next().unwrap_or(cmd);
    if detail.contains("not found on PATH") && !prog.contains('/') {
        let fixed = rerun_with(|args| {
            if let Some(i) = args.iter().position(|a| a == "--")
                && let Some(p) = args.get_mut(i + 1)
            {
                *p = format!("$(command -v {})", shell_quote(prog));
            }
        });
        format!("\n  hint: give its full path (sudo's PATH is not yours): {fixed}")
    } else if detail.contains("No such file") || detail.contains("not found") {
        format!("\n  hint: check the path: `ls -l {}`", shell_quote(prog))
    } else {
        String::new()
    }
}

/// The command line stallprobe was started with (set once by `cli::main`), for hints that
/// print the command that fixes an error.
static INVOCATION: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

pub fn set_invocation(args: Vec<String>) {
    let _ = INVOCATION.set(args);
}

/// `s` as one shell word.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./:=@%+,".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Directories in sudo's default `secure_path`: a stallprobe found there runs as
/// `sudo stallprobe`; elsewhere (`~/.cargo/bin`, a checkout) it needs its full path.
const SECURE_PATH: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// How to name this binary in a command the user copies (to be run under sudo).
fn program_word(argv0: &str) -> String {
    if argv0.contains('/') {
        return shell_quote(argv0);
    }
    match std::env::current_exe() {
        Ok(exe)
            if !exe
                .parent()
                .is_some_and(|d| SECURE_PATH.iter().any(|p| d == std::path::Path::new(p))) =>
        {
            shell_quote(&exe.to_string_lossy())
        }
        _ => shell_quote(argv0),
    }
}

/// The command line as it was run, changed by `edit` (which sees the arguments after the
/// program name), ready to copy: `stallprobe --pid 42 --hook raw`.
pub fn rerun_with(edit: impl FnOnce(&mut Vec<String>)) -> String {
    let all = INVOCATION
        .get()
        .cloned()
        .unwrap_or_else(|| vec!["stallprobe".to_string()]);
    let (argv0, rest) = all
        .split_first()
        .map_or(("stallprobe", &[][..]), |(a, r)| (a.as_str(), r));
    let mut args = rest.to_vec();
    edit(&mut args);
    let mut words = vec![program_word(argv0)];
    words.extend(args.iter().map(|a| {
        // A command substitution put in by a hint stays unquoted.
        if a.starts_with("$(") {
            a.clone()
        } else {
            shell_quote(a)
        }
    }));
    words.join(" ")
}

/// The same command line under sudo.
pub fn as_root_command() -> String {
    format!("sudo {}", rerun_with(|_| {}))
}

/// The command line with `--hook` set to `hook` (replacing the one given).
pub fn with_hook(hook: &str) -> String {
    rerun_with(|args| {
        if let Some(i) = args.iter().position(|a| a == "--hook")
            && i + 1 < args.len()
        {
            args[i + 1] = hook.to_string();
        } else if let Some(a) = args.iter_mut().find(|a| a.starts_with("--hook=")) {
            *a = format!("--hook={hook}");
        } else {
            let at = match args.first().map(String::as_str) {
                Some("run") | Some("watch") => 1,
                _ => 0,
            };
            args.insert(at, hook.to_string());
            args.insert(at, "--hook".to_string());
        }
    })
}

impl StallError {
    pub fn exit_code(&self) -> i32 {
        EXIT_ERROR
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_the_commands_that_fix_things() {
        assert_eq!(shell_quote("--pid"), "--pid");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        set_invocation(
            [
                "./stallprobe",
                "run",
                "--hook",
                "fentry",
                "--",
                "my svc",
                "-x",
            ]
            .map(String::from)
            .to_vec(),
        );
        assert_eq!(
            as_root_command(),
            "sudo ./stallprobe run --hook fentry -- 'my svc' -x"
        );
        assert_eq!(
            with_hook("raw"),
            "./stallprobe run --hook raw -- 'my svc' -x"
        );
        let e = StallError::Spawn {
            cmd: "my-svc -x".into(),
            detail: "`my-svc` not found on PATH".into(),
        }
        .to_string();
        assert!(
            e.ends_with("hint: give its full path (sudo's PATH is not yours): ./stallprobe run --hook fentry -- $(command -v my-svc) -x"),
            "{e}"
        );
    }
}
