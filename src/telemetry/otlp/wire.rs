//! Spans and log records written straight into an export request's bytes (protobuf), field by
//! field, from the records as Flowgate holds them.
//!
//! Making `opentelemetry-proto`'s messages first cost an allocation for every attribute's key and
//! value, a copy of each log record's OCSF body into a `String`, and two more walks of every
//! attribute to measure it; the export threads spent a third of their work there (callgrind).
//! A span and a log record have few fields of their own, so they are written here in field
//! order, and each nested message's length is put in front of it once it is written.
//! Only the field numbers of `opentelemetry/proto/{common,trace,logs}/v1` are ours: the tests
//! decode what is written with prost and compare it with the message it stands for.

use opentelemetry::{KeyValue, Value};
use prost::Message as _;

/// Protobuf wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LENGTH_DELIMITED: u32 = 2;
const FIXED32: u32 = 5;

/// Appends `value` as a varint.
fn varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// How many bytes [`varint`] takes for `value`.
fn varint_len(value: u64) -> usize {
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

fn key(tag: u32, wire_type: u32, out: &mut Vec<u8>) {
    varint(u64::from((tag << 3) | wire_type), out);
}

/// Appends the key and length of length-delimited field `tag` holding `len` bytes (which the
/// caller appends next).
pub fn length_prefix(tag: u32, len: usize, out: &mut Vec<u8>) {
    key(tag, LENGTH_DELIMITED, out);
    varint(len as u64, out);
}

/// The bytes length-delimited field `tag` takes around `len` bytes: its key, its length, them.
pub fn framed_len(tag: u32, len: usize) -> usize {
    varint_len(u64::from((tag << 3) | LENGTH_DELIMITED)) + varint_len(len as u64) + len
}

/// Appends field `tag` holding the bytes `write` appends (a nested message or a string), its
/// length put in front once known: one byte is set aside for it, and the bytes written move
/// along when the length needs more.
pub fn delimited(tag: u32, out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    key(tag, LENGTH_DELIMITED, out);
    let at = out.len();
    out.push(0);
    write(out);
    let len = (out.len() - at - 1) as u64;
    let width = varint_len(len);
    if width > 1 {
        out.splice(at + 1..at + 1, std::iter::repeat_n(0, width - 1));
    }
    // The varint of `len`, in exactly the `width` bytes it takes.
    let mut rest = len;
    for byte in &mut out[at..at + width] {
        *byte = (rest as u8 & 0x7f) | 0x80;
        rest >>= 7;
    }
    out[at + width - 1] &= 0x7f;
}

/// Appends field `tag` holding `bytes`, even when empty (a member of a `oneof`).
fn bytes_always(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    length_prefix(tag, bytes.len(), out);
    out.extend_from_slice(bytes);
}

/// Appends field `tag` holding `bytes` (a string or bytes field), left out when empty.
pub fn bytes(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    if !bytes.is_empty() {
        bytes_always(tag, bytes, out);
    }
}

/// Appends field `tag` holding an unsigned integer or an enumeration, left out when zero.
pub fn unsigned(tag: u32, value: u64, out: &mut Vec<u8>) {
    if value != 0 {
        key(tag, VARINT, out);
        varint(value, out);
    }
}

/// Appends `fixed64` field `tag`, left out when zero.
pub fn fixed64(tag: u32, value: u64, out: &mut Vec<u8>) {
    if value != 0 {
        key(tag, FIXED64, out);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// Appends `fixed32` field `tag`, left out when zero.
pub fn fixed32(tag: u32, value: u32, out: &mut Vec<u8>) {
    if value != 0 {
        key(tag, FIXED32, out);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// An attribute's value, borrowed.
pub enum Attribute<'a> {
    Text(&'a str),
    Int(i64),
}

/// Appends one `KeyValue` as field `tag`.
pub fn attribute(tag: u32, name: &str, value: Attribute<'_>, out: &mut Vec<u8>) {
    delimited(tag, out, |pair| {
        bytes(1, name.as_bytes(), pair);
        // `AnyValue`, whose value is a `oneof`: written even when empty or zero.
        delimited(2, pair, |any| match value {
            Attribute::Text(text) => bytes_always(1, text.as_bytes(), any),
            Attribute::Int(int) => {
                key(3, VARINT, any);
                varint(int as u64, any);
            }
        });
    });
}

/// Appends `attributes` as the repeated `KeyValue` field `tag`.
pub fn attributes(tag: u32, attributes: &[KeyValue], out: &mut Vec<u8>) {
    for KeyValue {
        key: name, value, ..
    } in attributes
    {
        match value {
            Value::String(text) => {
                attribute(tag, name.as_str(), Attribute::Text(text.as_str()), out)
            }
            Value::I64(int) => attribute(tag, name.as_str(), Attribute::Int(*int), out),
            // Flowgate's spans carry none of these: prost writes them.
            other => delimited(tag, out, |pair| {
                bytes(1, name.as_str().as_bytes(), pair);
                let any = opentelemetry_proto::tonic::common::v1::AnyValue::from(other.clone());
                delimited(2, pair, |bytes| {
                    let _ = any.encode(bytes);
                });
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::Array;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue as ProtoKeyValue, any_value};
    use opentelemetry_proto::tonic::trace::v1::Span;

    #[test]
    fn varints_take_the_bytes_prost_says() {
        for value in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            varint(value, &mut out);
            assert_eq!(out.len(), varint_len(value), "{value}");
            assert_eq!(
                out.len(),
                prost::length_delimiter_len(value as usize),
                "{value}"
            );
            assert_eq!(
                prost::decode_length_delimiter(out.as_slice()).unwrap(),
                value as usize
            );
        }
    }

    /// Attributes of every kind, with names and values whose lengths need one, two and three
    /// length bytes, decode as the messages `opentelemetry-proto` makes of them.
    #[test]
    fn attributes_decode_as_the_messages_they_stand_for() {
        let attributes = vec![
            KeyValue::new("empty", ""),
            KeyValue::new("short", "acme"),
            KeyValue::new("long", "x".repeat(200)),
            KeyValue::new("longer", "y".repeat(20_000)),
            KeyValue::new("zero", 0_i64),
            KeyValue::new("negative", -5_i64),
            KeyValue::new("max", i64::MAX),
            KeyValue::new("yes", true),
            KeyValue::new("no", false),
            KeyValue::new("ratio", 0.5),
            KeyValue::new("list", Value::Array(Array::I64(vec![1, 2]))),
            KeyValue::new("", "nameless"),
        ];
        // A span holds only its attributes here: field 9.
        let mut out = Vec::new();
        super::attributes(9, &attributes, &mut out);
        let decoded = Span::decode(out.as_slice()).unwrap();
        let expected: Vec<ProtoKeyValue> =
            opentelemetry_proto::transform::common::tonic::Attributes::from(attributes).0;
        assert_eq!(decoded.attributes, expected);
        assert_eq!(
            decoded.attributes[4].value,
            Some(AnyValue {
                value: Some(any_value::Value::IntValue(0))
            }),
            "a zero in a oneof is still there"
        );
    }
}
