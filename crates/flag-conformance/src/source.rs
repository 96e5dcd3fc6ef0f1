//! Properties of what a repository serves, whatever puts it there: its own writes (an import per
//! environment) or a source it reads and cannot write (a flags file). Every repository passes
//! these; a read-only one passes them and [`writes_are_refused`], and no property that writes.
//!
//! A repository declares how its contents get in with a [`Source`]: [`ImportSource`] for one
//! that takes writes, and for a read-only one, its own (for a file: write the file, reload).

use std::collections::BTreeSet;
use std::sync::Arc;

use flag_core::{
    Actor, AuditQuery, Environment, EnvironmentSnapshot, FeatureFlag, FlagKey, ImportMode,
    ImportRequest, Precondition, RepositoryError, Revision, Segment, SegmentKey, async_trait,
};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::Violation;
use crate::repository::SharedRepository;

/// One environment's contents, as a source holds them.
#[derive(Debug, Clone)]
pub struct EnvironmentContents {
    /// The environment.
    pub environment: Environment,
    /// Its flags.
    pub flags: Vec<FeatureFlag>,
    /// Its segments.
    pub segments: Vec<Segment>,
}

/// Where a repository's contents come from, as the suite changes them.
#[async_trait]
pub trait Source: Send + Sync {
    /// Makes the repository serve exactly `environments` (any other it served before is
    /// emptied), returning once it does; `Err` says why it could not.
    async fn serve(&self, environments: &[EnvironmentContents]) -> Result<(), String>;
}

/// The source of a repository that takes writes: each environment imported in `replace` mode,
/// and one served before but no longer given, emptied the same way.
pub struct ImportSource {
    repository: SharedRepository,
    served: Mutex<BTreeSet<Environment>>,
}

impl ImportSource {
    /// The source of `repository`.
    pub fn new(repository: SharedRepository) -> Self {
        Self {
            repository,
            served: Mutex::new(BTreeSet::new()),
        }
    }
}

#[async_trait]
impl Source for ImportSource {
    async fn serve(&self, environments: &[EnvironmentContents]) -> Result<(), String> {
        let mut served = self.served.lock().await;
        let given: BTreeSet<Environment> = environments
            .iter()
            .map(|contents| contents.environment.clone())
            .collect();
        let emptied = served
            .difference(&given)
            .cloned()
            .map(|environment| EnvironmentContents {
                environment,
                flags: Vec::new(),
                segments: Vec::new(),
            });
        let all: Vec<EnvironmentContents> = environments.iter().cloned().chain(emptied).collect();
        for contents in all {
            let request = ImportRequest {
                flags: contents.flags,
                segments: contents.segments,
                mode: ImportMode::Replace,
                ..ImportRequest::default()
            };
            self.repository
                .import(&contents.environment, request, &Actor::system())
                .await
                .map_err(|error| format!("import into {}: {error}", contents.environment))?;
        }
        *served = given;
        Ok(())
    }
}

/// A shared source.
pub type SharedSource = Arc<dyn Source>;

fn env(name: &str) -> Environment {
    Environment::parse(name).unwrap_or_else(|error| panic!("suite environment {name:?}: {error}"))
}

fn flag(name: &str, body: Value) -> FeatureFlag {
    let key = FlagKey::parse(name).unwrap_or_else(|error| panic!("suite key {name:?}: {error}"));
    FeatureFlag::from_definition_json(&key, &body.to_string())
        .unwrap_or_else(|error| panic!("suite flag {name}: {error}"))
}

fn segment(name: &str, body: Value) -> Segment {
    let key =
        SegmentKey::parse(name).unwrap_or_else(|error| panic!("suite segment {name:?}: {error}"));
    Segment::from_definition_json(&key, &body.to_string())
        .unwrap_or_else(|error| panic!("suite segment {name}: {error}"))
}

fn contents(
    environment: &str,
    flags: Vec<FeatureFlag>,
    segments: Vec<Segment>,
) -> EnvironmentContents {
    EnvironmentContents {
        environment: env(environment),
        flags,
        segments,
    }
}

fn check(
    property: &'static str,
    holds: bool,
    what: impl FnOnce() -> String,
) -> Result<(), Violation> {
    if holds {
        Ok(())
    } else {
        Err(Violation::new(property, what()))
    }
}

