//! CPU time of a process, from `/proc/PID/stat`: user plus system time of all its threads,
//! including threads that have exited.

use crate::Error;

/// Linux reports `utime`/`stime` in USER_HZ ticks, which is 100 on every architecture
/// Debian ships (it is fixed by the kernel ABI, unlike the kernel's internal HZ).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU-seconds (user + system) the process has used so far.
pub fn cpu_seconds(pid: u32) -> Result<f64, Error> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Cpu { pid, source })?;
    parse_stat(&text).ok_or(Error::CpuFormat { pid })
}

/// Parses `utime + stime` out of a stat line. The command name (field 2) is in parentheses
/// and may itself contain spaces and parentheses, so fields are counted after the last `)`.
fn parse_stat(text: &str) -> Option<f64> {
    let after_name = &text[text.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_user_and_system_time_after_an_awkward_name() {
        let line = "4242 (tokio (worker) 1) S 1 4242 4242 0 -1 4194560 1207 0 0 0 250 125 0 0 20 0 9 0 \
                    1000 1000000 500 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_stat(line), Some(3.75));
        assert_eq!(parse_stat("4242 (short) S 1"), None);
    }

    #[test]
    fn this_process_uses_some_cpu() {
        let mut spent = 0u64;
        for value in 0..5_000_000u64 {
            spent = spent.wrapping_add(value * value);
        }
        assert!(spent > 0);
        assert!(cpu_seconds(std::process::id()).expect("own stat") >= 0.0);
        assert!(cpu_seconds(u32::MAX).is_err());
    }
}
