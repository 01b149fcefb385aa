//! Fault-injection tests: the real `sluice` binary with real Python workers, under killed
//! workers, apps that cannot import, host.json throttles and timeouts, and SIGTERM.
//!
//! The fixture apps live in `tests/apps/<name>/`. Workers are killed only by a pid that a function
//! reported (`os.getpid()`), and only after checking that the pid descends from this test's Sluice.
//! Every wait has a deadline; load loops are bounded in time and stop by themselves.
//!
//! Split by behaviour: `worker_faults` (killed, crashing and timed-out workers, and a soak
//! under kills), `throttles` (host.json limits), `drain` (SIGTERM); `support` holds the load
//! loops and the waits they share.

#[path = "../common/mod.rs"]
mod common;
mod drain;
mod support;
mod throttles;
mod worker_faults;