async fn serve(
    property: &'static str,
    source: &SharedSource,
    environments: &[EnvironmentContents],
) -> Result<(), Violation> {
    source
        .serve(environments)
        .await
        .map_err(|error| Violation::new(property, format!("the source could not serve: {error}")))
}

async fn snapshot(
    property: &'static str,
    repository: &SharedRepository,
    environment: &Environment,
) -> Result<EnvironmentSnapshot, Violation> {
    repository
        .snapshot(environment)
        .await
        .map_err(|error| Violation::new(property, format!("snapshot of {environment}: {error}")))
}

/// The definitions of a snapshot's flags and segments, server-set fields aside, by key.
fn definitions(snapshot: &EnvironmentSnapshot) -> (Vec<Value>, Vec<Value>) {
    let strip = |mut value: Value| {
        if let Some(fields) = value.as_object_mut() {
            fields.remove("version");
            fields.remove("updatedAt");
        }
        value
    };
    let mut flags: Vec<Value> = snapshot
        .flags()
        .filter_map(|flag| serde_json::to_value(&**flag).ok().map(strip))
        .collect();
    flags.sort_by_key(|value| value["key"].to_string());
    let mut segments: Vec<Value> = snapshot
        .segments()
        .filter_map(|segment| serde_json::to_value(&**segment).ok().map(strip))
        .collect();
    segments.sort_by_key(|value| value["key"].to_string());
    (flags, segments)
}

fn given_definitions(contents: &EnvironmentContents) -> (Vec<Value>, Vec<Value>) {
    let as_snapshot = EnvironmentSnapshot::new(Revision::default(), contents.flags.clone())
        .ok()
        .and_then(|snapshot| snapshot.with_segments(contents.segments.clone()).ok())
        .unwrap_or_else(|| EnvironmentSnapshot::empty(Revision::default()));
    definitions(&as_snapshot)
}

/// The environments of the first two properties.
fn sample() -> Vec<EnvironmentContents> {
    vec![
        contents(
            "source-staging",
            vec![
                flag(
                    "checkout",
                    json!({"enabled": true, "variants": {"on": true, "off": false},
                           "defaultVariant": "off", "offVariant": "off",
                           "rules": [{"conditions": [{"operator": "in_segment", "value": "beta"}], "variant": "on"}],
                           "rollout": [{"variant": "on", "weight": 1}, {"variant": "off", "weight": 3}]}),
                ),
                flag(
                    "Unicode.Key-9",
                    json!({"enabled": false, "description": "ünïcödé ✓",
                           "variants": {"a": {"nested": [1, 2.5, "three"]}, "b": "x".repeat(4096)},
                           "defaultVariant": "a", "offVariant": "b"}),
                ),
                flag(
                    "gated",
                    json!({"enabled": true, "prerequisites": [{"flag": "checkout", "variants": ["on"]}]}),
                ),
            ],
            vec![segment(
                "beta",
                json!({"included": ["u1", "u2"], "rules": [{"conditions": [
                {"attribute": "plan", "operator": "in", "value": ["pro"]}]}]}),
            )],
        ),
        contents(
            "source-production",
            vec![flag("checkout", json!({"enabled": false}))],
            Vec::new(),
        ),
    ]
}

