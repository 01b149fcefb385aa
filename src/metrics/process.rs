//! The `process_*` families, read from `/proc/self` at scrape time.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// Linux reports CPU times in USER_HZ ticks, which is 100 on every architecture Linux
/// exports to user space (sysconf would need `unsafe` for the same answer).
const USER_HZ: f64 = 100.0;

/// `process_*` families, read from `/proc/self` at scrape time (Linux only; elsewhere
/// they are left out).
#[derive(Debug)]
pub(super) struct ProcessCollector;

/// What `/proc/self` says about this process.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ProcessStats {
    resident_bytes: u64,
    cpu_seconds: f64,
    open_fds: u64,
}

impl ProcessStats {
    fn read() -> Option<ProcessStats> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        Some(ProcessStats {
            resident_bytes: resident_bytes(&status)?,
            cpu_seconds: cpu_seconds(&stat)?,
            open_fds,
        })
    }
}

/// `VmRSS:  1234 kB` from `/proc/self/status`, in bytes.
pub(super) fn resident_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// utime + stime from `/proc/self/stat`, in seconds.
pub(super) fn cpu_seconds(stat: &str) -> Option<f64> {
    // `pid (comm) state …`: comm may hold spaces, so count fields after the last ')'.
    // utime and stime are fields 14 and 15; after the ')' the state is field 3.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stats) = ProcessStats::read() else {
            return Ok(());
        };
        let rss = ConstGauge::new(i64::try_from(stats.resident_bytes).unwrap_or(i64::MAX));
        rss.encode(encoder.encode_descriptor(
            "process_resident_memory",
            "Resident memory size",
            Some(&Unit::Bytes),
            rss.metric_type(),
        )?)?;
        let cpu = ConstCounter::new(stats.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu",
            "User and system CPU time spent",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        let fds = ConstGauge::new(i64::try_from(stats.open_fds).unwrap_or(i64::MAX));
        fds.encode(encoder.encode_descriptor(
            "process_open_fds",
            "Open file descriptors",
            None,
            fds.metric_type(),
        )?)?;
        Ok(())
    }
}
