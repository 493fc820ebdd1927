//! Values between sea-orm and SQLite, stored exactly as sqlx stores them (so that files written by
//! either driver read the same through both), and rows read by column name.
//!
//! Invariants:
//! - Parameters are bound, never spliced into the SQL text.
//! - A result column that comes from one of Flowgate's tables is decoded as its entity declares
//!   it (a UUID, a timestamp, JSON…); the catalogue of columns is built from the entities
//!   themselves, so a new column cannot be missing from it. A computed column, or one of a
//!   table without an entity (the migrations' own), is decoded by its SQLite storage class.
//! - Rows are read by column name. sea-orm reads a row by position only for `into_tuple`, which
//!   the lints forbid: a row here is a map, and its positions are those of the names' order. A
//!   whole model ([`read_model`]) takes each value by the name of the column it comes from.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::types::{Value as Sql, ValueRef};
use sea_orm::sea_query::Value;
use sea_orm::{
    ActiveModelTrait, ColumnTrait as _, ColumnType, EntityTrait, IdenStatic as _, Iterable as _,
    TryIntoModel,
};
use uuid::Uuid;

use entity::control::{platform_setting, tenant};
use entity::tenant::{
    api_key, audit_checkpoint, audit_event, audit_head, break_glass_account, break_glass_login,
    data_key, folder, group, group_member, identity_provider, login_state, oauth_client, passkey,
    policy, policy_version, process, role, role_binding, saml_assertion, secret, secret_version,
    service_account, session, tenant_setting, trusted_issuer, user, user_identity,
    webauthn_ceremony,
};

/// How a stored column is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Int,
    BigInt,
    Bool,
    Text,
    Json,
    Uuid,
    Timestamp,
    Bytes,
}

impl Kind {
    fn of(column_type: &ColumnType) -> Kind {
        match column_type {
            ColumnType::Integer | ColumnType::SmallInteger | ColumnType::TinyInteger => Kind::Int,
            ColumnType::BigInteger => Kind::BigInt,
            ColumnType::Boolean => Kind::Bool,
            ColumnType::Json | ColumnType::JsonBinary => Kind::Json,
            ColumnType::Uuid => Kind::Uuid,
            ColumnType::Timestamp | ColumnType::TimestampWithTimeZone | ColumnType::DateTime => {
                Kind::Timestamp
            }
            ColumnType::Binary(_) | ColumnType::VarBinary(_) | ColumnType::Blob => Kind::Bytes,
            _ => Kind::Text,
        }
    }

    /// The SQL NULL of this kind, as sea-orm expects it for an `Option` of the kind's type.
    fn null(self) -> Value {
        match self {
            Kind::Int => Value::Int(None),
            Kind::BigInt => Value::BigInt(None),
            Kind::Bool => Value::Bool(None),
            Kind::Text => Value::String(None),
            Kind::Json => Value::Json(None),
            Kind::Uuid => Value::Uuid(None),
            Kind::Timestamp => Value::ChronoDateTimeUtc(None),
            Kind::Bytes => Value::Bytes(None),
        }
    }
}

/// Every column of every table (the tenants' and the control plane's), by `(table, column)`.
static CATALOGUE: LazyLock<HashMap<(&'static str, &'static str), Kind>> = LazyLock::new(|| {
    let mut columns = HashMap::new();
    add::<platform_setting::Entity>(&mut columns);
    add::<tenant::Entity>(&mut columns);
    add::<api_key::Entity>(&mut columns);
    add::<audit_checkpoint::Entity>(&mut columns);
    add::<audit_event::Entity>(&mut columns);
    add::<audit_head::Entity>(&mut columns);
    add::<data_key::Entity>(&mut columns);
    add::<folder::Entity>(&mut columns);
    add::<group::Entity>(&mut columns);
    add::<group_member::Entity>(&mut columns);
    add::<identity_provider::Entity>(&mut columns);
    add::<login_state::Entity>(&mut columns);
    add::<oauth_client::Entity>(&mut columns);
    add::<passkey::Entity>(&mut columns);
    add::<break_glass_account::Entity>(&mut columns);
    add::<break_glass_login::Entity>(&mut columns);
    add::<policy::Entity>(&mut columns);
    add::<policy_version::Entity>(&mut columns);
    add::<process::Entity>(&mut columns);
    add::<role::Entity>(&mut columns);
    add::<role_binding::Entity>(&mut columns);
    add::<saml_assertion::Entity>(&mut columns);
    add::<secret::Entity>(&mut columns);
    add::<secret_version::Entity>(&mut columns);
    add::<service_account::Entity>(&mut columns);
    add::<session::Entity>(&mut columns);
    add::<tenant_setting::Entity>(&mut columns);
    add::<trusted_issuer::Entity>(&mut columns);
    add::<user::Entity>(&mut columns);
    add::<user_identity::Entity>(&mut columns);
    add::<webauthn_ceremony::Entity>(&mut columns);
    columns
});

