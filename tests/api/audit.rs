//! Every call leaves a tamper-evident trace: events are hash-chained per tenant, checkpoints are
//! signed, and verification names the first edited, deleted or reordered event.

use entity::tenant::audit_event;
use flowgate::audit::chain::event_hash;
use reqwest::StatusCode;
use sea_orm::{EntityTrait as _, QueryOrder as _};
use serde_json::{Value, json};

use crate::helpers::TestApp;
use crate::on_both_databases;

async fn verify(app: &TestApp) -> Value {
    let (status, report) = app.get("/audit/verify", &app.admin_key).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    report
}

/// Runs `flowgate audit verify` against the app's storage; returns the exit code and stdout.
async fn verify_with_cli(app: &TestApp) -> (i32, Value) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_flowgate"))
        .args(["audit", "verify", &app.tenant])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(app.settings_vars.iter())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|_| {
        panic!(
            "stdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().unwrap(), report)
}

async fn some_activity(app: &TestApp) {
    app.create_user("a@example.com").await;
    app.create_user("b@example.com").await;
    let (status, _) = app.get("/users", &app.admin_key).await;
    assert_eq!(status, StatusCode::OK);
}

/// The sequence numbers of `GET /audit/export?{range}`.
async fn exported(app: &TestApp, range: &str) -> Vec<i64> {
    let response = app
        .client
        .get(app.tenant_url(&format!("/audit/export?{range}")))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    text.lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["seq"]
                .as_i64()
                .unwrap()
        })
        .collect()
}

