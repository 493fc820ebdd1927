//! The tenant unit of work outside HTTP: what a worker or a command does to act on a tenant gets
//! the same authorization and audit as a request, and a proof serves only its own context.

use std::sync::Arc;

use flowgate::audit::RequestMeta;
use flowgate::authz::actions::UserCreate;
use flowgate::directory::users::{self, NewUser};
use flowgate::identity::Principal;
use flowgate::tenancy::work::{Change, TenantContext, WorkError};
use flowgate::tenancy::{Slug, Tenant};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::TestApp;
use crate::on_both_databases;

/// A service account with `role` (or none) as the principal of a unit of work, as a worker
/// acting for it would hold it.
async fn principal_with(app: &TestApp, role: Option<&str>) -> Principal {
    let name = format!("worker-{}", Uuid::new_v4().simple());
    let (status, account) = app
        .post("/service-accounts", &app.admin_key, json!({"name": name}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{account}");
    let id: Uuid = account["id"].as_str().unwrap().parse().unwrap();
    if let Some(role) = role {
        let (status, body) = app
            .post(
                "/role-bindings",
                &app.admin_key,
                json!({"role": role, "subject": {"type": "service_account", "id": id}, "scope": {"type": "tenant"}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    Principal::ServiceAccount {
        id,
        credential: flowgate::identity::AccountCredential::ApiKey(Uuid::nil()),
    }
}

async fn tenant(app: &TestApp) -> Arc<Tenant> {
    let slug = Slug::parse(&app.tenant).unwrap();
    app.state.tenants.get(&slug).await.unwrap()
}

async fn context(app: &TestApp, principal: Principal) -> TenantContext {
    let meta = RequestMeta {
        request_id: format!("job-{}", Uuid::new_v4().simple()),
        ..RequestMeta::default()
    };
    TenantContext::open(app.state.clone(), tenant(app).await, principal, meta)
        .await
        .unwrap()
}

fn new_user(email: &str) -> NewUser {
    NewUser {
        email: email.to_owned(),
        display_name: "Made by a worker".to_owned(),
    }
}

on_both_databases! {
    async fn a_worker_s_change_is_authorized_and_audited_like_a_request(app) {
        let principal = principal_with(&app, Some("Admin")).await;
        let actor = principal.actor_id();
        let work = context(&app, principal).await;
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
        let principal = principal_with(&app, Some("Viewer")).await;
        let actor = principal.actor_id();
        let work = context(&app, principal).await;
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
        let admin = context(&app, principal_with(&app, Some("Admin")).await).await;
        let viewer = context(&app, principal_with(&app, Some("Viewer")).await).await;
        let allowed = admin
            .authorize::<UserCreate>(admin.policies().tenant())
            .unwrap();
        let borrowed = viewer.write(&allowed).await;
        assert!(matches!(borrowed, Err(WorkError::Denied("user.create"))));
        // The positive control: the same proof opens its own context's transaction.
        assert!(admin.write(&allowed).await.is_ok());
    }
}
