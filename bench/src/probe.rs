//! Readers of `/proc`: the machine's CPU times (`/proc/stat`), a process's or thread's
//! (`/proc/PID/stat`, `/proc/PID/task/TID/stat`), the threads of a process and the children of
//! a process tree (`/proc/PID/task`), a process's resident set (`/proc/PID/status`), the load
//! average, and a network namespace's TCP and interface counters (`/proc/net/snmp`,
//! `/proc/net/dev`). Each benchmark program samples what it needs from here; nothing here knows
//! sluice.
//!
//! Parsers take the file's text and readers read it, so that the parsers are tested on captured
//! text and on this process's own files.

use std::collections::BTreeMap;
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
    let line = text.lines().find(|l| l.split_whitespace().next() == Some("cpu"))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).map(str::parse).collect::<Result<_, _>>().ok()?;
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
    std::fs::read_to_string(path).ok().as_deref().and_then(task_stat)
}

/// CPU ticks (user + system) of thread `tid` of this process, `None` if it is gone.
pub fn own_thread_ticks(tid: u32) -> Option<u64> {
    read_task_stat(format!("/proc/self/task/{tid}/stat")).map(|(_, t)| t)
}

/// CPU time (user + system, seconds) of process `pid` (all its threads), `None` if gone.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    read_task_stat(format!("/proc/{pid}/stat")).map(|(_, t)| t as f64 / USER_HZ)
}

/// The thread ids of process `pid` (empty if it is gone).
pub fn threads_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// The ids of every process on the machine.
fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name();
                    let name = name.to_str()?;
                    name.bytes().all(|b| b.is_ascii_digit()).then(|| name.parse().ok())?
                })
                .collect()
        })
        .unwrap_or_default()
}

/// CPU ticks of every thread of process `pid`, by thread name (same-named threads summed).
pub fn thread_ticks(pid: u32) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for tid in threads_of(pid) {
        if let Some((comm, ticks)) = read_task_stat(format!("/proc/{pid}/task/{tid}/stat")) {
            *out.entry(comm).or_insert(0) += ticks;
        }
    }
    out
}

/// CPU ticks of every thread on the machine, by thread id, with its name (what else ran).
pub fn all_thread_ticks() -> BTreeMap<u32, (String, u64)> {
    let mut out = BTreeMap::new();
    for pid in pids() {
        for tid in threads_of(pid) {
            if let Some(stat) = read_task_stat(format!("/proc/{pid}/task/{tid}/stat")) {
                out.insert(tid, stat);
            }
        }
    }
    out
}

/// The `n` threads that used the most CPU between two [`all_thread_ticks`] snapshots:
/// `(name, tid, ticks)`, most first.
pub fn top_threads(
    before: &BTreeMap<u32, (String, u64)>,
    after: &BTreeMap<u32, (String, u64)>,
    n: usize,
) -> Vec<(String, u32, u64)> {
    let mut v: Vec<(String, u32, u64)> = after
        .iter()
        .map(|(tid, (name, t))| (name.clone(), *tid, t.saturating_sub(before.get(tid).map_or(0, |b| b.1))))
        .filter(|r| r.2 > 0)
        .collect();
    v.sort_by(|a, b| b.2.cmp(&a.2).then(a.1.cmp(&b.1)));
    v.truncate(n);
    v
}

/// Process `pid` and every descendant (the `children` of each of its threads, recursively):
/// nginx's master and its workers.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        for tid in threads_of(p) {
            let children = std::fs::read_to_string(format!("/proc/{p}/task/{tid}/children")).unwrap_or_default();
            out.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
        }
        i += 1;
    }
    out
}

/// `VmRSS` of a `/proc/<pid>/status` text, in KiB.
pub fn vm_rss_kib(status: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()
}

