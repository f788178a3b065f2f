//! Readers of `/proc`: the machine's CPU times (`/proc/stat`), a process's or thread's
//! (`/proc/PID/stat`, `/proc/PID/task/TID/stat`). Each benchmark program samples what it
//! needs from here; nothing here knows sluice.
//!
//! Parsers take the file's text and readers read it, so that the parsers are tested on captured
//! text and on this process's own files.

use std::path::Path;

/// `USER_HZ`: the unit of CPU times in /proc/stat and /proc/PID/stat (100 on every Linux ABI).
pub const USER_HZ: f64 = 100.0;

/// The machine's CPU times (the aggregate `cpu` line of `/proc/stat`), in `USER_HZ` ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl CpuTimes {
    /// Ticks not idle (iowait counts as idle).
    pub fn busy(&self) -> u64 {
        self.user + self.nice + self.system + self.irq + self.softirq + self.steal
    }

    pub fn total(&self) -> u64 {
        self.busy() + self.idle + self.iowait
    }

    /// The ticks from `earlier` to `self`.
    pub fn delta(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(earlier.user),
            nice: self.nice.saturating_sub(earlier.nice),
            system: self.system.saturating_sub(earlier.system),
            idle: self.idle.saturating_sub(earlier.idle),
            iowait: self.iowait.saturating_sub(earlier.iowait),
            irq: self.irq.saturating_sub(earlier.irq),
            softirq: self.softirq.saturating_sub(earlier.softirq),
            steal: self.steal.saturating_sub(earlier.steal),
        }
    }
}

/// The aggregate line of `/proc/stat`.
pub fn proc_stat_cpu(text: &str) -> Option<CpuTimes> {
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some("cpu"))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    (v.len() >= 4).then(|| CpuTimes {
        user: at(0),
        nice: at(1),
        system: at(2),
        idle: at(3),
        iowait: at(4),
        irq: at(5),
        softirq: at(6),
        steal: at(7),
    })
}

/// The machine's CPU times now, from `/proc/stat`.
pub fn machine_cpu() -> std::io::Result<CpuTimes> {
    let text = std::fs::read_to_string("/proc/stat")?;
    proc_stat_cpu(&text).ok_or_else(|| std::io::Error::other("parsing /proc/stat"))
}

/// Whole-machine busy CPU time (seconds, all cores) from /proc/stat; 0 if it cannot be read.
pub fn machine_cpu_seconds() -> f64 {
    machine_cpu().map_or(0.0, |c| c.busy() as f64 / USER_HZ)
}

/// `(comm, utime + stime)` from a `/proc/PID/stat` or `/proc/PID/task/TID/stat` line. The name
/// is in parentheses and may itself contain spaces and parentheses: the fields start after the
/// last `)`.
pub fn task_stat(text: &str) -> Option<(String, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// [`task_stat`] of the stat file at `path`; `None` if it is gone or unreadable.
pub fn read_task_stat(path: impl AsRef<Path>) -> Option<(String, u64)> {
    std::fs::read_to_string(path)
        .ok()
        .as_deref()
        .and_then(task_stat)
}

/// CPU time (user + system, seconds) of process `pid` (all its threads), `None` if gone.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    read_task_stat(format!("/proc/{pid}/stat")).map(|(_, t)| t as f64 / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat() {
        let text =
            "cpu  100 5 200 1000 10 3 40 0 0 0\ncpu0 50 2 100 500 5 1 20 0 0 0\nintr 1 2 3\n";
        let c = proc_stat_cpu(text).unwrap();
        assert_eq!(
            c,
            CpuTimes {
                user: 100,
                nice: 5,
                system: 200,
                idle: 1000,
                iowait: 10,
                irq: 3,
                softirq: 40,
                steal: 0
            }
        );
        assert_eq!(c.busy(), 348);
        assert_eq!(c.total(), 1358);
        let later = CpuTimes { user: 150, ..c };
        assert_eq!(later.delta(&c).busy(), 50);
        assert_eq!(proc_stat_cpu("cpu0 1 2 3 4\n"), None);
    }

    #[test]
    fn the_machine_reads_back() {
        let c = machine_cpu().unwrap();
        assert!(c.total() > 0);
        assert!(machine_cpu_seconds() > 0.0);
    }

    #[test]
    fn task_stat_lines() {
        let line =
            "4242 (sluice-q0) R 1 4242 4242 0 -1 4194560 100 0 0 0 731 268 0 0 20 0 4 0 123 0 0";
        assert_eq!(task_stat(line), Some(("sluice-q0".into(), 999)));
        // A name with spaces and a parenthesis.
        let line = "7 (a b) c) S 1 7 7 0 -1 0 0 0 0 0 5 6 0 0 20 0 1 0 1 0 0";
        assert_eq!(task_stat(line), Some(("a b) c".into(), 11)));
        assert_eq!(task_stat("7 (x) S 1"), None);
        // Our own thread and process read back.
        let me = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        assert!(task_stat(&me).is_some());
        assert!(read_task_stat("/proc/self/stat").is_some());
        assert!(read_task_stat("/proc/self/no-such-file").is_none());
    }

    #[test]
    fn process_cpu_time_reads_back() {
        let s = process_cpu_seconds(std::process::id()).unwrap();
        assert!(s.is_finite() && s >= 0.0);
        assert_eq!(process_cpu_seconds(u32::MAX), None);
    }
}
