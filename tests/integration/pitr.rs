//! Point-in-time recovery from a chain of incrementals: a bank's transfers keep balancing in
//! every incremental restored into a new database, `--until` and `--until-lsn` stop between
//! two known commits, and `missing-rows --until` brings back what a mistaken DELETE took while
//! keeping what was written after it.

use crate::support::{TestEnv, reported, scalar, text};
use larder::repository::changes::Lsn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const ACCOUNTS: i64 = 50;
const OPENING: i64 = 1_000;

const BANK: &str = "CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance bigint NOT NULL, memo text);
     INSERT INTO accounts SELECT g, 'owner ' || g, 1000, NULL FROM generate_series(1, 50) g;
     CREATE TABLE transfers (id bigserial PRIMARY KEY, from_id int NOT NULL REFERENCES accounts, to_id int NOT NULL REFERENCES accounts,
                             amount bigint NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());";

/// A session whose commits are flushed before they return (the test clusters run with
/// `synchronous_commit = off`): an incremental taken right after sees them.
async fn session(env: &TestEnv) -> tokio_postgres::Client {
    let client = env.client().await;
    client
        .batch_execute("SET synchronous_commit = on")
        .await
        .expect("synchronous commits");
    client
}

/// Tracking on, the repository in the test's folder.
fn track_changes(env: &TestEnv) {
    env.write_config(&format!(
        "[repository]\npath = \"{}\"\n\n[incremental]\nenabled = true\n",
        env.repo_dir().display()
    ));
}

fn incremental(env: &TestEnv, name: &str) -> String {
    let out = env.run_json(&["backup", "create", "--type", "incremental", "-n", name]);
    out["backup"]["id"]
        .as_str()
        .expect("incremental id")
        .to_string()
}

/// The bank's rows as text, sorted: `a<id>:<balance>:<memo>` (the memo as `<n>/<length>`, or
/// `-`) and `t<id>:<from>:<to>:<amount>`.
type State = Vec<String>;

/// The bank as a restore left it, in [`State`]'s form.
async fn bank_state(client: &tokio_postgres::Client) -> State {
    let mut rows: State = client
        .query(
            "SELECT 'a' || id || ':' || balance || ':' || coalesce(split_part(memo, 'm', 2) || '/' || length(memo), '-') FROM accounts \
             UNION ALL SELECT 't' || id || ':' || from_id || ':' || to_id || ':' || amount FROM transfers",
            &[],
        )
        .await
        .expect("the bank's state")
        .iter()
        .map(|r| r.get(0))
        .collect();
    rows.sort();
    rows
}

async fn insert_lsn(client: &tokio_postgres::Client) -> Lsn {
    let text: String = client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .expect("the WAL position")
        .get(0);
    text.parse().expect("an LSN")
}

/// A transfer load on one session that keeps its own log: after each transaction, the WAL
/// positions before and after its commit, and the bank's state then (from what it wrote, not
/// read back), so a restore can be compared with the source as it was at a backup's end.
struct Load {
    client: tokio_postgres::Client,
    balances: Vec<i64>,
    memos: Vec<Option<i64>>,
    transfers: std::collections::BTreeMap<i64, (i64, i64, i64)>,
    /// (before the commit, after it, the state after it); the first entry is the opening.
    log: Vec<(Lsn, Lsn, State)>,
}

impl Load {
    fn new(client: tokio_postgres::Client) -> Load {
        let mut load = Load {
            client,
            balances: vec![OPENING; ACCOUNTS as usize],
            memos: vec![None; ACCOUNTS as usize],
            transfers: Default::default(),
            log: Vec::new(),
        };
        let opening = load.state();
        load.log.push((Lsn(0), Lsn(0), opening));
        load
    }

    fn state(&self) -> State {
        let mut rows: State = (0..ACCOUNTS as usize)
            .map(|i| {
                let memo = self.memos[i].map_or("-".to_string(), |n| {
                    format!("{n}/{}", 2000 * (1 + n.to_string().len()))
                });
                format!("a{}:{}:{memo}", i + 1, self.balances[i])
            })
            .chain(
                self.transfers
                    .iter()
                    .map(|(id, (from, to, amount))| format!("t{id}:{from}:{to}:{amount}")),
            )
            .collect();
        rows.sort();
        rows
    }

