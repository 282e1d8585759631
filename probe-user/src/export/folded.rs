//! Folded stacks (`--format folded`), the input format of flamegraph.pl, inferno and
//! speedscope: one line per distinct stack, frames outermost first separated by `;`, then a
//! space and the weight in ms of blocked time:
//!
//! ```text
//! locker-a;clone3;start_thread;locker_a;take_second_lock;___pthread_mutex_lock;__GI___lll_lock_wait;futex_wait;entry_SYSCALL_64_after_hwframe_[k];do_syscall_64_[k];futex_do_wait_[k] 4001
//! ```
//!
//! The first frame is the thread's name; then its user stack (inlined functions as frames of
//! their own); then its kernel stack, each kernel function with the `_[k]` suffix that
//! flamegraph.pl's and inferno's palettes colour as kernel code. Which threads are included and
//! what they weigh: see [`crate::export`]. Threads with the same name and the same stack are
//! merged into one line (their weights added), as folding tools expect; lines are sorted.

use std::collections::BTreeMap;

use crate::report::{Frame, GoroutineGroup, Report, ThreadReport, basename};

/// A frame name safe for the format: no `;` (the separator; Rust's `[u8; 8]` becomes
/// `[u8, 8]`), no line breaks, not empty.
pub fn sanitize(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| match c {
            ';' => ',',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    let s = s.trim();
    if s.is_empty() {
        "[unknown]".into()
    } else {
        s.to_string()
    }
}

/// A user frame's name: its function, else `[module]` (like perf's `[unknown]`, but saying
/// where).
pub fn user_frame_name(f: &Frame) -> String {
    match (&f.function, &f.module) {
        (Some(func), _) => sanitize(func),
        (None, Some(m)) => format!("[{}]", sanitize(basename(m))),
        (None, None) => "[unknown]".into(),
    }
}

/// One thread's stack, outermost first, without the weight.
pub fn stack_line(t: &ThreadReport) -> String {
    let mut parts = vec![sanitize(&t.name)];
    parts.extend(super::profile_stack(t).iter().rev().map(user_frame_name));
    parts.extend(
        t.kernel_stack
            .iter()
            .rev()
            .map(|k| format!("{}_[k]", sanitize(&k.function))),
    );
    if parts.len() == 1 {
        parts.push("[no stack]".into());
    }
    parts.join(";")
}

/// One goroutine group's stack, outermost first, under the root `goroutines`.
pub fn group_line(g: &GoroutineGroup) -> String {
    let mut parts = vec!["goroutines".to_string()];
    parts.extend(g.stack.iter().rev().map(user_frame_name));
    if parts.len() == 1 {
        parts.push("[no stack]".into());
    }
    parts.join(";")
}

/// The folded lines (`stack weight`), sorted, merged, each without a newline.
pub fn folded_lines(r: &Report) -> Vec<String> {
    let mut merged: BTreeMap<String, u64> = BTreeMap::new();
    for (t, w) in super::weighted_threads(r) {
        *merged.entry(stack_line(t)).or_default() += w;
    }
    for (g, w) in super::weighted_groups(r) {
        *merged.entry(group_line(g)).or_default() += w;
    }
    merged
        .into_iter()
        .map(|(stack, w)| format!("{stack} {w}"))
        .collect()
}

/// The folded-stacks document (one line each, newline-terminated).
pub fn folded(r: &Report) -> String {
    let mut s = String::new();
    for l in folded_lines(r) {
        s.push_str(&l);
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::{testutil, total_weight_ms};
    use crate::report::ThreadState;

    #[test]
    fn line_format() {
        let r = testutil::report();
        let lines = folded_lines(&r);
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert_eq!(
            lines[0],
            "locker-a;clone3;start_thread;locker_a;take_second_lock;___pthread_mutex_lock;__GI___lll_lock_wait;futex_wait;do_syscall_64_[k];futex_wait_[k];futex_do_wait_[k] 4001"
        );
        assert!(lines[2].starts_with("main;_start;main;shutdown_and_join;"));
        assert!(lines[2].ends_with(";futex_do_wait_[k] 1995"));
        // Every line: `frames weight`, the weight an integer after the last space.
        let mut total = 0;
        for l in &lines {
            let (stack, w) = l.rsplit_once(' ').unwrap();
            total += w.parse::<u64>().unwrap();
            assert!(stack.split(';').all(|f| !f.is_empty()), "{l}");
        }
        assert_eq!(total, total_weight_ms(&r));
        assert!(folded(&r).ends_with(" 1995\n"));
    }

    #[test]
    fn identical_stacks_merge_and_odd_names_are_safe() {
        let mut r = testutil::report();
        r.threads[2].name = "locker-a".into();
        r.threads[2].stack = r.threads[1].stack.clone();
        let lines = folded_lines(&r);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].ends_with(" 8002"), "{lines:#?}");

        assert_eq!(sanitize("f<[u8; 8]>"), "f<[u8, 8]>");
        assert_eq!(sanitize(" a\nb "), "a b");
        assert_eq!(sanitize(""), "[unknown]");
        let mut f = testutil::frame("x", "", 0, "/lib/libfoo.so.1");
        f.function = None;
        assert_eq!(user_frame_name(&f), "[libfoo.so.1]");

        // A blocked thread without stacks still counts, under its name.
        let mut r = testutil::report();
        r.threads = vec![testutil::thread(5, "bare", ThreadState::Blocked, Some(600))];
        assert_eq!(folded_lines(&r), vec!["bare;[no stack] 600".to_string()]);
    }
}
