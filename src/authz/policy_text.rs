//! Policy text written by tenants: bounded before Cedar reads it, and analysed by its structure.
//!
//! Invariants:
//! - No text reaches Cedar's parser unless it is at most [`MAX_TEXT`] bytes and nests brackets
//!   at most [`MAX_NESTING`] deep, and the parse runs on a thread of its own whose stack is large
//!   enough for the longest such text.
//! - No parsed policy leaves that thread unless its expression tree is at most [`MAX_DEPTH`]
//!   deep. Cedar's parser, validator and evaluator recurse once per level of a policy; with
//!   these bounds no tenant's policy can overflow a request thread's stack and abort the process
//!   for every tenant.
//! - What a policy reads (claims, the request's context, the source address) is found by walking
//!   Cedar's own representation of it (its JSON form), never by searching its text, so no
//!   spelling Cedar accepts (`hasTag ("x")`, `context["source_ip"]`) hides a read.

use std::collections::BTreeSet;

use cedar_policy::{EntityId, EntityUid, Policy, PolicyId, PolicySet};
use serde_json::{Map, Value};

/// Longest policy text, in bytes.
pub const MAX_TEXT: usize = 8 * 1024;

/// Deepest nesting of `(`, `[` and `{` in a policy text.
pub const MAX_NESTING: usize = 32;

/// Deepest expression tree, counted in levels of Cedar's JSON form (an `a && b` is two levels
/// above its operands). About 30 nested operators; measured safe on a 2 MiB stack in a debug
/// build, the smallest a request runs on.
pub const MAX_DEPTH: usize = 64;

/// The stack of the parsing thread: enough for [`MAX_TEXT`] bytes of operators at
/// [`MAX_NESTING`], in a debug build, with room to spare. It is reserved, not touched.
const PARSER_STACK: usize = 64 * 1024 * 1024;

/// A policy that passed the bounds, with what its structure reads.
#[derive(Debug, Clone)]
pub struct ParsedPolicy {
    pub policy: Policy,
    pub reads: Reads,
}

/// What a policy's conditions read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reads {
    /// The request's context (`context`), in any way.
    pub context: bool,
    /// The attribute `source_ip` of the context.
    pub source_ip: bool,
    /// The claims (tags) read by name; `None` when one tag's name is computed.
    pub tags: Option<BTreeSet<String>>,
    /// Whether it reads any tag at all.
    pub any_tag: bool,
    /// The entities its conditions name (`resource in Flowgate::Folder::"…"`).
    pub entities: Vec<EntityUid>,
}

/// Parses `text` as the one static policy named `name`, within the bounds.
pub fn parse(name: &str, text: &str) -> Result<ParsedPolicy, String> {
    parse_all(&[(name.to_owned(), text.to_owned())])
        .pop()
        .unwrap_or_else(|| Err("the policy could not be parsed".to_owned()))
}

/// [`parse`] for each `(name, text)`, on one parsing thread.
pub fn parse_all(items: &[(String, String)]) -> Vec<Result<ParsedPolicy, String>> {
    let checked: Vec<Result<(&str, &str), String>> = items
        .iter()
        .map(|(name, text)| within_bounds(text).map(|()| (name.as_str(), text.as_str())))
        .collect();
    let parsed = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("policy-parser".to_owned())
            .stack_size(PARSER_STACK)
            .spawn_scoped(scope, || {
                checked
                    .iter()
                    .map(|item| {
                        let (name, text) = item.as_ref().map_err(Clone::clone)?;
                        parse_bounded(name, text)
                    })
                    .collect::<Vec<_>>()
            })
            .ok()
            .and_then(|handle| handle.join().ok())
    });
    parsed.unwrap_or_else(|| {
        items
            .iter()
            .map(|_| Err("the policy parser is unavailable".to_owned()))
            .collect()
    })
}

