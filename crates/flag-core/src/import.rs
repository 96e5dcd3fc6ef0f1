//! Importing a whole environment document (flags and segments) as one change: what it would
//! create, update, delete and leave unchanged, and whether the environment it leaves keeps every
//! reference rule.
//!
//! [`plan_import`] is the one decision every repository takes inside its import transaction, so
//! stores cannot differ on what an import means. Decisions:
//! - A flag or segment is `unchanged` when its definition equals the stored one, server-set
//!   fields (`key`, `version`, `updatedAt`) aside; an unchanged item is not written (its version
//!   stays) and gets no audit entry.
//! - `merge` adds and replaces what the document holds; `replace` also deletes what it does not.
//! - The environment the import would leave is checked as a whole: every flag written must keep
//!   the reference rules against it (segments and prerequisites that exist there, no cycle, no
//!   chain deeper than 8), and nothing deleted may still be referred to. Every problem is
//!   answered, each with its path in the document (`flags[2].rules[0].conditions[1].value`).
//! - An import that changes nothing writes nothing and bumps no revision.
//! - An import that would leave more than `max_flags` flags is refused with a problem at
//!   `flags`, as every other problem of the document is (not as a separate limit error): the
//!   document is what must change.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::flag::FeatureFlag;
use crate::flagd::{is_flagd_document, read_flagd_document};
use crate::names::{FlagKey, SegmentKey};
use crate::references::References;
use crate::segment::Segment;
use crate::snapshot::Revision;

/// Whether an import also deletes what its document does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImportMode {
    /// Add and replace what the document holds; leave the rest.
    #[default]
    Merge,
    /// Also delete every flag and segment the document does not hold.
    Replace,
}

/// An import, as a repository receives it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImportRequest {
    /// The flags of the document, in document order.
    pub flags: Vec<FeatureFlag>,
    /// The segments of the document, in document order.
    pub segments: Vec<Segment>,
    /// Merge or replace.
    pub mode: ImportMode,
    /// Import only if the environment is at this revision (HTTP `If-Match`).
    pub expected_revision: Option<Revision>,
    /// Decide and answer the diff, change nothing.
    pub dry_run: bool,
    /// The most flags the environment may hold afterwards (`None`: no bound).
    pub max_flags: Option<usize>,
}

/// What happens to the keys of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyChanges {
    /// Keys that did not exist.
    pub created: Vec<String>,
    /// Keys whose definition changes.
    pub updated: Vec<String>,
    /// Keys deleted (`replace` only).
    pub deleted: Vec<String>,
    /// Keys whose definition is already the document's.
    pub unchanged: Vec<String>,
}

impl KeyChanges {
    /// Whether anything is created, updated or deleted.
    pub fn changes_anything(&self) -> bool {
        !(self.created.is_empty() && self.updated.is_empty() && self.deleted.is_empty())
    }
}

/// What an import does to flags and to segments.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImportDiff {
    /// The flags.
    pub flags: KeyChanges,
    /// The segments.
    pub segments: KeyChanges,
}

impl ImportDiff {
    /// Whether the import changes anything.
    pub fn changes_anything(&self) -> bool {
        self.flags.changes_anything() || self.segments.changes_anything()
    }
}

/// One reason a document cannot be imported, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImportProblem {
    /// The path in the document (`flags[2].rules[0].conditions[1].value`), or `flags` /
    /// `segments` for an item the import would delete.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl ImportProblem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// What an import writes and deletes, decided against the stored environment.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportPlan {
    /// Flags to write (created or updated), without their new version.
    pub flag_writes: Vec<FeatureFlag>,
    /// Flags to delete.
    pub flag_deletes: Vec<FlagKey>,
    /// Segments to write (created or updated).
    pub segment_writes: Vec<Segment>,
    /// Segments to delete.
    pub segment_deletes: Vec<SegmentKey>,
    /// The keys by what happens to them.
    pub diff: ImportDiff,
    /// How many flags the environment holds afterwards.
    pub flag_count: usize,
}

/// A successful import (or dry run).
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// The keys by what happened to them (or would happen, for a dry run).
    pub diff: ImportDiff,
    /// The environment's revision afterwards (unchanged by a dry run, or an import that changes
    /// nothing).
    pub revision: Revision,
    /// Whether anything was written.
    pub applied: bool,
}

