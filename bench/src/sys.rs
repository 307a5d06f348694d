//! Linux process plumbing: CPU pinning, the fd limit, RSS, parent-death signal.

use std::io;

/// Pins the calling thread (and the threads it creates afterwards) to `cpu`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // SAFETY: `set` is a plain bit set owned by this frame; sched_setaffinity
    // with pid 0 affects only the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sets the nice value of the calling thread (and of the threads it
/// creates afterwards). Below 0 needs root or CAP_SYS_NICE.
pub fn set_nice(nice: i32) -> io::Result<()> {
    // SAFETY: setpriority with who = 0 affects only the calling thread.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Number of CPUs this process may run on.
pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The fd limit before and after raising the soft limit to the hard limit.
#[derive(Debug, Clone, Copy)]
pub struct FdLimit {
    /// The soft limit the process started with.
    pub soft_before: u64,
    /// The soft limit now.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

/// Raises RLIMIT_NOFILE's soft limit as far as the hard limit allows.
pub fn raise_fd_limit() -> io::Result<FdLimit> {
    // SAFETY: getrlimit/setrlimit read and write a local struct.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return Err(io::Error::last_os_error());
        }
        let before = rl.rlim_cur;
        if rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(FdLimit {
            soft_before: before as u64,
            soft: rl.rlim_cur as u64,
            hard: rl.rlim_max as u64,
        })
    }
}

/// Resident set size of process `pid` in bytes (VmRSS of /proc/PID/status).
pub fn rss_bytes(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status_field(&status, "VmRSS")? * 1024)
}

/// Peak resident set size of process `pid` in bytes (VmHWM of
/// /proc/PID/status: the most it has held since it started).
pub fn peak_rss_bytes(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status_field(&status, "VmHWM")? * 1024)
}

/// The number after `field:` in the text of a /proc status file (a `kB`
/// unit dropped).
fn status_field(status: &str, field: &str) -> io::Result<u64> {
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix(field).and_then(|r| r.strip_prefix(':')) {
            return rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .map_err(|_| io::Error::other(format!("bad {field} line {line:?}")));
        }
    }
    Err(io::Error::other(format!("no {field} in /proc status")))
}

/// Context switches of all threads of process `pid` so far: voluntary
/// (the thread slept) and involuntary (it was preempted), summed over
/// /proc/PID/task/*/status. Threads that already exited are not counted.
pub fn context_switches(pid: u32) -> io::Result<(u64, u64)> {
    let (mut vol, mut invol) = (0, 0);
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        // A thread may exit between the listing and the read.
        let Ok(status) = std::fs::read_to_string(t?.path().join("status")) else {
            continue;
        };
        vol += status_field(&status, "voluntary_ctxt_switches")?;
        invol += status_field(&status, "nonvoluntary_ctxt_switches")?;
    }
    Ok((vol, invol))
}

/// Time the threads of process `pid` spent on a CPU and waiting on a run
/// queue (runnable, not running) so far, summed over
/// /proc/PID/task/*/schedstat. Threads that already exited are not counted.
pub fn sched_times(pid: u32) -> io::Result<(std::time::Duration, std::time::Duration)> {
    let (mut run, mut wait) = (0u64, 0u64);
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(stat) = std::fs::read_to_string(t?.path().join("schedstat")) else {
            continue;
        };
        let mut f = stat.split_whitespace().map(str::parse::<u64>);
        let (Some(Ok(r)), Some(Ok(w))) = (f.next(), f.next()) else {
            return Err(io::Error::other(format!("bad schedstat {stat:?}")));
        };
        run += r;
        wait += w;
    }
    Ok((
        std::time::Duration::from_nanos(run),
        std::time::Duration::from_nanos(wait),
    ))
}

