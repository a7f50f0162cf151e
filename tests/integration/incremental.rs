//! Incremental backups (#15, capture): a full backup taken with `[incremental] enabled`
//! starts a chain at its own snapshot; `backup create --type incremental` stores exactly the
//! changes since the chain's last backup, once, whatever kills it; DDL, an invalidated slot,
//! missing privileges and retained WAL are reported clearly.

use crate::support::{TestEnv, envelope, finish, reported, scalar, send, text};
use larder::pg::ephemeral::ClusterSetup;
use larder::repository::changes::{Change, Lsn};
use larder::repository::manifest::{BackupType, IncrementalInfo, Manifest};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn config(env: &TestEnv, incremental: &str) -> String {
    format!(
        "[repository]\npath = '{}'\n\n[incremental]\n{incremental}\n",
        env.repo_dir().display()
    )
}

/// Takes a backup through the CLI (`--json`) and returns its manifest.
async fn create(env: &TestEnv, args: &[&str]) -> Manifest {
    let mut all = vec!["backup", "create"];
    all.extend_from_slice(args);
    let out = env.run_json(&all);
    let id = out["backup"]["id"].as_str().expect("backup id").to_string();
    env.repo().await.read_manifest(&id).await.expect("manifest")
}

fn info(m: &Manifest) -> &IncrementalInfo {
    m.incremental.as_ref().expect("change tracking info")
}

/// The change records of an incremental, in order.
async fn changes(env: &TestEnv, m: &Manifest) -> Vec<Change> {
    let data = env
        .repo()
        .await
        .read_stream(&info(m).changes, "the change set")
        .await
        .expect("read the change set");
    data.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| Change::from_line(l).expect("a change record"))
        .collect()
}

fn counts(m: &Manifest, table: &str) -> (u64, u64, u64, u64) {
    info(m)
        .tables
        .iter()
        .find(|t| t.table == table)
        .map_or((0, 0, 0, 0), |t| {
            (t.inserts, t.updates, t.deletes, t.truncates)
        })
}

fn inserted_ids(changes: &[Change], table: &str) -> BTreeSet<i64> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::Insert { table: t, new } if t == table => {
                new["id"].as_deref().and_then(|v| v.parse().ok())
            }
            _ => None,
        })
        .collect()
}

