//! `/t/{tenant}/api/v1/audit`

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use entity::tenant::{audit_event, audit_head};
use sea_orm::{
    ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _, QueryOrder as _,
    QuerySelect as _,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::Page;
use crate::app::AppState;
use crate::audit::{Trail, VerifyReport, read_platform_trail, verify};
use crate::authz::actions::{AuditExport, AuditRead, AuditVerify};
use crate::http::error::ApiError;
use crate::http::pipeline::authz::Authorized;
use crate::http::pipeline::operator::{self, Operator};
use crate::tenancy::work::TenantContext;

/// Paging of the audit trail, oldest first.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Events per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
    /// Return events after this sequence number.
    #[param(minimum = 0)]
    pub after: Option<i64>,
}

/// One audit event.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventView {
    /// The trail holding the event: the tenant's slug, or `platform` (exports stay
    /// attributable once copied out).
    pub trail: String,
    pub seq: i64,
    pub id: Uuid,
    #[serde(serialize_with = "crate::http::timestamp::serialize")]
    pub occurred_at: DateTime<Utc>,
    pub request_id: String,
    /// `service_account`, `user`, `operator` or `anonymous`.
    pub actor_type: String,
    pub actor_id: String,
    /// A catalogue action (`user.create`), or `auth.authenticate` and `request` for calls that
    /// failed before an authorization decision, or `security.signal` and `security.response`
    /// for Flowgate's own (actor `system`).
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    /// `allow`, `deny` or `none`.
    pub decision: String,
    /// The HTTP status the call was answered with.
    pub status: i32,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub details: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditEventView {
    fn of(trail: &Trail, m: audit_event::Model) -> Self {
        AuditEventView {
            trail: trail.to_string(),
            seq: m.seq,
            id: m.id,
            occurred_at: m.occurred_at,
            request_id: m.request_id,
            actor_type: m.actor_type,
            actor_id: m.actor_id,
            action: m.action,
            resource_type: m.resource_type,
            resource_id: m.resource_id,
            decision: m.decision,
            status: m.status,
            source_ip: m.source_ip,
            user_agent: m.user_agent,
            details: m.details,
            prev_hash: m.prev_hash,
            hash: m.hash,
        }
    }
}

/// A page of audit events (the schema `AuditEventPage`).
pub type AuditEventPage = Page<AuditEventView>;

/// Read the audit trail.
#[utoipa::path(
    get,
    path = "/audit/events",
    tag = "audit",
    responses((status = 200, body = AuditEventPage))
)]
pub async fn list_audit_events(
    auth: Authorized<AuditRead>,
    query: web::Query<AuditParams>,
) -> Result<web::Json<Page<AuditEventView>>, ApiError> {
    let tx = auth.read().await?;
    let page = page_of_events(&tx, &Trail::from(auth.slug()), &query).await?;
    tx.commit().await?;
    Ok(web::Json(page))
}

/// One page of a trail's events, oldest first, as `query` asks.
async fn page_of_events(
    conn: &impl ConnectionTrait,
    trail: &Trail,
    query: &AuditParams,
) -> Result<Page<AuditEventView>, ApiError> {
    let limit = match query.limit {
        None => 100,
        Some(n) if (1..=1000).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "limit",
                "must be between 1 and 1000",
            ));
        }
    };
    let rows = audit_event::Entity::find()
        .filter(audit_event::Column::Seq.gt(seq(query.after)?))
        .order_by_asc(audit_event::Column::Seq)
        .limit(limit)
        .all(conn)
        .await?;
    Ok(Page::of(
        rows,
        limit,
        |e| e.seq.to_string(),
        |e| AuditEventView::of(trail, e),
    ))
}

/// The sequence number a page starts after: 0 (the start) or more.
fn seq(after: Option<i64>) -> Result<i64, ApiError> {
    match after {
        Some(n) if n < 0 => Err(ApiError::invalid_field("after", "must be 0 or more")),
        n => Ok(n.unwrap_or(0)),
    }
}

/// Which events an export holds.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// Export events after this sequence number (default: from the first).
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// Export events up to this sequence number, included (default: the chain's head when the
    /// export starts). An encrypted export is sealed as one JWE of at most 64 MiB: a large
    /// trail is exported in ranges.
    #[param(minimum = 0)]
    pub until: Option<i64>,
}