fn add<E: EntityTrait>(columns: &mut HashMap<(&'static str, &'static str), Kind>) {
    let table = E::default().table_name();
    for column in E::Column::iter() {
        let kind = Kind::of(column.def().get_column_type());
        columns.insert((table, column.as_str()), kind);
    }
}

/// How the column at each position of a statement's result is decoded: by the tenant column it
/// comes from, or (computed) by what it holds.
pub(super) fn result_kinds(stmt: &rusqlite::Statement<'_>) -> Vec<(String, Option<Kind>)> {
    stmt.columns_with_metadata()
        .iter()
        .map(|c| {
            let kind = c
                .table_name()
                .zip(c.origin_name())
                .and_then(|(table, column)| CATALOGUE.get(&(table, column)).copied());
            (c.name().to_owned(), kind)
        })
        .collect()
}

/// The column of `E` at each position of a statement's result, and how it is decoded; an error
/// names a result column that is not one of `E`'s.
pub(super) fn model_columns<E: EntityTrait>(
    stmt: &rusqlite::Statement<'_>,
) -> Result<Vec<(E::Column, Kind)>, String> {
    stmt.column_names()
        .into_iter()
        .map(|name| {
            E::Column::iter()
                .find(|column| column.as_str() == name)
                .map(|column| (column, Kind::of(column.def().get_column_type())))
                .ok_or_else(|| {
                    format!(
                        "`{name}` is not a column of `{}`",
                        E::default().table_name()
                    )
                })
        })
        .collect()
}

/// One result row as a model of `E`, each value moved into its field: no map of named values,
/// no copy of a value (see [`read_row`] for rows of any shape). Every column of `E` must be
/// in the row.
pub(super) fn read_model<E>(
    row: &rusqlite::Row<'_>,
    columns: &[(E::Column, Kind)],
) -> Result<E::Model, String>
where
    E: EntityTrait,
    E::ActiveModel: TryIntoModel<E::Model>,
{
    let mut model = <E::ActiveModel as ActiveModelTrait>::default();
    for (i, (column, kind)) in columns.iter().enumerate() {
        let raw = row.get_ref(i).map_err(|e| e.to_string())?;
        let value = decode(*kind, raw).map_err(|e| format!("column `{}`: {e}", column.as_str()))?;
        model.try_set(*column, value).map_err(|e| e.to_string())?;
    }
    model.try_into_model().map_err(|e| e.to_string())
}

/// One result row, as sea-orm's proxy rows hold it.
pub(super) fn read_row(
    row: &rusqlite::Row<'_>,
    kinds: &[(String, Option<Kind>)],
) -> Result<BTreeMap<String, Value>, String> {
    let mut values = BTreeMap::new();
    for (i, (name, kind)) in kinds.iter().enumerate() {
        let raw = row.get_ref(i).map_err(|e| e.to_string())?;
        let value = match kind {
            Some(kind) => decode(*kind, raw).map_err(|e| format!("column `{name}`: {e}"))?,
            None => computed(raw),
        };
        values.insert(name.clone(), value);
    }
    Ok(values)
}

fn text<'a>(raw: ValueRef<'a>) -> Result<&'a str, String> {
    raw.as_str().map_err(|e| e.to_string())
}

