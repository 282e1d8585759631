//! x86_64 syscall names, for threads asleep in calls stallprobe does not probe (read from
//! /proc/PID/task/TID/syscall), and which of them take an fd as first argument.

/// restart_syscall(2): how the kernel resumes an interrupted wait with a timeout.
pub const RESTART_SYSCALL: u32 = 219;

/// Name of syscall `nr`, or `syscall_<nr>`.
pub fn name(nr: u32) -> String {
    let n = match nr {
        0 => "read",
        1 => "write",
        2 => "open",
        3 => "close",
        7 => "poll",
        16 => "ioctl",
        17 => "pread64",
        18 => "pwrite64",
        19 => "readv",
        20 => "writev",
        23 => "select",
        24 => "sched_yield",
        34 => "pause",
        35 => "nanosleep",
        40 => "sendfile",
        42 => "connect",
        43 => "accept",
        44 => "sendto",
        45 => "recvfrom",
        46 => "sendmsg",
        47 => "recvmsg",
        56 => "clone",
        59 => "execve",
        61 => "wait4",
        65 => "semop",
        69 => "msgsnd",
        70 => "msgrcv",
        72 => "fcntl",
        73 => "flock",
        74 => "fsync",
        75 => "fdatasync",
        128 => "rt_sigtimedwait",
        130 => "rt_sigsuspend",
        202 => "futex",
        208 => "io_getevents",
        219 => "restart_syscall",
        220 => "semtimedop",
        230 => "clock_nanosleep",
        232 => "epoll_wait",
        247 => "waitid",
        257 => "openat",
        270 => "pselect6",
        271 => "ppoll",
        275 => "splice",
        276 => "tee",
        281 => "epoll_pwait",
        288 => "accept4",
        295 => "preadv",
        296 => "pwritev",
        299 => "recvmmsg",
        307 => "sendmmsg",
        318 => "getrandom",
        426 => "io_uring_enter",
        434 => "pidfd_open",
        441 => "epoll_pwait2",
        449 => "futex_waitv",
        _ => return format!("syscall_{nr}"),
    };
    n.to_string()
}

/// Whether the syscall's first argument is a file descriptor worth describing.
pub fn first_arg_is_fd(nr: u32) -> bool {
    matches!(
        nr,
        0 | 1
            | 16
            | 17
            | 18
            | 19
            | 20
            | 40
            | 42
            | 43
            | 44
            | 45
            | 46
            | 47
            | 72
            | 73
            | 74
            | 75
            | 232
            | 275
            | 276
            | 281
            | 288
            | 295
            | 296
            | 299
            | 307
            | 441
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert_eq!(super::name(1), "write");
        assert_eq!(super::name(230), "clock_nanosleep");
        assert_eq!(super::name(9999), "syscall_9999");
        assert!(super::first_arg_is_fd(1));
        assert!(!super::first_arg_is_fd(35));
    }
}
