//! Point-in-time recovery from a chain of incrementals: a bank's transfers keep balancing in
//! every incremental restored into a new database, `--until` and `--until-lsn` stop between
//! two known commits, and `missing-rows --until` brings back what a mistaken DELETE took while
//! keeping what was written after it.

use crate::support::{TestEnv, reported, scalar, text};
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

/// `n` transfers, each its own transaction; every fifth also rewrites a memo (a TOASTed
/// value stays unchanged in the other updates) and every seventh deletes the oldest transfer.
async fn transfers(client: &tokio_postgres::Client, seed: i64, n: i64) {
    for i in 0..n {
        let k = seed * 7919 + i * 104_729;
        let (from, to, amount) = (k % ACCOUNTS + 1, (k / 7 + 1) % ACCOUNTS + 1, k % 50 + 1);
        if from == to {
            continue;
        }
        let memo = if i % 5 == 0 {
            format!(", memo = repeat('m{i}', 2000)")
        } else {
            String::new()
        };
        let purge = if i % 7 == 0 {
            "DELETE FROM transfers WHERE id = (SELECT min(id) FROM transfers);"
        } else {
            ""
        };
        client
            .batch_execute(&format!(
                "BEGIN;
                 UPDATE accounts SET balance = balance - {amount}{memo} WHERE id = {from};
                 UPDATE accounts SET balance = balance + {amount} WHERE id = {to};
                 INSERT INTO transfers (from_id, to_id, amount) VALUES ({from}, {to}, {amount});
                 {purge}
                 COMMIT;"
            ))
            .await
            .expect("a transfer");
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
    let full = env.backup("nightly").await;

    // The load runs while the incrementals are taken.
    let load_env_url = env.url();
    let load = tokio::spawn(async move {
        let (client, connection) = tokio_postgres::connect(&load_env_url, tokio_postgres::NoTls)
            .await
            .expect("load connection");
        tokio::spawn(connection);
        client
            .batch_execute("SET synchronous_commit = on")
            .await
            .expect("synchronous commits");
        for round in 0..30 {
            transfers(&client, round, 20).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let mut chain = Vec::new();
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        chain.push(incremental(&env, &format!("during-{i}")));
    }
    load.await.expect("the load");
    db.batch_execute("UPDATE accounts SET memo = NULL WHERE id = 3; TRUNCATE transfers")
        .await
        .expect("the last changes");
    transfers(&db, 99, 10).await;
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

    for (i, id) in chain.iter().enumerate() {
        let dest = format!("bank_at_{i}");
        let report = restore_new(&env, id, &dest, &[]);
        assert_eq!(report["ok"], true, "{report}");
        assert_eq!(report["backup_id"], id.as_str());
        assert!(
            report["replayed"]["transactions"]
                .as_u64()
                .expect("transactions")
                > 0,
            "{report}"
        );
        let restored = env.client_for(&dest).await;
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
    let last = env.client_for("bank_at_3").await;
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
