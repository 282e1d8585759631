//! The wait-for graph of the HTML report, as inline SVG: who waits for whom. A thread waiting
//! on a lock whose owner is known, or joining a thread, points at that thread; a thread
//! reading a socket or a pipe points at the processes holding the other end. Deadlock cycles
//! (`report.deadlocks`) are drawn in red. Laid out on a circle, cycle members next to each
//! other, so that a cycle is a polygon around it.

use std::fmt::Write as _;

use super::{esc, trunc};
use crate::report::{FdObject, Report, Wait};

/// More nodes than this are not drawn (the edges to them are counted).
const MAX_NODES: usize = 40;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKey {
    Thread(u32),
    Process(u32),
}

#[derive(Clone, Debug)]
pub struct Node {
    pub key: NodeKey,
    pub label: String,
    pub sub: String,
    pub flagged: bool,
    pub in_cycle: bool,
}

#[derive(Clone, Debug)]
pub struct Edge {
    pub from: usize,
    pub to: usize,
    pub label: String,
    pub in_cycle: bool,
    /// Waits on data from a process (fd), rather than on a thread (lock, join).
    pub via_fd: bool,
}

#[derive(Debug, Default)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    /// Edges left out because their nodes were past [`MAX_NODES`].
    pub left_out: usize,
}

impl Graph {
    fn node(&mut self, r: &Report, key: NodeKey) -> Option<usize> {
        if let Some(i) = self.nodes.iter().position(|n| n.key == key) {
            return Some(i);
        }
        if self.nodes.len() >= MAX_NODES {
            return None;
        }
        let (label, sub, flagged) = match key {
            NodeKey::Thread(tid) => match r.threads.iter().find(|t| t.tid == tid) {
                Some(t) => (t.name.clone(), format!("tid {tid}"), t.flagged),
                None => (format!("tid {tid}"), "thread".to_string(), false),
            },
            NodeKey::Process(pid) => {
                let comm = if pid == r.target.pid {
                    Some(r.target.comm.clone())
                } else {
                    r.children
                        .iter()
                        .find(|c| c.pid == pid)
                        .map(|c| c.comm.clone())
                };
                (
                    comm.unwrap_or_else(|| format!("pid {pid}")),
                    format!("process {pid}"),
                    false,
                )
            }
        };
        self.nodes.push(Node {
            key,
            label,
            sub,
            flagged,
            in_cycle: false,
        });
        Some(self.nodes.len() - 1)
    }

    fn edge(&mut self, r: &Report, from: NodeKey, to: NodeKey, label: String, via_fd: bool) {
        let (Some(a), Some(b)) = (self.node(r, from), self.node(r, to)) else {
            self.left_out += 1;
            return;
        };
        if a == b || self.edges.iter().any(|e| e.from == a && e.to == b) {
            return;
        }
        self.edges.push(Edge {
            from: a,
            to: b,
            label,
            in_cycle: false,
            via_fd,
        });
    }
}

/// The object a futex wait is on, in two words.
fn futex_label(object: Option<&str>, addr: u64) -> String {
    match object {
        Some("thread_join") => "join".to_string(),
        Some(o) => format!("{o} {addr:#x}"),
        None => format!("futex {addr:#x}"),
    }
}

/// Who each thread waits for, from the report.
pub fn build(r: &Report) -> Graph {
    let mut g = Graph::default();
    // Cycles first: their members get the first places on the circle, in cycle order.
    for d in &r.deadlocks {
        for o in &d.objects {
            g.edge(
                r,
                NodeKey::Thread(o.waiter),
                NodeKey::Thread(o.holder),
                futex_label(Some(&o.kind), o.addr),
                false,
            );
        }
    }
    let cycle_pairs: Vec<(u32, u32)> = r
        .deadlocks
        .iter()
        .flat_map(|d| d.objects.iter().map(|o| (o.waiter, o.holder)))
        .collect();
    for t in r
        .threads
        .iter()
        .filter(|t| t.state != crate::report::ThreadState::Exited)
    {
        match &t.wait {
            Some(Wait::Futex {
                owner: Some(o),
                object,
                addr,
                ..
            }) => g.edge(
                r,
                NodeKey::Thread(t.tid),
                NodeKey::Thread(*o),
                futex_label(object.as_deref(), *addr),
                false,
            ),
            Some(Wait::Fd {
                fd,
                object: Some(obj),
                ..
            }) => {
                for (pid, label) in fd_other_ends(obj, *fd) {
                    g.edge(
                        r,
                        NodeKey::Thread(t.tid),
                        NodeKey::Process(pid),
                        label,
                        true,
                    );
                }
            }
            _ => {}
        }
    }
    for e in &mut g.edges {
        if let (NodeKey::Thread(a), NodeKey::Thread(b)) = (&g.nodes[e.from].key, &g.nodes[e.to].key)
            && cycle_pairs.contains(&(*a, *b))
        {
            e.in_cycle = true;
        }
    }
    for e in g.edges.clone() {
        if e.in_cycle {
            g.nodes[e.from].in_cycle = true;
            g.nodes[e.to].in_cycle = true;
        }
    }
    g
}

