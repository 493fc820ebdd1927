//! The tenant unit of work outside HTTP: what a worker or a command does to act on a tenant gets
//! the same authorization and audit as a request, and a proof serves only its own context.

use flowgate::authz::actions::UserCreate;
use flowgate::directory::users::{self, NewUser};
use flowgate::tenancy::work::{Change, WorkError};
use reqwest::StatusCode;
use serde_json::json;

use crate::on_both_databases;

fn new_user(email: &str) -> NewUser {
    NewUser {
        email: email.to_owned(),
        display_name: "Made by a worker".to_owned(),
    }
}

on_both_databases! {
    async fn a_worker_s_change_is_authorized_and_audited_like_a_request(app) {
        let principal = app.worker(Some("Admin")).await;
        let actor = principal.actor_id();
        let work = app.work(principal).await;
        let allowed = work
            .authorize::<UserCreate>(work.policies().tenant())
            .unwrap();
        let tx = work.write(&allowed).await.unwrap();
        let user = users::create(&tx, &allowed, new_user("worker@example.com"))
            .await
            .unwrap();
        tx.commit(Change::new("user", user.id, 201)).await.unwrap();
        assert!(work.recorded());

        let (status, listed) = app.get(&format!("/users/{}", user.id), &app.admin_key).await;
        assert_eq!(status, StatusCode::OK, "{listed}");
        let events = app.audit_events().await;
        let recorded = events
            .iter()
            .find(|e| e["resource_id"] == json!(user.id.to_string()))
            .expect("the change's audit event");
        assert_eq!(recorded["action"], "user.create");
        assert_eq!(recorded["actor_id"], json!(actor));
        assert_eq!(recorded["decision"], "allow");
    }

    async fn a_worker_without_the_permission_is_denied_and_the_denial_is_on_record(app) {
        let principal = app.worker(Some("Viewer")).await;
        let actor = principal.actor_id();
        let work = app.work(principal).await;
        let denied = work.authorize::<UserCreate>(work.policies().tenant());
        assert!(matches!(denied, Err(WorkError::Denied("user.create"))), "{denied:?}");
        work.finish(403).await.unwrap();

        let events = app.audit_events().await;
        let recorded = events
            .iter()
            .rev()
            .find(|e| e["actor_id"] == json!(actor))
            .expect("the denial's audit event");
        assert_eq!(recorded["action"], "user.create");
        assert_eq!(recorded["decision"], "deny");
        assert_eq!(recorded["status"], 403);
    }

    async fn a_proof_opens_no_transaction_in_another_context(app) {
        let admin = app.work(app.worker(Some("Admin")).await).await;
        let viewer = app.work(app.worker(Some("Viewer")).await).await;
        let allowed = admin
            .authorize::<UserCreate>(admin.policies().tenant())
            .unwrap();
        let borrowed = viewer.write(&allowed).await;
        assert!(matches!(borrowed, Err(WorkError::Denied("user.create"))));
        // The positive control: the same proof opens its own context's transaction.
        assert!(admin.write(&allowed).await.is_ok());
    }
}
