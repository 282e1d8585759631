//! Putting a thread's Python frames into its native stack (py-spy `--native` semantics).
//!
//! Each native `_PyEval_EvalFrameDefault` frame runs a run of Python frames: from the innermost
//! not yet placed up to and including the next entry frame ([`super::PyFrame::entry`]). In
//! 3.8–3.10 every Python frame is an entry frame, so each eval frame is one Python frame; in
//! 3.11+ one eval frame runs a Python function and everything it called in Python. If the
//! number of eval frames differs from the number of runs, nothing is guessed.

use super::PyFrame;

/// One frame of a merged stack: an index into the native or the Python frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergedFrame {
    Native(usize),
    Python(usize),
}

/// The merged stack, innermost first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merged {
    /// When `ok`, the merged stack. Otherwise the native stack unchanged.
    pub frames: Vec<MergedFrame>,
    /// When not `ok`: all Python frames (indexes), to be shown as a separate list.
    pub python_apart: Vec<usize>,
    pub ok: bool,
    /// Why the stacks were not merged.
    pub reason: Option<String>,
}

/// `_PyEval_EvalFrameDefault`, also as a compiler-split part (`.cold`, `.part.0`, …).
fn is_eval_default(name: &str) -> bool {
    name.strip_prefix("_PyEval_EvalFrameDefault")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

fn is_eval_ex(name: &str) -> bool {
    name.strip_prefix("PyEval_EvalFrameEx")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// Which native frames are eval-loop frames. `PyEval_EvalFrameEx` only counts when it is not
/// just the caller of a `_PyEval_EvalFrameDefault` (3.8's generators go through both).
fn eval_frames(native: &[&str]) -> Vec<usize> {
    native
        .iter()
        .enumerate()
        .filter(|&(i, name)| {
            is_eval_default(name)
                || (is_eval_ex(name) && !(i > 0 && is_eval_default(native[i - 1])))
        })
        .map(|(i, _)| i)
        .collect()
}

/// Merge `native` (function names, innermost first; "" for unknown) with `py` (innermost first).
pub fn merge(native: &[&str], py: &[PyFrame]) -> Merged {
    let evals = eval_frames(native);
    // Runs of Python frames, each ending at an entry frame.
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    for (i, f) in py.iter().enumerate() {
        if f.entry || i + 1 == py.len() {
            runs.push((start, i + 1));
            start = i + 1;
        }
    }
    let apart = |reason: String| Merged {
        frames: (0..native.len()).map(MergedFrame::Native).collect(),
        python_apart: (0..py.len()).collect(),
        ok: false,
        reason: Some(reason),
    };
    if py.is_empty() {
        return Merged {
            frames: (0..native.len()).map(MergedFrame::Native).collect(),
            python_apart: Vec::new(),
            ok: evals.is_empty(),
            reason: (!evals.is_empty()).then(|| {
                format!(
                    "{} native eval-loop frame(s) but no Python frames",
                    evals.len()
                )
            }),
        };
    }
    if evals.len() != runs.len() {
        return apart(format!(
            "{} native eval-loop frame(s) for {} run(s) of Python frames ({} frames): the stacks were read at different moments or the native unwind is incomplete",
            evals.len(),
            runs.len(),
            py.len()
        ));
    }
    let mut frames = Vec::with_capacity(native.len() + py.len());
    let mut run = runs.iter();
    for i in 0..native.len() {
        if evals.binary_search(&i).is_ok() {
            if let Some(&(s, e)) = run.next() {
                frames.extend((s..e).map(MergedFrame::Python));
            }
        } else {
            frames.push(MergedFrame::Native(i));
        }
    }
    Merged {
        frames,
        python_apart: Vec::new(),
        ok: true,
        reason: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MergedFrame::{Native as N, Python as P};

    fn f(name: &str, entry: bool) -> PyFrame {
        PyFrame {
            function: name.into(),
            file: "x.py".into(),
            line: Some(1),
            entry,
        }
    }

    #[test]
    fn one_eval_frame_per_python_frame_before_311() {
        let native = [
            "futex_wait",
            "PyThread_acquire_lock_timed",
            "lock_PyThread_acquire_lock",
            "_PyEval_EvalFrameDefault",
            "_PyFunction_Vectorcall",
            "_PyEval_EvalFrameDefault.cold",
            "main",
        ];
        let py = [f("wait", true), f("run", true)];
        let m = merge(&native, &py);
        assert!(m.ok, "{:?}", m.reason);
        assert_eq!(m.frames, [N(0), N(1), N(2), P(0), N(4), P(1), N(6)]);
    }

    #[test]
    fn one_eval_frame_runs_a_run_up_to_an_entry_frame_since_311() {
        let native = [
            "recv",
            "sock_recv",
            "_PyEval_EvalFrameDefault",
            "thread_run",
            "_PyEval_EvalFrameDefault",
            "Py_RunMain",
        ];
        // recv() called from fetch() from run(); run is entered from C (Thread bootstrap),
        // the outer one from the module.
        let py = [
            f("fetch", false),
            f("run", true),
            f("helper", false),
            f("<module>", true),
        ];
        let m = merge(&native, &py);
        assert!(m.ok);
        assert_eq!(m.frames, [N(0), N(1), P(0), P(1), N(3), P(2), P(3), N(5)]);
    }

    #[test]
    fn ex_wrapping_default_counts_once() {
        let native = [
            "_PyEval_EvalFrameDefault",
            "PyEval_EvalFrameEx",
            "gen_send_ex",
            "_PyEval_EvalFrameDefault",
        ];
        let m = merge(&native, &[f("gen", true), f("caller", true)]);
        assert!(m.ok);
        assert_eq!(m.frames, [P(0), N(1), N(2), P(1)]);
    }

    #[test]
    fn mismatch_keeps_both_apart_with_a_reason() {
        let native = ["epoll_wait", "_PyEval_EvalFrameDefault", "main"];
        let py = [f("a", true), f("b", true)];
        let m = merge(&native, &py);
        assert!(!m.ok);
        assert_eq!(m.frames, [N(0), N(1), N(2)]);
        assert_eq!(m.python_apart, [0, 1]);
        assert!(
            m.reason
                .unwrap()
                .contains("1 native eval-loop frame(s) for 2 run(s)")
        );
    }

    #[test]
    fn no_python_frames() {
        let m = merge(&["read", "main"], &[]);
        assert!(m.ok);
        assert_eq!(m.frames, [N(0), N(1)]);
        let m = merge(&["_PyEval_EvalFrameDefault"], &[]);
        assert!(!m.ok);
        assert!(m.reason.is_some());
    }

    #[test]
    fn similar_names_are_not_eval_frames() {
        assert!(is_eval_default("_PyEval_EvalFrameDefault.cold.12"));
        assert!(!is_eval_default("_PyEval_EvalFrameDefaultX"));
        assert!(!is_eval_default("PyEval_EvalFrame"));
        assert!(is_eval_ex("PyEval_EvalFrameEx"));
    }
}