    /// Transfer `n`, its own transaction: every fifth also rewrites the payer's memo (a
    /// TOASTed value other updates leave unchanged), every seventh deletes the oldest transfer.
    async fn transfer(&mut self, n: i64) {
        let k = n * 104_729 + 7919;
        let (from, to, amount) = (k % ACCOUNTS + 1, (k / 7 + 1) % ACCOUNTS + 1, k % 50 + 1);
        if from == to {
            return;
        }
        let c = &self.client;
        c.batch_execute("BEGIN").await.expect("begin");
        let before = insert_lsn(c).await;
        let memo = if n % 5 == 0 {
            format!(", memo = repeat('m{n}', 2000)")
        } else {
            String::new()
        };
        c.batch_execute(&format!(
            "UPDATE accounts SET balance = balance - {amount}{memo} WHERE id = {from};
             UPDATE accounts SET balance = balance + {amount} WHERE id = {to}"
        ))
        .await
        .expect("a transfer");
        let id: i64 = c
            .query_one(
                &format!("INSERT INTO transfers (from_id, to_id, amount) VALUES ({from}, {to}, {amount}) RETURNING id"),
                &[],
            )
            .await
            .expect("its record")
            .get(0);
        let purged: Option<i64> = if n % 7 == 0 {
            c.query_opt(
                "DELETE FROM transfers WHERE id = (SELECT min(id) FROM transfers) RETURNING id",
                &[],
            )
            .await
            .expect("a purge")
            .map(|r| r.get(0))
        } else {
            None
        };
        c.batch_execute("COMMIT").await.expect("commit");
        let after = insert_lsn(c).await;
        let (f, t) = ((from - 1) as usize, (to - 1) as usize);
        self.balances[f] -= amount;
        self.balances[t] += amount;
        if n % 5 == 0 {
            self.memos[f] = Some(n);
        }
        self.transfers.insert(id, (from, to, amount));
        if let Some(old) = purged {
            self.transfers.remove(&old);
        }
        let state = self.state();
        self.log.push((before, after, state));
    }

    /// Which logged states a backup ending at `end` may hold: every transaction committed
    /// before `end` and none begun after it (all of them for a full, whose snapshot has no
    /// LSN of its own here).
    fn candidates(&self, end: Option<Lsn>) -> std::ops::RangeInclusive<usize> {
        match end {
            None => 0..=self.log.len() - 1,
            Some(end) => {
                let sure = self
                    .log
                    .iter()
                    .skip(1)
                    .filter(|(_, after, _)| *after <= end)
                    .count();
                let maybe = self
                    .log
                    .iter()
                    .skip(1)
                    .filter(|(before, _, _)| *before < end)
                    .count();
                sure..=maybe
            }
        }
    }
}

/// Every row of the bank, in order, as text.
async fn bank_rows(client: &tokio_postgres::Client) -> Vec<String> {
    client
        .query(
            "SELECT 'a' || a::text FROM accounts a UNION ALL SELECT 't' || t::text FROM transfers t ORDER BY 1",
            &[],
        )
        .await
        .expect("the bank's rows")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The ledger after its first transaction and before its second.
async fn assert_first_only(db: &tokio_postgres::Client) {
    assert_eq!(scalar(db, "SELECT count(*) FROM transfers").await, 1);
    assert_eq!(
        scalar(db, "SELECT count(*) FROM accounts").await,
        ACCOUNTS,
        "account 50 is not deleted yet"
    );
    let balances: Vec<(i64, String)> = db
        .query(
            "SELECT balance, coalesce(memo, '') FROM accounts WHERE id IN (1, 2, 3) ORDER BY id",
            &[],
        )
        .await
        .expect("balances")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        balances,
        [
            (990, String::new()),
            (1010, "it's\\here\ttoo".to_string()),
            (1000, String::new())
        ]
    );
}

