//! Server CPU time and memory from /proc, for `--server-pid`.
//!
//! CPU is summed over the whole process tree under the pid (utime, stime,
//! cutime, cstime of every descendant), so a server that forks workers
//! (Postfix: master, smtpd, cleanup, qmgr, smtp …) is measured whole. A
//! worker that exits between two samples moves its time into its parent's
//! cutime/cstime when reaped, so the sum stays consistent.

use std::collections::HashMap;
use std::fs;

/// Clock ticks per second (sysconf(_SC_CLK_TCK)).
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// CPU time split into user and system (kernel) seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cpu {
    pub user: f64,
    pub system: f64,
}

impl Cpu {
    pub fn total(self) -> f64 {
        self.user + self.system
    }

    pub fn since(self, before: Cpu) -> Cpu {
        Cpu {
            user: self.user - before.user,
            system: self.system - before.system,
        }
    }
}

/// One process's fields from /proc/PID/stat: (ppid, user ticks, system
/// ticks), each including reaped children.
fn stat(pid: u32) -> Option<(u32, u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after it.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the name: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
    let ppid = f.get(1)?.parse().ok()?;
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Some((ppid, field(11) + field(13), field(12) + field(14)))
}

/// The pid and all its descendants alive now.
fn tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((ppid, _, _)) = stat(pid) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(c) = children.get(&out[i]) {
            out.extend(c);
        }
        i += 1;
    }
    out
}

/// CPU used so far by the process tree under `pid`.
pub fn tree_cpu(pid: u32) -> Option<Cpu> {
    stat(pid)?;
    let (mut user, mut system) = (0, 0);
    for (_, u, s) in tree(pid).into_iter().filter_map(stat) {
        user += u;
        system += s;
    }
    let hz = ticks_per_second();
    Some(Cpu {
        user: user as f64 / hz,
        system: system as f64 / hz,
    })
}

/// Resident memory of the process tree under `pid`, KiB.
pub fn tree_rss_kib(pid: u32) -> u64 {
    tree(pid)
        .into_iter()
        .filter_map(|p| {
            let status = fs::read_to_string(format!("/proc/{p}/status")).ok()?;
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

/// CPU seconds used by this process (all threads).
pub fn self_cpu_seconds() -> f64 {
    // SAFETY: rusage is plain integers; all zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we pass.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Raises the open-file limit to the hard limit (10,000 held sessions need
/// 10,000 descriptors).
pub fn raise_fd_limit() -> u64 {
    // SAFETY: plain get/setrlimit on a struct we own.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 0;
        }
        rl.rlim_cur = rl.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        rl.rlim_cur
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_tree_has_cpu_and_memory() {
        let me = std::process::id();
        // Burn a little CPU so the counter is not zero at 100 Hz ticks.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(tree_cpu(me).unwrap().total() > 0.0);
        assert!(tree_rss_kib(me) > 0);
        assert!(self_cpu_seconds() > 0.0);
        assert!(tree_cpu(u32::MAX).is_none());
    }
}