/// Open file descriptors of process `pid` (entries of /proc/PID/fd).
pub fn fd_count(pid: u32) -> io::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// CPU time (user + system) process `pid` has used so far.
pub fn process_cpu(pid: u32) -> io::Result<std::time::Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line, the 12th and 13th after ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("bad /proc stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> io::Result<u64> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| io::Error::other("bad /proc stat field"))
    };
    let ticks = field(11)? + field(12)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(std::time::Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// Busy CPU time of the whole machine so far (all CPUs, everything but
/// idle and iowait), from the `cpu` line of /proc/stat.
pub fn machine_busy() -> io::Result<std::time::Duration> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| io::Error::other("no cpu line in /proc/stat"))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| v.get(i)).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(std::time::Duration::from_nanos(busy * 1_000_000_000 / hz))
}

/// CPU time (user + system) of `who` (`RUSAGE_SELF`, `RUSAGE_CHILDREN`), µs
/// precision.
fn rusage_cpu(who: libc::c_int) -> std::time::Duration {
    // SAFETY: getrusage writes into a local struct.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| std::time::Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU time (user + system) of this process so far, µs precision.
pub fn own_cpu() -> std::time::Duration {
    rusage_cpu(libc::RUSAGE_SELF)
}

/// CPU time (user + system) of this process, and of its reaped children.
pub fn self_and_children_cpu() -> std::time::Duration {
    own_cpu() + rusage_cpu(libc::RUSAGE_CHILDREN)
}

/// CPU time of the calling thread so far.
pub fn thread_cpu() -> std::time::Duration {
    // SAFETY: clock_gettime writes into a local timespec.
    unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
        std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }
}

/// Applies a child's `--cpu C` (pin) and `--nice N`, before it creates any
/// thread (they inherit both).
pub fn place(cpu: Option<usize>, nice: Option<i32>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    if let Some(cpu) = cpu {
        pin_current_thread(cpu).context("pinning")?;
    }
    if let Some(nice) = nice {
        set_nice(nice).context("setpriority")?;
    }
    Ok(())
}

/// Asks the kernel to SIGKILL this process when its parent dies, so a
/// server child never outlives a runner that was killed itself.
pub fn die_with_parent() {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number; getppid is
    // always safe.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // The parent may have died before the prctl: then we were reparented.
        if libc::getppid() == 1 {
            libc::_exit(1);
        }
    }
}

/// Sends SIGKILL to `pid` (ignoring errors: it may be gone already).
pub fn kill(pid: u32) {
    // SAFETY: kill with a pid we spawned ourselves.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

/// A one-line description of the machine: nproc, CPU model, kernel.
pub fn machine_description() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU".to_string(), |(_, m)| m.trim().to_string());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown kernel".into());
    format!("{} CPU(s), {model}, Linux {kernel}", online_cpus())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_parse_with_and_without_a_unit() {
        let status =
            "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nvoluntary_ctxt_switches:\t7\n\
                      nonvoluntary_ctxt_switches:\t3\n";
        assert_eq!(status_field(status, "VmRSS").unwrap(), 1024);
        assert_eq!(status_field(status, "VmHWM").unwrap(), 2048);
        assert_eq!(status_field(status, "voluntary_ctxt_switches").unwrap(), 7);
        assert_eq!(
            status_field(status, "nonvoluntary_ctxt_switches").unwrap(),
            3
        );
        assert!(status_field(status, "VmSwap").is_err());
    }

    #[test]
    fn this_process_has_memory_descriptors_and_cpu_time() {
        let pid = std::process::id();
        let rss = rss_bytes(pid).unwrap();
        assert!(rss > 0 && peak_rss_bytes(pid).unwrap() >= rss);
        // stdin, stdout and stderr at least.
        assert!(fd_count(pid).unwrap() >= 3);
        let busy = std::time::Instant::now();
        while busy.elapsed() < std::time::Duration::from_millis(20) {}
        let (run, _wait) = sched_times(pid).unwrap();
        assert!(run >= std::time::Duration::from_millis(10));
        // This thread sleeps, so it has switched voluntarily at least once
        // (other threads only add to the sum).
        std::thread::sleep(std::time::Duration::from_millis(2));
        let (voluntary, _) = context_switches(pid).unwrap();
        assert!(voluntary >= 1);
    }
}
