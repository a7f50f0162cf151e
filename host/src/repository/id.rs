//! Backup ids: UTC time to the second plus four hex digits, e.g. `20261126-074750-3fa2`.
//!
//! They sort by creation time as plain strings, read well aloud, and the random tail keeps two
//! backups started in the same second apart.

use chrono::{DateTime, Utc};

pub fn new_backup_id(at: DateTime<Utc>) -> String {
    format!("{}-{:04x}", at.format("%Y%m%d-%H%M%S"), fastrand::u16(..))
}

/// Whether `s` looks like a backup id (so it can be used safely in object keys).
pub fn is_valid_backup_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ids_sort_by_time_and_are_valid() {
        let a = new_backup_id(
            Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
                .single()
                .expect("time"),
        );
        let b = new_backup_id(
            Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 6)
                .single()
                .expect("time"),
        );
        assert!(a.starts_with("20260102-030405-"));
        assert!(a < b);
        assert!(is_valid_backup_id(&a));
        assert!(!is_valid_backup_id("../etc"));
    }
}
