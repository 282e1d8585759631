//! The pprof profile (`--pprof FILE.pb.gz`): `profile.proto` of github.com/google/pprof,
//! gzip'ed, readable by `go tool pprof`, pprof's web UI, speedscope, Grafana Pyroscope,
//! Parca and others.
//!
//! One sample per included thread (see [`crate::export`] for which and with what weight);
//! sample type `blocked`/`milliseconds`, the value its blocked time. Its stack is the kernel
//! stack (innermost first) then the user stack; locations carry function, file and line, with
//! inlined functions as extra lines of one location (the caller last, as profile.proto says).
//! Mappings come from the frames' modules (address range: the lowest to the highest address
//! seen in it) plus `[kernel.kallsyms]`; all are marked symbolized, so pprof does not try to
//! symbolize them again. Labels: `thread` (name), `tid` (number), `call`, `role`, `state`,
//! `flagged`.
//!
//! The message types below mirror profile.proto field for field (same tags, same types); they
//! are written by hand with `prost`'s derive, so no protoc and no build script are needed.

use std::{collections::HashMap, io::Write as _};

use crate::report::{Frame, GoroutineGroup, Report, ThreadReport, Verdict};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Profile {
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    #[prost(int64, tag = "7")]
    pub drop_frames: i64,
    #[prost(int64, tag = "8")]
    pub keep_frames: i64,
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    pub period: i64,
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct ValueType {
    /// Index into the string table.
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// Leaf first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Label {
    #[prost(int64, tag = "1")]
    pub key: i64,
    #[prost(int64, tag = "2")]
    pub str: i64,
    #[prost(int64, tag = "3")]
    pub num: i64,
    #[prost(int64, tag = "4")]
    pub num_unit: i64,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Mapping {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    #[prost(int64, tag = "5")]
    pub filename: i64,
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Location {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    #[prost(uint64, tag = "3")]
    pub address: u64,
    /// Inlined functions first, the function they were inlined into last.
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
    #[prost(bool, tag = "5")]
    pub is_folded: bool,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Line {
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    #[prost(int64, tag = "2")]
    pub line: i64,
    #[prost(int64, tag = "3")]
    pub column: i64,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Function {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "2")]
    pub name: i64,
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    #[prost(int64, tag = "4")]
    pub filename: i64,
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}

const KERNEL_MAPPING: &str = "[kernel.kallsyms]";

/// (mapping id, address, (function id, line) of each line): what makes two locations one.
type LocationKey = (u64, u64, Vec<(u64, i64)>);

/// Builds the tables, deduplicating strings, functions, locations and mappings.
#[derive(Default)]
struct Builder {
    p: Profile,
    strings: HashMap<String, i64>,
    functions: HashMap<(i64, i64), u64>,
    locations: HashMap<LocationKey, u64>,
    mappings: HashMap<String, usize>,
}

impl Builder {
    fn new() -> Builder {
        let mut b = Builder::default();
        b.s(""); // string_table[0] must be ""
        b
    }

    fn s(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.p.string_table.len() as i64;
        self.p.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), i);
        i
    }

    fn function(&mut self, name: &str, file: &str) -> u64 {
        let key = (self.s(name), self.s(file));
        if let Some(&id) = self.functions.get(&key) {
            return id;
        }
        let id = self.p.function.len() as u64 + 1;
        self.p.function.push(Function {
            id,
            name: key.0,
            system_name: key.0,
            filename: key.1,
            start_line: 0,
        });
        self.functions.insert(key, id);
        id
    }

    /// The mapping of `module`, widened to hold `addr` (ids start at 1; 0 is "none").
    fn mapping(&mut self, module: &str, addr: u64) -> u64 {
        let i = match self.mappings.get(module) {
            Some(&i) => i,
            None => {
                let i = self.p.mapping.len();
                let filename = self.s(module);
                self.p.mapping.push(Mapping {
                    id: i as u64 + 1,
                    memory_start: addr,
                    memory_limit: addr.saturating_add(1),
                    file_offset: 0,
                    filename,
                    build_id: 0,
                    has_functions: true,
                    has_filenames: true,
                    has_line_numbers: true,
                    has_inline_frames: true,
                });
                self.mappings.insert(module.to_string(), i);
                i
            }
        };
        let m = &mut self.p.mapping[i];
        m.memory_start = m.memory_start.min(addr);
        m.memory_limit = m.memory_limit.max(addr.saturating_add(1));
        m.id
    }

    fn location(&mut self, mapping_id: u64, address: u64, lines: Vec<Line>) -> u64 {
        let key = (
            mapping_id,
            address,
            lines.iter().map(|l| (l.function_id, l.line)).collect(),
        );
        if let Some(&id) = self.locations.get(&key) {
            return id;
        }
        let id = self.p.location.len() as u64 + 1;
        self.p.location.push(Location {
            id,
            mapping_id,
            address,
            line: lines,
            is_folded: false,
        });
        self.locations.insert(key, id);
        id
    }

    /// Locations of a user stack (innermost first), one per address: a run of inlined frames
    /// and the frame they were inlined into share one.
    fn user_locations(&mut self, stack: &[Frame]) -> Vec<u64> {
        let mut out = Vec::new();
        let mut group: Vec<&Frame> = Vec::new();
        for (i, f) in stack.iter().enumerate() {
            group.push(f);
            let next_same = stack
                .get(i + 1)
                .is_some_and(|n| f.inlined && n.addr == f.addr);
            if next_same {
                continue;
            }
            let head = group[group.len() - 1];
            let mapping_id = match &head.module {
                Some(m) => self.mapping(m, head.addr),
                None => 0,
            };
            let lines: Vec<Line> = group
                .iter()
                .filter_map(|g| {
                    let name = g.function.as_deref()?;
                    let function_id = self.function(name, g.file.as_deref().unwrap_or(""));
                    Some(Line {
                        function_id,
                        line: g.line.unwrap_or(0) as i64,
                        column: 0,
                    })
                })
                .collect();
            out.push(self.location(mapping_id, head.addr, lines));
            group.clear();
        }
        out
    }

    fn label_str(&mut self, key: &str, value: &str) -> Label {
        Label {
            key: self.s(key),
            str: self.s(value),
            num: 0,
            num_unit: 0,
        }
    }

    fn sample(&mut self, t: &ThreadReport, weight: u64) -> Sample {
        let mut location_id = Vec::new();
        for k in &t.kernel_stack {
            let mapping_id = self.mapping(KERNEL_MAPPING, k.addr);
            let function_id = self.function(&k.function, "");
            location_id.push(self.location(
                mapping_id,
                k.addr,
                vec![Line {
                    function_id,
                    line: 0,
                    column: 0,
                }],
            ));
        }
        location_id.extend(self.user_locations(super::profile_stack(t)));
        let mut label = vec![
            self.label_str("thread", &t.name),
            Label {
                key: self.s("tid"),
                str: 0,
                num: t.tid as i64,
                num_unit: 0,
            },
        ];
        if let Some(call) = &t.syscall {
            label.push(self.label_str("call", call));
        }
        label.push(self.label_str("role", t.role.as_str()));
        label.push(self.label_str("state", t.state.as_str()));
        label.push(self.label_str("flagged", if t.flagged { "true" } else { "false" }));
        Sample {
            location_id,
            value: vec![weight as i64],
            label,
        }
    }
}

impl Builder {
    /// A goroutine group: its stack, labelled with the count, wait reason, role and flag.
    fn group_sample(&mut self, g: &GoroutineGroup, weight: u64) -> Sample {
        let location_id = self.user_locations(&g.stack);
        let mut label = vec![
            self.label_str("goroutines", &g.count.to_string()),
            self.label_str("state", &g.state),
            self.label_str("role", g.role.as_str()),
            self.label_str("flagged", if g.flagged { "true" } else { "false" }),
        ];
        if let Some(w) = &g.wait_reason {
            label.push(self.label_str("wait_reason", w));
        }
        Sample {
            location_id,
            value: vec![weight as i64],
            label,
        }
    }
}

/// The profile as a message (before encoding and gzip).
pub fn profile(r: &Report) -> Profile {
    let mut b = Builder::new();
    let blocked = ValueType {
        r#type: b.s("blocked"),
        unit: b.s("milliseconds"),
    };
    b.p.sample_type = vec![blocked];
    b.p.period_type = Some(blocked);
    b.p.period = 1;
    b.p.default_sample_type = blocked.r#type;
    b.p.duration_nanos = (r.session.watched_ms as i64).saturating_mul(1_000_000);
    let verdict = match r.verdict {
        Verdict::Clean => "clean",
        Verdict::Stalled => "stalled",
        Verdict::Observed => "observed",
    };
    let mut comments = vec![format!(
        "stallprobe {}: pid {} {} ({}), verdict {verdict}",
        r.session.stallprobe_version, r.target.pid, r.target.comm, r.target.exe
    )];
    comments.extend(r.summary.iter().cloned());
    let comment: Vec<i64> = comments.iter().map(|c| b.s(c)).collect();
    b.p.comment = comment;
    // The target's executable first: pprof takes the first mapping for the main binary.
    for (t, _) in super::weighted_threads(r) {
        for f in super::profile_stack(t) {
            if f.module.as_deref() == Some(r.target.exe.as_str()) {
                b.mapping(&r.target.exe, f.addr);
            }
        }
    }
    let mut samples: Vec<Sample> = super::weighted_threads(r)
        .map(|(t, w)| b.sample(t, w))
        .collect();
    samples.extend(super::weighted_groups(r).map(|(g, w)| b.group_sample(g, w)));
    b.p.sample = samples;
    b.p
}

/// The encoded profile, gzip'ed: the content of a `.pb.gz` file.
pub fn pprof_gz(r: &Report) -> Vec<u8> {
    let raw = prost::Message::encode_to_vec(&profile(r));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = gz.write_all(&raw);
    gz.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use prost::Message as _;

    use super::*;
    use crate::export::{testutil, total_weight_ms};

    fn decode(gz: &[u8]) -> Profile {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut raw)
            .unwrap();
        Profile::decode(raw.as_slice()).unwrap()
    }

    #[test]
    fn round_trip_totals_and_tables() {
        let r = testutil::report();
        let gz = pprof_gz(&r);
        assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzip magic");
        let p = decode(&gz);
        assert_eq!(p, profile(&r));
        let st = &p.string_table;
        assert_eq!(st[0], "");
        assert_eq!(p.sample_type.len(), 1);
        assert_eq!(st[p.sample_type[0].r#type as usize], "blocked");
        assert_eq!(st[p.sample_type[0].unit as usize], "milliseconds");
        assert_eq!(p.sample.len(), 3);
        let total: i64 = p.sample.iter().map(|s| s.value[0]).sum();
        assert_eq!(total as u64, total_weight_ms(&r));
        assert_eq!(total, 1995 + 4001 + 4001);

        // Every id referenced exists, ids are 1-based and dense.
        for (i, l) in p.location.iter().enumerate() {
            assert_eq!(l.id, i as u64 + 1);
            assert!(l.mapping_id as usize <= p.mapping.len());
            for ln in &l.line {
                assert!(ln.function_id >= 1 && ln.function_id as usize <= p.function.len());
            }
        }
        for s in &p.sample {
            for id in &s.location_id {
                assert!(*id >= 1 && *id as usize <= p.location.len());
            }
        }

        // locker-a: labels, and its stack leaf first (kernel, then user).
        let s = &p.sample[1];
        let labels: Vec<(String, String, i64)> = s
            .label
            .iter()
            .map(|l| {
                (
                    st[l.key as usize].clone(),
                    st[l.str as usize].clone(),
                    l.num,
                )
            })
            .collect();
        assert_eq!(
            labels,
            vec![
                ("thread".into(), "locker-a".into(), 0),
                ("tid".into(), "".into(), 101),
                ("call".into(), "futex".into(), 0),
                ("role".into(), "app".into(), 0),
                ("state".into(), "blocked".into(), 0),
                ("flagged".into(), "true".into(), 0),
            ]
        );
        let names: Vec<Vec<&str>> = s
            .location_id
            .iter()
            .map(|id| {
                p.location[*id as usize - 1]
                    .line
                    .iter()
                    .map(|l| st[p.function[l.function_id as usize - 1].name as usize].as_str())
                    .collect()
            })
            .collect();
        assert_eq!(
            names,
            vec![
                vec!["futex_do_wait"],
                vec!["futex_wait"],
                vec!["do_syscall_64"],
                // One location for the inlined futex_wait and its caller, the caller last.
                vec!["futex_wait", "__GI___lll_lock_wait"],
                vec!["___pthread_mutex_lock"],
                vec!["take_second_lock"],
                vec!["locker_a"],
                vec!["start_thread"],
                vec!["clone3"],
            ]
        );
        // take_second_lock: file and line.
        let loc = &p.location[s.location_id[5] as usize - 1];
        let f = &p.function[loc.line[0].function_id as usize - 1];
        assert_eq!(st[f.filename as usize], testutil::SRC);
        assert_eq!(loc.line[0].line, 26);
        // Mappings: the executable (first: the main binary for pprof), the kernel, libc.
        let maps: Vec<&str> = p
            .mapping
            .iter()
            .map(|m| st[m.filename as usize].as_str())
            .collect();
        assert_eq!(maps, vec![testutil::EXE, KERNEL_MAPPING, testutil::LIBC]);
        let exe = p
            .mapping
            .iter()
            .find(|m| st[m.filename as usize] == testutil::EXE)
            .unwrap();
        assert!(exe.memory_start <= 0x1000 + 26 && exe.memory_limit > 0x1000 + 81);
        assert!(exe.has_functions && exe.has_line_numbers);
        // Shared frames are shared locations: the three stacks end in the same kernel path.
        assert_eq!(p.sample[0].location_id[0], p.sample[1].location_id[0]);
    }

    #[test]
    fn empty_profile_is_still_valid() {
        let p = decode(&pprof_gz(&testutil::clean_report()));
        assert!(p.sample.is_empty());
        assert_eq!(p.sample_type.len(), 1);
        assert_eq!(p.string_table[0], "");
    }
}
