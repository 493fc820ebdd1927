//! Timestamps in responses: RFC 3339 in UTC (`2026-12-02T21:20:58.590607Z`), written as one
//! string. chrono's own serializer writes a timestamp a character at a time, each through the
//! JSON escaper: a tenth of the time of a page of users (`perf`, benches/load.sh).

use chrono::{DateTime, Datelike as _, SecondsFormat, Timelike as _, Utc};
use serde::Serializer;

/// Serializes `t` as chrono would (`SecondsFormat::AutoSi`, `Z`), in one piece.
pub fn serialize<S: Serializer>(t: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    let mut buffer = [0u8; 30];
    match format(t, &mut buffer) {
        Some(text) => serializer.serialize_str(text),
        None => serializer.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
    }
}

/// The same for an optional timestamp (`null` when absent).
pub mod optional {
    use chrono::{DateTime, Utc};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(
        t: &Option<DateTime<Utc>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::serialize(t, serializer),
            None => serializer.serialize_none(),
        }
    }
}

/// `t` in `buffer`, for years 0 to 9999; `None` otherwise.
fn format<'a>(t: &DateTime<Utc>, buffer: &'a mut [u8; 30]) -> Option<&'a str> {
    // Read off the stored UTC time: each field of the `DateTime` would add the zone's offset
    // (zero) first, seven times a timestamp.
    let t = t.naive_utc();
    let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
    buffer[..20].copy_from_slice(b"0000-00-00T00:00:00.");
    put(buffer, 0, year, 4);
    put(buffer, 5, t.month(), 2);
    put(buffer, 8, t.day(), 2);
    put(buffer, 11, t.hour(), 2);
    put(buffer, 14, t.minute(), 2);
    put(buffer, 17, t.second(), 2);
    let nanos = t.nanosecond() % 1_000_000_000;
    let end = if nanos == 0 {
        19
    } else if nanos.is_multiple_of(1_000_000) {
        put(buffer, 20, nanos / 1_000_000, 3);
        23
    } else if nanos.is_multiple_of(1_000) {
        put(buffer, 20, nanos / 1_000, 6);
        26
    } else {
        put(buffer, 20, nanos, 9);
        29
    };
    buffer[end] = b'Z';
    std::str::from_utf8(&buffer[..=end]).ok()
}

/// Writes `value` as `width` decimal digits at `at`.
fn put(buffer: &mut [u8; 30], at: usize, mut value: u32, width: usize) {
    for i in (at..at + width).rev() {
        buffer[i] = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_written_as_chrono_writes_them() {
        for text in [
            "2026-12-02T21:20:58Z",
            "2026-12-02T21:20:58.590Z",
            "2026-12-02T21:20:58.590607Z",
            "2026-12-02T21:20:58.590607909Z",
            "0001-01-01T00:00:00.000000001Z",
            "9999-12-31T23:59:59.999999Z",
        ] {
            let t = DateTime::parse_from_rfc3339(text)
                .unwrap()
                .with_timezone(&Utc);
            let mut buffer = [0u8; 30];
            assert_eq!(format(&t, &mut buffer), Some(text));
            assert_eq!(text, t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        }
    }
}
