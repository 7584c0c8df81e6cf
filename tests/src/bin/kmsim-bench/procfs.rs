//! What `kmsim-bench` reads from Linux's /proc: CPU time consumed by a process (its own or
//! the server's), resident memory, and the bytes of a data directory.

use std::path::Path;
use std::time::Duration;

/// Clock ticks per second of the times in /proc/<pid>/stat. Linux reports these in USER_HZ,
/// which is 100 on every architecture it supports (`sysconf(_SC_CLK_TCK)`), whatever the
/// kernel's internal HZ.
const USER_HZ: u64 = 100;

/// The process whose figures are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// `kmsim-bench` itself (all threads, exited ones included).
    Myself,
    /// Another process.
    Pid(u32),
}

impl Process {
    fn dir(self) -> String {
        match self {
            Self::Myself => "/proc/self".into(),
            Self::Pid(pid) => format!("/proc/{pid}"),
        }
    }
}

/// User plus system CPU time of `process` so far (10 ms resolution).
pub fn cpu_time(process: Process) -> Result<Duration, String> {
    let path = format!("{}/stat", process.dir());
    let stat = std::fs::read_to_string(&path).map_err(|error| format!("{path}: {error}"))?;
    parse_cpu_ticks(&stat)
        .map(|ticks| Duration::from_millis(ticks * 1000 / USER_HZ))
        .ok_or_else(|| format!("{path}: unexpected format"))
}

/// utime + stime (fields 14 and 15) of a /proc/<pid>/stat line. The command name (field 2)
/// is parenthesised and may contain spaces or parentheses, so fields are counted after the
/// last ')'.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident memory (VmRSS) of `process`, in bytes.
pub fn resident_bytes(process: Process) -> Result<u64, String> {
    let path = format!("{}/status", process.dir());
    let status = std::fs::read_to_string(&path).map_err(|error| format!("{path}: {error}"))?;
    parse_vm_rss(&status).ok_or_else(|| format!("{path}: no VmRSS line"))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Total size of the regular files under `dir`, recursively (apparent sizes).
pub fn directory_bytes(dir: &Path) -> Result<u64, String> {
    let mut total = 0;
    let entries = std::fs::read_dir(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|error| format!("{}: {error}", dir.display()))?;
        let kind = entry
            .file_type()
            .map_err(|error| format!("{}: {error}", entry.path().display()))?;
        if kind.is_dir() {
            total += directory_bytes(&entry.path())?;
        } else if kind.is_file() {
            total += entry
                .metadata()
                .map_err(|error| format!("{}: {error}", entry.path().display()))?
                .len();
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn cpu_ticks_are_counted_after_the_command_name() {
        let stat = "4242 (kmsim (a) b) S 1 4242 4242 0 -1 4194560 2 0 0 0 731 152 0 0 20 0 9 0";
        assert_eq!(parse_cpu_ticks(stat), Some(883));
        assert_eq!(parse_cpu_ticks("4242 (kmsim) S 1"), None);
    }

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\tkmsim\nVmPeak:\t  9000 kB\nVmRSS:\t   1536 kB\n";
        assert_eq!(parse_vm_rss(status), Some(1536 * 1024));
        assert_eq!(parse_vm_rss("Name:\tkmsim\n"), None);
    }

    #[test]
    fn own_figures_are_readable() {
        assert!(resident_bytes(Process::Myself).unwrap() > 0);
        cpu_time(Process::Myself).unwrap();
        assert!(cpu_time(Process::Pid(u32::MAX)).is_err());
    }
}