on_both_databases! {
    async fn the_trail_is_exported_whole_or_by_range(app) {
        some_activity(&app).await;
        let all = exported(&app, "").await;
        assert!(all.len() >= 4, "{all:?}");
        assert_eq!(all, (1..=all.len() as i64).collect::<Vec<_>>(), "every event, in order");
        assert_eq!(exported(&app, "after=1&until=3").await, vec![2, 3]);
        assert_eq!(exported(&app, "until=2").await, vec![1, 2]);
        assert_eq!(exported(&app, "after=3&until=2").await, Vec::<i64>::new());
        for range in ["until=-1", "after=-1", "until=x"] {
            let (status, body) = app.get(&format!("/audit/export?{range}"), &app.admin_key).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{range}: {body}");
        }
    }

    async fn each_call_records_who_what_where_and_how_it_ended(app) {
        let response = app.client.post(app.tenant_url("/users"))
            .bearer_auth(&app.admin_key)
            .header("user-agent", "audit-test/1.0")
            .json(&json!({"email": "grace@example.com", "display_name": "Grace"}))
            .send().await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
        let user: Value = response.json().await.unwrap();
        let events = app.audit_events().await;
        let event = events.iter().find(|e| e["request_id"] == request_id.as_str()).expect("the call's event");
        assert_eq!(event["action"], "user.create");
        assert_eq!(event["resource_type"], "user");
        assert_eq!(event["resource_id"], user["id"]);
        assert_eq!(event["decision"], "allow");
        assert_eq!(event["status"], 201);
        assert_eq!(event["actor_type"], "service_account");
        assert_eq!(event["source_ip"], "127.0.0.1");
        assert_eq!(event["user_agent"], "audit-test/1.0");
        assert_eq!(event["details"]["method"], "POST");
        // Reads are audited too.
        let (status, _) = app.get("/users", &app.admin_key).await;
        assert_eq!(status, StatusCode::OK);
        let events = app.audit_events().await;
        assert!(events.iter().any(|e| e["action"] == "user.read" && e["status"] == 200));
        let report = verify(&app).await;
        assert_eq!(report["ok"], true, "{report}");
        assert_eq!(report["events"].as_u64(), Some(report["head_seq"].as_u64().unwrap()));
        assert!(report["checkpoints"].as_u64().unwrap() >= 1, "checkpoints are signed: {report}");
    }

    async fn text_that_needs_escaping_is_stored_as_it_was_hashed(app) {
        // Reads are appended by the group writer (on PostgreSQL, as one JSON parameter).
        let agent = r#"quote" back\slash {"json": [1, "\u0000"]} tab	end"#;
        let response = app.client.get(app.tenant_url("/users"))
            .bearer_auth(&app.admin_key)
            .header("user-agent", agent)
            .send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let (status, _) = app.get("/users/%E2%80%A8%22%5C%F0%9F%94%91", &app.admin_key).await;
        assert!(status.is_client_error(), "{status}");
        let events = app.audit_events().await;
        assert!(events.iter().any(|e| e["user_agent"] == agent), "the agent is stored verbatim");
        let report = verify(&app).await;
        assert_eq!(report["ok"], true, "{report}");
    }

    async fn concurrent_calls_all_land_in_one_unbroken_chain(app) {
        let before = app.audit_events().await.len();
        let calls = (0..40).map(|i| {
            let app = &app;
            async move {
                if i % 4 == 0 {
                    app.create_user(&format!("u{i}@example.com")).await;
                } else {
                    let (status, _) = app.get("/users", &app.admin_key).await;
                    assert_eq!(status, StatusCode::OK);
                }
            }
        });
        futures_util::future::join_all(calls).await;
        let events = app.audit_events().await;
        // 40 calls; each of the audit reads made by audit_events() adds one more.
        assert!(events.len() >= before + 40, "{} events after {before}", events.len());
        for (i, event) in events.iter().enumerate() {
            assert_eq!(event["seq"].as_i64(), Some(i as i64 + 1), "no gaps");
        }
        for pair in events.windows(2) {
            assert_eq!(pair[1]["prev_hash"], pair[0]["hash"]);
        }
        assert_eq!(verify(&app).await["ok"], true);
    }

    async fn an_edited_event_is_detected(app) {
        some_activity(&app).await;
        let report = verify(&app).await;
        assert_eq!(report["ok"], true, "{report}");
        app.tenant_sql("UPDATE audit_events SET actor_id = 'someone-else' WHERE seq = 3").await;
        let report = verify(&app).await;
        assert_eq!(report["ok"], false, "{report}");
        assert_eq!(report["first_broken_seq"], 3, "{report}");
        let (code, cli_report) = verify_with_cli(&app).await;
        assert_eq!(code, 1);
        assert_eq!(cli_report["first_broken_seq"], 3);
    }

    async fn a_deleted_event_is_detected(app) {
        some_activity(&app).await;
        app.tenant_sql("DELETE FROM audit_events WHERE seq = 2").await;
        let report = verify(&app).await;
        assert_eq!(report["ok"], false, "{report}");
        assert_eq!(report["first_broken_seq"], 2, "{report}");
        assert_eq!(verify_with_cli(&app).await.0, 1);
    }

    async fn reordered_events_are_detected(app) {
        some_activity(&app).await;
        app.tenant_sql("UPDATE audit_events SET seq = -1 WHERE seq = 2").await;
        app.tenant_sql("UPDATE audit_events SET seq = 2 WHERE seq = 3").await;
        app.tenant_sql("UPDATE audit_events SET seq = 3 WHERE seq = -1").await;
        let report = verify(&app).await;
        assert_eq!(report["ok"], false, "{report}");
        assert_eq!(report["first_broken_seq"], 2, "{report}");
    }

    async fn a_truncated_and_rewritten_tail_is_caught_by_a_signed_checkpoint(app) {
        some_activity(&app).await;
        app.state.audit.checkpoint_now().await.unwrap();
        let head: i64 = app.tenant_rows("SELECT seq FROM audit_head").await[0]["seq"].as_i64().unwrap();
        let keep = head - 2;
        // The attacker removes the last events and moves the head back so the chain still links.
        app.tenant_sql(&format!("DELETE FROM audit_events WHERE seq > {keep}")).await;
        app.tenant_sql(&format!(
            "UPDATE audit_head SET seq = {keep}, hash = (SELECT hash FROM audit_events WHERE seq = {keep})"
        )).await;
        let (code, report) = verify_with_cli(&app).await;
        assert_eq!(code, 1, "{report}");
        assert_eq!(report["ok"], false);
        assert_eq!(report["first_broken_seq"], keep + 1, "{report}");
    }

    async fn a_cut_tail_with_its_checkpoints_deleted_is_caught_by_the_key_stores_copy(app) {
        some_activity(&app).await;
        app.state.audit.checkpoint_now().await.unwrap();
        let head: i64 = app.tenant_rows("SELECT seq FROM audit_head").await[0]["seq"].as_i64().unwrap();
        let report = verify(&app).await;
        assert_eq!(report["ok"], true, "{report}");
        assert_eq!(report["anchored_seq"], head, "{report}");
        // Someone with the database but not the key store cuts the tail, re-links the head and
        // removes every checkpoint that would give it away.
        let keep = head - 2;
        app.tenant_sql(&format!("DELETE FROM audit_events WHERE seq > {keep}")).await;
        app.tenant_sql(&format!(
            "UPDATE audit_head SET seq = {keep}, hash = (SELECT hash FROM audit_events WHERE seq = {keep})"
        )).await;
        app.tenant_sql("DELETE FROM audit_checkpoints").await;
        let (code, report) = verify_with_cli(&app).await;
        assert_eq!(code, 1, "{report}");
        // Named at the first cut event, or, when events appended since (the signer's own report
        // of the break among them) filled the cut places again, at the anchor's.
        let broken = report["first_broken_seq"].as_i64().unwrap();
        assert!((keep + 1..=head).contains(&broken), "{report}");
        assert!(report["problem"].as_str().unwrap().contains("key store"), "{report}");
        // The signer reports the break once, though where its walks find it moves on with the
        // head (events missing after it) until the head passes the anchor.
        for _ in 0..4 {
            let (status, _) = app.get("/users", &app.admin_key).await;
            assert_eq!(status, StatusCode::OK);
            app.state.audit.checkpoint_now().await.unwrap();
        }
        let reports: Vec<Value> = app
            .audit_events()
            .await
            .into_iter()
            .filter(|e| e["action"] == "audit.checkpoint")
            .collect();
        assert_eq!(reports.len(), 1, "{reports:?}");
    }

    async fn a_history_rewritten_behind_the_anchor_is_never_signed(app) {
        some_activity(&app).await;
        app.state.audit.checkpoint_now().await.unwrap();
        let anchored = verify(&app).await["anchored_seq"].as_i64().unwrap();
        // Someone with the database but not the key store rewrites history from event 2 on,
        // re-hashing every event after it so that the chain links again, and removes the
        // checkpoints that would give it away.
        app.tenant_sql("UPDATE audit_events SET actor_id = 'someone-else' WHERE seq = 2").await;
        let db = app.tenant_connection().await;
        let events = audit_event::Entity::find()
            .order_by_asc(audit_event::Column::Seq)
            .all(&db)
            .await
            .unwrap();
        let mut prev_hash = events[0].hash.clone();
        for mut event in events.into_iter().skip(1) {
            event.prev_hash = prev_hash;
            event.hash = event_hash(&event);
            app.tenant_sql(&format!(
                "UPDATE audit_events SET prev_hash = '{}', hash = '{}' WHERE seq = {}",
                event.prev_hash, event.hash, event.seq
            ))
            .await;
            prev_hash = event.hash;
        }
        app.tenant_sql(&format!("UPDATE audit_head SET hash = '{prev_hash}'")).await;
        app.tenant_sql("DELETE FROM audit_checkpoints WHERE seq >= 2").await;
        // Life goes on: calls append to the rewritten head, and its checkpoint falls due.
        let (status, _) = app.get("/users", &app.admin_key).await;
        assert_eq!(status, StatusCode::OK);
        app.state.audit.checkpoint_now().await.unwrap();
        let report = verify(&app).await;
        assert_eq!(report["ok"], false, "{report}");
        // The anchor stayed where it was at the rewrite (the first verification's own event
        // may have been signed since), short of the rewritten head, and names the break.
        let stayed = report["anchored_seq"].as_i64().unwrap();
        assert!(stayed >= anchored && stayed < report["head_seq"].as_i64().unwrap(), "{report}");
        assert_eq!(report["first_broken_seq"], stayed, "{report}");
        let checkpoints = app.tenant_rows("SELECT seq FROM audit_checkpoints WHERE seq >= 2").await;
        assert!(checkpoints.is_empty(), "nothing signed the rewrite: {checkpoints:?}");
    }

    async fn a_forged_checkpoint_signature_is_detected(app) {
        some_activity(&app).await;
        app.state.audit.checkpoint_now().await.unwrap();
        app.tenant_sql("UPDATE audit_checkpoints SET signature = 'local:v1:AAAA'").await;
        let report = verify(&app).await;
        assert_eq!(report["ok"], false, "{report}");
    }
}

