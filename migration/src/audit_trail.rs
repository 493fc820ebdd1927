//! The tables of one audit trail (a tenant's, or the platform's in the control plane).

use sea_orm_migration::{prelude::*, schema::*};

use crate::AUDIT_GENESIS_HASH;

/// The events, the chain head and the signed checkpoints.
pub(crate) fn tables() -> Vec<TableCreateStatement> {
    vec![
        Table::create()
            .table("audit_events")
            .col(big_integer("seq").primary_key())
            .col(uuid("id"))
            .col(timestamp_with_time_zone("occurred_at"))
            .col(string("request_id"))
            .col(string("actor_type"))
            .col(string("actor_id"))
            .col(string("action"))
            .col(string("resource_type"))
            .col(string_null("resource_id"))
            .col(string("decision"))
            .col(integer("status"))
            .col(string_null("source_ip"))
            .col(text_null("user_agent"))
            .col(json("details"))
            .col(string("prev_hash"))
            .col(string("hash"))
            .to_owned(),
        Table::create()
            .table("audit_head")
            .col(integer("id").primary_key())
            .col(big_integer("seq"))
            .col(string("hash"))
            .to_owned(),
        Table::create()
            .table("audit_checkpoints")
            .col(big_integer("seq").primary_key())
            .col(string("hash"))
            .col(timestamp_with_time_zone("created_at"))
            .col(text("signature"))
            .to_owned(),
    ]
}

/// The head of an empty chain.
pub(crate) fn genesis() -> InsertStatement {
    Query::insert()
        .into_table("audit_head")
        .columns(["id", "seq", "hash"])
        .values_panic([1.into(), 0i64.into(), AUDIT_GENESIS_HASH.into()])
        .to_owned()
}
