//! Wait-for cycles among threads: lock-order deadlocks, as the report states them.

use serde::Serialize;

/// A wait-for cycle: each thread waits for an object held by the next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Deadlock {
    pub threads: Vec<CycleThread>,
    pub objects: Vec<CycleObject>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CycleThread {
    pub tid: u32,
    pub pid: u32,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CycleObject {
    /// pthread_mutex, pi_mutex, thread_join ...
    pub kind: String,
    #[serde(serialize_with = "super::ser_hex")]
    pub addr: u64,
    pub waiter: u32,
    pub holder: u32,
}

impl Deadlock {
    /// "locker-a waits for locker-b waits for locker-a".
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for (i, t) in self.threads.iter().enumerate() {
            let o = &self.objects[i];
            s.push_str(&format!(
                "{} ({}) waits for {} {:#x} held by ",
                t.name, t.tid, o.kind, o.addr
            ));
        }
        if let Some(first) = self.threads.first() {
            s.push_str(&format!("{} ({})", first.name, first.tid));
        }
        s
    }
}