/// The resident set of process `pid` (`VmRSS`), KiB; `None` if it is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    vm_rss_kib(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// The calling thread's id (`/proc/thread-self` links to `PID/task/TID`).
pub fn current_thread_id() -> Option<u32> {
    std::fs::read_link("/proc/thread-self").ok().and_then(|p| p.file_name()?.to_str()?.parse().ok())
}

/// The 1, 5 and 15 minute load averages as `/proc/loadavg` gives them, `?` if unreadable.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// One counter of `/proc/net/snmp` (a header line `Group: Name ...` followed by a value line).
pub fn snmp_value(text: &str, group: &str, name: &str) -> Option<u64> {
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let (header, values) = (lines.next()?, lines.next()?);
    let idx = header.split_whitespace().position(|h| h == name)?;
    values.split_whitespace().nth(idx)?.parse().ok()
}

/// The counters of one interface in `/proc/net/dev`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DevCounters {
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

/// Interface `ifname`'s line of `/proc/net/dev`.
pub fn net_dev(text: &str, ifname: &str) -> Option<DevCounters> {
    let line = text.lines().find_map(|l| {
        let (name, rest) = l.split_once(':')?;
        (name.trim() == ifname).then_some(rest)
    })?;
    let f: Vec<u64> = line.split_whitespace().map(str::parse).collect::<Result<_, _>>().ok()?;
    // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets errs drop ...
    (f.len() >= 12).then(|| DevCounters { rx_packets: f[1], rx_dropped: f[3], tx_packets: f[9], tx_dropped: f[11] })
}

