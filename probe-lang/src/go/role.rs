//! Runtime/system goroutines versus the application's, by start function: Go's own
//! `isSystemGoroutine` rule (start function in `runtime.*`, except `runtime.main` and the
//! ones that run user code) plus the standard library's background workers.

/// Whose goroutine it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GoRole {
    /// The Go runtime's or the standard library's own (GC workers, finalizer, sweeper,
    /// scavenger, forcegc helper, signal loop, ...): not the application's doing.
    Runtime,
    /// Everything else, the main goroutine included.
    Application,
}

/// `runtime.*` start functions that run user code (Go's isSystemGoroutine exceptions).
const RUNTIME_BUT_USER: &[&str] = &[
    "runtime.main",
    "runtime.corostart",
    "runtime.handleAsyncEvent",
];

/// Standard library background workers (start function, exact or prefix ending in '.').
const STDLIB_WORKERS: &[&str] = &[
    "os/signal.loop",
    "os/signal.watchSignalLoop",
    "runtime/pprof.profileWriter",
    "runtime/trace.",
    "unique.",
    "internal/",
];

/// The role of a goroutine by its start function's name (None: unknown → Application).
pub fn role_of(start_fn: Option<&str>) -> GoRole {
    let Some(f) = start_fn else {
        return GoRole::Application;
    };
    if RUNTIME_BUT_USER.contains(&f) {
        return GoRole::Application;
    }
    if f.starts_with("runtime.") {
        return GoRole::Runtime;
    }
    let worker = STDLIB_WORKERS.iter().any(|w| {
        if w.ends_with('.') || w.ends_with('/') {
            f.starts_with(w)
        } else {
            f == *w
                || f.strip_prefix(w)
                    .is_some_and(|rest| rest.starts_with(".func"))
        }
    });
    if worker {
        GoRole::Runtime
    } else {
        GoRole::Application
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles() {
        for f in [
            "runtime.gcBgMarkWorker",
            "runtime.runfinq",
            "runtime.bgsweep",
            "runtime.bgscavenge",
            "runtime.forcegchelper",
            "os/signal.loop",
            "unique.registerCleanup.func1",
        ] {
            assert_eq!(role_of(Some(f)), GoRole::Runtime, "{f}");
        }
        for f in [
            "runtime.main",
            "main.worker",
            "main.main.func1",
            "os/signalx.loop",
        ] {
            assert_eq!(role_of(Some(f)), GoRole::Application, "{f}");
        }
        assert_eq!(role_of(None), GoRole::Application);
    }
}
