//! `--html FILE`: the report as one self-contained page for someone clicking on a CI artifact.
//! The verdict first; each flagged thread and goroutine group with its reason and collapsible
//! user and kernel stacks (frames link to their file:line); the wait-for graph with deadlock
//! cycles in red ([`graph`]); the shutdown timeline as a chart ([`timeline`]); the off-CPU flame
//! graph (the `--flamegraph` SVG, embedded as a `data:` URL in a sandboxed frame); every thread
//! in a table; notes.
//!
//! Self-contained: inline CSS and SVG, one small inline script (expand/collapse all, and a
//! self-check of the layout the tests read), nothing fetched. Every string of the report goes
//! through [`esc`] (target text is already free of control characters, but a thread may be
//! named `<script>`), and a Content-Security-Policy allows no script but that one (by its
//! hash), no network, no plugins: a page that escaped something wrong still runs nothing.

mod graph;
mod timeline;

use std::{fmt::Write as _, path::PathBuf};

use base64::Engine as _;

use super::{annotations::workspace_relative, flamegraph};
use crate::report::{
    Frame, GoroutineGroup, KernelFrame, Report, Role, ThreadReport, ThreadState, Verdict, basename,
    format_ms, format_ms_u64,
};

/// Where frames link to: `{blob_base}/{path in the workspace}#L{line}` for files inside one of
/// `roots` when `blob_base` is set (a repository at a commit), else `file://` paths.
#[derive(Clone, Debug, Default)]
pub struct SourceLinks {
    pub roots: Vec<PathBuf>,
    pub blob_base: Option<String>,
}

/// Rows of the thread table, slow calls listed, frames per stack.
const MAX_THREAD_ROWS: usize = 500;
const MAX_SLOW_CALLS: usize = 50;
const MAX_FRAMES: usize = 64;
const MAX_FLAGGED_GROUPS: usize = 50;

/// The page's only script. Its SHA-256 is in the Content-Security-Policy ([`SCRIPT_HASH`]);
/// change both together (`probe-user/src/export/html/mod.rs` unit test checks them).
const SCRIPT: &str = r#"(function(){document.querySelectorAll('button[data-expand]').forEach(function(b){b.addEventListener('click',function(){var open=b.getAttribute('data-expand')==='1';document.querySelectorAll('details.stack').forEach(function(d){d.open=open;});});});var box=function(s){var e=document.querySelector(s);if(!e)return'';var r=e.getBoundingClientRect();return Math.round(r.width)+'x'+Math.round(r.height);};document.body.setAttribute('data-rendered',JSON.stringify({verdict:box('#verdict'),flagged:document.querySelectorAll('article.flagged').length,graph:box('svg.waitfor'),timeline:box('svg.timeline'),flamegraph:box('iframe.flamegraph')}));})();"#;
const SCRIPT_HASH: &str = "sha256-DY1hQ0lJLTQKISlJW4JQOa5sF/iKGXuJATtKtS+nX5w=";

