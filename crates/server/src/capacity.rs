//! The connection limit, sized from the machine unless the administrator sets it:
//! a quarter of the memory (the cgroup's limit when lower, as under systemd's
//! `MemoryMax=` or in a container) at [`BUDGET_PER_CONNECTION`] each, within the file
//! descriptors the process may open. At start the soft descriptor limit is raised
//! towards the hard one as far as the connections need; when even the hard limit is
//! too low, the limit is lowered to fit and the server says so.

use std::path::Path;

use crate::config::Limits;

/// Memory budgeted per connection: an idle TLS session measures about 32-44 KiB
/// (BENCHMARKS.md); the rest is headroom for buffers of sessions at work.
pub const BUDGET_PER_CONNECTION: u64 = 64 * 1024;
/// The share of memory connections may take: one part in this many.
const MEMORY_SHARE: u64 = 4;
/// Bounds of a limit sized from memory.
const AUTO_MIN: usize = 256;
const AUTO_MAX: usize = 65_536;
/// File descriptors kept for everything but POP3 connections: listeners, the
/// directory, the audit log, the security page's connections, message files of
/// sessions at work.
pub const RESERVED_DESCRIPTORS: u64 = 1024;
/// File descriptors a signed-in session holds: its socket and its maildrop's lock.
pub const DESCRIPTORS_PER_CONNECTION: u64 = 2;

/// The limits the server runs with, and what it had to say about them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    /// POP3 connections served at once (both listeners).
    pub max_connections: usize,
    /// Connections from one network (IPv4 /24, IPv6 /48) while busy.
    pub per_network: usize,
    /// How the limit was found, for `config check` and the start-up log.
    pub basis: String,
    /// Set when the descriptor limit is too low for what was asked (or sized).
    pub warning: Option<String>,
}

/// What the machine offers.
#[derive(Debug, Clone, Copy)]
pub struct Machine {
    /// Memory available to the process, bytes (None: unknown).
    pub memory: Option<u64>,
    /// The soft and hard limits on open file descriptors (None: unlimited).
    pub descriptors: (Option<u64>, Option<u64>),
}

impl Machine {
    /// Reads this machine: /proc/meminfo, the cgroup's memory.max, RLIMIT_NOFILE.
    pub fn read() -> Machine {
        let descriptors = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        Machine {
            memory: memory_bytes(),
            descriptors: (descriptors.current, descriptors.maximum),
        }
    }
}

/// The limits for `limits` on `machine`, and the soft descriptor limit they need
/// (never above the hard one).
pub fn size(limits: &Limits, machine: &Machine) -> (Capacity, Option<u64>) {
    let (soft, hard) = machine.descriptors;
    let (wanted, mut basis) = match limits.max_connections {
        Some(n) => (n, "limits.max_connections".to_owned()),
        None => match machine.memory {
            Some(bytes) => {
                let n = (bytes / MEMORY_SHARE / BUDGET_PER_CONNECTION) as usize;
                (
                    n.clamp(AUTO_MIN, AUTO_MAX),
                    format!(
                        "sized from {} MiB of memory ({} KiB per connection in a quarter of it)",
                        bytes >> 20,
                        BUDGET_PER_CONNECTION >> 10
                    ),
                )
            }
            None => (AUTO_MIN, "memory unknown: the smallest size".to_owned()),
        },
    };
    let needed = wanted as u64 * DESCRIPTORS_PER_CONNECTION + RESERVED_DESCRIPTORS;
    // The soft limit to run with: raised towards what is needed, never above the hard.
    let raise_to = match (soft, hard) {
        (Some(s), _) if s >= needed => None,
        (Some(_), Some(h)) => Some(needed.min(h)),
        (Some(_), None) => Some(needed),
        (None, _) => None,
    };
    let usable = raise_to.or(soft);
    let mut warning = None;
    let max_connections = match usable {
        Some(fds) if fds < needed => {
            let fit = (fds.saturating_sub(RESERVED_DESCRIPTORS) / DESCRIPTORS_PER_CONNECTION).max(1)
                as usize;
            warning = Some(format!(
                "{wanted} connections ({basis}) need {needed} open files, but the limit is {fds} (ulimit -n; LimitNOFILE= in the systemd unit): serving at most {fit}; raise the limit"
            ));
            basis = format!("{basis}, lowered to fit {fds} open files");
            fit
        }
        _ => wanted,
    };
    let per_network = limits
        .max_connections_per_network
        .unwrap_or((max_connections / 16).max(limits.max_connections_per_address));
    (
        Capacity {
            max_connections,
            per_network,
            basis,
            warning,
        },
        raise_to,
    )
}