/// The checks a text passes before any parser sees it: its length and bracket nesting, counted
/// outside string literals and comments.
fn within_bounds(text: &str) -> Result<(), String> {
    if text.len() > MAX_TEXT {
        return Err(format!("a policy is at most {MAX_TEXT} bytes"));
    }
    let mut depth = 0usize;
    let mut bytes = text.bytes().peekable();
    while let Some(b) = bytes.next() {
        match b {
            b'"' => {
                // A string literal: skip to its closing quote, over escapes.
                while let Some(c) = bytes.next() {
                    match c {
                        b'\\' => {
                            bytes.next();
                        }
                        b'"' => break,
                        _ => {}
                    }
                }
            }
            b'/' if bytes.peek() == Some(&b'/') => {
                for c in bytes.by_ref() {
                    if c == b'\n' {
                        break;
                    }
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(format!(
                        "brackets nest at most {MAX_NESTING} deep in a policy"
                    ));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Parses a text that passed [`within_bounds`] and measures it; runs on the parsing thread,
/// where a policy that is too deep is also dropped.
fn parse_bounded(name: &str, text: &str) -> Result<ParsedPolicy, String> {
    let set: PolicySet = text
        .parse()
        .map_err(|e: cedar_policy::ParseErrors| e.to_string())?;
    if set.templates().next().is_some() {
        return Err(
            "a policy cannot have slots (?principal, ?resource); roles are the templates".into(),
        );
    }
    let mut policies = set.policies();
    let (Some(policy), None) = (policies.next(), policies.next()) else {
        return Err("the text must hold exactly one permit or forbid".into());
    };
    let json = policy.to_json().map_err(|e| e.to_string())?;
    if depth(&json) > MAX_DEPTH {
        return Err(format!(
            "expressions nest at most {} operators deep in a policy",
            MAX_DEPTH / 2
        ));
    }
    Ok(ParsedPolicy {
        policy: policy.new_id(PolicyId::new(format!("policy:{name}"))),
        reads: reads(&json),
    })
}

/// How deep `value` nests, counted without recursion.
pub fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(value, 1)];
    while let Some((value, level)) = pending.pop() {
        deepest = deepest.max(level);
        match value {
            Value::Array(items) => pending.extend(items.iter().map(|v| (v, level + 1))),
            Value::Object(map) => pending.extend(map.values().map(|v| (v, level + 1))),
            _ => {}
        }
    }
    deepest
}

/// Every JSON object in `value`, visited without recursion.
fn objects(value: &Value) -> impl Iterator<Item = &Map<String, Value>> {
    let mut pending = vec![value];
    std::iter::from_fn(move || {
        while let Some(value) = pending.pop() {
            match value {
                Value::Array(items) => pending.extend(items),
                Value::Object(map) => {
                    pending.extend(map.values());
                    return Some(map);
                }
                _ => {}
            }
        }
        None
    })
}

/// Whether `node` is the variable `name` (`{"Var": "context"}`).
fn is_var(node: &Map<String, Value>, name: &str) -> bool {
    node.get("Var").and_then(Value::as_str) == Some(name)
}

/// What the conditions of a policy's JSON form read.
fn reads(json: &Value) -> Reads {
    let mut reads = Reads {
        tags: Some(BTreeSet::new()),
        ..Reads::default()
    };
    let Some(conditions) = json.get("conditions") else {
        return reads;
    };
    for node in objects(conditions) {
        if is_var(node, "context") {
            reads.context = true;
        }
        for access in [".", "has"] {
            if let Some(Value::Object(inner)) = node.get(access)
                && inner
                    .get("left")
                    .and_then(Value::as_object)
                    .is_some_and(|left| is_var(left, "context"))
                && inner.get("attr").and_then(Value::as_str) == Some("source_ip")
            {
                reads.source_ip = true;
            }
        }
        if let Some(Value::Object(entity)) = node.get("__entity")
            && let (Some(Value::String(kind)), Some(Value::String(id))) =
                (entity.get("type"), entity.get("id"))
            && let Ok(kind) = kind.parse()
        {
            reads
                .entities
                .push(EntityUid::from_type_name_and_id(kind, EntityId::new(id)));
        }
        for tag in ["hasTag", "getTag"] {
            let Some(Value::Object(call)) = node.get(tag) else {
                continue;
            };
            reads.any_tag = true;
            let literal = call
                .get("right")
                .and_then(|r| r.get("Value"))
                .and_then(Value::as_str);
            match (literal, reads.tags.as_mut()) {
                (Some(name), Some(names)) => {
                    names.insert(name.to_owned());
                }
                (None, _) => reads.tags = None,
                (Some(_), None) => {}
            }
        }
    }
    reads
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads_of(condition: &str) -> Reads {
        parse(
            "p",
            &format!("permit(principal, action, resource) when {{ {condition} }};"),
        )
        .unwrap()
        .reads
    }

    #[test]
    fn claims_are_found_however_they_are_spelled() {
        let both = reads_of(r#"principal.hasTag ("dept") && principal.getTag(  "region") == "US""#);
        assert_eq!(
            both.tags,
            Some(["dept".to_owned(), "region".to_owned()].into())
        );
        assert!(both.any_tag && !both.context);
        let computed = reads_of(r#"principal.hasTag(context.key)"#);
        assert_eq!(computed.tags, None);
        assert!(computed.context);
        let none = reads_of("true");
        assert!(!none.any_tag && !none.context && !none.source_ip);
        // A tag named in a string elsewhere is not a read.
        let text = reads_of(r#""principal.hasTag(\"x\")" == "y""#);
        assert!(!text.any_tag);
    }

    #[test]
    fn entities_named_in_conditions_are_found() {
        let reads =
            reads_of(r#"resource in Flowgate::Folder::"g" || resource == Flowgate::Process::"p""#);
        let mut named: Vec<String> = reads.entities.iter().map(ToString::to_string).collect();
        named.sort();
        assert_eq!(
            named,
            [r#"Flowgate::Folder::"g""#, r#"Flowgate::Process::"p""#]
        );
    }

    #[test]
    fn the_source_address_is_found_by_attribute_and_by_index() {
        assert!(reads_of(r#"context.source_ip.isInRange(ip("10.0.0.0/8"))"#).source_ip);
        assert!(reads_of(r#"context["source_ip"].isInRange(ip("10.0.0.0/8"))"#).source_ip);
        assert!(reads_of(r#"context has source_ip"#).source_ip);
        let other = reads_of(r#"context.environment == "prod""#);
        assert!(other.context && !other.source_ip);
    }

    #[test]
    fn deep_and_long_texts_are_refused_before_or_after_parsing_without_a_crash() {
        let nested = format!("{}true{}", "(".repeat(400), ")".repeat(400));
        let chain = vec!["true"; 1500].join(" && ");
        let long = format!("\"{}\" == \"\"", "x".repeat(MAX_TEXT));
        for condition in [nested, chain, long] {
            let text = format!("permit(principal, action, resource) when {{ {condition} }};");
            assert!(parse("p", &text).is_err(), "{}", &text[..60]);
        }
        let brackets_in_strings = format!("\"{}\" == \"\"", "(".repeat(400));
        assert!(
            parse(
                "p",
                &format!("permit(principal, action, resource) when {{ {brackets_in_strings} }};")
            )
            .is_ok()
        );
    }

    /// The deepest policy the bounds let through is safe to parse, validate and evaluate on a
    /// thread with the smallest stack a request runs on.
    #[test]
    fn the_deepest_accepted_policy_is_safe_on_a_small_stack() {
        let mut condition = "principal.hasTag(\"x\")".to_owned();
        loop {
            let next = format!("{condition} && true");
            let text = format!("permit(principal, action, resource) when {{ {next} }};");
            if parse("p", &text).is_err() {
                break;
            }
            condition = next;
        }
        let text = format!("permit(principal, action, resource) when {{ {condition} }};");
        let parsed = parse("deepest", &text).unwrap();
        std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || {
                let reparsed: PolicySet = parsed.policy.to_string().parse().unwrap();
                let request = cedar_policy::Request::new(
                    r#"User::"u""#.parse().unwrap(),
                    r#"Action::"a""#.parse().unwrap(),
                    r#"Folder::"f""#.parse().unwrap(),
                    cedar_policy::Context::empty(),
                    None,
                )
                .unwrap();
                let answer = cedar_policy::Authorizer::new().is_authorized(
                    &request,
                    &reparsed,
                    &cedar_policy::Entities::empty(),
                );
                assert_eq!(answer.decision(), cedar_policy::Decision::Deny);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
