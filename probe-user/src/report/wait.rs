//! What a blocked thread waits on: a futex (and who holds it) or an fd (and what it is).

use serde::Serialize;

use super::FdObject;

/// What a blocked thread waits on.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Wait {
    Futex {
        #[serde(serialize_with = "super::ser_hex")]
        addr: u64,
        /// e.g. `FUTEX_WAIT_PRIVATE`; for futex_waitv, `futex_waitv(N)`.
        op: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<f64>,
        /// The futex word now (for a thread join: the joined thread's tid).
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<u32>,
        /// What the futex is: pthread_mutex, pi_mutex, thread_join, pthread_cond, rust_mutex...
        #[serde(skip_serializing_if = "Option::is_none")]
        object: Option<String>,
        /// The thread holding it (lock owner, or the thread being joined), when known.
        #[serde(skip_serializing_if = "Option::is_none")]
        owner: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        owner_name: Option<String>,
        /// The thread that last woke waiters on this futex.
        #[serde(skip_serializing_if = "Option::is_none")]
        last_woken_by: Option<Waker>,
        /// What the language runtime says the thread waits for (`waiting to lock <0x…> (a
        /// java.lang.Object)`, `the GIL`), when it says.
        #[serde(skip_serializing_if = "Option::is_none")]
        runtime_object: Option<String>,
    },
    Fd {
        fd: u64,
        /// What the fd is: `socket:[1234]`, `pipe:[56]`, `anon_inode:[eventpoll]`, a path.
        #[serde(skip_serializing_if = "Option::is_none")]
        target: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<f64>,
        /// The object behind the fd, described: socket addresses and state, pipe ends and who
        /// holds them, an epoll's interest list, ...
        #[serde(skip_serializing_if = "Option::is_none")]
        object: Option<FdObject>,
    },
}

impl Wait {
    /// A futex wait as the probe saw it; what the futex is and who holds it are filled in
    /// later (`locks`).
    pub fn futex(addr: u64, op: String, timeout_ms: Option<f64>, value: Option<u32>) -> Wait {
        Wait::Futex {
            addr,
            op,
            timeout_ms,
            value,
            object: None,
            owner: None,
            owner_name: None,
            last_woken_by: None,
            runtime_object: None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Wait::Futex {
                addr,
                op,
                object,
                owner,
                owner_name,
                runtime_object,
                ..
            } => {
                if let Some(r) = runtime_object {
                    // The runtime's own words: `waiting to lock <0x…> (a java.lang.Object)`.
                    return match owner {
                        Some(o) => format!(
                            "{r} held by tid {o} ({})",
                            owner_name.as_deref().unwrap_or("?")
                        ),
                        None => r.clone(),
                    };
                }
                let what = match object.as_deref() {
                    Some("pthread_mutex") | Some("rust_mutex") | Some("pi_mutex") => "mutex",
                    Some("thread_join") => "join",
                    Some("pthread_cond") | Some("rust_condvar") => "condvar",
                    Some("java_monitor") => "Java monitor (synchronized)",
                    Some("java_object_wait") => "Object.wait()",
                    Some("java_park") => "LockSupport.park",
                    Some("js_atomics_wait") => "Atomics.wait",
                    _ => op.as_str(),
                };
                match (owner, what) {
                    (Some(o), "join") => {
                        format!("join of tid {o} ({})", owner_name.as_deref().unwrap_or("?"))
                    }
                    (Some(o), _) => format!(
                        "{what} {addr:#x} held by tid {o} ({})",
                        owner_name.as_deref().unwrap_or("?")
                    ),
                    (None, _) => format!("{what} {addr:#x}"),
                }
            }
            Wait::Fd {
                fd, target, object, ..
            } => match (object, target) {
                (Some(o), _) => format!("fd {fd} ({})", o.summary()),
                (None, Some(t)) => format!("fd {fd} ({t})"),
                (None, None) => format!("fd {fd}"),
            },
        }
    }
}

/// The thread that last woke waiters on a futex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Waker {
    pub tid: u32,
    pub name: String,
    /// How long ago, at the time of the report.
    pub ago_ms: u64,
}