/// The checkpoint signer that finds the trail broken after its anchor says so once, on the
/// trail itself, where it raises the `audit_tamper` signal; asked again, it still signs nothing
/// past the break and does not say it twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signer_reports_a_broken_trail_once_and_that_raises_the_tamper_signal() {
    let app = crate::helpers::spawn_app(crate::helpers::Db::Sqlite).await;
    some_activity(&app).await;
    app.state.audit.checkpoint_now().await.unwrap();
    for _ in 0..3 {
        let (status, _) = app.get("/users", &app.admin_key).await;
        assert_eq!(status, StatusCode::OK);
    }
    // An event after the anchor is edited behind Flowgate's back.
    let head = app.tenant_rows("SELECT seq FROM audit_head").await[0]["seq"]
        .as_i64()
        .unwrap();
    app.tenant_sql(&format!(
        "UPDATE audit_events SET status = 299 WHERE seq = {head}"
    ))
    .await;
    let tamper =
        |e: &Value| e["action"] == "security.signal" && e["details"]["signal"] == "audit_tamper";
    for _ in 0..50 {
        // Each read asks for a checkpoint first: the signer refuses the trail every time.
        if app.audit_events().await.iter().any(tamper) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Asked again, the signer refuses again and says nothing more.
    for _ in 0..2 {
        app.state.audit.checkpoint_now().await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let events = app.audit_events().await;
    let reports: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "audit.checkpoint")
        .collect();
    assert_eq!(reports.len(), 1, "one report of one break: {reports:?}");
    let report = reports[0];
    assert_eq!(report["actor_type"], "system");
    assert_eq!(report["actor_id"], "audit-signer");
    assert_eq!(report["status"], 409);
    assert_eq!(report["details"]["verified_ok"], false);
    assert_eq!(report["details"]["first_broken_seq"], head);
    let signal = events
        .iter()
        .find(|e| tamper(e))
        .unwrap_or_else(|| panic!("no audit_tamper signal in {events:?}"));
    assert_eq!(signal["details"]["subject"]["type"], "system", "{signal}");
    // (The edited event itself may have been signed by a tick before the edit.)
    let signed = app
        .tenant_rows(&format!(
            "SELECT seq FROM audit_checkpoints WHERE seq > {head}"
        ))
        .await;
    assert!(
        signed.is_empty(),
        "nothing past the break is signed: {signed:?}"
    );
}