/// The flags and segments a document holds, each parsed as a PUT body would be.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DocumentContents {
    /// The flags, in document order.
    pub flags: Vec<FeatureFlag>,
    /// The segments, in document order.
    pub segments: Vec<Segment>,
    /// Where each of `flags` sits in the document's `flags` (items that could not be read are
    /// left out of `flags`, so the two orders differ once one is).
    pub flag_positions: Vec<usize>,
    /// Where each of `segments` sits in the document's `segments`.
    pub segment_positions: Vec<usize>,
}

impl DocumentContents {
    /// A dry run of importing exactly these contents (`replace`): what [`plan_import`] decides
    /// of an environment that would hold them and nothing else.
    pub fn as_replacement(&self) -> ImportRequest {
        ImportRequest {
            flags: self.flags.clone(),
            segments: self.segments.clone(),
            mode: ImportMode::Replace,
            dry_run: true,
            ..ImportRequest::default()
        }
    }

    /// `problem`, found in these contents (`flags[i]...` counting only the items read), with
    /// its path in the document.
    pub fn locate(&self, mut problem: ImportProblem) -> ImportProblem {
        for (list, positions) in [
            ("flags", &self.flag_positions),
            ("segments", &self.segment_positions),
        ] {
            let Some(rest) = problem
                .path
                .strip_prefix(list)
                .and_then(|rest| rest.strip_prefix('['))
            else {
                continue;
            };
            let Some((index, tail)) = rest.split_once(']') else {
                continue;
            };
            if let Some(position) = index
                .parse::<usize>()
                .ok()
                .and_then(|index| positions.get(index))
            {
                problem.path = format!("{list}[{position}]{tail}");
            }
        }
        problem
    }
}

/// Reads an environment document (`{"environment", "revision", "flags": [...], "segments":
/// [...]}`, as exported; `environment` and `revision` are informational and ignored) into the
/// flags and segments that could be read, and every problem, each with its path. Each flag and
/// segment is an object with its `key`, read as a PUT body (server-set fields ignored, unknown
/// fields refused). What could be read is answered beside the problems, so that a caller can
/// also find the problems of those items (their references) and answer every problem at once.
pub fn read_document(document: &serde_json::Value) -> (DocumentContents, Vec<ImportProblem>) {
    let mut problems = Vec::new();
    let Some(members) = document.as_object() else {
        let problem = ImportProblem::new(
            "$",
            "a document is an object: {\"flags\": [...], \"segments\": [...]}",
        );
        return (DocumentContents::default(), vec![problem]);
    };
    if is_flagd_document(document) {
        return read_flagd_document(members);
    }
    for (name, value) in members {
        let fits = match name.as_str() {
            "environment" => value.is_string() || value.is_null(),
            // As stored: a whole number from 0 up to i64's largest.
            "revision" => value.as_i64().is_some_and(|revision| revision >= 0) || value.is_null(),
            "flags" | "segments" => true,
            _ => {
                problems.push(ImportProblem::new(
                    name.clone(),
                    "unknown field (a document has environment, revision, flags and segments)",
                ));
                true
            }
        };
        if !fits {
            problems.push(ImportProblem::new(
                name.clone(),
                format!("{name} is informational, but must be a string (environment) or a whole number (revision) when given"),
            ));
        }
    }
    let list = |name: &str, problems: &mut Vec<ImportProblem>| -> Vec<serde_json::Value> {
        match members.get(name) {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(items)) => items.clone(),
            Some(_) => {
                problems.push(ImportProblem::new(name, format!("{name} must be an array")));
                Vec::new()
            }
        }
    };
    let mut contents = DocumentContents::default();
    for (index, item) in list("flags", &mut problems).iter().enumerate() {
        match item
            .get("key")
            .and_then(serde_json::Value::as_str)
            .map(FlagKey::parse)
        {
            None => problems.push(ImportProblem::new(
                format!("flags[{index}].key"),
                "every flag needs its key",
            )),
            Some(Err(error)) => problems.push(ImportProblem::new(
                format!("flags[{index}].key"),
                error.to_string(),
            )),
            Some(Ok(key)) => match FeatureFlag::from_definition_json(&key, &item.to_string()) {
                Ok(flag) => {
                    contents.flags.push(flag);
                    contents.flag_positions.push(index);
                }
                Err(error) => problems.push(ImportProblem::new(
                    path_within(&format!("flags[{index}]"), error.field()),
                    error.to_string(),
                )),
            },
        }
    }
    for (index, item) in list("segments", &mut problems).iter().enumerate() {
        match item
            .get("key")
            .and_then(serde_json::Value::as_str)
            .map(SegmentKey::parse)
        {
            None => problems.push(ImportProblem::new(
                format!("segments[{index}].key"),
                "every segment needs its key",
            )),
            Some(Err(error)) => problems.push(ImportProblem::new(
                format!("segments[{index}].key"),
                error.to_string(),
            )),
            Some(Ok(key)) => match Segment::from_definition_json(&key, &item.to_string()) {
                Ok(segment) => {
                    contents.segments.push(segment);
                    contents.segment_positions.push(index);
                }
                Err(error) => problems.push(ImportProblem::new(
                    path_within(&format!("segments[{index}]"), error.field()),
                    error.to_string(),
                )),
            },
        }
    }
    (contents, problems)
}

