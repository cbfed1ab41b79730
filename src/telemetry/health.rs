//! The box's health as the stats report it: CPU (the box's and the daemon's), load, memory, disk
//! space where the database lives, temperatures and a Raspberry Pi's throttling, read from
//! `/proc` and `/sys`. What a machine does not have (no thermal zones in a container, no
//! firmware throttling file off a Pi) is absent, never a made-up zero.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

/// The box at one moment. Byte figures are bytes; CPU figures are percent of one core times the
/// cores (100 % = every core busy for `cpu_percent`, one core busy for `process_cpu_percent`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Health {
    /// Cores online.
    pub cpus: usize,
    /// The whole box's CPU use since the previous reading (absent on the first).
    pub cpu_percent: Option<f64>,
    /// The daemon's own CPU use since the previous reading, 100 = one core.
    pub process_cpu_percent: Option<f64>,
    /// The 1, 5 and 15 minute load averages.
    pub load: Option<[f64; 3]>,
    pub memory_total_bytes: Option<u64>,
    /// What the kernel says can be had without swapping (`MemAvailable`).
    pub memory_available_bytes: Option<u64>,
    /// The daemon's resident memory.
    pub process_rss_bytes: Option<u64>,
    /// Free space for an unprivileged writer on the database's file system.
    pub disk_free_bytes: Option<u64>,
    pub disk_total_bytes: Option<u64>,
    /// The hottest thermal zone, in °C.
    pub temperature_c: Option<f64>,
    /// Every thermal zone that could be read.
    pub thermal: Vec<Thermal>,
    /// A Raspberry Pi's firmware throttling flags (absent elsewhere).
    pub throttled: Option<Throttled>,
}

/// One thermal zone (`/sys/class/thermal/thermal_zoneN`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Thermal {
    /// Its type, e.g. `cpu-thermal` (a Pi), `CPU-therm` (a Jetson), `x86_pkg_temp`.
    pub zone: String,
    pub celsius: f64,
}

/// The Raspberry Pi firmware's `get_throttled` word: what is happening now, and what has
/// happened since boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Throttled {
    /// The raw word (`vcgencmd get_throttled` prints it in hex).
    pub raw: u32,
    pub under_voltage: bool,
    pub frequency_capped: bool,
    pub throttled: bool,
    pub soft_temperature_limit: bool,
    pub under_voltage_occurred: bool,
    pub frequency_capped_occurred: bool,
    pub throttled_occurred: bool,
    pub soft_temperature_limit_occurred: bool,
}

impl Throttled {
    /// Decodes the firmware's word: bits 0-3 now, bits 16-19 since boot.
    pub fn from_word(raw: u32) -> Self {
        let bit = |n: u32| raw & (1 << n) != 0;
        Self {
            raw,
            under_voltage: bit(0),
            frequency_capped: bit(1),
            throttled: bit(2),
            soft_temperature_limit: bit(3),
            under_voltage_occurred: bit(16),
            frequency_capped_occurred: bit(17),
            throttled_occurred: bit(18),
            soft_temperature_limit_occurred: bit(19),
        }
    }

    /// Each flag by name, for `/metrics`.
    pub fn flags(&self) -> [(&'static str, bool); 8] {
        [
            ("under_voltage", self.under_voltage),
            ("frequency_capped", self.frequency_capped),
            ("throttled", self.throttled),
            ("soft_temperature_limit", self.soft_temperature_limit),
            ("under_voltage_occurred", self.under_voltage_occurred),
            ("frequency_capped_occurred", self.frequency_capped_occurred),
            ("throttled_occurred", self.throttled_occurred),
            (
                "soft_temperature_limit_occurred",
                self.soft_temperature_limit_occurred,
            ),
        ]
    }
}

/// Where the Raspberry Pi firmware driver exposes `get_throttled` (kernel 5.x and later).
const PI_THROTTLED: &str = "sys/devices/platform/soc/soc:firmware/get_throttled";

/// CPU time counters at one reading.
#[derive(Clone, Copy, Debug)]
struct CpuTicks {
    at: Instant,
    /// The box: (busy, total) jiffies over all cores.
    host: Option<(u64, u64)>,
    /// The daemon: user + system jiffies.
    process: Option<u64>,
}

/// Reads the health; keeps the previous CPU counters, so each reading's CPU figures are the
/// use since the one before. Every read is a small file under `/proc` or `/sys` and one
/// `statvfs`: blocking, so the stats task runs it off the async workers.
pub(crate) struct HealthProbe {
    /// `/` on a real box; a directory laid out like it in tests.
    root: PathBuf,
    db_dir: PathBuf,
    prev: Option<CpuTicks>,
    ticks_per_s: f64,
}

impl HealthProbe {
    /// A probe of this machine, measuring disk space where `db_path` (the database file) lives.
    pub(crate) fn new(db_path: &Path) -> Self {
        Self::with_root(PathBuf::from("/"), db_path)
    }