/// The processes at the other end of what a thread reads (at most three), with a label.
fn fd_other_ends(obj: &FdObject, fd: u64) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    match obj {
        FdObject::Socket(s) => {
            if let Some(p) = &s.peer {
                for h in p.holders.iter().take(3) {
                    out.push((h.pid, format!("fd {fd}: {} peer (fd {})", s.proto, h.fd)));
                }
            }
        }
        FdObject::Pipe(p) if p.end.reads() => {
            for h in p
                .holders
                .iter()
                .filter(|h| h.end.is_some_and(|e| e.writes()))
                .take(3)
            {
                out.push((h.pid, format!("fd {fd}: pipe writer (fd {})", h.fd)));
            }
        }
        _ => {}
    }
    out
}

/// Node box half-width for a label (monospace-ish estimate at 12px).
fn half_width(n: &Node) -> f64 {
    let chars = n.label.chars().count().max(n.sub.chars().count()).min(28) as f64;
    (chars * 7.2 + 20.0) / 2.0
}

const HALF_HEIGHT: f64 = 19.0;

/// Where the ray from the centre of a box (half sizes `hw`, `hh`) towards `(dx, dy)` leaves it.
fn box_exit(x: f64, y: f64, dx: f64, dy: f64, hw: f64, hh: f64) -> (f64, f64) {
    let len = (dx * dx + dy * dy).sqrt();
    if len < 1e-9 {
        return (x, y);
    }
    let (ux, uy) = (dx / len, dy / len);
    let tx = if ux.abs() > 1e-9 {
        hw / ux.abs()
    } else {
        f64::INFINITY
    };
    let ty = if uy.abs() > 1e-9 {
        hh / uy.abs()
    } else {
        f64::INFINITY
    };
    let t = tx.min(ty) + 3.0;
    (x + ux * t, y + uy * t)
}