/// Reads a document that is a whole environment by itself (a flags file): what
/// [`read_document`] reads, and every reference kept within the document (segments and
/// prerequisites it holds, no cycle), or every problem with its path.
pub fn read_environment(
    document: &serde_json::Value,
) -> Result<DocumentContents, Vec<ImportProblem>> {
    let (contents, mut problems) = read_document(document);
    if let Err(more) = plan_import(&[], &[], &contents.as_replacement()) {
        problems.extend(more.into_iter().map(|problem| contents.locate(problem)));
    }
    if problems.is_empty() {
        Ok(contents)
    } else {
        Err(problems)
    }
}

/// The path of `field` (a definition's own path, `$` for the whole) inside the item at `item`:
/// `path_within("flags[2]", "rules[0]")` is `flags[2].rules[0]`.
pub fn path_within(item: &str, field: &str) -> String {
    match field {
        "" | "$" => item.to_owned(),
        field => format!("{item}.{}", field.trim_start_matches("$.")),
    }
}

/// A definition as compared for `unchanged`: its JSON without the server-set fields.
fn comparable<T: Serialize>(definition: &T) -> Option<serde_json::Value> {
    let mut value = serde_json::to_value(definition).ok()?;
    if let Some(object) = value.as_object_mut() {
        for field in ["key", "version", "updatedAt"] {
            object.remove(field);
        }
    }
    Some(value)
}

fn same<T: Serialize>(stored: &T, written: &T) -> bool {
    match (comparable(stored), comparable(written)) {
        (Some(stored), Some(written)) => stored == written,
        _ => false,
    }
}