async fn slot_confirmed(env: &TestEnv, slot: &str) -> Option<Lsn> {
    let row = env
        .client()
        .await
        .query_opt(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .expect("read the slot");
    row.map(|r| r.get::<_, String>(0).parse().expect("an LSN"))
}

/// Waits until no session holds the slot (a killed client's backend finishes its query).
async fn wait_slot_free(env: &TestEnv, slot: &str) {
    let db = env.client().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let active: bool = db
            .query_one(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .expect("slot")
            .get(0);
        if !active {
            return;
        }
        assert!(Instant::now() < deadline, "slot {slot} stayed in use");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The peak resident memory (VmHWM, KiB) of a running child, read until it exits.
async fn run_measured(mut child: std::process::Child) -> (std::process::Output, u64) {
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    while child.try_wait().expect("poll child").is_none() {
        if let Ok(text) = std::fs::read_to_string(&status)
            && let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        {
            peak = kib;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (finish(child).await, peak)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_holds_exactly_the_changes_since_the_full_even_across_a_kill() {
    let env = TestEnv::start("incr_exact").await;
    env.write_config(&config(&env, "enabled = true"));
    let db = env.client().await;
    db.batch_execute(
        "CREATE TABLE ticks (id bigserial PRIMARY KEY, pad text NOT NULL DEFAULT '');
         CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL);
         INSERT INTO accounts SELECT g, 100 FROM generate_series(1, 50) g;
         CREATE TABLE docs (id int PRIMARY KEY, title text, body text);
         INSERT INTO docs SELECT 1, 'first', string_agg(md5(g::text), '') FROM generate_series(1, 2000) g;
         CREATE TABLE log (msg text);
         INSERT INTO log VALUES ('before');
         CREATE TABLE scratch (id int PRIMARY KEY);
         INSERT INTO scratch SELECT generate_series(1, 10);
         CREATE ROLE plain LOGIN;",
    )
    .await
    .expect("schema");

    // Without REPLICATION the full backup refuses to start a chain, and says what to run.
    let out = env.run_as("plain", &["--json", "backup", "create"]);
    let refused = envelope(&out);
    assert_eq!(refused["kind"], "change_tracking", "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("ALTER ROLE plain REPLICATION"),
        "{refused}"
    );

    // Rows committed one by one while the full backup starts its chain: each must be in the
    // full or in the first incremental, never both, never neither.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, db) = (stop.clone(), env.client().await);
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                db.batch_execute("INSERT INTO ticks DEFAULT VALUES")
                    .await
                    .expect("tick");
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let full = create(&env, &["-n", "base"]).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    assert_eq!(full.backup_type, BackupType::Full);
    let base = info(&full).clone();
    assert_eq!(
        base.slot,
        format!("larder_incr_exact_{}", full.id.replace('-', "_")),
        "each chain has its own slot, named after its full"
    );
    assert_eq!(base.start_lsn, base.end_lsn, "a full starts its chain");
    assert!(base.snapshot.is_some());
    let log_fix = base
        .not_exact
        .iter()
        .find(|n| n.table == "public.log")
        .expect("the table without a key is reported");
    assert_eq!(log_fix.fix, "ALTER TABLE public.log REPLICA IDENTITY FULL");
    assert_eq!(slot_confirmed(&env, &base.slot).await, Some(base.end_lsn));

    db.batch_execute(
        "BEGIN; UPDATE accounts SET balance = balance - 10 WHERE id = 1;
                UPDATE accounts SET balance = balance + 10 WHERE id = 2; COMMIT;
         DELETE FROM accounts WHERE id = 50;
         UPDATE docs SET title = 'renamed' WHERE id = 1;
         TRUNCATE scratch;
         INSERT INTO log VALUES ('after');",
    )
    .await
    .expect("changes");
    let inc1 = create(&env, &["--type", "incremental", "-n", "inc1"]).await;
    assert_eq!(inc1.backup_type, BackupType::Incremental);
    let chain = inc1.chain.clone().expect("a chain");
    assert_eq!(
        (chain.parent.as_str(), chain.base.as_str()),
        (full.id.as_str(), full.id.as_str())
    );
    let i1 = info(&inc1).clone();
    assert_eq!(i1.start_lsn, base.end_lsn);
    assert!(i1.end_lsn > i1.start_lsn);
    assert_eq!(counts(&inc1, "public.accounts"), (0, 2, 1, 0));
    assert_eq!(counts(&inc1, "public.docs"), (0, 1, 0, 0));
    assert_eq!(counts(&inc1, "public.scratch"), (0, 0, 0, 1));
    assert_eq!(
        counts(&inc1, "public.log"),
        (0, 0, 0, 0),
        "not captured, reported"
    );
    assert!(i1.first_commit.is_some() && i1.first_commit <= i1.last_commit);
    assert_eq!(
        inc1.tables
            .iter()
            .map(|t| t.display_name())
            .collect::<Vec<_>>(),
        full.tables
            .iter()
            .map(|t| t.display_name())
            .collect::<Vec<_>>(),
        "the chain's schema, no rows"
    );
    assert!(
        inc1.tables
            .iter()
            .all(|t| t.rows == 0 && t.parts.is_empty())
    );
    assert_eq!(
        slot_confirmed(&env, &base.slot).await,
        Some(i1.end_lsn),
        "advanced after the manifest"
    );

    let records = changes(&env, &inc1).await;
    assert_eq!(records.len() as u64, i1.changes.rows);
    // Transactions whole: begin, changes, commit with the same xid and commit LSN.
    let mut open = None;
    let mut transactions = 0;
    for record in &records {
        match record {
            Change::Begin {
                xid, commit_lsn, ..
            } => {
                assert!(open.is_none(), "nested begin");
                open = Some((*xid, *commit_lsn));
            }
            Change::Commit { xid, commit_lsn } => {
                assert_eq!(open.take(), Some((*xid, *commit_lsn)));
                transactions += 1;
            }
            _ => assert!(open.is_some(), "a change outside a transaction: {record:?}"),
        }
    }
    assert_eq!(transactions, i1.transactions);
    let update = records
        .iter()
        .find(|c| matches!(c, Change::Update { table, .. } if table == "public.docs"))
        .expect("the docs update");
    let Change::Update {
        key,
        new,
        unchanged,
        ..
    } = update
    else {
        unreachable!()
    };
    assert_eq!(key.get("id"), Some(&Some("1".to_string())));
    assert_eq!(new.get("title"), Some(&Some("renamed".to_string())));
    assert_eq!(
        unchanged,
        &["body"],
        "the TOASTed column was not sent: kept on replay"
    );
    assert!(!new.contains_key("body"));
    assert!(records.iter().any(|c| matches!(c,
        Change::Truncate { tables, .. } if tables == &["public.scratch"])));
    assert!(records.iter().any(|c| matches!(c,
        Change::Delete { table, key } if table == "public.accounts" && key.get("id") == Some(&Some("50".into())))));

    // No gap, no overlap between the full and its first incremental.
    let in_full: BTreeSet<i64> =
        crate::support::backup_rows(&env.repo().await, &full, "public.ticks")
            .await
            .iter()
            .map(|l| l.split('\t').next().unwrap().parse().unwrap())
            .collect();
    let in_inc = inserted_ids(&records, "public.ticks");
    let live: BTreeSet<i64> = db
        .query("SELECT id FROM ticks", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        in_full.is_disjoint(&in_inc),
        "a row in both the full and the incremental"
    );
    assert_eq!(
        in_full.union(&in_inc).copied().collect::<BTreeSet<_>>(),
        live
    );
    assert!(!in_full.is_empty());

    // Restored (base full + the change set replayed), the chain equals the source for every
    // table it follows exactly: the TOASTed body kept, the truncate and delete applied.
    env.run_ok(&[
        "recovery",
        "execute",
        &inc1.id,
        "-s",
        "new-database",
        "--dest-db",
        "incr_restored",
    ]);
    let restored = env.client_for("incr_restored").await;
    for table in [
        "public.ticks",
        "public.accounts",
        "public.docs",
        "public.scratch",
    ] {
        let columns = &full.find_table(table).unwrap().columns;
        assert_eq!(
            crate::support::live_rows(&restored, table, columns).await,
            crate::support::live_rows(&db, table, columns).await,
            "{table} restored from the chain differs from the source"
        );
    }

    // A large transaction, and an incremental whose replication stream the server ends (its
    // process terminated, as a server going away does), then one killed while it reads: no
    // backup is left and the slot has not moved, so the next incremental carries every change.
    db.batch_execute(
        "INSERT INTO accounts VALUES (101, 1), (102, 2), (103, 3);
         INSERT INTO ticks (pad) SELECT repeat('x', 200) FROM generate_series(1, 300000);",
    )
    .await
    .expect("a large transaction");
    let before = env.repo().await.backup_ids().await.unwrap();
    // The slot is active once the incremental's replication stream holds it.
    let streaming = format!(
        "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}' AND active",
        base.slot
    );
    for server_ends_it in [true, false] {
        let child = env
            .cli()
            .args([
                "backup",
                "create",
                "--type",
                "incremental",
                "-n",
                "interrupted",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start backup-cli");
        let deadline = Instant::now() + Duration::from_secs(30);
        while scalar(&db, &streaming).await == 0 {
            assert!(
                Instant::now() < deadline,
                "the incremental never read the slot"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if server_ends_it {
            db.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1",
                &[&base.slot],
            )
            .await
            .expect("terminate the stream's server process");
        } else {
            send(&child, "KILL");
        }
        let out = finish(child).await;
        if server_ends_it {
            assert_eq!(out.status.code(), Some(1), "{}", text(&out));
            let said = text(&out);
            assert!(
                said.contains(&format!(
                    "reading the changes of replication slot {}",
                    base.slot
                )) && said.contains("terminating connection"),
                "the failure names the slot and the server's reason:\n{said}"
            );
        } else {
            assert!(!out.status.success());
        }
        assert_eq!(
            env.repo().await.backup_ids().await.unwrap(),
            before,
            "no visible backup"
        );
        wait_slot_free(&env, &base.slot).await;
        assert_eq!(
            slot_confirmed(&env, &base.slot).await,
            Some(i1.end_lsn),
            "the slot did not move"
        );
    }

    let child = env
        .cli()
        .args(["backup", "create", "--type", "incremental", "-n", "inc2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start backup-cli");
    let (out, peak_kib) = run_measured(child).await;
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("NOT exact: public.log")
            && said.contains("ALTER TABLE public.log REPLICA IDENTITY FULL"),
        "backup create names the table it cannot follow and the fix:\n{said}"
    );
    let ids = env.repo().await.backup_ids().await.unwrap();
    let inc2 = env
        .repo()
        .await
        .read_manifest(ids.last().unwrap())
        .await
        .unwrap();
    assert_eq!(inc2.name, "inc2");
    let i2 = info(&inc2);
    assert_eq!(i2.start_lsn, i1.end_lsn);
    assert_eq!(inc2.chain.as_ref().unwrap().parent, inc1.id);
    assert_eq!(inc2.chain.as_ref().unwrap().base, full.id);
    assert_eq!(counts(&inc2, "public.accounts"), (3, 0, 0, 0));
    assert_eq!(counts(&inc2, "public.ticks"), (300_000, 0, 0, 0));
    // Bounded memory: the change set is streamed, never held whole.
    let change_kib = i2.changes.bytes / 1024;
    println!("large transaction: change set {change_kib} KiB, peak RSS {peak_kib} KiB");
    assert!(
        change_kib > 75_000,
        "the change set is large: {change_kib} KiB"
    );
    // Holding it whole would take more than the change set itself on top of the process.
    assert!(
        peak_kib < 64 * 1024,
        "peak RSS {peak_kib} KiB for a {change_kib} KiB change set"
    );

    // backup list shows the chain.
    let list = env.run_json(&["backup", "list"]);
    let listed = list.as_array().unwrap();
    let inc2_row = listed.iter().find(|b| b["id"] == inc2.id.as_str()).unwrap();
    assert_eq!(inc2_row["type"], "incremental");
    assert_eq!(inc2_row["chain"]["parent"], inc1.id.as_str());
    assert_eq!(inc2_row["chain"]["base"], full.id.as_str());
    let table = text(&env.run_ok(&["--wide", "backup", "list"]));
    assert!(
        table.contains(&format!("incremental <- {}", inc1.id)),
        "{table}"
    );
    assert!(table.contains("full (chain base)"), "{table}");
}

/// Starts a cluster with `setting = value`, checks a full backup with tracking is refused
/// (`change_tracking`) with a message holding each of `said`, and that nothing was stored.
async fn refused_with(dbname: &str, setting: &str, value: &str, said: &[&str]) -> TestEnv {
    let setup = ClusterSetup {
        settings: vec![(setting.into(), value.into())],
        ..ClusterSetup::default()
    };
    let env = TestEnv::start_with(dbname, setup, "disable").await;
    env.write_config(&config(&env, "enabled = true"));
    let out = env.run(&["--json", "backup", "create"]);
    assert_eq!(out.status.code(), Some(1));
    let e = envelope(&out);
    assert_eq!(e["kind"], "change_tracking", "{e}");
    let message = e["error"].as_str().expect("an error message");
    for part in said {
        assert!(message.contains(part), "{message}");
    }
    assert!(env.repo().await.backup_ids().await.expect("ids").is_empty());
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_refuses_a_server_without_logical_wal_level_and_says_how() {
    let env = refused_with(
        "incr_wal",
        "wal_level",
        "replica",
        &[
            "wal_level = logical",
            "ALTER SYSTEM SET wal_level = logical",
        ],
    )
    .await;
    // An incremental is refused the same way.
    env.write_config(&config(&env, "enabled = false"));
    let said = env.run_failing(&["backup", "create", "--type", "incremental"]);
    assert!(said.contains("wal_level = logical"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_refuses_a_server_without_wal_senders_and_says_how() {
    refused_with(
        "incr_senders",
        "max_wal_senders",
        "0",
        &["max_wal_senders = 0", "ALTER SYSTEM SET max_wal_senders"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_an_invalidated_slot_and_retained_wal_are_reported_and_a_retired_slot_dropped() {
    let env = TestEnv::start("incr_edges").await;
    env.write_config(&config(&env, "enabled = true\nmax_retained_wal = \"1kB\""));
    let db = env.client().await;
    db.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' FROM generate_series(1, 100) g;",
    )
    .await
    .unwrap();
    let said = env.run_failing(&["backup", "create", "--type", "incremental"]);
    assert!(
        said.contains("no chain to add an incremental backup to"),
        "{said}"
    );
    let full = create(&env, &[]).await;
    let slot = info(&full).slot.clone();
    db.batch_execute("INSERT INTO t SELECT g, 'w' FROM generate_series(101, 2000) g")
        .await
        .unwrap();

    // Retained WAL above max_retained_wal: health raises "Replication Slot Lagging".
    let out = env.run(&["--json", "monitor", "health"]);
    let health = reported(&out);
    let check = health["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "replication slot")
        .unwrap_or_else(|| panic!("{health}"))
        .clone();
    assert_eq!(check["alert"], "Replication Slot Lagging", "{check}");
    assert!(check["detail"].as_str().unwrap().contains(&slot), "{check}");

    // DDL mid-chain: refused clearly, nothing written, the slot untouched.
    db.batch_execute("ALTER TABLE t ADD COLUMN w int")
        .await
        .unwrap();
    let out = env.run(&["--json", "backup", "create", "--type", "incremental"]);
    let e = envelope(&out);
    assert_eq!(e["kind"], "change_tracking", "{e}");
    let message = e["error"].as_str().unwrap();
    assert!(
        message.contains("public.t") && message.contains("take a new full backup"),
        "{message}"
    );
    assert_eq!(
        env.repo().await.backup_ids().await.unwrap(),
        vec![full.id.clone()]
    );
    assert_eq!(slot_confirmed(&env, &slot).await, Some(info(&full).end_lsn));

    // A new full starts a new chain, which goes on; the previous chain's slot is dropped.
    let full2 = create(&env, &[]).await;
    assert_eq!(
        slot_confirmed(&env, &slot).await,
        None,
        "the retired chain's slot"
    );
    let slot = info(&full2).slot.clone();
    db.batch_execute("UPDATE t SET w = 1 WHERE id = 1")
        .await
        .unwrap();
    let inc = create(&env, &["--type", "incremental"]).await;
    assert_eq!(inc.chain.as_ref().unwrap().base, full2.id);
    assert_eq!(counts(&inc, "public.t"), (0, 1, 0, 0));

    // PostgreSQL invalidates the slot: the next incremental fails clearly, and health alerts.
    db.batch_execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
        .await
        .unwrap();
    db.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        db.batch_execute(
            "INSERT INTO t SELECT g, repeat('z', 500) FROM generate_series(10000, 14000) g ON CONFLICT (id) DO UPDATE SET v = excluded.v;
             SELECT pg_switch_wal();",
        )
        .await
        .unwrap();
        db.batch_execute("CHECKPOINT").await.unwrap();
        let status: Option<String> = db
            .query_one(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .unwrap()
            .get(0);
        if status.as_deref() == Some("lost") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slot was not invalidated: {status:?}"
        );
    }
    let out = env.run(&["--json", "backup", "create", "--type", "incremental"]);
    let e = envelope(&out);
    assert_eq!(e["kind"], "change_tracking", "{e}");
    let message = e["error"].as_str().unwrap();
    assert!(
        message.contains("invalidated") && message.contains("take a new full backup"),
        "{message}"
    );
    let out = env.run(&["--json", "monitor", "health"]);
    let health = reported(&out);
    let alerts: Vec<&str> = health["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["alert"].as_str())
        .collect();
    assert!(alerts.contains(&"Backup Failure"), "{health}");
    let slot_check = health["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "replication slot")
        .unwrap();
    assert!(
        slot_check["detail"]
            .as_str()
            .unwrap()
            .contains("wal_status = lost"),
        "{slot_check}"
    );

    // Tracking turned off: the next full backup drops the retired chain's slot.
    env.write_config(&config(&env, "enabled = false"));
    create(&env, &[]).await;
    assert_eq!(slot_confirmed(&env, &slot).await, None);
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM pg_replication_slots").await,
        0
    );
    // Tracking on, and deleting backups leaves none of the current chain: its slot goes too.
    env.write_config(&config(&env, "enabled = true"));
    let last = create(&env, &[]).await;
    let slot = info(&last).slot.clone();
    let mut older = env.repo().await.manifests().await.unwrap();
    older.retain(|m| m.id != last.id);
    // Newest first: an incremental before the full it is built on.
    older.sort_by_key(|m| std::cmp::Reverse(m.created_at));
    for m in &older {
        env.run_ok(&["backup", "delete", &m.id, "--force"]);
        assert!(
            slot_confirmed(&env, &slot).await.is_some(),
            "after deleting {}",
            m.id
        );
    }
    env.run_ok(&["backup", "delete", &last.id, "--force"]);
    assert_eq!(
        slot_confirmed(&env, &slot).await,
        None,
        "no backup of its chain is left"
    );
}

/// `schema.name` of each table a full reused, and from which backup.
fn reused(m: &Manifest) -> BTreeMap<String, String> {
    m.tables
        .iter()
        .filter_map(|t| {
            let from = t.tracked.as_ref()?.reused_from.clone()?;
            Some((t.display_name(), from))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_reads_only_the_tables_the_change_stream_says_changed() {
    let env = TestEnv::start("incr_reuse").await;
    env.write_config(&config(&env, "enabled = true"));
    let db = env.client().await;
    db.batch_execute(
        "CREATE TABLE orgs (id int PRIMARY KEY, name text NOT NULL);
         INSERT INTO orgs SELECT g, 'org ' || g FROM generate_series(1, 300) g;
         CREATE TABLE people (id int PRIMARY KEY, org int REFERENCES orgs, note text);
         INSERT INTO people SELECT g, g % 300 + 1, md5(g::text) FROM generate_series(1, 3000) g;
         CREATE TABLE quiet (id int PRIMARY KEY, body text);
         INSERT INTO quiet SELECT g, repeat(md5(g::text), 40) FROM generate_series(1, 500) g;
         CREATE TABLE notes (id int PRIMARY KEY, body text);
         INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 100) g;
         CREATE TABLE wiped (id int PRIMARY KEY);
         INSERT INTO wiped SELECT generate_series(1, 50);
         CREATE TABLE altered (id int PRIMARY KEY, v text);
         INSERT INTO altered SELECT g, 'v' FROM generate_series(1, 20) g;
         CREATE TABLE renamed (id int PRIMARY KEY, v text);
         INSERT INTO renamed VALUES (1, 'a');
         CREATE TABLE log (msg text);
         INSERT INTO log VALUES ('before');",
    )
    .await
    .expect("the tables");
    let first = create(&env, &["-n", "first"]).await;
    assert!(reused(&first).is_empty(), "the first full reads everything");
    assert!(
        first.tables.iter().all(|t| t.tracked.is_some()),
        "every table's identity is recorded for the next full"
    );

    // One change captured by an incremental, the others still in the slot when the next full
    // starts: rows, a TRUNCATE, DDL without row changes, a rename there and back, a table
    // whose changes are not captured.
    db.batch_execute("UPDATE notes SET body = 'edited' WHERE id = 7")
        .await
        .expect("a change");
    let inc = create(&env, &["--type", "incremental", "-n", "inc"]).await;
    assert_eq!(counts(&inc, "public.notes"), (0, 1, 0, 0));
    db.batch_execute(
        "UPDATE people SET note = 'moved' WHERE id = 3;
         TRUNCATE wiped;
         ALTER TABLE altered ADD COLUMN w int NOT NULL DEFAULT 7;
         ALTER TABLE renamed RENAME TO renamed_for_a_while;
         ALTER TABLE renamed_for_a_while RENAME TO renamed;
         INSERT INTO log VALUES ('after');",
    )
    .await
    .expect("more changes");
    let out = env.run_ok(&["backup", "create", "-n", "second"]);
    let said = text(&out);
    let second = env
        .repo()
        .await
        .manifests()
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.name == "second")
        .expect("the second full");
    assert_eq!(
        reused(&second),
        BTreeMap::from([
            ("public.orgs".to_string(), first.id.clone()),
            ("public.quiet".to_string(), first.id.clone()),
        ]),
        "only the tables no change, TRUNCATE or DDL touched are reused"
    );
    assert!(
        said.contains(&format!(
            "reused (not read): 2 tables, 2 from backup {}",
            first.id
        )),
        "{said}"
    );
    for name in ["public.orgs", "public.quiet"] {
        let (was, now) = (
            first.find_table(name).unwrap(),
            second.find_table(name).unwrap(),
        );
        assert_eq!(
            (&was.parts, was.rows, &was.checksum),
            (&now.parts, now.rows, &now.checksum),
            "{name}: the same chunks, rows and checksum"
        );
    }
    assert_eq!(second.find_table("public.wiped").unwrap().rows, 0);
    assert!(
        second
            .find_table("public.altered")
            .unwrap()
            .columns
            .contains(&"w".to_string())
    );

    // Nothing changed: every table it can follow is reused, each from the backup that read it.
    let third = create(&env, &["-n", "third"]).await;
    let expected: BTreeMap<String, String> = [
        ("public.orgs", &first.id),
        ("public.quiet", &first.id),
        ("public.people", &second.id),
        ("public.notes", &second.id),
        ("public.wiped", &second.id),
        ("public.altered", &second.id),
        ("public.renamed", &second.id),
    ]
    .into_iter()
    .map(|(t, id)| (t.to_string(), id.clone()))
    .collect();
    assert_eq!(
        reused(&third),
        expected,
        "public.log has no replica identity: always read"
    );

    // The backups that read the rows are deleted (and their chunks collected): the newest
    // full still validates and restores, its reused entries hold their chunks themselves.
    for id in [&inc.id, &first.id, &second.id] {
        env.run_ok(&["backup", "delete", id, "--force"]);
    }
    env.run_ok(&["backup", "validate", &third.id]);
    env.run_ok(&[
        "recovery",
        "execute",
        &third.id,
        "-s",
        "new-database",
        "--dest-db",
        "reuse_restored",
        "--verify",
        "checksums",
    ]);
    assert_eq!(
        env.all_rows("reuse_restored", &third).await,
        env.all_rows("incr_reuse", &third).await,
        "the restore equals the source"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_committed_while_the_chain_is_re_created_is_seen_by_the_bridge_slot() {
    use larder::engine::incremental::{reuse, slot};
    let env = TestEnv::start("incr_bridge").await;
    env.write_config(&config(&env, "enabled = true"));
    let db = env.client().await;
    db.batch_execute(
        "CREATE TABLE calm (id int PRIMARY KEY);
         INSERT INTO calm SELECT generate_series(1, 10);
         CREATE TABLE busy (id int PRIMARY KEY);
         INSERT INTO busy SELECT generate_series(1, 10);",
    )
    .await
    .expect("the tables");
    create(&env, &["-n", "first"]).await;

    // The steps of a full backup's start, with a commit after the old slot was read and
    // before the slot is re-created and the snapshot taken.
    let (settings, repo) = (env.settings(), env.repo().await);
    let config = larder::config::IncrementalConfig {
        enabled: true,
        ..Default::default()
    };
    let manifests = repo.manifests().await.expect("the manifests");
    let preparing =
        slot::prepare_chain(&settings, &config, "20261202-000000-0001", Some(&manifests))
            .await
            .expect("prepare the chain");
    let watch = reuse::watch(&settings, &preparing, &manifests)
        .await
        .expect("the old slot is readable");
    db.batch_execute("INSERT INTO busy VALUES (11)")
        .await
        .expect("a late change");
    let mut started = None;
    preparing
        .start(&mut started)
        .await
        .expect("create the new chain's slot");
    let leader = larder::pg::snapshot::SnapshotLeader::begin(&settings)
        .await
        .expect("the snapshot");
    let server = larder::pg::catalog::server_info(leader.client())
        .await
        .unwrap();
    let tables = larder::pg::catalog::data_tables(leader.client(), server.block_size)
        .await
        .unwrap();
    let relations = reuse::relations(leader.client(), &config.publication_for("incr_bridge"))
        .await
        .unwrap();
    let evidence = watch
        .finish(&leader.snapshot)
        .await
        .expect("the bridge slot read");
    let reusable: BTreeSet<String> = evidence
        .entries(&tables, &relations, |_| true)
        .into_keys()
        .collect();
    assert_eq!(reusable, BTreeSet::from(["public.calm".to_string()]));
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'larder_reuse_%'"
        )
        .await,
        0,
        "the bridge slot is dropped"
    );
    drop(leader);
    started
        .expect("the new chain")
        .finished(&config, "incr_bridge", false)
        .await;
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM pg_replication_slots").await,
        1,
        "the failed chain's slot is dropped, the previous one's kept"
    );
}

/// The chain slots on the test server (bridge slots left out), by name.
async fn chain_slots(env: &TestEnv) -> Vec<String> {
    env.client()
        .await
        .query(
            "SELECT slot_name::text FROM pg_replication_slots \
             WHERE slot_name NOT LIKE 'larder\\_reuse\\_%' ORDER BY 1",
            &[],
        )
        .await
        .expect("the slots")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Starts a full backup and returns once it has created its chain's slot (one more than
/// `before`).
async fn full_with_its_slot(env: &TestEnv, before: &[String]) -> (std::process::Child, String) {
    let mut child = env
        .cli()
        .args(["backup", "create", "--jobs", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the full backup");
    let deadline = Instant::now() + Duration::from_secs(60);
    let new = loop {
        if let Some(new) = chain_slots(env)
            .await
            .into_iter()
            .find(|s| !before.contains(s))
        {
            break new;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the full backup never created its slot");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    (child, new)
}

fn health_checks(env: &TestEnv) -> Vec<serde_json::Value> {
    let out = env.run(&["--json", "monitor", "health"]);
    reported(&out)["checks"].as_array().expect("checks").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backup_that_fails_leaves_the_previous_chain_usable() {
    let env = TestEnv::start("incr_failed_full").await;
    env.write_config(&config(&env, "enabled = true"));
    let db = env.client().await;
    db.batch_execute(
        "CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL);
         INSERT INTO accounts SELECT g, 100 FROM generate_series(1, 100) g;
         CREATE TABLE big (id int PRIMARY KEY, payload text);
         INSERT INTO big SELECT g, md5(g::text) || repeat(md5(random()::text), 8) FROM generate_series(1, 120000) g;",
    )
    .await
    .expect("the tables");
    let full = create(&env, &["-n", "base"]).await;
    let slot = info(&full).slot.clone();
    // A change to `big` in the chain: the next fulls cannot reuse it, so they take a while.
    db.batch_execute(
        "BEGIN; UPDATE accounts SET balance = balance - 5 WHERE id = 1;
                UPDATE accounts SET balance = balance + 5 WHERE id = 2; COMMIT;
         UPDATE big SET payload = 'first' WHERE id = 1;",
    )
    .await
    .expect("a transfer");
    let inc1 = create(&env, &["--type", "incremental", "-n", "inc1"]).await;

    // A full stopped once its slot exists fails, and drops its slot: only the chain's is left.
    let (stopped, new) = full_with_its_slot(&env, std::slice::from_ref(&slot)).await;
    assert_ne!(new, slot);
    send(&stopped, "TERM");
    let out = finish(stopped).await;
    assert!(
        !out.status.success(),
        "the full was stopped: {}",
        text(&out)
    );
    assert_eq!(
        chain_slots(&env).await,
        vec![slot.clone()],
        "{}",
        text(&out)
    );

    // A full killed outright cannot: its slot stays, and health reports it as an orphan.
    let (mut killed, orphan) = full_with_its_slot(&env, std::slice::from_ref(&slot)).await;
    killed.kill().expect("kill");
    let _ = killed.wait();
    let checks = health_checks(&env);
    let reported_orphan = checks
        .iter()
        .find(|c| c["name"] == "orphan replication slot")
        .unwrap_or_else(|| panic!("{checks:?}"));
    assert!(
        reported_orphan["detail"]
            .as_str()
            .unwrap()
            .contains(&orphan),
        "{reported_orphan}"
    );
    let current = checks
        .iter()
        .find(|c| c["name"] == "replication slot")
        .unwrap();
    assert!(
        current["detail"].as_str().unwrap().contains(&slot),
        "{current}"
    );
    assert_eq!(
        env.repo()
            .await
            .backup_ids()
            .await
            .unwrap()
            .into_iter()
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([full.id.clone(), inc1.id.clone()]),
        "neither failed full left a backup"
    );

    // The previous chain goes on: the next incremental follows inc1 and restores to the source.
    db.batch_execute(
        "DELETE FROM accounts WHERE id = 100;
         INSERT INTO accounts VALUES (101, 7);
         UPDATE big SET payload = 'changed' WHERE id = 3;",
    )
    .await
    .expect("more changes");
    let inc2 = create(&env, &["--type", "incremental", "-n", "inc2"]).await;
    let chain = inc2.chain.clone().expect("a chain");
    assert_eq!(
        (chain.parent, chain.base),
        (inc1.id.clone(), full.id.clone())
    );
    assert_eq!(counts(&inc2, "public.accounts"), (1, 0, 1, 0));
    assert_eq!(counts(&inc2, "public.big"), (0, 1, 0, 0));
    env.run_ok(&[
        "recovery",
        "execute",
        &inc2.id,
        "-s",
        "new-database",
        "--dest-db",
        "failed_full_restored",
    ]);
    assert_eq!(
        env.all_rows("failed_full_restored", &inc2).await,
        env.all_rows("incr_failed_full", &inc2).await,
        "the chain restores to the source"
    );

    // The next full drops the killed one's slot (its session is gone) and, once its manifest
    // is durable, the previous chain's: only its own is left, and health shows no orphan.
    let deadline = Instant::now() + Duration::from_secs(30);
    while scalar(
        &db,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'",
    )
    .await
        > 0
    {
        assert!(
            Instant::now() < deadline,
            "the killed backup's session stayed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let next = create(&env, &["-n", "next"]).await;
    assert_eq!(chain_slots(&env).await, vec![info(&next).slot.clone()]);
    let checks = health_checks(&env);
    assert!(
        checks
            .iter()
            .all(|c| c["name"] != "orphan replication slot"),
        "{checks:?}"
    );
    let current = checks
        .iter()
        .find(|c| c["name"] == "replication slot")
        .unwrap();
    assert!(
        current["detail"]
            .as_str()
            .unwrap()
            .contains(&info(&next).slot),
        "{current}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_ddl_since_the_chains_full_makes_the_next_incremental_fail_clearly() {
    let env = TestEnv::start("incr_ddl").await;
    env.write_config(&config(&env, "enabled = true"));
    let db = env.client().await;
    let schema = "DROP TABLE IF EXISTS t, t2, u, c CASCADE;
         CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL, n int);
         INSERT INTO t SELECT g, 'v' || g, g FROM generate_series(1, 20) g;
         CREATE TABLE u (id int PRIMARY KEY);
         INSERT INTO u SELECT generate_series(1, 5);";
    // What happened, the statements (after a row change), the table the message names.
    let cases = [
        (
            "a column added",
            "ALTER TABLE t ADD COLUMN w int",
            "public.t",
        ),
        (
            "a column dropped",
            "ALTER TABLE t DROP COLUMN n",
            "public.t",
        ),
        (
            "a column retyped",
            "ALTER TABLE t ALTER COLUMN n TYPE bigint",
            "public.t",
        ),
        (
            "a column rewritten in place (same type, USING)",
            "ALTER TABLE t ALTER COLUMN v TYPE text USING upper(v)",
            "public.t",
        ),
        (
            "a column dropped and added again under its name",
            "ALTER TABLE t DROP COLUMN n; ALTER TABLE t ADD COLUMN n int DEFAULT 5",
            "public.t",
        ),
        (
            "a column renamed",
            "ALTER TABLE t RENAME COLUMN v TO label",
            "public.t",
        ),
        (
            "a column added, rows changed, the column dropped again",
            "ALTER TABLE t ADD COLUMN w int; UPDATE t SET w = 1 WHERE id = 1; ALTER TABLE t DROP COLUMN w",
            "public.t",
        ),
        (
            "the table renamed",
            "ALTER TABLE t RENAME TO t2",
            "public.t2",
        ),
        (
            "a table created",
            "CREATE TABLE c (id int PRIMARY KEY); INSERT INTO c VALUES (1)",
            "public.c",
        ),
        ("a table dropped", "DROP TABLE u", "public.u"),
        (
            "a table dropped and created again",
            "DROP TABLE u; CREATE TABLE u (id int PRIMARY KEY)",
            "public.u",
        ),
        (
            "the replica identity set",
            "ALTER TABLE t REPLICA IDENTITY FULL",
            "public.t",
        ),
        (
            "the table taken out of the publication",
            "ALTER PUBLICATION larder_incr_ddl DROP TABLE t; UPDATE t SET n = 0",
            "public.t",
        ),
        (
            "the table taken out of the publication and put back",
            "ALTER PUBLICATION larder_incr_ddl DROP TABLE t; UPDATE t SET n = 0;
             ALTER PUBLICATION larder_incr_ddl ADD TABLE t",
            "public.t",
        ),
    ];
    for (what, ddl, table) in cases {
        db.batch_execute(schema).await.expect("the schema");
        let full = create(&env, &[]).await;
        let backups = env.repo().await.backup_ids().await.unwrap();
        db.batch_execute(&format!("UPDATE t SET n = n + 1 WHERE id = 2; {ddl}"))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let out = env.run(&["--json", "backup", "create", "--type", "incremental"]);
        let e = envelope(&out);
        assert_eq!(e["kind"], "change_tracking", "{what}: {e}");
        let message = e["error"].as_str().unwrap();
        assert!(
            message.contains(&format!("table {table} "))
                && message.contains("take a new full backup"),
            "{what}: {message}"
        );
        assert_eq!(
            env.repo().await.backup_ids().await.unwrap(),
            backups,
            "{what}: nothing written"
        );
        assert_eq!(
            slot_confirmed(&env, &info(&full).slot).await,
            Some(info(&full).end_lsn),
            "{what}: the slot did not move"
        );
    }

    // What is not DDL on the chain's tables goes on: TRUNCATE, a rewrite that keeps the rows
    // (VACUUM FULL), statistics.
    db.batch_execute(schema).await.expect("the schema");
    let full = create(&env, &[]).await;
    for sql in [
        "TRUNCATE u",
        "UPDATE t SET v = 'x' WHERE id = 1",
        "VACUUM FULL t",
        "ANALYZE t",
    ] {
        db.batch_execute(sql).await.expect(sql);
    }
    let inc = create(&env, &["--type", "incremental"]).await;
    assert_eq!(inc.chain.as_ref().unwrap().base, full.id);
    assert_eq!(counts(&inc, "public.t"), (0, 1, 0, 0));
    assert_eq!(counts(&inc, "public.u"), (0, 0, 0, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_incremental_without_ddl_needs_no_pg_dump_and_one_with_ddl_names_the_missing_one() {
    let env = TestEnv::start("incr_nodump").await;
    env.write_config(&config(&env, "enabled = true"));
    let db = env.client().await;
    db.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a')")
        .await
        .expect("schema");
    create(&env, &[]).await;
    // pg_dump is looked for only when the catalog's fingerprint says the schema moved.
    let missing = env.repo_dir().with_file_name("no-such-pg_dump");
    env.write_config(&format!(
        "{}\n[backup]\npg_dump = '{}'\n",
        config(&env, "enabled = true"),
        missing.display()
    ));
    db.batch_execute("INSERT INTO t VALUES (2, 'b')")
        .await
        .expect("row");
    let incremental = create(&env, &["--type", "incremental"]).await;
    let counts = &incremental
        .incremental
        .as_ref()
        .expect("incremental")
        .tables;
    assert!(
        counts
            .iter()
            .any(|c| c.table == "public.t" && c.inserts == 1),
        "the row change is recorded: {counts:?}"
    );
    db.batch_execute("CREATE INDEX t_v_idx ON t (v); INSERT INTO t VALUES (3, 'c')")
        .await
        .expect("ddl");
    let refused = env.run_failing(&["backup", "create", "--type", "incremental"]);
    assert!(
        refused.contains(&missing.display().to_string()) && refused.contains("does not run"),
        "{refused}"
    );
}