/// `/proc/net/snmp` and `/proc/net/dev` of the calling thread's network namespace
/// (`/proc/thread-self/net`: a thread that joined a namespace sees that namespace's).
pub fn net_snmp_and_dev() -> std::io::Result<(String, String)> {
    Ok((std::fs::read_to_string("/proc/thread-self/net/snmp")?, std::fs::read_to_string("/proc/thread-self/net/dev")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNMP: &str = "\
Ip: Forwarding DefaultTTL InReceives
Ip: 2 64 17
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors
Tcp: 1 200 120000 -1 0 0 0 0 0 123456 5 0 2 98765 3
Udp: InDatagrams NoPorts
Udp: 0 0
";

    #[test]
    fn snmp_counters() {
        assert_eq!(snmp_value(SNMP, "Tcp", "InSegs"), Some(123_456));
        assert_eq!(snmp_value(SNMP, "Tcp", "OutRsts"), Some(98_765));
        assert_eq!(snmp_value(SNMP, "Tcp", "InCsumErrors"), Some(3));
        assert_eq!(snmp_value(SNMP, "Ip", "InReceives"), Some(17));
        // MaxConn is -1: not a counter.
        assert_eq!(snmp_value(SNMP, "Tcp", "MaxConn"), None);
        assert_eq!(snmp_value(SNMP, "Tcp", "NoSuch"), None);
        assert_eq!(snmp_value(SNMP, "Icmp", "InMsgs"), None);
        // "TcpExt:" is another group, not "Tcp:".
        assert_eq!(snmp_value("TcpExt: InSegs\nTcpExt: 5\n", "Tcp", "InSegs"), None);
    }

    #[test]
    fn net_dev_lines() {
        let text = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
  cli0: 1000000   20000    0    7    0     0          0         0 58000000 1000000    0   42    0     0       0          0
";
        assert_eq!(
            net_dev(text, "cli0"),
            Some(DevCounters { rx_packets: 20_000, rx_dropped: 7, tx_packets: 1_000_000, tx_dropped: 42 })
        );
        assert_eq!(net_dev(text, "lo"), Some(DevCounters::default()));
        assert_eq!(net_dev(text, "px0"), None);
        assert_eq!(net_dev("  cli0: 1 2 3\n", "cli0"), None);
    }

    #[test]
    fn this_network_namespace_reads_back() {
        let (snmp, dev) = net_snmp_and_dev().unwrap();
        assert!(snmp_value(&snmp, "Tcp", "InSegs").is_some());
        assert!(net_dev(&dev, "lo").is_some());
    }

    #[test]
    fn rss_and_load_read_back() {
        let status = "Name:\tsluice\nVmPeak:\t  123 kB\nVmRSS:\t   48112 kB\nRssAnon:\t 1 kB\n";
        assert_eq!(vm_rss_kib(status), Some(48_112));
        assert_eq!(vm_rss_kib("Name:\tx\n"), None);
        assert!(rss_kib(std::process::id()).is_some_and(|k| k > 0));
        assert_eq!(rss_kib(u32::MAX), None);
        let load = loadavg();
        assert_eq!(load.split(' ').count(), 3, "{load:?}");
        assert!(load.split(' ').all(|x| x.parse::<f64>().is_ok()), "{load:?}");
        let tid = current_thread_id().unwrap();
        assert!(threads_of(std::process::id()).contains(&tid));
        assert!(own_thread_ticks(tid).is_some());
        assert_eq!(own_thread_ticks(u32::MAX), None);
    }

    #[test]
    fn proc_stat() {
        let text = "cpu  100 5 200 1000 10 3 40 0 0 0\ncpu0 50 2 100 500 5 1 20 0 0 0\nintr 1 2 3\n";
        let c = proc_stat_cpu(text).unwrap();
        assert_eq!(
            c,
            CpuTimes { user: 100, nice: 5, system: 200, idle: 1000, iowait: 10, irq: 3, softirq: 40, steal: 0 }
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
        let line = "4242 (sluice-q0) R 1 4242 4242 0 -1 4194560 100 0 0 0 731 268 0 0 20 0 4 0 123 0 0";
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

    #[test]
    fn threads_and_their_ticks_read_back() {
        let me = std::process::id();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let (ready, started) = std::sync::mpsc::channel::<()>();
        // The thread names itself once it runs: wait for that.
        let worker = std::thread::Builder::new()
            .name("probe-test".into())
            .spawn(move || {
                ready.send(()).unwrap();
                stopped.recv()
            })
            .unwrap();
        started.recv().unwrap();
        let tids = threads_of(me);
        assert!(tids.contains(&me), "the main thread's id is the process id: {tids:?}");
        assert!(tids.len() >= 2, "{tids:?}");
        let ticks = thread_ticks(me);
        assert!(ticks.contains_key("probe-test"), "{ticks:?}");
        let all = all_thread_ticks();
        // Other tests' threads come and go: check the two that stay.
        assert!(ticks.contains_key(&all[&me].0));
        assert!(all.values().any(|(name, _)| name == "probe-test"));
        drop(stop);
        let _ = worker.join().unwrap();
        assert!(threads_of(u32::MAX).is_empty());
        assert!(thread_ticks(u32::MAX).is_empty());
    }

    #[test]
    fn top_threads_by_delta() {
        let before: BTreeMap<u32, (String, u64)> =
            [(1, ("a".into(), 100)), (2, ("b".into(), 5)), (3, ("c".into(), 7))].into_iter().collect();
        let after: BTreeMap<u32, (String, u64)> =
            [(1, ("a".into(), 101)), (2, ("b".into(), 50)), (3, ("c".into(), 7)), (4, ("new".into(), 20))]
                .into_iter()
                .collect();
        assert_eq!(
            top_threads(&before, &after, 8),
            vec![("b".into(), 2, 45), ("new".into(), 4, 20), ("a".into(), 1, 1)]
        );
        assert_eq!(top_threads(&before, &after, 1), vec![("b".into(), 2, 45)]);
    }

    #[test]
    fn a_process_tree_holds_its_children() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let tree = process_tree(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(tree[0], std::process::id());
        assert!(tree.contains(&child.id()), "{tree:?}");
        assert_eq!(process_tree(u32::MAX), vec![u32::MAX]);
    }
}
