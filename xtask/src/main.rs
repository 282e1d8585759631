//! `cargo xtask <task>`: everything the project needs, from a fresh machine.
//!
//! - `setup`: install what building and testing need (idempotent, says what it did).
//! - `build`: build the `stallprobe` binary (release) with its kernel programs.
//! - `demo`: setup if needed, build, run stallprobe on the bundled demo, print the report.
//! - `test`: setup if needed, build, run every test (unit + integration on the real kernel);
//!   `--kernel 6.1|6.12|all` adds the smoke suite on Debian's kernels in emulated guests.
//! - `dist`: the static binary, a tarball and a .deb in `target/dist/` (see `dist.rs`).
//! - `bench`: overhead against no probes, bpftrace and offcputime (see docs/design.md);
//!   `--kernel K` runs the hook comparison in a guest.
//! - `fuzz`: run the cargo-fuzz targets in `fuzz/` for a bounded time (`test --soak` does too).

mod bench;
mod dist;
mod fuzz;
mod kernel;
mod setup;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "stallprobe project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the build and the tests need (idempotent).
    Setup {
        /// Only report what is missing; change nothing (exit 1 if something is).
        #[arg(long)]
        check: bool,
    },
    /// Build target/release/stallprobe.
    Build,
    /// Build what users install, in target/dist/: the static x86_64-musl binary (BPF object
    /// embedded), a tarball (binary, systemd unit, man pages, completions, README) and a .deb.
    Dist,
    /// Run stallprobe on the bundled demo service and print its report.
    Demo,
    /// Run all tests: unit tests and integration tests against the real kernel (needs root).
    Test {
        /// Also run the long soak variants of the reliability tests, and every fuzz target for
        /// a minute.
        #[arg(long)]
        soak: bool,
        /// Then run the smoke suite on Debian's kernels in emulated guests: 6.1, 6.12 or all
        /// (comma-separated works too). Every hook that loads there, fentry included.
        #[arg(long, value_name = "KERNEL")]
        kernel: Option<String>,
        /// With --kernel: skip the host tests, only the guests.
        #[arg(long, requires = "kernel")]
        kernel_only: bool,
        /// Extra arguments passed to `cargo test` (after `--`), e.g. a test name filter.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run the fuzz targets (fuzz/, cargo-fuzz + libFuzzer) for a bounded time each.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = fuzz::SOAK_SECS)]
        secs: u64,
        /// Afterwards, add the small new inputs that add coverage to fuzz/corpus/.
        #[arg(long)]
        minimize: bool,
        /// Only these targets (default: all of fuzz/fuzz_targets/).
        targets: Vec<String>,
    },
    /// Measure overhead (throughput ratios) and resource use; writes target/bench/latest.json.
    Bench {
        /// Runs per configuration (alternating, medians reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Seconds per run.
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
        /// Only these workloads (comma-separated: pingpong,mutex,epoll,udp,getppid,yield).
        #[arg(long)]
        only: Option<String>,
        /// Only the hook comparison: no probes, and stallprobe with every hook that loads
        /// (no bpftrace/offcputime, no attach/memory/grace measurements).
        #[arg(long)]
        hooks: bool,
        /// Only these hooks (comma-separated: fentry,sched,raw,tracepoint); default: every hook
        /// that loads on this kernel.
        #[arg(long)]
        only_hooks: Option<String>,
        /// Run the hook comparison in an emulated guest of Debian's kernel 6.1, 6.12 or all
        /// (ratios only: emulation changes absolute costs). Implies --hooks.
        #[arg(long, value_name = "KERNEL")]
        kernel: Option<String>,
    },
    /// (inside a kernel-matrix guest) run a test plan written by `test --kernel`.
    #[command(hide = true)]
    GuestRun { plan: std::path::PathBuf },
    /// (inside a kernel-matrix guest) the hook comparison with host-built binaries.
    #[command(hide = true)]
    BenchGuest {
        #[arg(long)]
        runs: usize,
        #[arg(long)]
        secs: f64,
        #[arg(long)]
        only: Option<String>,
        #[arg(long)]
        only_hooks: Option<String>,
        #[arg(long)]
        stallprobe: std::path::PathBuf,
        #[arg(long)]
        bins: std::path::PathBuf,
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.task {
        Task::Setup { check } => setup::run(check),
        Task::Build => build().map(|_| ()),
        Task::Demo => demo(),
        Task::Dist => dist::run().map(|_| ()),
        Task::Test {
            soak,
            kernel,
            kernel_only,
            args,
        } => test(soak, kernel.as_deref(), kernel_only, &args),
        Task::Fuzz {
            secs,
            minimize,
            targets,
        } => fuzz::run(&targets, secs, minimize),
        Task::Bench {
            runs,
            secs,
            only,
            hooks,
            only_hooks,
            kernel,
        } => bench::run(&bench::Options {
            runs,
            secs,
            only,
            hooks: hooks || kernel.is_some(),
            only_hooks,
            kernel,
        }),
        Task::GuestRun { plan } => kernel::guest_run(&plan),
        Task::BenchGuest {
            runs,
            secs,
            only,
            only_hooks,
            stallprobe,
            bins,
            out,
        } => bench::guest(
            &bench::Options {
                runs,
                secs,
                only,
                hooks: true,
                only_hooks,
                kernel: None,
            },
            stallprobe,
            &bins,
            &out,
        ),
    };
    if let Err(e) = r {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

/// Build the release binary (installing the toolchain pieces first if they are missing).
pub fn build() -> Result<std::path::PathBuf> {
    setup::ensure()?;
    util::step("building stallprobe (release, with its kernel programs)");
    util::run_quiet_nested(&mut util::cargo_cmd(&[
        "build",
        "--release",
        "-p",
        "probe-user",
        "--bin",
        "stallprobe",
    ]))?;
    let bin = util::root().join("target/release/stallprobe");
    println!("  {}", bin.display());
    Ok(bin)
}

fn demo() -> Result<()> {
    let bin = build()?;
    util::step("building the demo service (tests/workloads/c/demo_service.c, gcc -O2)");
    let demo = util::gcc("demo_service")?;
    util::require_root("the demo loads BPF programs")?;
    util::step(&format!(
        "sudo stallprobe run --stop-after 2s --grace 2s -- {}",
        demo.display()
    ));
    println!(
        "  The demo service starts a few worker threads; one request handler is stuck reading\n  \
         from a peer that never answers. stallprobe sends SIGTERM after 2 s and, when the\n  \
         service is still alive 2 s later, says which threads kept it alive and why.\n"
    );
    let st = std::process::Command::new(&bin)
        .args(["run", "--stop-after", "2s", "--grace", "2s", "--"])
        .arg(&demo)
        .status()?;
    match st.code() {
        Some(0) | Some(1) => {
            println!(
                "\nstallprobe exited with {} (0: clean shutdown, 1: stalled, 2: error).",
                st.code().unwrap()
            );
            Ok(())
        }
        other => anyhow::bail!("stallprobe failed (exit {other:?})"),
    }
}

fn test(soak: bool, kernel: Option<&str>, kernel_only: bool, extra: &[String]) -> Result<()> {
    // Check the names before anything is built.
    let kernels = kernel.map(kernel::select).transpose()?;
    let bin = build()?;
    util::require_root("the integration tests load BPF programs")?;
    let host = if kernel_only {
        Ok(())
    } else {
        // The release files, for tests/dist.rs (which installs the .deb).
        dist::run().and_then(|d| host_tests(&bin, &d.dir, soak, extra))
    };
    let Some(kernels) = kernels else {
        return host;
    };
    if let Err(e) = &host {
        // The guests still run: their results are worth having either way.
        eprintln!("xtask: host tests failed: {e:#}");
    }
    let guests = kernel::test(&kernels, &bin);
    host.and(guests)
}

fn host_tests(
    bin: &std::path::Path,
    dist_dir: &std::path::Path,
    soak: bool,
    extra: &[String],
) -> Result<()> {
    util::step("running all tests (unit + integration on the real kernel)");
    let mut args: Vec<String> = ["test", "--workspace", "--release", "--no-fail-fast"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push("--".into());
    // Integration tests are timing-tolerant but share two CPUs: keep parallelism modest.
    args.push("--test-threads=2".into());
    args.extend(extra.iter().cloned());
    let mut cmd = util::cargo_cmd(&args.iter().map(String::as_str).collect::<Vec<_>>());
    cmd.env("STALLPROBE_BIN", bin);
    cmd.env("STALLPROBE_DIST_DIR", dist_dir);
    // Under `sudo cargo xtask test` the tests still run stallprobe as root (the tests of what
    // stallprobe does under sudo set these themselves).
    for var in ["SUDO_UID", "SUDO_GID", "SUDO_USER", "SUDO_COMMAND"] {
        cmd.env_remove(var);
    }
    if soak {
        cmd.env("STALLPROBE_SOAK", "1");
    }
    let before = util::workload_processes();
    let mut result = util::run_quiet_nested(&mut cmd);
    if soak {
        // Every fuzz target for a bounded time; a crash fails the run (after the tests ran).
        let fuzzed = fuzz::run(&[], fuzz::SOAK_SECS, false);
        result = result.and(fuzzed);
    }
    // Every test cleans up what it starts; a workload still running now is a test bug (and
    // noise for whatever runs next on the machine), so it fails the run.
    let leaked: Vec<(u32, String)> = util::workload_processes()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    if !leaked.is_empty() {
        for (pid, cmdline) in &leaked {
            eprintln!("leaked by the tests, now killed: pid {pid}: {cmdline}");
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
        result?;
        anyhow::bail!(
            "{} workload process(es) outlived the tests (listed above): a test does not clean up",
            leaked.len()
        );
    }
    result
}