/// The repository serves exactly what its source holds: every flag and segment, by snapshot
/// and one at a time, each environment on its own (look-alike names included) and listed with
/// its revision and flag count; an environment the source does not hold is empty at revision 0.
pub async fn serves_what_its_source_holds(
    repository: &SharedRepository,
    source: &SharedSource,
) -> Result<(), Violation> {
    const P: &str = "serves_what_its_source_holds";
    let given = sample();
    serve(P, source, &given).await?;
    let listed = repository
        .environments()
        .await
        .map_err(|error| Violation::new(P, format!("environments: {error}")))?;
    for contents in &given {
        let served = snapshot(P, repository, &contents.environment).await?;
        let (flags, segments) = definitions(&served);
        let (want_flags, want_segments) = given_definitions(contents);
        check(P, flags == want_flags, || {
            format!(
                "{}: flags served {flags:?}, the source holds {want_flags:?}",
                contents.environment
            )
        })?;
        check(P, segments == want_segments, || {
            format!(
                "{}: segments served {segments:?}, the source holds {want_segments:?}",
                contents.environment
            )
        })?;
        for flag in &contents.flags {
            let one = repository
                .flag(&contents.environment, flag.key())
                .await
                .map_err(|error| Violation::new(P, format!("flag {}: {error}", flag.key())))?;
            check(
                P,
                one.as_ref().map(FeatureFlag::version)
                    == served.flag(flag.key().as_str()).map(|f| f.version()),
                || {
                    format!(
                        "{}: flag {} alone disagrees with the snapshot",
                        contents.environment,
                        flag.key()
                    )
                },
            )?;
        }
        for segment in &contents.segments {
            let one = repository
                .segment(&contents.environment, segment.key())
                .await
                .map_err(|error| {
                    Violation::new(P, format!("segment {}: {error}", segment.key()))
                })?;
            check(P, one.is_some(), || {
                format!(
                    "{}: segment {} is in the snapshot but not served alone",
                    contents.environment,
                    segment.key()
                )
            })?;
        }
        let revision = repository
            .revision(&contents.environment)
            .await
            .map_err(|error| Violation::new(P, format!("revision: {error}")))?;
        let count = repository
            .flag_count(&contents.environment)
            .await
            .map_err(|error| Violation::new(P, format!("flag_count: {error}")))?;
        check(
            P,
            revision == served.revision() && revision > Revision::default(),
            || {
                format!(
                    "{}: revision {revision:?}, snapshot at {:?}",
                    contents.environment,
                    served.revision()
                )
            },
        )?;
        check(P, count == contents.flags.len() as u64, || {
            format!(
                "{}: flag_count {count}, {} flags",
                contents.environment,
                contents.flags.len()
            )
        })?;
        let summary = listed
            .iter()
            .find(|summary| summary.name == contents.environment);
        check(
            P,
            summary.is_some_and(|summary| {
                summary.revision == revision && summary.flag_count == contents.flags.len() as u64
            }),
            || format!("{} listed as {summary:?}", contents.environment),
        )?;
    }
    let elsewhere = env("source-staging2");
    let empty = snapshot(P, repository, &elsewhere).await?;
    check(
        P,
        empty.is_empty() && empty.revision() == Revision::default(),
        || {
            format!(
                "{elsewhere} (not in the source) has {} flags at {:?}",
                empty.len(),
                empty.revision()
            )
        },
    )?;
    let missing = repository
        .flag(
            &env("source-staging"),
            &FlagKey::parse("nowhere").unwrap_or_else(|error| panic!("{error}")),
        )
        .await
        .map_err(|error| Violation::new(P, format!("flag nowhere: {error}")))?;
    check(P, missing.is_none(), || {
        "a flag the source does not hold is served".to_owned()
    })
}

/// Revisions and versions follow the source: an environment whose contents change gets a
/// higher revision; one that does not keeps its revision; an unchanged flag keeps its version,
/// a changed one takes the next, a new one starts at 1; an environment the source drops is
/// served empty at a higher revision (so caches holding it take the empty one).
pub async fn revisions_and_versions_follow_the_source(
    repository: &SharedRepository,
    source: &SharedSource,
) -> Result<(), Violation> {
    const P: &str = "revisions_and_versions_follow_the_source";
    let first = vec![
        contents(
            "follow-a",
            vec![
                flag("kept", json!({"enabled": true})),
                flag("changed", json!({"enabled": false})),
            ],
            vec![segment("s", json!({"included": ["u1"]}))],
        ),
        contents(
            "follow-b",
            vec![flag("still", json!({"enabled": true}))],
            Vec::new(),
        ),
        contents(
            "follow-c",
            vec![flag("dropped", json!({"enabled": true}))],
            Vec::new(),
        ),
    ];
    serve(P, source, &first).await?;
    let a1 = snapshot(P, repository, &env("follow-a")).await?;
    let b1 = snapshot(P, repository, &env("follow-b")).await?;
    let c1 = snapshot(P, repository, &env("follow-c")).await?;
    for (name, served) in [("follow-a", &a1), ("follow-b", &b1), ("follow-c", &c1)] {
        check(P, served.flags().all(|flag| flag.version() == 1), || {
            format!("{name}: new flags start at version 1")
        })?;
    }
    let second = vec![
        contents(
            "follow-a",
            vec![
                flag("kept", json!({"enabled": true})),
                flag("changed", json!({"enabled": true})),
                flag("added", json!({"enabled": true})),
            ],
            vec![segment("s", json!({"included": ["u1", "u2"]}))],
        ),
        contents(
            "follow-b",
            vec![flag("still", json!({"enabled": true}))],
            Vec::new(),
        ),
    ];
    serve(P, source, &second).await?;
    let a2 = snapshot(P, repository, &env("follow-a")).await?;
    let b2 = snapshot(P, repository, &env("follow-b")).await?;
    let c2 = snapshot(P, repository, &env("follow-c")).await?;
    check(P, a2.revision() > a1.revision(), || {
        format!(
            "follow-a changed but its revision went {:?} -> {:?}",
            a1.revision(),
            a2.revision()
        )
    })?;
    check(P, b2.revision() == b1.revision(), || {
        format!(
            "follow-b did not change but its revision went {:?} -> {:?}",
            b1.revision(),
            b2.revision()
        )
    })?;
    check(P, c2.is_empty() && c2.revision() > c1.revision(), || {
        format!(
            "follow-c, dropped, is served with {} flags at {:?} (was {:?})",
            c2.len(),
            c2.revision(),
            c1.revision()
        )
    })?;
    let version =
        |snapshot: &EnvironmentSnapshot, key: &str| snapshot.flag(key).map(|flag| flag.version());
    check(
        P,
        (
            version(&a2, "kept"),
            version(&a2, "changed"),
            version(&a2, "added"),
        ) == (Some(1), Some(2), Some(1)),
        || {
            format!(
                "versions of kept, changed, added: {:?}, {:?}, {:?}; expected 1, 2, 1",
                version(&a2, "kept"),
                version(&a2, "changed"),
                version(&a2, "added")
            )
        },
    )?;
    check(
        P,
        a2.segment("s").map(|segment| segment.version()) == Some(2),
        || "a changed segment takes the next version".to_owned(),
    )?;
    check(
        P,
        a2.flag("kept").map(|flag| flag.updated_at())
            == a1.flag("kept").map(|flag| flag.updated_at()),
        || "an unchanged flag keeps its updatedAt".to_owned(),
    )
}

