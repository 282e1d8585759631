//! The three ways to use stallprobe, named by what the user types, on one shared loop
//! ([`event_loop`]) and one set of common options ([`options`]):
//!
//! - [`pid`]: `stallprobe --pid N`, attach to a running process;
//! - [`run`]: `stallprobe run -- CMD`, start a command under watch (CI);
//! - [`watch`]: `stallprobe watch`, the sidecar that stays attached.

mod child;
pub mod event_loop;
pub mod options;
pub mod pid;
pub mod run;
pub mod watch;
