//! Numbers, durations and times for people: `1,234,567`, `2d 3h`,
//! `850 ms`, `2026-12-06 02:10:00Z`. `--json` output never goes through
//! here; it keeps raw numbers.

/// `1234567` as `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A limit where 0 means "none": `count(n)` or `off`.
pub fn limit(n: u64) -> String {
    if n == 0 { "off".into() } else { count(n) }
}

/// Whole seconds as the two largest units: `45s`, `3m 20s`, `5h 2m`, `12d 3h`.
pub fn duration(secs: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")];
    if secs == 0 {
        return "0s".into();
    }
    let mut parts = Vec::new();
    let mut rest = secs;
    for (size, unit) in UNITS {
        if rest >= size || !parts.is_empty() {
            parts.push(format!("{}{unit}", rest / size));
            rest %= size;
        }
        if parts.len() == 2 {
            break;
        }
    }
    if parts.len() == 2 && parts[1].starts_with('0') {
        parts.pop();
    }
    parts.join(" ")
}

/// Fractional seconds: `850 ms` below a second, `1.23 s` above.
pub fn seconds(secs: f64) -> String {
    if secs < 1.0 {
        format!("{:.0} ms", secs * 1000.0)
    } else {
        format!("{secs:.2} s")
    }
}

/// A Unix time in milliseconds as UTC: `2026-12-06 02:10:00.123Z`.
pub fn unix_ms(ms: u64) -> String {
    format!("{}.{:03}Z", civil(ms / 1000), ms % 1000)
}

/// A Unix time in seconds as UTC: `2026-12-06 02:10:00Z` (`-` for 0).
pub fn unix_secs(secs: u64) -> String {
    if secs == 0 {
        "-".into()
    } else {
        format!("{}Z", civil(secs))
    }
}

/// `YYYY-MM-DD HH:MM:SS` of a Unix time (UTC), by H. Hinnant's
/// days-to-civil algorithm.
fn civil(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let tod = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        tod / 3600,
        tod % 3600 / 60,
        tod % 60
    )
}

/// `yes` / `no`.
pub fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

#[cfg(test)]
mod tests;