/// Every write of a read-only repository is `RepositoryError::ReadOnly` and changes nothing;
/// its audit log is empty.
pub async fn writes_are_refused(
    repository: &SharedRepository,
    source: &SharedSource,
) -> Result<(), Violation> {
    const P: &str = "writes_are_refused";
    let given = vec![contents(
        "refusing",
        vec![flag("f", json!({"enabled": true}))],
        vec![segment("s", json!({"included": ["u1"]}))],
    )];
    serve(P, source, &given).await?;
    let environment = env("refusing");
    let before = snapshot(P, repository, &environment).await?;
    let actor = Actor::system();
    let key = FlagKey::parse("f").unwrap_or_else(|error| panic!("{error}"));
    let segment_key = SegmentKey::parse("s").unwrap_or_else(|error| panic!("{error}"));
    let attempts: Vec<(&str, Result<(), RepositoryError>)> = vec![
        (
            "upsert",
            repository
                .upsert(
                    &environment,
                    flag("f", json!({"enabled": false})),
                    Precondition::None,
                    &actor,
                )
                .await
                .map(drop),
        ),
        (
            "delete",
            repository
                .delete(&environment, &key, Precondition::None, &actor)
                .await
                .map(drop),
        ),
        (
            "upsert_segment",
            repository
                .upsert_segment(
                    &environment,
                    segment("s", json!({})),
                    Precondition::None,
                    &actor,
                )
                .await
                .map(drop),
        ),
        (
            "delete_segment",
            repository
                .delete_segment(&environment, &segment_key, Precondition::None, &actor)
                .await
                .map(drop),
        ),
        (
            "import",
            repository
                .import(&environment, ImportRequest::default(), &actor)
                .await
                .map(drop),
        ),
        (
            "delete_environment",
            repository
                .delete_environment(&env("refusing-empty"))
                .await
                .map(drop),
        ),
    ];
    for (write, outcome) in attempts {
        check(
            P,
            matches!(outcome, Err(RepositoryError::ReadOnly { .. })),
            || format!("{write} answered {outcome:?}, not ReadOnly"),
        )?;
    }
    let after = snapshot(P, repository, &environment).await?;
    check(
        P,
        after.revision() == before.revision() && definitions(&after) == definitions(&before),
        || "a refused write changed what is served".to_owned(),
    )?;
    let audit = repository
        .audit(&environment, &AuditQuery::default())
        .await
        .map_err(|error| Violation::new(P, format!("audit: {error}")))?;
    check(P, audit.entries.is_empty(), || {
        format!("{} audit entries", audit.entries.len())
    })
}