const CSS: &str = r#"
:root{--red:#cf222e;--green:#1a7f37;--blue:#0969da;--grey:#57606a;--line:#d0d7de;--bg:#f6f8fa}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#1f2328;background:#fff}
main{max-width:1280px;margin:0 auto;padding:0 24px 48px}
code,.mono,ol.frames,table.threads td,.kstack{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
#verdict{padding:18px 24px;border-bottom:1px solid var(--line);color:#fff}
#verdict.stalled{background:var(--red)}#verdict.clean{background:var(--green)}#verdict.observed{background:var(--blue)}
#verdict h1{margin:0 0 4px;font-size:26px}#verdict p{margin:2px 0}#verdict ul{margin:8px 0 0;padding-left:20px}
#verdict .what{font-size:15px;opacity:.95}
h2{font-size:19px;margin:28px 0 10px;padding-bottom:4px;border-bottom:1px solid var(--line)}
article{border:1px solid var(--line);border-left:5px solid var(--red);border-radius:6px;padding:10px 14px;margin:10px 0;background:#fff}
article h3{margin:0 0 4px;font-size:16px}article .reason{margin:4px 0;font-weight:600}
article .wait{color:var(--grey);margin:2px 0}
.badge{display:inline-block;font-size:11px;font-weight:600;border-radius:10px;padding:1px 8px;margin-left:6px;background:var(--bg);border:1px solid var(--line);color:var(--grey);vertical-align:middle}
.badge.flag{background:var(--red);border-color:var(--red);color:#fff}
details{margin:6px 0}summary{cursor:pointer;color:var(--blue)}
ol.frames{margin:4px 0 0;padding-left:34px}ol.frames li{padding:1px 0}
ol.frames li.sys{color:var(--grey)}ol.frames li.app .fn{font-weight:700}
.fn{color:#1f2328}ol.frames li.sys .fn{color:var(--grey)}
.src{margin-left:8px}a.src{color:var(--blue);text-decoration:none}a.src:hover{text-decoration:underline}
.mod{color:var(--grey);margin-left:8px}.inl{color:#9a6700;margin-left:6px;font-size:11px}
.kstack{color:var(--grey);margin:4px 0 0 34px;word-break:break-all}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:3px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:var(--bg);font-size:12px}tr.flagged td{background:#ffebe9}
.muted{color:var(--grey)}.note{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:6px 10px;margin:6px 0}
.figure{overflow-x:auto;border:1px solid var(--line);border-radius:6px;padding:8px;background:#fff}
.legend span{margin-right:14px}.sw{display:inline-block;width:12px;height:12px;border-radius:2px;vertical-align:-1px;margin-right:4px}
svg text{font-family:system-ui,sans-serif;font-size:12px}
svg.waitfor .node rect{fill:#ddf4ff;stroke:var(--blue);stroke-width:1.5}
svg.waitfor .node.process rect{fill:#f6f8fa;stroke:var(--grey);stroke-dasharray:4 3}
svg.waitfor .node.flagged rect{fill:#ffebe9}
svg.waitfor .node.cycle rect{stroke:var(--red);stroke-width:3}
svg.waitfor .node .name{font-weight:700}svg.waitfor .node .sub{fill:var(--grey);font-size:11px}
svg.waitfor .edge path{fill:none;stroke:var(--grey);stroke-width:1.6}
svg.waitfor .edge.fd path{stroke-dasharray:6 4}
svg.waitfor .edge.cycle path{stroke:var(--red);stroke-width:3}
svg.waitfor .edge text{fill:var(--grey);font-size:11px}svg.waitfor .edge.cycle text{fill:var(--red);font-weight:700}
svg.timeline .grid{stroke:#eaeef2}svg.timeline .tick{fill:var(--grey);font-size:11px}
svg.timeline .label{fill:#1f2328}
svg.timeline .bar rect{fill:#54aeff}svg.timeline .bar.exited rect{fill:#afb8c1}
svg.timeline .bar.runtime rect{fill:#c8e1ff}svg.timeline .bar.flagged rect{fill:#ff8182}
svg.timeline .bar rect.blocked{fill:#0550ae}svg.timeline .bar.flagged rect.blocked{fill:var(--red)}
svg.timeline .exit{stroke:#1f2328;stroke-width:2}
svg.timeline .mark line{stroke-width:2}svg.timeline .mark text{font-weight:700}
svg.timeline .mark.signal line{stroke:#bf8700}svg.timeline .mark.signal text{fill:#9a6700}
svg.timeline .mark.grace line{stroke:var(--red);stroke-dasharray:6 4}svg.timeline .mark.grace text{fill:var(--red)}
svg.timeline .mark.exited line{stroke:var(--green)}svg.timeline .mark.exited text{fill:var(--green)}
iframe.flamegraph{border:0;width:100%;display:block}
button{font:inherit;font-size:12px;padding:2px 10px;margin-right:6px;border:1px solid var(--line);border-radius:6px;background:var(--bg);cursor:pointer}
footer{color:var(--grey);font-size:12px;margin-top:32px}
"#;

/// Text for HTML element content and attribute values: `& < > " '` as entities.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// At most `n` characters, `…` at the end when cut.
fn trunc(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// A path as a `file://` URL (bytes outside the unreserved set percent-encoded).
fn file_url(path: &str) -> String {
    let mut o = String::from("file://");
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"/._-~".contains(&b) {
            o.push(b as char);
        } else {
            let _ = write!(o, "%{b:02X}");
        }
    }
    o
}

impl SourceLinks {
    /// Where `file:line` links to, if anywhere.
    fn href(&self, file: &str, line: Option<u32>) -> Option<String> {
        if let Some(base) = &self.blob_base
            && let Some(rel) = workspace_relative(file, &self.roots)
        {
            let rel: String = file_url(&rel)["file://".len()..].to_string();
            return Some(match line {
                Some(l) => format!("{base}/{rel}#L{l}"),
                None => format!("{base}/{rel}"),
            });
        }
        file.starts_with('/').then(|| file_url(file))
    }
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Clean => "clean",
        Verdict::Stalled => "stalled",
        Verdict::Observed => "observed",
    }
}

/// The page.
pub fn html(r: &Report, links: &SourceLinks) -> String {
    let mut o = String::with_capacity(64 * 1024);
    let t = &r.target;
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; \
         script-src '{SCRIPT_HASH}'; img-src data:; frame-src data:; base-uri 'none'; form-action 'none'\">\
         <meta name=\"generator\" content=\"stallprobe {}\">\
         <title>stallprobe: {} — {} (pid {})</title><style>{CSS}</style></head>\n<body>\n",
        esc(r.session.stallprobe_version),
        verdict_word(r.verdict),
        esc(&t.comm),
        t.pid
    );
    header(&mut o, r);
    o.push_str("<main>\n");
    flagged(&mut o, r, links);
    waitfor(&mut o, r);
    shutdown_timeline(&mut o, r);
    flame(&mut o, r);
    thread_table(&mut o, r);
    slow_calls(&mut o, r);
    notes(&mut o, r);
    let _ = writeln!(
        o,
        "<footer>stallprobe {} · hook {} · threshold {} · interval {} · watched {} · dropped events {} · schema {}</footer>",
        esc(r.session.stallprobe_version),
        r.session.hook.as_str(),
        format_ms(r.session.threshold_ms),
        format_ms(r.session.interval_ms),
        format_ms_u64(r.session.watched_ms),
        r.dropped_events,
        esc(r.schema)
    );
    let _ = write!(o, "</main>\n<script>{SCRIPT}</script>\n</body></html>\n");
    o
}

fn header(o: &mut String, r: &Report) {
    let t = &r.target;
    let _ = write!(
        o,
        "<header id=\"verdict\" class=\"{0}\"><h1>verdict: {0}</h1>",
        verdict_word(r.verdict)
    );
    let end = match (t.exited, t.exit_code, &t.killed_by) {
        (true, Some(c), _) => format!("exited with code {c}"),
        (true, None, Some(s)) => format!("killed by {s}"),
        (true, None, None) => "exited".to_string(),
        (false, _, _) => "still running at the end".to_string(),
    };
    let _ = write!(
        o,
        "<p class=\"what\">pid {} <b>{}</b> ({}) · runtime {}{} · {} · watched {}</p>",
        t.pid,
        esc(&t.comm),
        esc(&t.exe),
        t.runtime.as_str(),
        t.go_version
            .as_deref()
            .map(|v| format!(" ({})", esc(v)))
            .unwrap_or_default(),
        esc(&end),
        format_ms_u64(r.session.watched_ms)
    );
    match &r.shutdown {
        Some(sd) => {
            let outcome = sd.outcome();
            let _ = write!(
                o,
                "<p>{} from pid {} ({}) at +{}: {}{}</p>",
                esc(&sd.signal),
                sd.sender_pid,
                esc(&sd.sender_comm),
                format_ms(sd.at_ms.max(0) as f64),
                esc(&outcome),
                if sd.ignored {
                    " (the signal was ignored or blocked)"
                } else {
                    ""
                }
            );
        }
        None => o.push_str("<p>no shutdown signal was seen</p>"),
    }
    if !r.summary.is_empty() {
        o.push_str("<ul class=\"summary\">");
        for l in &r.summary {
            let _ = write!(o, "<li>{}</li>", esc(l));
        }
        o.push_str("</ul>");
    }
    o.push_str("</header>\n");
}

/// One frame as a list item: function, file:line (a link), module.
fn frame_item(o: &mut String, f: &Frame, links: &SourceLinks) {
    let sys = crate::stack::is_system_frame(f);
    let func = f
        .function
        .clone()
        .unwrap_or_else(|| format!("{:#x}", f.addr));
    let _ = write!(
        o,
        "<li class=\"{}\"><span class=\"fn\">{}</span>",
        if sys { "sys" } else { "app" },
        esc(&func)
    );
    if let Some(file) = &f.file {
        let shown = match f.line {
            Some(l) => format!("{}:{l}", basename(file)),
            None => basename(file).to_string(),
        };
        match links.href(file, f.line) {
            Some(h) => {
                let _ = write!(
                    o,
                    "<a class=\"src\" href=\"{}\" title=\"{}\">{}</a>",
                    esc(&h),
                    esc(file),
                    esc(&shown)
                );
            }
            None => {
                let _ = write!(
                    o,
                    "<span class=\"src\" title=\"{}\">{}</span>",
                    esc(file),
                    esc(&shown)
                );
            }
        }
    }
    // A Python or Java frame says so, as in the text report.
    if let Some(l) = f.lang {
        let _ = write!(o, "<span class=\"badge\">{}</span>", l.as_str());
    }
    if let Some(m) = &f.module {
        let _ = write!(o, "<span class=\"mod\">{}</span>", esc(basename(m)));
    }
    if f.inlined {
        o.push_str("<span class=\"inl\">inlined</span>");
    }
    o.push_str("</li>");
}

fn stack_block(o: &mut String, title: &str, stack: &[Frame], open: bool, links: &SourceLinks) {
    if stack.is_empty() {
        return;
    }
    let _ = write!(
        o,
        "<details class=\"stack\"{}><summary>{} ({} frames)</summary><ol class=\"frames\" start=\"0\">",
        if open { " open" } else { "" },
        esc(title),
        stack.len()
    );
    for f in stack.iter().take(MAX_FRAMES) {
        frame_item(o, f, links);
    }
    if stack.len() > MAX_FRAMES {
        let _ = write!(
            o,
            "<li class=\"sys\">… {} more frames</li>",
            stack.len() - MAX_FRAMES
        );
    }
    o.push_str("</ol></details>");
}

fn kernel_block(o: &mut String, stack: &[KernelFrame]) {
    if stack.is_empty() {
        return;
    }
    let names: Vec<String> = stack.iter().map(|k| esc(&k.function)).collect();
    let _ = write!(
        o,
        "<details class=\"stack\"><summary>kernel stack ({} frames)</summary><div class=\"kstack\">{}</div></details>",
        stack.len(),
        names.join(" ← ")
    );
}

fn thread_article(o: &mut String, t: &ThreadReport, links: &SourceLinks) {
    let _ = write!(
        o,
        "<article class=\"flagged thread\" id=\"tid-{0}\" data-tid=\"{0}\"><h3>tid {0} <span class=\"tname\">{1}</span>\
         <span class=\"badge flag\">flagged</span><span class=\"badge\">{2}</span>{3}</h3>",
        t.tid,
        esc(&t.name),
        t.state.as_str(),
        t.syscall
            .as_deref()
            .map(|s| format!("<span class=\"badge\">{}</span>", esc(s)))
            .unwrap_or_default()
    );
    if let Some(reason) = &t.reason {
        let _ = write!(o, "<p class=\"reason\">{}</p>", esc(reason));
    }
    let mut what = String::new();
    match (t.state, &t.syscall, &t.wait) {
        (ThreadState::Blocked | ThreadState::Sleeping, Some(call), w) => {
            what = format!(
                "in {call}{}",
                w.as_ref()
                    .map(|w| format!(" on {}", w.describe()))
                    .unwrap_or_default()
            );
            if let Some(ms) = t.blocked_ms {
                what.push_str(&format!(" for {}", format_ms_u64(ms)));
            }
        }
        (ThreadState::Running, _, _) => {
            what = format!("running; {} of CPU while watched", format_ms_u64(t.cpu_ms));
        }
        _ => {}
    }
    if t.woke_after_signal > 0 {
        what.push_str(&format!(
            "; woke {} time(s) after the signal and waited again",
            t.woke_after_signal
        ));
    }
    if !what.is_empty() {
        let _ = write!(o, "<p class=\"wait\">{}</p>", esc(&what));
    }
    let stack = super::profile_stack(t);
    stack_block(o, "user stack", stack, true, links);
    kernel_block(o, &t.kernel_stack);
    for (i, s) in t.spin_samples.iter().enumerate().skip(1).take(4) {
        stack_block(
            o,
            &format!("where it ran, sample {}", i + 1),
            s,
            false,
            links,
        );
    }
    o.push_str("</article>\n");
}

fn group_article(o: &mut String, g: &GoroutineGroup, links: &SourceLinks) {
    let goids: Vec<String> = g.goids.iter().map(u64::to_string).collect();
    let _ = write!(
        o,
        "<article class=\"flagged goroutines\" data-goids=\"{}\"><h3>{}<span class=\"badge flag\">flagged</span>\
         <span class=\"badge\">{}</span>{}</h3>",
        esc(&goids.join(",")),
        esc(&g.who()),
        esc(g.wait_reason.as_deref().unwrap_or(&g.state)),
        g.waited()
            .map(|w| format!("<span class=\"badge\">{}</span>", esc(&w)))
            .unwrap_or_default()
    );
    if let Some(reason) = &g.reason {
        let _ = write!(o, "<p class=\"reason\">{}</p>", esc(reason));
    }
    let _ = write!(
        o,
        "<p class=\"wait\">goid {}{}</p>",
        esc(&goids.join(", ")),
        if g.count as usize > g.goids.len() {
            ", …"
        } else {
            ""
        }
    );
    stack_block(o, "goroutine stack", &g.stack, true, links);
    if let Some(c) = &g.created_by {
        o.push_str("<p class=\"wait\">created by</p><ol class=\"frames\">");
        frame_item(o, c, links);
        o.push_str("</ol>");
    }
    o.push_str("</article>\n");
}

fn flagged(o: &mut String, r: &Report, links: &SourceLinks) {
    let threads: Vec<&ThreadReport> = r.flagged().collect();
    let groups: Vec<&GoroutineGroup> = r.flagged_groups().collect();
    let _ = write!(
        o,
        "<section id=\"flagged\"><h2>Flagged: {} thread(s){}</h2>",
        threads.len(),
        if groups.is_empty() {
            String::new()
        } else {
            format!(", {} goroutine group(s)", groups.len())
        }
    );
    if threads.is_empty() && groups.is_empty() {
        o.push_str("<p class=\"muted\">No thread kept the process alive.</p>");
    } else {
        o.push_str(
            "<p><button type=\"button\" data-expand=\"1\">expand all stacks</button>\
             <button type=\"button\" data-expand=\"0\">collapse all</button></p>",
        );
    }
    for t in threads {
        thread_article(o, t, links);
    }
    if let Some(total) = r.goroutines_total {
        let _ = write!(
            o,
            "<p class=\"muted\">{total} goroutines in {} groups{}</p>",
            r.goroutine_groups.len(),
            r.target
                .go_version
                .as_deref()
                .map(|v| format!(" ({})", esc(v)))
                .unwrap_or_default()
        );
    }
    for g in groups.iter().take(MAX_FLAGGED_GROUPS) {
        group_article(o, g, links);
    }
    if groups.len() > MAX_FLAGGED_GROUPS {
        let _ = write!(
            o,
            "<p class=\"muted\">… {} more flagged groups (see the JSON report)</p>",
            groups.len() - MAX_FLAGGED_GROUPS
        );
    }
    o.push_str("</section>\n");
}

fn waitfor(o: &mut String, r: &Report) {
    let g = graph::build(r);
    o.push_str("<section id=\"waitfor\"><h2>Who waits for whom</h2>");
    if !r.deadlocks.is_empty() {
        let _ = write!(
            o,
            "<div class=\"note\"><b>{} deadlock cycle(s)</b>, in red below:<ul class=\"cycles\">",
            r.deadlocks.len()
        );
        for d in &r.deadlocks {
            let _ = write!(o, "<li>{}</li>", esc(&d.describe()));
        }
        o.push_str("</ul></div>");
    }
    let svg = graph::svg(&g);
    if svg.is_empty() {
        o.push_str(
            "<p class=\"muted\">No thread waits on a lock whose owner is known, a thread it \
             joins, or a socket or pipe another process holds.</p>",
        );
    } else {
        o.push_str(
            "<p class=\"legend muted\">An arrow points from a waiting thread to the thread that \
             holds what it waits for (lock owner, joined thread), or, dashed, to the process \
             holding the other end of the socket or pipe it reads. Red: a deadlock cycle; \
             pink: flagged.</p><div class=\"figure\">",
        );
        o.push_str(&svg);
        o.push_str("</div>");
        if g.left_out > 0 {
            let _ = write!(
                o,
                "<p class=\"muted\">{} more waits not drawn (more than {} threads).</p>",
                g.left_out,
                g.nodes.len()
            );
        }
    }
    o.push_str("</section>\n");
}

fn shutdown_timeline(o: &mut String, r: &Report) {
    o.push_str("<section id=\"timeline\"><h2>Shutdown timeline</h2>");
    o.push_str(
        "<p class=\"legend muted\"><span><i class=\"sw\" style=\"background:#ff8182\"></i>flagged</span>\
         <span><i class=\"sw\" style=\"background:#54aeff\"></i>alive</span>\
         <span><i class=\"sw\" style=\"background:#afb8c1\"></i>exited (×)</span>\
         <span><i class=\"sw\" style=\"background:#0550ae\"></i>blocked in the call it is still in</span>\
         times relative to the shutdown signal</p><div class=\"figure\">",
    );
    o.push_str(&timeline::svg(r));
    o.push_str("</div>");
    let rows = timeline::rows(r).len();
    if r.threads.len() > rows {
        let _ = write!(
            o,
            "<p class=\"muted\">{} of {} threads drawn (flagged and exited first).</p>",
            rows,
            r.threads.len()
        );
    }
    if !r.timeline.is_empty() {
        let _ = write!(
            o,
            "<details><summary>events ({})</summary><table class=\"events\"><tr><th>t</th><th>event</th></tr>",
            r.timeline.len()
        );
        for e in &r.timeline {
            let _ = write!(
                o,
                "<tr><td class=\"mono\">{}</td><td>{}</td></tr>",
                if e.t_ms == 0 {
                    "t0".to_string()
                } else {
                    format!("t0{:+}ms", e.t_ms)
                },
                esc(&e.event)
            );
        }
        o.push_str("</table></details>");
    }
    o.push_str("</section>\n");
}

/// The `height` attribute of an SVG document's root element.
fn svg_height(svg: &str) -> Option<u32> {
    let root = &svg[svg.find("<svg")?..];
    let root = &root[..root.find('>')?];
    let at = root.find(" height=\"")? + " height=\"".len();
    root[at..].split('"').next()?.parse().ok()
}

fn flame(o: &mut String, r: &Report) {
    o.push_str("<section id=\"flamegraph\"><h2>Off-CPU flame graph</h2>");
    match flamegraph::flamegraph_svg(r) {
        Ok(svg) => {
            let text = String::from_utf8_lossy(&svg);
            let h = svg_height(&text).unwrap_or(400);
            let _ = write!(
                o,
                "<p class=\"legend muted\">Blocked time (ms) by stack, one tower per thread name; \
                 click a frame to zoom, Ctrl-F to search.</p>\
                 <iframe class=\"flamegraph\" title=\"off-CPU flame graph\" sandbox=\"allow-scripts\" \
                 height=\"{}\" src=\"data:image/svg+xml;base64,{}\"></iframe>",
                h + 4,
                base64::engine::general_purpose::STANDARD.encode(&svg)
            );
        }
        Err(e) => {
            let _ = write!(
                o,
                "<p class=\"note\">the flame graph could not be drawn: {}</p>",
                esc(&e.to_string())
            );
        }
    }
    o.push_str("</section>\n");
}

fn thread_table(o: &mut String, r: &Report) {
    let _ = write!(
        o,
        "<section id=\"threads\"><h2>All threads ({})</h2><table class=\"threads\">\
         <tr><th>tid</th><th>name</th><th>state</th><th>call</th><th>waits on</th><th>for</th><th>role</th><th></th></tr>",
        r.threads.len()
    );
    for t in r.threads.iter().take(MAX_THREAD_ROWS) {
        let for_cell = match (t.state, t.blocked_ms, t.exited_after_ms) {
            (ThreadState::Exited, _, Some(ms)) => format!("exited t0{ms:+}ms"),
            (_, Some(ms), _) => format_ms_u64(ms),
            _ => String::new(),
        };
        let _ = write!(
            o,
            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if t.flagged { " class=\"flagged\"" } else { "" },
            t.tid,
            esc(&t.name),
            t.state.as_str(),
            esc(t.syscall.as_deref().unwrap_or("")),
            esc(&trunc(
                &t.wait.as_ref().map(|w| w.describe()).unwrap_or_default(),
                90
            )),
            esc(&for_cell),
            if t.role == Role::Runtime {
                "runtime"
            } else {
                "app"
            },
            if t.flagged {
                format!("<a href=\"#tid-{}\">⚑ flagged</a>", t.tid)
            } else {
                String::new()
            }
        );
    }
    o.push_str("</table>");
    if r.threads.len() > MAX_THREAD_ROWS {
        let _ = write!(
            o,
            "<p class=\"muted\">… {} more threads (see the JSON report)</p>",
            r.threads.len() - MAX_THREAD_ROWS
        );
    }
    o.push_str("</section>\n");
}

fn slow_calls(o: &mut String, r: &Report) {
    if r.slow_calls.is_empty() {
        return;
    }
    let _ = write!(
        o,
        "<section id=\"slow\"><h2>Slow calls (≥ {}): {} in all</h2><table>\
         <tr><th>ended</th><th>thread</th><th>call</th><th>took</th><th>where</th></tr>",
        format_ms(r.session.threshold_ms),
        r.slow_calls_total
    );
    for c in r.slow_calls.iter().take(MAX_SLOW_CALLS) {
        let at = crate::stack::top_app_frame(&c.stack).unwrap_or_default();
        let _ = write!(
            o,
            "<tr><td class=\"mono\">+{}</td><td>{} {}</td><td>{}{}</td><td>{}</td><td>{}</td></tr>",
            format_ms(c.ended_at_ms.max(0) as f64),
            c.tid,
            esc(&c.name),
            esc(&c.syscall),
            c.wait
                .as_ref()
                .map(|w| format!(" on {}", esc(&trunc(&w.describe(), 80))))
                .unwrap_or_default(),
            format_ms(c.duration_ms),
            esc(&at)
        );
    }
    o.push_str("</table></section>\n");
}

fn notes(o: &mut String, r: &Report) {
    let mut notes: Vec<String> = r.notes.clone();
    if r.dropped_events > 0 {
        notes.push(format!(
            "the kernel side dropped {} events: the report is incomplete",
            r.dropped_events
        ));
    }
    if notes.is_empty() {
        return;
    }
    o.push_str("<section id=\"notes\"><h2>Notes</h2><ul>");
    for n in notes {
        let _ = write!(o, "<li>{}</li>", esc(&n));
    }
    o.push_str("</ul></section>\n");
}

#[cfg(test)]
mod tests;
