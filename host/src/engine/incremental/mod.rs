//! Incremental backups: change tracking through a logical replication slot, and the capture
//! of the changes since a chain's last backup as a JSON Lines change set.
//!
//! - [`slot`]: the prerequisites, publication and slot a chain reads from.
//! - [`pgoutput`]: decoding the server's built-in `pgoutput` messages into change records.
//! - [`capture`]: `backup create --type incremental`.
//! - [`reuse`]: a full backup that reads only the tables the change stream says changed.
//! - [`schema`]: the DDL since the chain's previous backup, carried or refused.

pub mod capture;
pub mod pgoutput;
pub mod reuse;
pub mod schema;
pub mod slot;

use std::collections::HashSet;

/// A snapshot as `pg_current_snapshot()` prints it (`xmin:xmax:xip,…`): which transactions it
/// sees. The first incremental of a chain leaves out the transactions its full's snapshot saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visibility {
    xmin: u64,
    xmax: u64,
    running: HashSet<u64>,
}

impl Visibility {
    pub fn parse(text: &str) -> Result<Visibility, String> {
        let bad = || format!("'{text}' is not a snapshot like 740:742:740");
        let mut parts = text.splitn(3, ':');
        let mut next = || -> Result<&str, String> { parts.next().ok_or_else(bad) };
        let xmin = next()?.parse().map_err(|_| bad())?;
        let xmax = next()?.parse().map_err(|_| bad())?;
        let running = next()?
            .split(',')
            .filter(|x| !x.is_empty())
            .map(|x| x.parse().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        Ok(Visibility {
            xmin,
            xmax,
            running,
        })
    }

    /// Whether the snapshot sees the (committed) transaction `xid`, as decoding reports it
    /// (32 bits: widened to the epoch nearest the snapshot's).
    pub fn sees(&self, xid: u32) -> bool {
        let base = self.xmax & !0xFFFF_FFFF;
        let wide = [base.wrapping_sub(1 << 32), base, base + (1 << 32)]
            .into_iter()
            .map(|epoch| epoch | u64::from(xid))
            .min_by_key(|x| x.abs_diff(self.xmax))
            .unwrap_or(u64::from(xid));
        wide < self.xmin || (wide < self.xmax && !self.running.contains(&wide))
    }
}

#[cfg(test)]
mod tests {
    use super::Visibility;

    #[test]
    fn a_snapshot_sees_what_committed_before_it_and_not_what_ran_or_came_after() {
        let v = Visibility::parse("740:745:741,743").unwrap();
        assert!(v.sees(700) && v.sees(740) && v.sees(742) && v.sees(744));
        assert!(!v.sees(741) && !v.sees(743), "running at the snapshot");
        assert!(!v.sees(745) && !v.sees(900), "started after it");
        let empty = Visibility::parse("10:10:").unwrap();
        assert!(empty.sees(9) && !empty.sees(10));
    }

    #[test]
    fn xids_are_widened_to_the_snapshots_epoch() {
        // Epoch 1: xmax = 2^32 + 5. A 32-bit xid near 2^32 is from epoch 0 (before); 3 from epoch 1.
        let v = Visibility::parse(&format!("{}:{}:", (1u64 << 32) + 2, (1u64 << 32) + 5)).unwrap();
        assert!(v.sees(u32::MAX - 10));
        assert!(v.sees(1));
        assert!(v.sees(3), "between xmin and xmax, not running");
        assert!(!v.sees(6), "after the snapshot");
        for bad in ["", "1", "1:2", "a:2:", "1:2:x"] {
            assert!(Visibility::parse(bad).is_err(), "{bad:?}");
        }
    }
}