fn restore_new(env: &TestEnv, backup: &str, dest: &str, until: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "recovery",
        "execute",
        backup,
        "-s",
        "new-database",
        "--dest-db",
        dest,
    ];
    args.extend_from_slice(until);
    env.run_json(&args)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_incremental_of_a_transfer_load_restores_balanced_and_equal_to_the_source() {
    let env = TestEnv::start("bank").await;
    track_changes(&env);
    let db = session(&env).await;
    db.batch_execute(BANK).await.expect("the bank");

    // The load runs while the full and the incrementals are taken.
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let (client, stop) = (session(&env).await, stop.clone());
        async move {
            let mut load = Load::new(client);
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                for _ in 0..20 {
                    load.transfer(n).await;
                    n += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            load
        }
    });
    while scalar(&db, "SELECT count(*) FROM transfers").await < 10 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let full = env.backup("nightly").await;
    let mut chain = Vec::new();
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        chain.push(incremental(&env, &format!("during-{i}")));
    }
    stop.store(true, Ordering::SeqCst);
    let load = load.await.expect("the load");
    assert!(
        load.log.len() > 60,
        "the load ran: {} transfers",
        load.log.len()
    );
    db.batch_execute("UPDATE accounts SET memo = NULL WHERE id = 3; TRUNCATE transfers")
        .await
        .expect("the last changes");
    let mut at_rest = Load::new(session(&env).await);
    for n in 0..10 {
        at_rest.transfer(100_000 + n).await;
    }
    chain.push(incremental(&env, "after"));

    let plan = env.run_json(&[
        "recovery",
        "plan",
        &chain[3],
        "-s",
        "new-database",
        "--dest-db",
        "plan_only",
    ]);
    let replay = &plan["replay"];
    assert_eq!(replay["base"], full.id.as_str(), "{plan}");
    let links: Vec<&str> = replay["chain"]
        .as_array()
        .expect("chain")
        .iter()
        .map(|l| l["backup_id"].as_str().expect("id"))
        .collect();
    assert_eq!(links, chain.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(replay["changes"].as_u64().expect("changes") > 100, "{plan}");
    assert!(
        plan["steps"].to_string().contains("\"replay\""),
        "the plan lists the replay step: {plan}"
    );
    let human = text(&env.run_ok(&["recovery", "plan", &chain[3], "--dest-db", "plan_only"]));
    assert!(
        human.contains(&format!("Chain: full {} → {}", full.id, chain[0])),
        "{human}"
    );
    assert!(
        human.contains("Point in time reached: the end of backup"),
        "{human}"
    );

    let repo = env.repo().await;
    for (i, id) in std::iter::once(&full.id).chain(&chain).enumerate() {
        let dest = format!("bank_at_{i}");
        let report = restore_new(&env, id, &dest, &[]);
        assert_eq!(report["ok"], true, "{report}");
        assert_eq!(report["backup_id"], id.as_str());
        let end = repo
            .read_manifest(id)
            .await
            .expect("manifest")
            .incremental
            .filter(|_| i > 0)
            .map(|info| info.end_lsn);
        if end.is_some() {
            assert!(
                report["replayed"]["transactions"]
                    .as_u64()
                    .expect("transactions")
                    > 0,
                "{report}"
            );
        }
        let restored = env.client_for(&dest).await;
        // Equal to the source as the load's log has it at the backup's end.
        if i <= 3 {
            let state = bank_state(&restored).await;
            let window = load.candidates(end);
            assert!(
                window.clone().any(|k| load.log[k].2 == state),
                "{id} (ending at {end:?}) restores none of the load's states {window:?}"
            );
        }
        assert_eq!(
            scalar(&restored, "SELECT sum(balance)::bigint FROM accounts").await,
            ACCOUNTS * OPENING,
            "the money balances in {id}"
        );
        assert_eq!(
            scalar(&restored, "SELECT count(*) FROM accounts").await,
            ACCOUNTS,
            "no account lost in {id}"
        );
        // The keys were built after the replay: the restored tables are whole.
        assert_eq!(
            scalar(&restored, "SELECT count(*) FROM pg_constraint WHERE conrelid = 'transfers'::regclass AND contype = 'f'").await,
            2
        );
    }
    // The last incremental was taken with the source at rest: it is the source, row for row.
    let last = env.client_for("bank_at_4").await;
    assert_eq!(bank_rows(&last).await, bank_rows(&db).await);
    assert_eq!(
        scalar(
            &last,
            "SELECT length(memo)::bigint FROM accounts WHERE id = 5"
        )
        .await,
        scalar(
            &db,
            "SELECT length(memo)::bigint FROM accounts WHERE id = 5"
        )
        .await,
        "unchanged TOAST values kept"
    );
    assert!(
        scalar(&last, "SELECT nextval('transfers_id_seq')").await
            > scalar(&db, "SELECT max(id) FROM transfers").await,
        "sequences at the chain's end"
    );

    // The chain is validated as a whole: a damaged link's change set fails the last one.
    let out = env.run(&["--json", "backup", "validate", &chain[3]]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let items = reported(&out)["items"].to_string();
    assert!(items.contains(&format!("backup {}: ", full.id)), "{items}");
    std::fs::remove_file(env.repo_dir().join(format!("backups/{}.json", chain[1])))
        .expect("lose a link");
    let broken = env.run(&["--json", "backup", "validate", &chain[3]]);
    assert_eq!(broken.status.code(), Some(1), "{}", text(&broken));
    assert!(
        text(&broken).contains(&format!("needs backup {}", chain[1])),
        "{}",
        text(&broken)
    );
    let refused = env.run(&["recovery", "plan", &chain[3]]);
    assert!(
        !refused.status.success()
            && text(&refused).contains(&format!("the chain of backup {} is broken", chain[3])),
        "{}",
        text(&refused)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn until_between_two_recorded_commits_restores_exactly_the_first() {
    let env = TestEnv::start("ledger").await;
    track_changes(&env);
    let db = session(&env).await;
    db.batch_execute(BANK).await.expect("the bank");
    let full = env.backup("nightly").await;
    db.batch_execute(
        "BEGIN; INSERT INTO transfers (from_id, to_id, amount) VALUES (1, 2, 10);
         UPDATE accounts SET balance = balance - 10 WHERE id = 1;
         UPDATE accounts SET balance = balance + 10, memo = E'it''s\\\\here\\ttoo' WHERE id = 2; COMMIT",
    )
    .await
    .expect("first");
    let between: (String, String) = {
        let row = db
            .query_one(
                "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), pg_current_wal_lsn()::text",
                &[],
            )
            .await
            .expect("the time and LSN between");
        (row.get(0), row.get(1))
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    db.batch_execute(
        "BEGIN; INSERT INTO transfers (from_id, to_id, amount) VALUES (3, 4, 20);
         UPDATE accounts SET balance = balance - 20 WHERE id = 3; DELETE FROM accounts WHERE id = 50; COMMIT",
    )
    .await
    .expect("second");
    let inc = incremental(&env, "both");

    for (dest, until) in [
        ("at_time", ["--until", between.0.as_str()]),
        ("at_lsn", ["--until-lsn", between.1.as_str()]),
    ] {
        let report = restore_new(&env, &inc, dest, &until);
        assert_eq!(report["replayed"]["transactions"], 1, "{report}");
        let restored = env.client_for(dest).await;
        let amounts: Vec<i64> = restored
            .query("SELECT amount FROM transfers ORDER BY id", &[])
            .await
            .expect("transfers")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(amounts, [10], "{dest}: the first and not the second");
        assert_first_only(&restored).await;
    }
    // On the full, --until picks the incrementals it needs; psql's time form is taken.
    let psql_form = between.0.replace('T', " ").replace('Z', "+00");
    let report = restore_new(&env, &full.id, "from_full", &["--until", &psql_form]);
    assert_eq!(report["replayed"]["backups"][0], inc.as_str(), "{report}");
    assert_eq!(
        scalar(
            &env.client_for("from_full").await,
            "SELECT count(*) FROM transfers"
        )
        .await,
        1
    );
    // An export at the point restores the same with psql alone.
    let file = env.work.path().join("at-the-point.sql");
    env.run_ok(&[
        "backup",
        "export",
        &inc,
        "--until-lsn",
        &between.1,
        "-o",
        file.to_str().expect("path"),
    ]);
    env.admin()
        .await
        .batch_execute("CREATE DATABASE from_sql")
        .await
        .expect("create");
    env.psql_file("from_sql", &file);
    assert_first_only(&env.client_for("from_sql").await).await;
    // The live database replaced as it was at the point: the second transaction is undone.
    let report = env.run_json(&[
        "recovery", "execute", &inc, "-s", "replace", "--until", &between.0, "--yes",
    ]);
    assert_eq!(report["replayed"]["transactions"], 1, "{report}");
    assert_first_only(&db).await;
    // Before the full: refused, naming it.
    let said = text(&env.run(&[
        "recovery",
        "plan",
        &full.id,
        "--until",
        "2000-01-01 00:00:00",
    ]));
    assert!(
        said.contains("is before full backup") && said.contains(&full.id),
        "{said}"
    );
    let said = text(&env.run(&["recovery", "plan", &inc, "--until", "soon"]));
    assert!(said.contains("is not a time like"), "{said}");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_rows_until_brings_back_a_mistaken_delete_and_keeps_what_came_after() {
    let env = TestEnv::start("crm").await;
    track_changes(&env);
    let db = session(&env).await;
    db.batch_execute(BANK).await.expect("the bank");
    db.batch_execute(
        "INSERT INTO transfers (from_id, to_id, amount) SELECT g % 50 + 1, (g + 1) % 50 + 1, g FROM generate_series(1, 200) g",
    )
    .await
    .expect("history");
    env.backup("nightly").await;
    // Normal work after the full: new transfers, a correction.
    db.batch_execute(
        "INSERT INTO transfers (from_id, to_id, amount) SELECT 1, 2, 1000 + g FROM generate_series(1, 20) g;
         UPDATE transfers SET amount = 7 WHERE id = 5",
    )
    .await
    .expect("the morning's work");
    let before_mistake: String = db
        .query_one("SELECT clock_timestamp()::text", &[])
        .await
        .expect("14:32")
        .get(0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    db.batch_execute("DELETE FROM transfers WHERE amount < 100")
        .await
        .expect("the mistake at 14:33");
    db.batch_execute(
        "INSERT INTO transfers (from_id, to_id, amount) VALUES (9, 10, 5555);
         UPDATE transfers SET amount = 4242 WHERE id = 150",
    )
    .await
    .expect("work after the mistake");
    let inc = incremental(&env, "after-the-mistake");

    let report = env.run_json(&[
        "recovery",
        "execute",
        &inc,
        "-s",
        "missing-rows",
        "-t",
        "transfers",
        "--until",
        &before_mistake,
        "--yes",
    ]);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["tables"][0]["inserted_rows"], 99, "{report}");
    let amounts = |sql: &'static str| {
        let db = &db;
        async move { scalar(db, sql).await }
    };
    assert_eq!(
        amounts("SELECT count(*) FROM transfers WHERE amount < 100").await,
        99
    );
    assert_eq!(
        amounts("SELECT amount FROM transfers WHERE id = 5").await,
        7,
        "as it was at 14:32, with the morning's correction"
    );
    assert_eq!(
        amounts("SELECT count(*) FROM transfers WHERE amount = 5555").await,
        1,
        "kept"
    );
    assert_eq!(
        amounts("SELECT amount FROM transfers WHERE id = 150").await,
        4242,
        "kept"
    );
    assert_eq!(
        amounts("SELECT count(*) FROM transfers WHERE amount > 1000 AND amount < 1100").await,
        20
    );
}

/// The time (RFC 3339, UTC) and WAL position now, for `--until` and `--until-lsn`.
async fn point_now(db: &tokio_postgres::Client) -> (String, String) {
    let row = db
        .query_one(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), pg_current_wal_lsn()::text",
            &[],
        )
        .await
        .expect("the time and LSN now");
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread")]
async fn sequences_are_set_as_recorded_at_the_point_reached_and_replayed_tables_are_counted_not_checksummed()
 {
    let env = TestEnv::start("shop").await;
    track_changes(&env);
    let db = session(&env).await;
    db.batch_execute(
        "CREATE TABLE items (name text PRIMARY KEY);
         INSERT INTO items VALUES ('tea'), ('jam');
         CREATE TABLE orders (id bigserial PRIMARY KEY, item text NOT NULL REFERENCES items);
         INSERT INTO orders (item) SELECT 'tea' FROM generate_series(1, 3);",
    )
    .await
    .expect("the shop");
    let full = env.backup("nightly").await;
    db.batch_execute("INSERT INTO orders (item) SELECT 'jam' FROM generate_series(1, 2)")
        .await
        .expect("orders 4 and 5");
    let (time, lsn) = point_now(&db).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    db.batch_execute("INSERT INTO orders (item) SELECT 'tea' FROM generate_series(1, 3)")
        .await
        .expect("orders 6 to 8");
    let first = incremental(&env, "first");
    db.batch_execute("INSERT INTO orders (item) SELECT 'jam' FROM generate_series(1, 4)")
        .await
        .expect("orders 9 to 12");
    let second = incremental(&env, "second");

    // (destination, backup, point, orders restored, the next order's id)
    let cases: [(&str, &str, &[&str], i64, i64); 5] = [
        ("at_first", first.as_str(), &[], 8, 9),
        ("at_second", second.as_str(), &[], 12, 13),
        // Inside the first incremental: its recorded end, not the chain's.
        (
            "at_time",
            second.as_str(),
            &["--until", time.as_str()],
            5,
            9,
        ),
        (
            "at_lsn",
            second.as_str(),
            &["--until-lsn", lsn.as_str()],
            5,
            9,
        ),
        (
            "from_full",
            full.id.as_str(),
            &["--until", time.as_str()],
            5,
            9,
        ),
    ];
    for (dest, backup, until, orders, next) in cases {
        let report = restore_new(&env, backup, dest, until);
        assert_eq!(report["ok"], true, "{report}");
        let restored = env.client_for(dest).await;
        assert_eq!(
            scalar(&restored, "SELECT count(*) FROM orders").await,
            orders,
            "{dest}"
        );
        assert_eq!(
            scalar(&restored, "SELECT nextval('orders_id_seq')").await,
            next,
            "{dest}: the sequence as recorded at the end of the incremental the point falls in"
        );
    }

    // --verify checksums: the table the chain changed is counted, and the report says so; the
    // one it did not change is compared with its checksum.
    let report = restore_new(&env, &second, "checked", &["--verify", "checksums"]);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(
        report["checksums_not_compared"],
        serde_json::json!(["public.orders"]),
        "{report}"
    );
    let table = |name: &str| {
        report["tables"]
            .as_array()
            .expect("tables")
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .expect("the table")
    };
    assert_eq!(
        table("public.orders")["checksum_ok"],
        serde_json::Value::Null
    );
    assert_eq!(table("public.orders")["destination_rows"], 12);
    assert_eq!(table("public.items")["checksum_ok"], true);
    let human = text(&env.run_ok(&[
        "recovery",
        "execute",
        &second,
        "-s",
        "new-database",
        "--dest-db",
        "checked_again",
        "--verify",
        "checksums",
    ]));
    assert!(
        human.contains("Checked by row count only (replayed; no checksum exists for a table at the point reached): public.orders."),
        "{human}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_columns_follow_replayed_updates_and_changed_large_objects_are_refused() {
    let env = TestEnv::start("invoices").await;
    track_changes(&env);
    let db = session(&env).await;
    db.batch_execute(
        "CREATE TABLE lines (id int PRIMARY KEY, qty int NOT NULL, price int NOT NULL,
                             total int GENERATED ALWAYS AS (qty * price) STORED, note text);
         INSERT INTO lines (id, qty, price) SELECT g, g, 10 FROM generate_series(1, 5) g;
         SELECT lo_from_bytea(424242, 'scanned invoice');",
    )
    .await
    .expect("the invoices");
    env.backup("nightly").await;
    db.batch_execute(
        "UPDATE lines SET qty = qty + 1 WHERE id <= 2;
         UPDATE lines SET note = 'paid' WHERE id = 3;
         UPDATE lines SET price = 7, note = 'discount' WHERE id = 4;
         INSERT INTO lines (id, qty, price) VALUES (6, 2, 7);
         DELETE FROM lines WHERE id = 5;",
    )
    .await
    .expect("the day's changes");
    let inc = incremental(&env, "after");
    let plan = text(&env.run_ok(&["recovery", "plan", &inc, "--dest-db", "lines_at"]));
    assert!(
        plan.contains("the 1 large object(s) as the base holds them"),
        "{plan}"
    );
    let report = restore_new(&env, &inc, "lines_at", &[]);
    assert_eq!(report["ok"], true, "{report}");
    let rows = |client: tokio_postgres::Client| async move {
        client
            .query(
                "SELECT format('%s %s %s %s %s', id, qty, price, total, note) FROM lines ORDER BY id",
                &[],
            )
            .await
            .expect("lines")
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    let restored = rows(env.client_for("lines_at").await).await;
    assert_eq!(restored, rows(session(&env).await).await);
    assert!(
        restored.contains(&"4 4 7 28 discount".to_string()),
        "{restored:?}"
    );
    assert_eq!(
        scalar(
            &env.client_for("lines_at").await,
            "SELECT length(lo_get(424242))::bigint"
        )
        .await,
        15,
        "the base's large object"
    );

    // A large object written after the full: the next incremental is refused, nothing written.
    db.batch_execute("SELECT lo_put(424242, 0, '\\x5343414e'::bytea)")
        .await
        .expect("rewrite the large object");
    let before = env.repo().await.backup_ids().await.expect("ids");
    let said = env.run_failing(&["backup", "create", "--type", "incremental"]);
    assert!(
        said.contains("the large objects changed since the chain's full backup")
            && said.contains("take a new full backup"),
        "{said}"
    );
    assert_eq!(env.repo().await.backup_ids().await.expect("ids"), before);
}