/// Decides what importing `request` into an environment holding `flags` and `segments` does,
/// or every problem that forbids it.
pub fn plan_import(
    flags: &[FeatureFlag],
    segments: &[Segment],
    request: &ImportRequest,
) -> Result<ImportPlan, Vec<ImportProblem>> {
    let mut problems = Vec::new();
    let stored_flags: BTreeMap<&FlagKey, &FeatureFlag> =
        flags.iter().map(|flag| (flag.key(), flag)).collect();
    let stored_segments: BTreeMap<&SegmentKey, &Segment> = segments
        .iter()
        .map(|segment| (segment.key(), segment))
        .collect();
    let mut diff = ImportDiff::default();
    let mut plan_flags = Vec::new();
    let mut seen_flags = BTreeSet::new();
    for (index, flag) in request.flags.iter().enumerate() {
        if !seen_flags.insert(flag.key()) {
            problems.push(ImportProblem::new(
                format!("flags[{index}].key"),
                format!("flag {} is given twice", flag.key()),
            ));
            continue;
        }
        let key = flag.key().to_string();
        match stored_flags.get(flag.key()) {
            None => diff.flags.created.push(key),
            Some(stored) if stored.unreadable_reason().is_none() && same(*stored, flag) => {
                diff.flags.unchanged.push(key);
                continue;
            }
            Some(_) => diff.flags.updated.push(key),
        }
        plan_flags.push(flag.clone());
    }
    let mut plan_segments = Vec::new();
    let mut seen_segments = BTreeSet::new();
    for (index, segment) in request.segments.iter().enumerate() {
        if !seen_segments.insert(segment.key()) {
            problems.push(ImportProblem::new(
                format!("segments[{index}].key"),
                format!("segment {} is given twice", segment.key()),
            ));
            continue;
        }
        let key = segment.key().to_string();
        match stored_segments.get(segment.key()) {
            None => diff.segments.created.push(key),
            Some(stored) if stored.unreadable_reason().is_none() && same(*stored, segment) => {
                diff.segments.unchanged.push(key);
                continue;
            }
            Some(_) => diff.segments.updated.push(key),
        }
        plan_segments.push(segment.clone());
    }
    let (flag_deletes, segment_deletes) = match request.mode {
        ImportMode::Merge => (Vec::new(), Vec::new()),
        ImportMode::Replace => (
            flags
                .iter()
                .map(FeatureFlag::key)
                .filter(|key| !seen_flags.contains(key))
                .cloned()
                .collect::<Vec<_>>(),
            segments
                .iter()
                .map(Segment::key)
                .filter(|key| !seen_segments.contains(key))
                .cloned()
                .collect::<Vec<_>>(),
        ),
    };
    diff.flags.deleted = flag_deletes.iter().map(ToString::to_string).collect();
    diff.segments.deleted = segment_deletes.iter().map(ToString::to_string).collect();

    // The environment as the import leaves it, checked as a whole.
    let mut after = References::new();
    let mut flag_count = 0;
    for flag in flags
        .iter()
        .filter(|flag| !seen_flags.contains(flag.key()) && !flag_deletes.contains(flag.key()))
        .chain(request.flags.iter())
    {
        after.add_flag(flag);
        flag_count += 1;
    }
    for key in segments
        .iter()
        .map(Segment::key)
        .filter(|key| !seen_segments.contains(key) && !segment_deletes.contains(key))
        .chain(request.segments.iter().map(Segment::key))
    {
        after.add_segment(key.clone());
    }
    for (index, flag) in request.flags.iter().enumerate() {
        if let Err(refused) = after.check_flag_write(flag) {
            let field = refused.field().unwrap_or("prerequisites");
            problems.push(ImportProblem::new(
                format!("flags[{index}].{field}"),
                refused.to_string(),
            ));
        }
    }
    for key in &flag_deletes {
        if let Err(refused) = after.check_flag_delete(key) {
            problems.push(ImportProblem::new(
                "flags",
                format!("replacing would delete flag {key}, which the document's flags still use: {refused}"),
            ));
        }
    }
    for key in &segment_deletes {
        if let Err(refused) = after.check_segment_delete(key) {
            problems.push(ImportProblem::new(
                "segments",
                format!("replacing would delete segment {key}, which the document's flags still use: {refused}"),
            ));
        }
    }
    if let Some(limit) = request.max_flags
        && flag_count > limit
    {
        problems.push(ImportProblem::new(
            "flags",
            format!("the environment would hold {flag_count} flags; at most {limit} are allowed (FLAG_MAX_FLAGS)"),
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(ImportPlan {
        flag_writes: plan_flags,
        flag_deletes,
        segment_writes: plan_segments,
        segment_deletes,
        diff,
        flag_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn problems_of_the_items_read_are_located_in_the_document() {
        let document = json!({"flags": [{"enabled": true}, {"key": "b"}, {"key": "__c"}, {"key": "d"}],
                              "segments": [{"key": "s"}]});
        let (contents, problems) = read_document(&document);
        assert_eq!(contents.flag_positions, [1, 3]);
        assert_eq!(
            problems
                .iter()
                .map(|problem| problem.path.as_str())
                .collect::<Vec<_>>(),
            ["flags[0].key", "flags[2].key"]
        );
        let located = contents.locate(ImportProblem::new("flags[1].prerequisites[0].flag", "x"));
        assert_eq!(located.path, "flags[3].prerequisites[0].flag");
        let segment = contents.locate(ImportProblem::new("segments[0].rules", "x"));
        assert_eq!(segment.path, "segments[0].rules");
        let elsewhere = contents.locate(ImportProblem::new("flags", "x"));
        assert_eq!(elsewhere.path, "flags");
    }

    #[test]
    fn a_plan_leaves_unchanged_what_already_is() {
        let key = FlagKey::parse("a").unwrap();
        let stored = FeatureFlag::from_definition_json(&key, r#"{"enabled": true}"#)
            .unwrap()
            .stored_as(3, time::OffsetDateTime::UNIX_EPOCH);
        let same = FeatureFlag::from_definition_json(&key, r#"{"enabled": true}"#).unwrap();
        let request = ImportRequest {
            flags: vec![same],
            ..ImportRequest::default()
        };
        let plan = plan_import(&[stored], &[], &request).unwrap();
        assert_eq!(plan.diff.flags.unchanged, ["a"]);
        assert!(plan.flag_writes.is_empty() && !plan.diff.changes_anything());
        let full = ImportRequest {
            max_flags: Some(0),
            ..request
        };
        let refused = plan_import(&[], &[], &full).unwrap_err();
        assert_eq!(refused[0].path, "flags");
    }
}