    fn with_root(root: PathBuf, db_path: &Path) -> Self {
        let db_dir = match db_path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Self {
            root,
            db_dir,
            prev: None,
            ticks_per_s: if hz > 0 { hz as f64 } else { 100.0 },
        }
    }

    fn read_file(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.root.join(rel)).ok()
    }

    /// The health now.
    pub(crate) fn read(&mut self) -> Health {
        let ticks = CpuTicks {
            at: Instant::now(),
            host: self.read_file("proc/stat").as_deref().and_then(host_ticks),
            process: self
                .read_file("proc/self/stat")
                .as_deref()
                .and_then(process_ticks),
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (cpu_percent, process_cpu_percent) = match self.prev {
            Some(p) => (
                p.host.zip(ticks.host).and_then(|(a, b)| host_percent(a, b)),
                p.process.zip(ticks.process).and_then(|(a, b)| {
                    let s = (ticks.at - p.at).as_secs_f64();
                    (s > 0.0)
                        .then(|| round1(b.saturating_sub(a) as f64 / self.ticks_per_s / s * 100.0))
                }),
            ),
            None => (None, None),
        };
        self.prev = Some(ticks);
        let meminfo = self.read_file("proc/meminfo");
        let field = |name| meminfo.as_deref().and_then(|m| meminfo_kib(m, name));
        let thermal = self.thermal();
        let temperature_c = thermal.iter().map(|t| t.celsius).reduce(f64::max);
        let (disk_free_bytes, disk_total_bytes) = match disk_space(&self.db_dir) {
            Some((free, total)) => (Some(free), Some(total)),
            None => (None, None),
        };
        Health {
            cpus,
            cpu_percent,
            process_cpu_percent,
            load: self.read_file("proc/loadavg").as_deref().and_then(loadavg),
            memory_total_bytes: field("MemTotal").map(|k| k * 1024),
            memory_available_bytes: field("MemAvailable").map(|k| k * 1024),
            process_rss_bytes: self
                .read_file("proc/self/status")
                .as_deref()
                .and_then(|s| meminfo_kib(s, "VmRSS"))
                .map(|k| k * 1024),
            disk_free_bytes,
            disk_total_bytes,
            temperature_c,
            thermal,
            throttled: self
                .read_file(PI_THROTTLED)
                .as_deref()
                .and_then(throttled_word)
                .map(Throttled::from_word),
        }
    }

    /// The thermal zones that give a plausible reading, in zone order.
    fn thermal(&self) -> Vec<Thermal> {
        let Ok(dir) = std::fs::read_dir(self.root.join("sys/class/thermal")) else {
            return Vec::new();
        };
        let mut zones: Vec<(u32, Thermal)> = dir
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let n: u32 = name.strip_prefix("thermal_zone")?.parse().ok()?;
                let milli: f64 = std::fs::read_to_string(e.path().join("temp"))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?;
                let celsius = milli / 1000.0;
                // A zone without a sensor reads 0 or a sentinel like -273 or 255.
                if !(-40.0..=150.0).contains(&celsius) || celsius == 0.0 {
                    return None;
                }
                let zone = std::fs::read_to_string(e.path().join("type"))
                    .map(|t| t.trim().to_string())
                    .unwrap_or(name);
                Some((
                    n,
                    Thermal {
                        zone,
                        celsius: round1(celsius),
                    },
                ))
            })
            .collect();
        zones.sort_by_key(|(n, _)| *n);
        zones.into_iter().map(|(_, t)| t).collect()
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// (busy, total) jiffies from `/proc/stat`'s first line (`cpu  user nice system idle iowait
/// irq softirq steal ...`); idle and iowait are not busy. Guest time is already in user.
fn host_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .take(8)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 4 {
        return None;
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// The box's CPU use between two readings, 100 % = every core busy.
fn host_percent(a: (u64, u64), b: (u64, u64)) -> Option<f64> {
    let total = b.1.checked_sub(a.1)?;
    let busy = b.0.checked_sub(a.0)?;
    (total > 0).then(|| round1(busy as f64 / total as f64 * 100.0))
}

/// utime + stime from `/proc/self/stat`. The command name (field 2) is in parentheses and may
/// hold spaces, so fields are counted after its closing one.
fn process_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `Name:   123 kB` line of `/proc/meminfo` or `/proc/self/status`, in KiB.
fn meminfo_kib(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn loadavg(text: &str) -> Option<[f64; 3]> {
    let mut it = text.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// The firmware file holds the word in hex, with or without `0x` (`vcgencmd` prints
/// `throttled=0x50005`).
fn throttled_word(text: &str) -> Option<u32> {
    let t = text.trim();
    let t = t.strip_prefix("throttled=").unwrap_or(t);
    let hex = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u32::from_str_radix(hex, 16).ok()
}

/// (free for an unprivileged writer, total) bytes of the file system holding `dir`.
fn disk_space(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `path` is a valid NUL-terminated string and `st` a properly sized out-parameter
    // that statvfs fills on success; it is read only then.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    Some((st.f_bavail as u64 * frsize, st.f_blocks as u64 * frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_use_is_busy_over_total_jiffies_between_two_readings() {
        let a = host_ticks("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        let b = host_ticks("cpu  200 0 100 1600 100 0 0 0 0 0\n").unwrap();
        assert_eq!(a, (150, 1000));
        // 150 busy of 1000 between them.
        assert_eq!(host_percent(a, b), Some(15.0));
        // A counter that went back (a reset) gives nothing rather than nonsense.
        assert_eq!(host_percent(b, a), None);
        assert_eq!(host_ticks("intr 1 2 3\n"), None);
    }

    #[test]
    fn process_time_is_read_after_a_command_name_with_spaces_and_parentheses() {
        let stat =
            "4242 (ocellus (cam) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 77 23 0 0 20 0 9 0 1 1 1";
        assert_eq!(process_ticks(stat), Some(100));
        assert_eq!(process_ticks("4242 (short) S 1"), None);
    }

    #[test]
    fn memory_and_load_are_parsed_from_their_files() {
        let meminfo =
            "MemTotal:        3884096 kB\nMemFree:  100 kB\nMemAvailable:    2000000 kB\n";
        assert_eq!(meminfo_kib(meminfo, "MemTotal"), Some(3_884_096));
        assert_eq!(meminfo_kib(meminfo, "MemAvailable"), Some(2_000_000));
        // A name that is the start of another is not taken for it.
        assert_eq!(meminfo_kib(meminfo, "Mem"), None);
        assert_eq!(
            loadavg("0.52 0.58 0.59 1/357 12345\n"),
            Some([0.52, 0.58, 0.59])
        );
        assert_eq!(loadavg("0.52\n"), None);
    }

    #[test]
    fn the_pi_throttling_word_decodes_now_and_since_boot() {
        // Under-voltage now and throttled since boot: what a weak power supply shows.
        let t = Throttled::from_word(throttled_word("0x40001\n").unwrap());
        assert!(t.under_voltage && t.throttled_occurred);
        assert!(!t.throttled && !t.under_voltage_occurred && !t.frequency_capped);
        assert_eq!(throttled_word("throttled=0x50005"), Some(0x50005));
        assert_eq!(throttled_word("50000"), Some(0x50000));
        assert_eq!(throttled_word("garbage"), None);
        assert_eq!(t.flags().iter().filter(|(_, on)| *on).count(), 2);
    }

    #[test]
    fn thermal_zones_and_throttling_are_read_where_a_pi_keeps_them() {
        let root = tempfile::tempdir().unwrap();
        let zone = |n: u32, kind: &str, milli: &str| {
            let d = root
                .path()
                .join(format!("sys/class/thermal/thermal_zone{n}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("type"), format!("{kind}\n")).unwrap();
            std::fs::write(d.join("temp"), milli).unwrap();
        };
        zone(1, "gpu-thermal", "51234\n");
        zone(0, "cpu-thermal", "48300\n");
        // No sensor behind it: left out, not reported as 0 °C.
        zone(2, "unused", "0\n");
        let fw = root.path().join(PI_THROTTLED);
        std::fs::create_dir_all(fw.parent().unwrap()).unwrap();
        std::fs::write(&fw, "0x50000\n").unwrap();
        let mut probe = HealthProbe::with_root(root.path().to_path_buf(), Path::new("x.db"));
        let h = probe.read();
        let zones: Vec<_> = h
            .thermal
            .iter()
            .map(|t| (t.zone.as_str(), t.celsius))
            .collect();
        assert_eq!(zones, [("cpu-thermal", 48.3), ("gpu-thermal", 51.2)]);
        assert_eq!(h.temperature_c, Some(51.2));
        let t = h.throttled.unwrap();
        assert!(t.under_voltage_occurred && t.throttled_occurred && !t.under_voltage);
        // Nothing of /proc in that tree: those figures are absent, not zero.
        assert_eq!(
            (h.load, h.memory_total_bytes, h.cpu_percent),
            (None, None, None)
        );
    }

    #[test]
    fn this_machine_reports_its_memory_disk_and_cpu() {
        let dir = tempfile::tempdir().unwrap();
        let mut probe = HealthProbe::new(&dir.path().join("ocellus.db"));
        let first = probe.read();
        assert!(first.cpus >= 1);
        assert!(first.memory_total_bytes.unwrap() >= first.memory_available_bytes.unwrap());
        assert!(first.process_rss_bytes.unwrap() > 0);
        let (free, total) = (
            first.disk_free_bytes.unwrap(),
            first.disk_total_bytes.unwrap(),
        );
        assert!(total > 0 && free <= total);
        assert!(first.load.is_some());
        // The CPU figures need two readings.
        assert_eq!(first.cpu_percent, None);
        // Burn some CPU so that the second reading has something to see.
        let until = Instant::now() + std::time::Duration::from_millis(200);
        let mut x = 0u64;
        while Instant::now() < until {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let second = probe.read();
        let process = second.process_cpu_percent.unwrap();
        assert!(process > 0.0, "{second:?}");
        let host = second.cpu_percent.unwrap();
        assert!((0.0..=100.0).contains(&host), "{second:?}");
    }
}