/// Replicas take turns at a trail's anchor: a move waits while another replica holds the
/// trail's anchor lock (from reading the anchor to writing it), so one that signed an older
/// checkpoint cannot overwrite a newer anchor written meanwhile; and an older checkpoint never
/// moves the anchor back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anchor_moves_take_turns_across_replicas_and_never_go_back() {
    use flowgate::audit::anchor::{self, Anchor};
    use sea_orm::sqlx::{Connection as _, Executor as _};

    let app = crate::helpers::spawn_app(crate::helpers::Db::Postgres).await;
    some_activity(&app).await;
    app.state.audit.checkpoint_now().await.unwrap();
    let slug = flowgate::tenancy::Slug::parse(&app.tenant).unwrap();
    let trail = flowgate::audit::Trail::from(&slug);
    let keystore = app.state.keystore.as_ref();
    let anchored = anchor::load(keystore, &trail)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let stored = || async {
        let name = flowgate::keystore::KeyName::new(
            trail.name(),
            flowgate::keystore::Purpose::AuditAnchor,
        );
        let bytes = keystore.record(&name).await.unwrap().unwrap();
        serde_json::from_slice::<Anchor>(&bytes).unwrap().seq
    };

    // An older checkpoint leaves the anchor where it is.
    let older = Anchor {
        seq: anchored.seq - 1,
        ..anchored.clone()
    };
    anchor::advance(&app.state.dbs, keystore, &trail, &older)
        .await
        .unwrap();
    assert_eq!(stored().await, anchored.seq);

    // Another replica is moving it: this one waits for it.
    let url = app.database_url().unwrap();
    let mut other = sea_orm::sqlx::PgConnection::connect(&url).await.unwrap();
    let key = format!("flowgate.audit_anchor.{}", trail.schema());
    other.execute("BEGIN").await.unwrap();
    sea_orm::sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(&key)
        .execute(&mut other)
        .await
        .unwrap();
    let newer = Anchor {
        seq: anchored.seq + 1_000,
        ..anchored.clone()
    };
    let moving = anchor::advance(&app.state.dbs, keystore, &trail, &newer);
    tokio::pin!(moving);
    let waited = tokio::time::timeout(std::time::Duration::from_millis(400), &mut moving).await;
    assert!(waited.is_err(), "the move waits for the other replica's");
    other.execute("COMMIT").await.unwrap();
    moving.await.unwrap();
    assert_eq!(stored().await, newer.seq);
}
