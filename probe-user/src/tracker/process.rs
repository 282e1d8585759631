//! What the tracker keeps per watched process.

use super::host::{Host, ProcessInfo};
use crate::report::{Runtime, TargetInfo};

pub struct ProcTrack {
    pub pid: u32,
    pub comm: String,
    pub exe: String,
    pub cmdline: Vec<String>,
    pub ns_pid: Option<u32>,
    pub runtime: Runtime,
    pub exited_ns: Option<u64>,
    pub exit_code: Option<i32>,
    pub killed_by: Option<String>,
}

impl ProcTrack {
    pub fn read(pid: u32, host: &dyn Host) -> ProcTrack {
        let mut p = ProcTrack {
            pid,
            comm: String::new(),
            exe: String::new(),
            cmdline: Vec::new(),
            ns_pid: None,
            runtime: Runtime::Native,
            exited_ns: None,
            exit_code: None,
            killed_by: None,
        };
        p.set_info(host.process_info(pid));
        p
    }

    /// What /proc says about it now (after an exec: a new program).
    pub fn set_info(&mut self, info: ProcessInfo) {
        self.comm = info.comm;
        self.exe = info.exe;
        self.cmdline = info.cmdline;
        self.ns_pid = info.ns_pid;
        self.runtime = info.runtime;
    }

    pub fn alive(&self) -> bool {
        self.exited_ns.is_none()
    }

    pub fn info(&self) -> TargetInfo {
        TargetInfo {
            pid: self.pid,
            comm: self.comm.clone(),
            exe: self.exe.clone(),
            runtime: self.runtime,
            cmdline: self.cmdline.clone(),
            exited: self.exited_ns.is_some(),
            exit_code: self.exit_code,
            killed_by: self.killed_by.clone(),
            ns_pid: self.ns_pid,
            go_version: None,
        }
    }
}