/// Export the audit trail as NDJSON.
///
/// One event per line, oldest first, with its hashes, up to the chain head at the time of the
/// request; verify offline by recomputing the chain.
#[utoipa::path(
    get,
    path = "/audit/export",
    tag = "audit",
    responses((status = 200, content_type = "application/x-ndjson", body = String, description = "One `AuditEventView` per line, as JSON"))
)]
pub async fn export_audit(
    auth: Authorized<AuditExport>,
    query: web::Query<ExportParams>,
) -> Result<HttpResponse, ApiError> {
    let first = seq(query.after)?;
    let until = match query.until {
        Some(n) if n < 0 => return Err(ApiError::invalid_field("until", "must be 0 or more")),
        until => until.unwrap_or(i64::MAX),
    };
    let tx = auth.read().await?;
    let head = audit_head::Entity::find_by_id(1)
        .one(&tx)
        .await?
        .map_or(0, |h| h.seq)
        .min(until);
    tx.commit().await?;
    let context = TenantContext::clone(&auth);
    let trail = Trail::from(auth.slug());
    let pages = futures_util::stream::try_unfold(first, move |after| {
        let (context, trail) = (context.clone(), trail.clone());
        async move {
            if after >= head {
                return Ok(None);
            }
            let tx = context.read().await?;
            let rows = audit_event::Entity::find()
                .filter(audit_event::Column::Seq.gt(after))
                .filter(audit_event::Column::Seq.lte(head))
                .order_by_asc(audit_event::Column::Seq)
                .limit(EXPORT_PAGE)
                .all(&tx)
                .await?;
            tx.commit().await?;
            let Some(last) = rows.last().map(|r| r.seq) else {
                return Ok(None);
            };
            let mut lines = Vec::new();
            for row in rows {
                serde_json::to_writer(&mut lines, &AuditEventView::of(&trail, row))
                    .map_err(|e| ApiError::internal("audit export", e))?;
                lines.push(b'\n');
            }
            Ok::<_, ApiError>(Some((web::Bytes::from(lines), last)))
        }
    });
    // Once streaming has begun the status is sent: a failure can only cut the stream short.
    let pages = futures_util::TryStreamExt::map_err(pages, |e: ApiError| {
        tracing::error!(error = %e, "audit export interrupted");
        std::io::Error::other("audit export interrupted")
    });
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(pages))
}

/// Events per page of an export.
const EXPORT_PAGE: u64 = 1_000;

/// Verify the audit chain.
///
/// Recomputes every event's hash and link and checks every signed checkpoint. `ok` is false
/// and `first_broken_seq` names the first bad event when anything was edited, deleted or
/// reordered.
#[utoipa::path(
    get,
    path = "/audit/verify",
    tag = "audit",
    responses((status = 200, body = VerifyReport))
)]
pub async fn verify_audit(
    auth: Authorized<AuditVerify>,
) -> Result<web::Json<VerifyReport>, ApiError> {
    Ok(web::Json(auth.verify_audit(auth.allowed()).await?))
}

/// Read the platform audit trail.
///
/// Operator calls (allowed or refused, with failed operator logins) and tenant deletions, oldest
/// first.
#[utoipa::path(
    get,
    path = "/audit/events",
    tag = "platform",
    responses((status = 200, body = AuditEventPage))
)]
pub async fn list_platform_audit_events(
    operator: Operator<operator::PlatformAuditRead>,
    state: web::Data<AppState>,
    query: web::Query<AuditParams>,
) -> Result<web::Json<Page<AuditEventView>>, ApiError> {
    let page = read_platform_trail(&state.dbs, operator.authority(), async |tx| {
        page_of_events(tx, &Trail::Platform, &query).await
    })
    .await?;
    Ok(web::Json(page))
}

/// Verify the platform audit trail.
///
/// As for a tenant's trail.
#[utoipa::path(
    get,
    path = "/audit/verify",
    tag = "platform",
    responses((status = 200, body = VerifyReport))
)]
pub async fn verify_platform_audit(
    _operator: Operator<operator::PlatformAuditVerify>,
    state: web::Data<AppState>,
) -> Result<web::Json<VerifyReport>, ApiError> {
    Ok(web::Json(
        verify(&state.dbs, state.keystore.as_ref(), Trail::Platform).await?,
    ))
}