fn decode(kind: Kind, raw: ValueRef<'_>) -> Result<Value, String> {
    if raw == ValueRef::Null {
        return Ok(kind.null());
    }
    Ok(match kind {
        Kind::Int => {
            let n = raw.as_i64().map_err(|e| e.to_string())?;
            Value::Int(Some(i32::try_from(n).map_err(|e| e.to_string())?))
        }
        Kind::BigInt => Value::BigInt(Some(raw.as_i64().map_err(|e| e.to_string())?)),
        Kind::Bool => Value::Bool(Some(raw.as_i64().map_err(|e| e.to_string())? != 0)),
        Kind::Text => Value::String(Some(text(raw)?.to_owned())),
        Kind::Json => Value::Json(Some(Box::new(
            serde_json::from_str(text(raw)?).map_err(|e| e.to_string())?,
        ))),
        Kind::Uuid => Value::Uuid(Some(match raw {
            ValueRef::Blob(bytes) => Uuid::from_slice(bytes).map_err(|e| e.to_string())?,
            other => Uuid::parse_str(text(other)?).map_err(|e| e.to_string())?,
        })),
        Kind::Timestamp => Value::ChronoDateTimeUtc(Some(timestamp(text(raw)?)?)),
        Kind::Bytes => Value::Bytes(Some(raw.as_blob().map_err(|e| e.to_string())?.to_vec())),
    })
}

/// A computed column (a count, a maximum), by what it holds.
fn computed(raw: ValueRef<'_>) -> Value {
    match raw {
        ValueRef::Null => Value::BigInt(None),
        ValueRef::Integer(n) => Value::BigInt(Some(n)),
        ValueRef::Real(x) => Value::Double(Some(x)),
        ValueRef::Text(bytes) => Value::String(Some(String::from_utf8_lossy(bytes).into_owned())),
        ValueRef::Blob(bytes) => Value::Bytes(Some(bytes.to_vec())),
    }
}

