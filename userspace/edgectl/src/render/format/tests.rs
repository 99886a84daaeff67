use super::{count, duration, limit, seconds, unix_ms, unix_secs};

#[test]
fn counts_have_thousands_separators() {
    assert_eq!(count(0), "0");
    assert_eq!(count(999), "999");
    assert_eq!(count(1000), "1,000");
    assert_eq!(count(1_234_567), "1,234,567");
    assert_eq!(count(u64::MAX), "18,446,744,073,709,551,615");
    assert_eq!(limit(0), "off");
    assert_eq!(limit(12_000), "12,000");
}

#[test]
fn durations_show_two_units() {
    assert_eq!(duration(0), "0s");
    assert_eq!(duration(45), "45s");
    assert_eq!(duration(60), "1m");
    assert_eq!(duration(200), "3m 20s");
    assert_eq!(duration(3600), "1h");
    assert_eq!(duration(3 * 3600 + 59), "3h");
    assert_eq!(duration(5 * 3600 + 120), "5h 2m");
    assert_eq!(duration(86_400 * 12 + 3 * 3600 + 7), "12d 3h");
    assert_eq!(duration(365 * 86_400), "365d");
}

#[test]
fn fractional_seconds() {
    assert_eq!(seconds(0.0), "0 ms");
    assert_eq!(seconds(0.85), "850 ms");
    assert_eq!(seconds(1.234), "1.23 s");
}

#[test]
fn unix_times_are_utc() {
    assert_eq!(unix_secs(0), "-");
    assert_eq!(unix_secs(1), "1970-01-01 00:00:01Z");
    assert_eq!(unix_secs(951_782_400), "2000-02-29 00:00:00Z");
    assert_eq!(unix_secs(1_796_530_210), "2026-12-06 04:10:10Z");
    assert_eq!(unix_ms(1_796_530_210_123), "2026-12-06 04:10:10.123Z");
    assert_eq!(unix_ms(4_102_444_799_000), "2099-12-31 23:59:59.000Z");
}
