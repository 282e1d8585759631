//! Where the report goes: the main report (`--format`, `-o`) and the extra files (`--junit`,
//! `--summary`, `--pprof`, `--flamegraph`), GitHub Actions annotations and step summary.

use std::{
    io::IsTerminal,
    path::{Path, PathBuf},
};

use clap::Args;

use super::{annotations, files, flamegraph, folded, junit, markdown, pprof, style::Style, text};
use crate::{error::StallError, report::Report};

/// Format of the main report (`--format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
    /// Folded stacks, one line per thread stack, weighted by blocked ms.
    Folded,
}

/// The report as JSON (schema `stallprobe/report-v1`).
pub fn json(report: &Report) -> String {
    let mut s =
        serde_json::to_string_pretty(report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}

/// What to write, and where (the options every mode takes).
#[derive(Args, Debug, Clone)]
pub struct OutputOptions {
    /// Report format: text, json, or folded stacks weighted by blocked ms (for flamegraph.pl,
    /// inferno, speedscope).
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReportFormat,

    /// Write the report to FILE instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Also write a JUnit XML report to FILE: one failing test case per flagged thread.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,

    /// Also write a Markdown summary to FILE (under GitHub Actions it is appended to
    /// $GITHUB_STEP_SUMMARY in any case).
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,

    /// Also write a pprof profile (gzip'ed protobuf) of blocked time per thread stack to FILE.
    #[arg(long, value_name = "FILE")]
    pub pprof: Option<PathBuf>,

    /// Also write an off-CPU flame graph (SVG) of blocked time per thread stack to FILE.
    #[arg(long, value_name = "FILE")]
    pub flamegraph: Option<PathBuf>,

    /// Colour: auto (on a terminal), always, never.
    #[arg(long, default_value = "auto", value_parser = ["auto", "always", "never"])]
    pub color: String,
}

/// Whether stallprobe runs in a GitHub Actions job.
fn github_actions() -> bool {
    std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true")
}

/// The workspace annotations are relative to: `$GITHUB_WORKSPACE`, else the current
/// directory; as given and, when different, with symlinks resolved.
fn workspace_roots() -> Vec<PathBuf> {
    let ws = std::env::var_os("GITHUB_WORKSPACE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::current_dir().ok());
    let Some(ws) = ws else {
        return Vec::new();
    };
    let ws = if ws.is_absolute() {
        ws
    } else {
        std::env::current_dir().map(|d| d.join(&ws)).unwrap_or(ws)
    };
    let mut roots = vec![ws.clone()];
    if let Ok(real) = std::fs::canonicalize(&ws)
        && real != ws
    {
        roots.push(real);
    }
    roots
}

/// The same file (after resolving symlinks, when both exist), or the same path.
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

impl OutputOptions {
    pub fn style_for(&self, is_tty: bool) -> Style {
        Style {
            color: match self.color.as_str() {
                "always" => true,
                "never" => false,
                _ => is_tty && std::env::var_os("NO_COLOR").is_none(),
            },
        }
    }

    /// Live lines go to stderr.
    pub fn live_style(&self) -> Style {
        self.style_for(std::io::stderr().is_terminal())
    }

    /// The files this run will write, with the flag that names each.
    fn output_files(&self) -> Vec<(&'static str, &Path)> {
        [
            ("-o", &self.output),
            ("--junit", &self.junit),
            ("--summary", &self.summary),
            ("--pprof", &self.pprof),
            ("--flamegraph", &self.flamegraph),
        ]
        .into_iter()
        .filter_map(|(flag, p)| p.as_deref().map(|p| (flag, p)))
        .collect()
    }

    /// Before watching (which may take minutes): every output file's directory exists (created
    /// if need be) and the file, if there, is a regular file (not a directory, a FIFO, a
    /// symlink), so that a mistake — or a trap — fails now, not at the end.
    pub fn check_outputs(&self) -> Result<(), StallError> {
        for (flag, path) in self.output_files() {
            files::check_destination(flag, path).map_err(StallError::Usage)?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StallError::Usage(format!(
                        "{flag} {}: cannot create the directory {}: {e}",
                        path.display(),
                        dir.display()
                    ))
                })?;
            }
        }
        Ok(())
    }

    /// Write the report where it was asked for, and the exports that were asked for. Every
    /// output is attempted; the first that could not be written is the error (exit code 2).
    pub fn write(&self, report: &Report) -> Result<(), StallError> {
        use std::io::Write;
        let mut errors: Vec<String> = Vec::new();
        let write = |errors: &mut Vec<String>, what: &str, path: &Path, data: &[u8]| {
            if let Err(e) = files::write_atomically(path, data) {
                errors.push(format!("cannot write {what} to {}: {e}", path.display()));
            }
        };

        // GitHub Actions annotations: workflow commands on stdout, before the report.
        if github_actions() {
            let lines = annotations::annotations(report, &workspace_roots());
            if !lines.is_empty() {
                let mut so = std::io::stdout().lock();
                for l in lines {
                    let _ = writeln!(so, "{l}");
                }
                let _ = so.flush();
            }
        }

        let to_file = self.output.is_some();
        let style = self.style_for(!to_file && std::io::stdout().is_terminal());
        let out = match self.format {
            ReportFormat::Json => json(report),
            ReportFormat::Text => text::text(report, style),
            ReportFormat::Folded => folded::folded(report),
        };
        match &self.output {
            Some(path) => write(&mut errors, "the report", path, out.as_bytes()),
            None => {
                let mut so = std::io::stdout().lock();
                let _ = so.write_all(out.as_bytes());
                let _ = so.flush();
            }
        }

        if let Some(path) = &self.junit {
            write(
                &mut errors,
                "the JUnit report",
                path,
                junit::junit(report).as_bytes(),
            );
        }
        let step_summary = std::env::var_os("GITHUB_STEP_SUMMARY")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        if self.summary.is_some() || step_summary.is_some() {
            let md = markdown::summary(report);
            if let Some(path) = &self.summary {
                // The same file as $GITHUB_STEP_SUMMARY: appended below, not overwritten.
                if !step_summary.as_deref().is_some_and(|s| same_file(s, path)) {
                    write(&mut errors, "the summary", path, md.as_bytes());
                }
            }
            if let Some(path) = &step_summary {
                let appended = files::append_no_follow(path, format!("{md}\n").as_bytes());
                if let Err(e) = appended {
                    let msg = format!(
                        "cannot append the summary to $GITHUB_STEP_SUMMARY ({}): {e}",
                        path.display()
                    );
                    // Asked for explicitly (the same file as --summary): an error; else a warning.
                    if self.summary.as_deref().is_some_and(|s| same_file(s, path)) {
                        errors.push(msg);
                    } else {
                        eprintln!("stallprobe: warning: {msg}");
                    }
                }
            }
        }
        if let Some(path) = &self.pprof {
            write(
                &mut errors,
                "the pprof profile",
                path,
                &pprof::pprof_gz(report),
            );
        }
        if let Some(path) = &self.flamegraph {
            match flamegraph::flamegraph_svg(report) {
                Ok(svg) => write(&mut errors, "the flame graph", path, &svg),
                Err(e) => errors.push(format!("cannot render the flame graph: {e}")),
            }
        }

        match errors.len() {
            0 => Ok(()),
            1 => Err(StallError::Usage(errors.remove(0))),
            _ => {
                for e in &errors[1..] {
                    eprintln!("stallprobe: error: {e}");
                }
                Err(StallError::Usage(errors.remove(0)))
            }
        }
    }
}