/// A timestamp as sqlx writes it (RFC 3339), or as SQLite's own functions do.
fn timestamp(text: &str) -> Result<DateTime<Utc>, String> {
    if let Some(t) = utc_rfc3339(text) {
        return Ok(t);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    chrono::NaiveDateTime::parse_from_str(text, "%F %T%.f")
        .map(|t| t.and_utc())
        .map_err(|e| format!("`{text}` is not a timestamp: {e}"))
}

/// The common case, read without chrono's general parser (a tenth of reading a page of users):
/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+00:00)`, as written for UTC timestamps.
fn utc_rfc3339(text: &str) -> Option<DateTime<Utc>> {
    let bytes = text.as_bytes();
    let rest = text
        .strip_suffix("+00:00")
        .or_else(|| text.strip_suffix('Z'))?
        .as_bytes();
    if rest.len() < 19 || [4, 7, 10, 13, 16].map(|i| bytes[i]) != *b"--T::" {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        rest.get(range)?.iter().try_fold(0u32, |n, b| {
            b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
        })
    };
    let nanos = match rest.get(19..) {
        Some([]) => 0,
        Some([b'.', digits @ ..]) if (1..=9).contains(&digits.len()) => {
            number(20..rest.len())? * 10u32.pow(9 - digits.len() as u32)
        }
        _ => return None,
    };
    let date = chrono::NaiveDate::from_ymd_opt(
        i32::try_from(number(0..4)?).ok()?,
        number(5..7)?,
        number(8..10)?,
    )?;
    let time = chrono::NaiveTime::from_hms_nano_opt(
        number(11..13)?,
        number(14..16)?,
        number(17..19)?,
        nanos,
    )?;
    Some(date.and_time(time).and_utc())
}

/// A parameter as sqlx binds it for SQLite.
pub(super) fn bind(value: &Value) -> Result<Sql, String> {
    Ok(match value {
        Value::Bool(b) => b.map_or(Sql::Null, |b| Sql::Integer(i64::from(b))),
        Value::TinyInt(n) => n.map_or(Sql::Null, |n| Sql::Integer(n.into())),
        Value::SmallInt(n) => n.map_or(Sql::Null, |n| Sql::Integer(n.into())),
        Value::Int(n) => n.map_or(Sql::Null, |n| Sql::Integer(n.into())),
        Value::BigInt(n) => n.map_or(Sql::Null, Sql::Integer),
        Value::TinyUnsigned(n) => n.map_or(Sql::Null, |n| Sql::Integer(n.into())),
        Value::SmallUnsigned(n) => n.map_or(Sql::Null, |n| Sql::Integer(n.into())),
        Value::Unsigned(n) => n.map_or(Sql::Null, |n| Sql::Integer(n.into())),
        Value::BigUnsigned(n) => match n {
            None => Sql::Null,
            Some(n) => Sql::Integer(i64::try_from(*n).map_err(|e| e.to_string())?),
        },
        Value::Float(x) => x.map_or(Sql::Null, |x| Sql::Real(x.into())),
        Value::Double(x) => x.map_or(Sql::Null, Sql::Real),
        Value::String(s) => s.clone().map_or(Sql::Null, Sql::Text),
        Value::Char(c) => c.map_or(Sql::Null, |c| Sql::Text(c.to_string())),
        Value::Bytes(b) => b.clone().map_or(Sql::Null, Sql::Blob),
        Value::Json(j) => match j {
            None => Sql::Null,
            Some(j) => Sql::Text(serde_json::to_string(j).map_err(|e| e.to_string())?),
        },
        Value::Uuid(u) => u.map_or(Sql::Null, |u| Sql::Blob(u.as_bytes().to_vec())),
        Value::ChronoDateTimeUtc(t) => t.map_or(Sql::Null, |t| {
            Sql::Text(t.to_rfc3339_opts(SecondsFormat::AutoSi, false))
        }),
        other => return Err(format!("no SQLite binding for {other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tenant_column_is_in_the_catalogue() {
        assert_eq!(CATALOGUE.get(&("users", "id")), Some(&Kind::Uuid));
        assert_eq!(CATALOGUE.get(&("users", "attributes")), Some(&Kind::Json));
        assert_eq!(CATALOGUE.get(&("audit_events", "seq")), Some(&Kind::BigInt));
        assert_eq!(CATALOGUE.get(&("audit_events", "status")), Some(&Kind::Int));
        assert_eq!(CATALOGUE.get(&("audit_head", "id")), Some(&Kind::Int));
        assert_eq!(
            CATALOGUE.get(&("api_keys", "expires_at")),
            Some(&Kind::Timestamp)
        );
    }

    #[test]
    fn timestamps_are_written_as_sqlx_writes_them_and_read_back() {
        let t = DateTime::parse_from_rfc3339("2026-12-02T21:20:58.590550+00:00")
            .unwrap()
            .with_timezone(&Utc);
        let bound = bind(&Value::ChronoDateTimeUtc(Some(t))).unwrap();
        assert_eq!(
            bound,
            Sql::Text("2026-12-02T21:20:58.590550+00:00".to_owned())
        );
        assert_eq!(timestamp("2026-12-02T21:20:58.590550+00:00").unwrap(), t);
        for text in [
            "2026-12-02T21:20:58+00:00",
            "2026-12-02T21:20:58.5Z",
            "2026-12-02T21:20:58.590607909+00:00",
        ] {
            assert_eq!(
                utc_rfc3339(text),
                Some(
                    DateTime::parse_from_rfc3339(text)
                        .unwrap()
                        .with_timezone(&Utc)
                ),
                "{text}"
            );
        }
        for odd in [
            "2026-12-02T21:20:58+01:00",
            "2026-13-02T21:20:58Z",
            "2026-12-02 21:20:58Z",
            "2026-12-02T21:20:58.Z",
            "2026-12-02T21:20:58.1234567890Z",
        ] {
            assert_eq!(utc_rfc3339(odd), None, "{odd}");
        }
        assert_eq!(
            timestamp("2026-12-02 21:20:58.590550").unwrap(),
            t,
            "SQLite's own format"
        );
    }

    #[test]
    fn nulls_are_typed_by_their_column() {
        assert_eq!(
            decode(Kind::Uuid, ValueRef::Null).unwrap(),
            Value::Uuid(None)
        );
        assert_eq!(
            decode(Kind::Int, ValueRef::Integer(7)).unwrap(),
            Value::Int(Some(7))
        );
        assert!(decode(Kind::Int, ValueRef::Integer(i64::MAX)).is_err());
    }
}