/// Sizes the limits on this machine and raises the soft descriptor limit as far as
/// they need; what it could not raise is in the warning.
pub fn apply(limits: &Limits) -> Capacity {
    let machine = Machine::read();
    let (capacity, raise_to) = size(limits, &machine);
    if let Some(to) = raise_to {
        let rlimit = rustix::process::Rlimit {
            current: Some(to),
            maximum: machine.descriptors.1,
        };
        if let Err(e) = rustix::process::setrlimit(rustix::process::Resource::Nofile, rlimit) {
            // Raising the soft limit up to the hard one is always allowed; if the kernel
            // says otherwise, size again from what is in force.
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            let machine = Machine {
                descriptors: (machine.descriptors.0, machine.descriptors.0),
                ..machine
            };
            return size(limits, &machine).0;
        }
    }
    capacity
}

/// Memory available to this process: the machine's, or its cgroup's limit if lower.
fn memory_bytes() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        });
    let cgroup = cgroup_memory_max(Path::new("/proc/self/cgroup"), Path::new("/sys/fs/cgroup"));
    match (total, cgroup) {
        (Some(t), Some(c)) => Some(t.min(c)),
        (t, c) => t.or(c),
    }
}

/// The cgroup v2 `memory.max` of this process's cgroup, if one is set.
fn cgroup_memory_max(self_cgroup: &Path, root: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(self_cgroup).ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let file = root.join(path.trim_start_matches('/')).join("memory.max");
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: Option<usize>) -> Limits {
        Limits {
            max_connections: max,
            ..Limits::default()
        }
    }

    const GIB: u64 = 1 << 30;

    #[test]
    fn sized_from_memory_within_bounds() {
        let m = |memory, soft, hard| Machine {
            memory,
            descriptors: (soft, hard),
        };
        let (c, raise) = size(&limits(None), &m(Some(24 * GIB), Some(1024), Some(524_288)));
        assert_eq!(
            c.max_connections, 65_536,
            "24 GiB: a quarter at 64 KiB, capped"
        );
        assert_eq!(raise, Some(2 * 65_536 + RESERVED_DESCRIPTORS));
        assert_eq!(c.per_network, 4096);
        assert!(
            c.warning.is_none() && c.basis.contains("24576 MiB"),
            "{c:?}"
        );
        let (c, _) = size(&limits(None), &m(Some(2 * GIB), Some(1 << 20), None));
        assert_eq!(c.max_connections, 8192);
        let (c, _) = size(&limits(None), &m(Some(64 << 20), None, None));
        assert_eq!(c.max_connections, AUTO_MIN);
        let (c, raise) = size(&limits(None), &m(None, None, None));
        assert_eq!((c.max_connections, raise), (AUTO_MIN, None));
    }

    #[test]
    fn the_descriptor_limit_is_raised_or_the_limit_lowered_with_a_warning() {
        let m = |soft, hard| Machine {
            memory: Some(24 * GIB),
            descriptors: (Some(soft), Some(hard)),
        };
        // Enough already: nothing to raise.
        let (c, raise) = size(&limits(Some(500)), &m(20_000, 20_000));
        assert_eq!((c.max_connections, raise, c.warning), (500, None, None));
        // The hard limit is too low for the memory-sized limit: lowered, and said.
        let (c, raise) = size(&limits(None), &m(1024, 20_000));
        assert_eq!(raise, Some(20_000));
        assert_eq!(
            c.max_connections,
            (20_000 - RESERVED_DESCRIPTORS as usize) / 2
        );
        let w = c.warning.unwrap();
        assert!(
            w.contains("65536 connections") && w.contains("LimitNOFILE"),
            "{w}"
        );
        // An explicit limit is kept when the hard limit allows it.
        let (c, raise) = size(&limits(Some(30_000)), &m(1024, 1 << 20));
        assert_eq!((c.max_connections, raise), (30_000, Some(61_024)));
        // The per-network share can be set.
        let l = Limits {
            max_connections_per_network: Some(7),
            ..limits(Some(500))
        };
        assert_eq!(size(&l, &m(20_000, 20_000)).0.per_network, 7);
    }

    #[test]
    fn cgroup_memory_limit() {
        let dir = tempfile::tempdir().unwrap();
        let cg = dir.path().join("cgroup");
        std::fs::write(&cg, "0::/system.slice/poplar.service\n").unwrap();
        let unit = dir.path().join("root/system.slice/poplar.service");
        std::fs::create_dir_all(&unit).unwrap();
        std::fs::write(unit.join("memory.max"), "536870912\n").unwrap();
        let root = dir.path().join("root");
        assert_eq!(cgroup_memory_max(&cg, &root), Some(512 << 20));
        std::fs::write(unit.join("memory.max"), "max\n").unwrap();
        assert_eq!(cgroup_memory_max(&cg, &root), None);
    }
}
