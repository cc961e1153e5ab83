//! What the report says about the machine and the process: resident memory,
//! limits, CPU, kernel, the date. Linux `/proc` files; an unreadable file
//! gives "unknown" (or `None`), never a failure.

use std::fs;
use std::time::{SystemTime, UNIX_EPOCH};

fn page_size() -> usize {
    greenlet::stack::page_size()
}

/// Resident bytes of this process, from the second field of
/// `/proc/self/statm` (resident pages).
pub fn resident_bytes() -> usize {
    let statm = fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * page_size()
}

/// How many memory mappings this process has (lines of `/proc/self/maps`);
/// "unknown" when the file cannot be read. Counted through a buffer on the
/// stack, so that it works at the mapping wall, where a heap buffer the
/// size of the file (megabytes: the allocator would map it) cannot be had.
pub fn mapping_count() -> String {
    use std::io::Read;
    let Ok(mut file) = fs::File::open("/proc/self/maps") else {
        return "unknown".into();
    };
    let mut buffer = [0u8; 16 * 1024];
    let mut lines = 0usize;
    loop {
        match file.read(&mut buffer) {
            Ok(0) => return lines.to_string(),
            Ok(n) => lines += buffer[..n].iter().filter(|&&b| b == b'\n').count(),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return "unknown".into(),
        }
    }
}

/// `vm.max_map_count`.
pub fn max_map_count() -> Option<usize> {
    fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The CPU model name and the number of logical CPUs.
pub fn cpu() -> (String, usize) {
    let info = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let count = info.lines().filter(|l| l.starts_with("processor")).count();
    (model, count)
}

/// The machine's memory, from `MemTotal` in `/proc/meminfo`.
pub fn memory_total() -> String {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let kib: u64 = info
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some(format!("{:.1} GiB", kib as f64 / (1024.0 * 1024.0)))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The kernel release and architecture, as `uname -rm` says them.
pub fn kernel() -> String {
    let release =
        fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_else(|_| "unknown".into());
    format!("Linux {} {}", release.trim(), std::env::consts::ARCH)
}

/// Now, in UTC, as `YYYY-MM-DD HH:MM UTC`.
pub fn now_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_000), (2024, 10, 4));
    }
}