/// The graph as an `<svg>` element (empty string when there is nothing to draw).
pub fn svg(g: &Graph) -> String {
    let n = g.nodes.len();
    if g.edges.is_empty() {
        return String::new();
    }
    let widest = g.nodes.iter().map(half_width).fold(0.0, f64::max);
    let radius = if n <= 2 {
        widest + 90.0
    } else {
        ((n as f64) * (2.0 * widest.min(90.0) + 30.0) / std::f64::consts::TAU).max(130.0)
    };
    let (w, h) = (
        2.0 * (radius + widest) + 40.0,
        2.0 * radius + 2.0 * HALF_HEIGHT + 90.0,
    );
    let (cx, cy) = (w / 2.0, h / 2.0);
    let pos: Vec<(f64, f64)> = (0..n)
        .map(|i| {
            let a = std::f64::consts::PI + std::f64::consts::TAU * i as f64 / n as f64;
            let y = if n == 2 { 0.0 } else { radius * a.sin() };
            (cx + radius * a.cos(), cy + y)
        })
        .collect();
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg class="waitfor" xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" role="img" aria-label="wait-for graph">"#
    );
    o.push_str(
        r##"<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#57606a"/></marker><marker id="arrow-cycle" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#cf222e"/></marker></defs>"##,
    );
    for e in &g.edges {
        let (x0, y0) = pos[e.from];
        let (x1, y1) = pos[e.to];
        // Bend every edge to its left: two edges between the same nodes curve apart.
        let (mx, my) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0);
        let (dx, dy) = (x1 - x0, y1 - y0);
        let len = (dx * dx + dy * dy).sqrt().max(1.0);
        let bend = (len * 0.18).clamp(24.0, 60.0);
        let (qx, qy) = (mx + dy / len * bend, my - dx / len * bend);
        let (sx, sy) = box_exit(
            x0,
            y0,
            qx - x0,
            qy - y0,
            half_width(&g.nodes[e.from]),
            HALF_HEIGHT,
        );
        let (ex, ey) = box_exit(
            x1,
            y1,
            qx - x1,
            qy - y1,
            half_width(&g.nodes[e.to]),
            HALF_HEIGHT,
        );
        let class = match (e.in_cycle, e.via_fd) {
            (true, _) => "edge cycle",
            (false, true) => "edge fd",
            (false, false) => "edge",
        };
        let marker = if e.in_cycle { "arrow-cycle" } else { "arrow" };
        let _ = write!(
            o,
            r#"<g class="{class}"><title>{} waits for {}: {}</title><path d="M{sx:.1},{sy:.1} Q{qx:.1},{qy:.1} {ex:.1},{ey:.1}" marker-end="url(#{marker})"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text></g>"#,
            esc(&g.nodes[e.from].label),
            esc(&g.nodes[e.to].label),
            esc(&e.label),
            (sx + 2.0 * qx + ex) / 4.0,
            (sy + 2.0 * qy + ey) / 4.0 - 4.0,
            esc(&trunc(&e.label, 34)),
        );
    }
    for (i, nd) in g.nodes.iter().enumerate() {
        let (x, y) = pos[i];
        let hw = half_width(nd);
        let mut class = String::from("node");
        if matches!(nd.key, NodeKey::Process(_)) {
            class.push_str(" process");
        }
        if nd.flagged {
            class.push_str(" flagged");
        }
        if nd.in_cycle {
            class.push_str(" cycle");
        }
        let _ = write!(
            o,
            r#"<g class="{class}"><title>{} ({})</title><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="6"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" class="name">{}</text><text x="{x:.1}" y="{:.1}" text-anchor="middle" class="sub">{}</text></g>"#,
            esc(&nd.label),
            esc(&nd.sub),
            x - hw,
            y - HALF_HEIGHT,
            2.0 * hw,
            2.0 * HALF_HEIGHT,
            y - 3.0,
            esc(&trunc(&nd.label, 28)),
            y + 12.0,
            esc(&nd.sub),
        );
    }
    o.push_str("</svg>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        export::testutil,
        report::{CycleObject, CycleThread, Deadlock},
    };

    fn deadlocked() -> Report {
        let mut r = testutil::report();
        let lock = |o: u32, name: &str, object: &str| Wait::Futex {
            addr: 0x5555_0000_1000 + o as u64,
            op: "FUTEX_WAIT_PRIVATE".into(),
            timeout_ms: None,
            value: None,
            object: Some(object.into()),
            owner: Some(o),
            owner_name: Some(name.into()),
            last_woken_by: None,
            runtime_object: None,
        };
        r.threads[0].wait = Some(lock(101, "locker-a", "thread_join"));
        r.threads[1].wait = Some(lock(102, "locker-b", "pthread_mutex"));
        r.threads[2].wait = Some(lock(101, "locker-a", "pthread_mutex"));
        let t = |tid, name: &str| CycleThread {
            tid,
            pid: 100,
            name: name.into(),
        };
        let obj = |waiter, holder| CycleObject {
            kind: "pthread_mutex".into(),
            addr: 0x5555_0000_1000 + holder as u64,
            waiter,
            holder,
        };
        r.deadlocks = vec![Deadlock {
            threads: vec![t(101, "locker-a"), t(102, "locker-b")],
            objects: vec![obj(101, 102), obj(102, 101)],
        }];
        r
    }

    #[test]
    fn edges_from_owners_joins_and_cycles() {
        let g = build(&deadlocked());
        let names: Vec<&str> = g.nodes.iter().map(|n| n.label.as_str()).collect();
        // Cycle members first, in cycle order.
        assert_eq!(names, vec!["locker-a", "locker-b", "main"]);
        assert_eq!(g.edges.len(), 3, "{:?}", g.edges);
        assert!(g.edges[0].in_cycle && g.edges[1].in_cycle);
        let join = &g.edges[2];
        assert_eq!((join.from, join.to, join.in_cycle), (2, 0, false));
        assert_eq!(join.label, "join");
        assert!(g.nodes[0].in_cycle && g.nodes[1].in_cycle && !g.nodes[2].in_cycle);
        let s = svg(&g);
        assert_eq!(s.matches("class=\"edge cycle\"").count(), 2, "{s}");
        assert!(s.contains("node flagged cycle"), "{s}");
        assert!(s.starts_with("<svg") && s.ends_with("</svg>"));
    }

    #[test]
    fn nothing_to_draw_without_waits_on_someone() {
        let g = build(&testutil::report());
        assert!(g.edges.is_empty());
        assert_eq!(svg(&g), "");
    }

    #[test]
    fn names_are_escaped_and_the_node_count_is_capped() {
        let mut r = deadlocked();
        r.threads[1].name = "<script>alert(1)</script>".into();
        let s = svg(&build(&r));
        assert!(!s.contains("<script>"), "{s}");
        assert!(s.contains("&lt;script&gt;"), "{s}");
        // 100 threads all waiting for one: 40 nodes drawn, the rest counted.
        let mut r = testutil::report();
        let proto = r.threads[0].clone();
        r.threads = (0..100)
            .map(|i| {
                let mut t = proto.clone();
                t.tid = 1000 + i;
                t.wait = Some(Wait::Futex {
                    addr: 1,
                    op: "FUTEX_WAIT_PRIVATE".into(),
                    timeout_ms: None,
                    value: None,
                    object: Some("pthread_mutex".into()),
                    owner: Some(1000),
                    owner_name: None,
                    last_woken_by: None,
                    runtime_object: None,
                });
                t
            })
            .collect();
        let g = build(&r);
        assert_eq!(g.nodes.len(), MAX_NODES);
        assert_eq!(g.left_out, 100 - MAX_NODES);
    }
}
