//! Properties of the repository contract, one function per rule of `FeatureFlagRepository`.
//!
//! Each property uses environments of its own, so the whole suite may share one store.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use flag_core::{
    Actor, AuditPage, AuditQuery, Environment, EnvironmentSnapshot, FeatureFlag,
    FeatureFlagRepository, FlagKey, ImportMode, ImportRequest, Precondition, ReferenceError,
    RepositoryError, Revision, Segment, SegmentKey,
};
use serde_json::{Value, json};

use crate::Violation;

/// A repository under test, shared so that properties can drive it from several tasks at once.
pub type SharedRepository = Arc<dyn FeatureFlagRepository>;

fn env(name: &str) -> Environment {
    Environment::parse(name).unwrap_or_else(|error| panic!("suite environment {name:?}: {error}"))
}

fn key(name: &str) -> FlagKey {
    FlagKey::parse(name).unwrap_or_else(|error| panic!("suite key {name:?}: {error}"))
}

/// An unsaved flag definition, as a PUT body would give it.
fn definition(name: &str, body: Value) -> FeatureFlag {
    FeatureFlag::from_definition_json(&key(name), &body.to_string())
        .unwrap_or_else(|error| panic!("suite flag {name}: {error}"))
}

fn segment_key(name: &str) -> SegmentKey {
    SegmentKey::parse(name).unwrap_or_else(|error| panic!("suite segment {name:?}: {error}"))
}

/// An unsaved segment definition, as a PUT body would give it.
fn segment(name: &str, body: Value) -> Segment {
    Segment::from_definition_json(&segment_key(name), &body.to_string())
        .unwrap_or_else(|error| panic!("suite segment {name}: {error}"))
}

fn failed(property: &'static str, what: &str, error: RepositoryError) -> Violation {
    Violation::new(property, format!("{what} failed: {error}"))
}

fn expect<T: PartialEq + std::fmt::Debug>(
    property: &'static str,
    what: &str,
    got: T,
    want: T,
) -> Result<(), Violation> {
    if got == want {
        Ok(())
    } else {
        Err(Violation::new(
            property,
            format!("{what}: got {got:?}, expected {want:?}"),
        ))
    }
}

/// The revision of `env`, read both ways: `revision` must agree with `snapshot`'s, and so must
/// `flag_count` with its number of flags.
async fn revision(
    property: &'static str,
    repository: &SharedRepository,
    env: &Environment,
) -> Result<Revision, Violation> {
    let snapshot = repository
        .snapshot(env)
        .await
        .map_err(|error| failed(property, "snapshot", error))?;
    let count = repository
        .flag_count(env)
        .await
        .map_err(|error| failed(property, "flag_count", error))?;
    expect(
        property,
        "flag_count vs the snapshot's flags",
        count,
        u64::try_from(snapshot.len()).unwrap_or(u64::MAX),
    )?;
    let of_snapshot = snapshot.revision();
    let alone = repository
        .revision(env)
        .await
        .map_err(|error| failed(property, "revision", error))?;
    expect(
        property,
        "revision alone vs the snapshot's",
        alone,
        of_snapshot,
    )?;
    Ok(alone)
}

/// Rule 1: versions start at 1 and grow by 1; the stored flag is the definition plus its
/// version and timestamp, and reads return it unchanged.
pub async fn versions_start_at_one_and_grow(
    repository: &SharedRepository,
) -> Result<(), Violation> {
    const P: &str = "versions_start_at_one_and_grow";
    let env = env("versions");
    let body = json!({"description": "v", "enabled": true, "variants": {"a": 1, "b": [2.5, "x"]},
                      "defaultVariant": "a", "offVariant": "b", "metadata": {"team": "core"},
                      "rules": [{"conditions": [{"attribute": "plan", "operator": "in", "value": ["pro"]}], "variant": "b"}]});
    let first = repository
        .upsert(
            &env,
            definition("checkout", body.clone()),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .map_err(|error| failed(P, "first upsert", error))?;
    expect(P, "created on first write", first.created, true)?;
    expect(P, "version of the first write", first.flag.version(), 1)?;
    let unsaved = definition("checkout", body);
    let same_definition = |stored: &FeatureFlag| {
        stored
            .clone()
            .stored_as(0, flag_core::time::OffsetDateTime::UNIX_EPOCH)
            == unsaved
    };
    if !same_definition(&first.flag) {
        return Err(Violation::new(
            P,
            "the stored flag differs from its definition",
        ));
    }
    let read = repository
        .flag(&env, &key("checkout"))
        .await
        .map_err(|error| failed(P, "flag", error))?;
    expect(P, "flag read back", read.as_ref(), Some(&first.flag))?;
    for expected in 2..=4u64 {
        let next = repository
            .upsert(
                &env,
                definition("checkout", json!({"enabled": expected % 2 == 0})),
                Precondition::None,
                &flag_core::Actor::system(),
            )
            .await
            .map_err(|error| failed(P, "upsert", error))?;
        expect(P, "created on a rewrite", next.created, false)?;
        expect(P, "version after a rewrite", next.flag.version(), expected)?;
        if next.flag.updated_at() < first.flag.updated_at() {
            return Err(Violation::new(P, "updatedAt went backwards"));
        }
    }
    let missing = repository
        .flag(&env, &key("never-written"))
        .await
        .map_err(|error| failed(P, "flag", error))?;
    expect(P, "a flag never written", missing, None)
}

/// Rule 2: every successful write bumps the environment's revision by exactly 1, failed writes
/// bump nothing, and an environment never written is at revision 0 with no flags.
pub async fn revisions_bump_once_per_write(repository: &SharedRepository) -> Result<(), Violation> {
    const P: &str = "revisions_bump_once_per_write";
    let env = env("revisions");
    let empty = repository
        .snapshot(&env)
        .await
        .map_err(|error| failed(P, "snapshot", error))?;
    expect(
        P,
        "snapshot of a never-written environment",
        empty,
        EnvironmentSnapshot::empty(Revision::ZERO),
    )?;
    expect(
        P,
        "revision of a never-written environment",
        revision(P, repository, &env).await?,
        Revision::ZERO,
    )?;
    let mut expected = 0;
    for name in ["a", "b", "a", "c"] {
        let upserted = repository
            .upsert(
                &env,
                definition(name, json!({})),
                Precondition::None,
                &flag_core::Actor::system(),
            )
            .await
            .map_err(|error| failed(P, "upsert", error))?;
        expected += 1;
        expect(
            P,
            "revision returned by upsert",
            upserted.revision,
            Revision(expected),
        )?;
        expect(
            P,
            "revision of the snapshot",
            revision(P, repository, &env).await?,
            Revision(expected),
        )?;
    }
    let deleted = repository
        .delete(
            &env,
            &key("b"),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .map_err(|error| failed(P, "delete", error))?;
    expected += 1;
    expect(
        P,
        "revision returned by delete",
        deleted.revision,
        Revision(expected),
    )?;
    // Refused writes change nothing.
    let _ = repository
        .upsert(
            &env,
            definition("a", json!({})),
            Precondition::Version(99),
            &flag_core::Actor::system(),
        )
        .await;
    let _ = repository
        .upsert(
            &env,
            definition("a", json!({})),
            Precondition::Absent,
            &flag_core::Actor::system(),
        )
        .await;
    let _ = repository
        .delete(
            &env,
            &key("missing"),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await;
    expect(
        P,
        "revision after refused writes",
        revision(P, repository, &env).await?,
        Revision(expected),
    )?;
    let snapshot = repository
        .snapshot(&env)
        .await
        .map_err(|error| failed(P, "snapshot", error))?;
    let keys: Vec<&str> = snapshot.flags().map(|flag| flag.key().as_str()).collect();
    expect(
        P,
        "flags in the snapshot, in key order",
        keys,
        vec!["a", "c"],
    )
}

/// Rule 3: every precondition (`Version`, `Absent`, `Exists`) is checked in the write's
/// transaction; a failed one reports the current version and changes nothing.
pub async fn optimistic_concurrency_is_enforced(
    repository: &SharedRepository,
) -> Result<(), Violation> {
    const P: &str = "optimistic_concurrency_is_enforced";
    let env = env("preconditions");
    let conflict = |result: Result<_, RepositoryError>| match result {
        Err(RepositoryError::VersionConflict { current, .. }) => Ok(current),
        Ok(_) => Err(Violation::new(
            P,
            "a write whose precondition failed succeeded",
        )),
        Err(error) => Err(failed(P, "conditional write", error)),
    };
    let missing_version = conflict(
        repository
            .upsert(
                &env,
                definition("f", json!({})),
                Precondition::Version(1),
                &flag_core::Actor::system(),
            )
            .await
            .map(|_| ()),
    )?;
    expect(
        P,
        "If-Match on a missing flag reports",
        missing_version,
        None,
    )?;
    let created = repository
        .upsert(
            &env,
            definition("f", json!({"enabled": true})),
            Precondition::Absent,
            &flag_core::Actor::system(),
        )
        .await
        .map_err(|error| failed(P, "create-only upsert", error))?;
    expect(
        P,
        "version of a create-only write",
        created.flag.version(),
        1,
    )?;
    let exists = conflict(
        repository
            .upsert(
                &env,
                definition("f", json!({})),
                Precondition::Absent,
                &flag_core::Actor::system(),
            )
            .await
            .map(|_| ()),
    )?;
    expect(
        P,
        "create-only on an existing flag reports",
        exists,
        Some(1),
    )?;
    let stale = conflict(
        repository
            .upsert(
                &env,
                definition("f", json!({})),
                Precondition::Version(7),
                &flag_core::Actor::system(),
            )
            .await
            .map(|_| ()),
    )?;
    expect(P, "a stale If-Match reports", stale, Some(1))?;
    let matched = repository
        .upsert(
            &env,
            definition("f", json!({"enabled": false})),
            Precondition::Version(1),
            &flag_core::Actor::system(),
        )
        .await
        .map_err(|error| failed(P, "matching If-Match", error))?;
    expect(
        P,
        "version after a matching If-Match",
        matched.flag.version(),
        2,
    )?;
    let stored = repository
        .flag(&env, &key("f"))
        .await
        .map_err(|error| failed(P, "flag", error))?;
    expect(
        P,
        "the flag after refused writes",
        stored.map(|f| f.enabled()),
        Some(false),
    )?;
    let delete_stale = conflict(
        repository
            .delete(
                &env,
                &key("f"),
                Precondition::Version(1),
                &flag_core::Actor::system(),
            )
            .await
            .map(|_| ()),
    )?;
    expect(
        P,
        "a stale If-Match on delete reports",
        delete_stale,
        Some(2),
    )?;
    let missing_any = conflict(
        repository
            .upsert(
                &env,
                definition("g", json!({})),
                Precondition::Exists,
                &flag_core::Actor::system(),
            )
            .await
            .map(|_| ()),
    )?;
    expect(
        P,
        "If-Match: * on a missing flag reports",
        missing_any,
        None,
    )?;
    if repository
        .flag(&env, &key("g"))
        .await
        .map_err(|error| failed(P, "flag", error))?
        .is_some()
    {
        return Err(Violation::new(
            P,
            "If-Match: * on a missing flag created it",
        ));
    }
    let any = repository
        .upsert(
            &env,
            definition("f", json!({"enabled": true})),
            Precondition::Exists,
            &flag_core::Actor::system(),
        )
        .await
        .map_err(|error| failed(P, "If-Match: * on an existing flag", error))?;
    expect(P, "version after If-Match: *", any.flag.version(), 3)?;
    let deleted = repository
        .delete(
            &env,
            &key("f"),
            Precondition::Exists,
            &flag_core::Actor::system(),
        )
        .await
        .map_err(|error| failed(P, "delete with If-Match: *", error))?;
    expect(P, "version deleted with If-Match: *", deleted.version, 3)
}

/// Rule 3: fifty writers doing read-modify-write with expected versions on one flag, retrying
/// on conflict, never lose an update.
pub async fn concurrent_writers_never_lose_updates(
    repository: &SharedRepository,
) -> Result<(), Violation> {
    const P: &str = "concurrent_writers_never_lose_updates";
    const WRITERS: u64 = 50;
    let env = env("contended");
    let counter =
        |count: u64| definition("counter", json!({"metadata": {"count": count.to_string()}}));
    repository
        .upsert(
            &env,
            counter(0),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .map_err(|error| failed(P, "seed", error))?;
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let repository = Arc::clone(repository);
            let env = env.clone();
            tokio::spawn(async move {
                for attempt in 0..10_000u32 {
                    let current = repository
                        .flag(&env, &key("counter"))
                        .await
                        .map_err(|error| failed(P, "read", error))?
                        .ok_or_else(|| Violation::new(P, "the counter flag vanished"))?;
                    let count: u64 = current
                        .metadata()
                        .get("count")
                        .and_then(|count| count.parse().ok())
                        .ok_or_else(|| Violation::new(P, "the counter lost its count"))?;
                    // A real client takes time between its read and its write; yield so that the
                    // writers interleave even on a store that answers without suspending.
                    tokio::task::yield_now().await;
                    match repository
                        .upsert(
                            &env,
                            counter(count + 1),
                            Precondition::Version(current.version()),
                            &flag_core::Actor::system(),
                        )
                        .await
                    {
                        Ok(_) => return Ok(attempt),
                        Err(RepositoryError::VersionConflict { .. }) => {
                            tokio::task::yield_now().await
                        }
                        Err(error) => return Err(failed(P, "conditional write", error)),
                    }
                }
                Err(Violation::new(P, "a writer never got its write in"))
            })
        })
        .collect();
    let mut conflicts = 0u32;
    for writer in writers {
        conflicts += writer
            .await
            .map_err(|error| Violation::new(P, format!("writer task failed: {error}")))??;
    }
    let last = repository
        .flag(&env, &key("counter"))
        .await
        .map_err(|error| failed(P, "final read", error))?
        .ok_or_else(|| Violation::new(P, "the counter flag vanished"))?;
    let count = last.metadata().get("count").cloned().unwrap_or_default();
    expect(
        P,
        &format!("count after {WRITERS} increments ({conflicts} conflicts retried)"),
        count,
        WRITERS.to_string(),
    )?;
    expect(
        P,
        "version after the increments",
        last.version(),
        WRITERS + 1,
    )?;
    expect(
        P,
        "revision after the increments",
        revision(P, repository, &env).await?,
        Revision(WRITERS + 1),
    )
}

/// Rule 4: deleting a missing flag is `NotFound`; a deleted flag is gone; re-created, it
/// starts again at version 1.
pub async fn deletes_remove_and_restart_versions(
    repository: &SharedRepository,
) -> Result<(), Violation> {
    const P: &str = "deletes_remove_and_restart_versions";
    let env = env("deletes");
    match repository
        .delete(
            &env,
            &key("ghost"),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
    {
        Err(RepositoryError::NotFound { .. }) => {}
        other => {
            return Err(Violation::new(
                P,
                format!("deleting a missing flag answered {other:?}"),
            ));
        }
    }
    for _ in 0..3 {
        repository
            .upsert(
                &env,
                definition("f", json!({})),
                Precondition::None,
                &flag_core::Actor::system(),
            )
            .await
            .map_err(|error| failed(P, "upsert", error))?;
    }
    let deleted = repository
        .delete(
            &env,
            &key("f"),
            Precondition::Version(3),
            &flag_core::Actor::system(),
        )
        .await
        .map_err(|error| failed(P, "delete", error))?;
    expect(P, "version reported by delete", deleted.version, 3)?;
    let gone = repository
        .flag(&env, &key("f"))
        .await
        .map_err(|error| failed(P, "flag", error))?;
    expect(P, "a deleted flag", gone, None)?;
    match repository
        .delete(
            &env,
            &key("f"),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
    {
        Err(RepositoryError::NotFound { .. }) => {}
        other => {
            return Err(Violation::new(
                P,
                format!("deleting twice answered {other:?}"),
            ));
        }
    }
    let again = repository
        .upsert(
            &env,
            definition("f", json!({})),
            Precondition::Absent,
            &flag_core::Actor::system(),
        )
        .await
        .map_err(|error| failed(P, "re-create", error))?;
    expect(P, "version of a re-created flag", again.flag.version(), 1)?;
    expect(P, "re-created counts as created", again.created, true)
}

/// Rule 5: nothing done in one environment is visible in a look-alike one.
pub async fn environments_are_isolated(repository: &SharedRepository) -> Result<(), Violation> {
    const P: &str = "repository_environments_are_isolated";
    let (prod, prod_eu) = (env("iso-prod"), env("iso-prod-eu"));
    repository
        .upsert(
            &prod,
            definition("shared", json!({"enabled": true})),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .map_err(|error| failed(P, "upsert", error))?;
    repository
        .upsert(
            &prod,
            definition("only-prod", json!({})),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .map_err(|error| failed(P, "upsert", error))?;
    repository
        .upsert(
            &prod_eu,
            definition("shared", json!({"enabled": false})),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .map_err(|error| failed(P, "upsert", error))?;
    let eu = repository
        .snapshot(&prod_eu)
        .await
        .map_err(|error| failed(P, "snapshot", error))?;
    expect(P, "revision of the look-alike", eu.revision(), Revision(1))?;
    expect(P, "flags of the look-alike", eu.len(), 1)?;
    expect(
        P,
        "the look-alike's own flag",
        eu.flag("shared").map(|f| (f.enabled(), f.version())),
        Some((false, 1)),
    )?;
    repository
        .delete(
            &prod,
            &key("shared"),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .map_err(|error| failed(P, "delete", error))?;
    let still = repository
        .flag(&prod_eu, &key("shared"))
        .await
        .map_err(|error| failed(P, "flag", error))?;
    expect(
        P,
        "the look-alike's flag after a delete elsewhere",
        still.is_some(),
        true,
    )
}

/// Rule 6: every environment that had a write is listed, in name order, with its revision and
/// current flag count (0 after its last flag was deleted).
pub async fn environments_are_listed(repository: &SharedRepository) -> Result<(), Violation> {
    const P: &str = "environments_are_listed";
    let (a, b) = (env("list-a"), env("list-b"));
    for (environment, name) in [(&b, "x"), (&a, "x"), (&a, "y")] {
        repository
            .upsert(
                environment,
                definition(name, json!({})),
                Precondition::None,
                &flag_core::Actor::system(),
            )
            .await
            .map_err(|error| failed(P, "upsert", error))?;
    }
    repository
        .delete(
            &b,
            &key("x"),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .map_err(|error| failed(P, "delete", error))?;
    let listed: BTreeMap<String, (u64, u64)> = repository
        .environments()
        .await
        .map_err(|error| failed(P, "environments", error))?
        .into_iter()
        .map(|summary| {
            (
                summary.name.to_string(),
                (summary.revision.get(), summary.flag_count),
            )
        })
        .collect();
    expect(
        P,
        "list-a (revision, flags)",
        listed.get("list-a").copied(),
        Some((2, 2)),
    )?;
    expect(
        P,
        "list-b (revision, flags) after its last flag was deleted",
        listed.get("list-b").copied(),
        Some((2, 0)),
    )?;
    expect(
        P,
        "an environment never written",
        listed.contains_key("list-never"),
        false,
    )?;
    let names: Vec<&String> = listed.keys().collect();
    let mut sorted = names.clone();
    sorted.sort();
    expect(P, "listing order", names, sorted)
}

/// Rule 7: an environment is removed only when it holds no flags; removal bumps its revision
/// once, and a later write continues from it.
pub async fn environments_are_removed_only_when_empty(
    repository: &SharedRepository,
) -> Result<(), Violation> {
    const P: &str = "environments_are_removed_only_when_empty";
    let environment = env("remove-me");
    let listed = |repository: SharedRepository| async move {
        repository
            .environments()
            .await
            .map(|all| {
                all.iter()
                    .any(|summary| summary.name.as_str() == "remove-me")
            })
            .map_err(|error| failed(P, "environments", error))
    };
    match repository.delete_environment(&env("remove-never")).await {
        Err(RepositoryError::EnvironmentNotFound { .. }) => {}
        other => {
            return Err(Violation::new(
                P,
                format!("removing a never-written environment answered {other:?}"),
            ));
        }
    }
    repository
        .upsert(
            &environment,
            definition("f", json!({})),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .map_err(|error| failed(P, "upsert", error))?;
    match repository.delete_environment(&environment).await {
        Err(RepositoryError::EnvironmentInUse { flags: 1, .. }) => {}
        other => {
            return Err(Violation::new(
                P,
                format!("removing an environment holding a flag answered {other:?}"),
            ));
        }
    }
    expect(
        P,
        "revision after a refused removal",
        revision(P, repository, &environment).await?,
        Revision(1),
    )?;
    repository
        .delete(
            &environment,
            &key("f"),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .map_err(|error| failed(P, "delete", error))?;
    let removed = repository
        .delete_environment(&environment)
        .await
        .map_err(|error| failed(P, "delete_environment", error))?;
    expect(P, "revision answered by the removal", removed, Revision(3))?;
    expect(
        P,
        "listed after removal",
        listed(Arc::clone(repository)).await?,
        false,
    )?;
    match repository.delete_environment(&environment).await {
        Err(RepositoryError::EnvironmentNotFound { .. }) => {}
        other => {
            return Err(Violation::new(
                P,
                format!("removing a removed environment answered {other:?}"),
            ));
        }
    }
    let written = repository
        .upsert(
            &environment,
            definition("g", json!({})),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .map_err(|error| failed(P, "upsert after removal", error))?;
    expect(
        P,
        "revision of a write after removal",
        written.revision,
        Revision(4),
    )?;
    expect(
        P,
        "listed after a write",
        listed(Arc::clone(repository)).await?,
        true,
    )
}

/// Maximum-length keys, Unicode and large values come back exactly as written.
pub async fn unusual_flags_round_trip(repository: &SharedRepository) -> Result<(), Violation> {
    const P: &str = "unusual_flags_round_trip";
    let env = env(&format!("{}z", "r".repeat(63)));
    let long_key = "K".repeat(128);
    let flags = [
        definition(&long_key, json!({"description": "max-length key"})),
        definition(
            "unicode",
            json!({"description": "héllo 🚩 مرحبا 中文 \"q\" \\ \n",
            "variants": {"ünï": "✓", "off": {"deep": [1, -2, 2.5, true, null]}}, "defaultVariant": "ünï",
            "metadata": {"ключ": "значение"}}),
        ),
        definition(
            "large",
            json!({"variants": {"on": "x".repeat(200_000), "off": false}}),
        ),
    ];
    for flag in flags {
        let name = flag.key().clone();
        let stored = repository
            .upsert(&env, flag, Precondition::None, &flag_core::Actor::system())
            .await
            .map_err(|error| failed(P, "upsert", error))?
            .flag;
        let read = repository
            .flag(&env, &name)
            .await
            .map_err(|error| failed(P, "flag", error))?;
        expect(
            P,
            &format!("flag {name} read back"),
            read.as_ref(),
            Some(&stored),
        )?;
        let snapshot = repository
            .snapshot(&env)
            .await
            .map_err(|error| failed(P, "snapshot", error))?;
        expect(
            P,
            &format!("flag {name} in the snapshot"),
            snapshot.flag(name.as_str()).map(|f| &**f),
            Some(&stored),
        )?;
    }
    Ok(())
}

/// The store answers a ping.
pub async fn ping_answers(repository: &SharedRepository) -> Result<(), Violation> {
    repository
        .ping()
        .await
        .map_err(|error| failed("ping_answers", "ping", error))
}

/// How the suite reaches a repository's stored rows, to leave in them what the port never writes:
/// a definition written by a newer release (fields this one does not know) or a damaged one.
#[flag_core::async_trait]
pub trait StoredRows: Send + Sync {
    /// Replaces, byte for byte, the stored definition of the flag `key` of `env` (written through
    /// the port before) with `definition`, leaving its version and the revision as they are.
    async fn replace_definition(
        &self,
        env: &Environment,
        key: &FlagKey,
        definition: &str,
    ) -> Result<(), String>;
}

/// Rule 10: reads are tolerant. A stored flag with fields this release does not know (at every
/// level) is read with them ignored; one that cannot be read at all becomes its unreadable
/// stand-in (same key and version) without hiding any other flag, in the snapshot, the point read
/// and the listing alike; writing it again replaces it.
pub async fn stored_rows_are_read_tolerantly(
    repository: &SharedRepository,
    rows: &dyn StoredRows,
) -> Result<(), Violation> {
    const P: &str = "stored_rows_are_read_tolerantly";
    let env = env("stored-rows");
    let body = json!({"enabled": true, "variants": {"on": true, "off": false},
                      "rollout": [{"variant": "on", "weight": 1}, {"variant": "off", "weight": 1}],
                      "rules": [{"conditions": [{"attribute": "plan", "operator": "in", "value": ["pro"]}],
                                 "variant": "on"}]});
    let mut written = BTreeMap::new();
    for name in ["newer", "broken", "fine"] {
        let upserted = repository
            .upsert(
                &env,
                definition(name, body.clone()),
                Precondition::None,
                &flag_core::Actor::system(),
            )
            .await
            .map_err(|error| failed(P, "upsert", error))?;
        written.insert(name, upserted.flag);
    }
    let revision_before = revision(P, repository, &env).await?;

    // What a newer release writes: its own fields beside ours, at every level.
    let mut newer = serde_json::to_value(&written["newer"])
        .map_err(|error| Violation::new(P, format!("serializing a flag: {error}")))?;
    newer["schedule"] = json!({"from": "2027-01-01T00:00:00Z"});
    newer["rules"][0]["weighting"] = json!("companyId");
    newer["rules"][0]["conditions"][0]["negate"] = json!(false);
    newer["rollout"][0]["stickiness"] = json!("account");
    for (name, text) in [
        ("newer", newer.to_string()),
        ("broken", "{not json".to_owned()),
    ] {
        rows.replace_definition(&env, &key(name), &text)
            .await
            .map_err(|error| Violation::new(P, format!("planting {name}: {error}")))?;
    }

    let snapshot = repository
        .snapshot(&env)
        .await
        .map_err(|error| failed(P, "snapshot of an environment with a damaged row", error))?;
    expect(P, "flags in the snapshot", snapshot.len(), 3)?;
    expect(
        P,
        "revision after planting",
        snapshot.revision(),
        revision_before,
    )?;
    for name in ["newer", "fine"] {
        let read = snapshot.flag(name).map(|flag| (**flag).clone());
        expect(
            P,
            &format!("{name} in the snapshot"),
            read.as_ref(),
            Some(&written[name]),
        )?;
    }
    let broken = snapshot
        .flag("broken")
        .ok_or_else(|| Violation::new(P, "the damaged flag is missing from the snapshot"))?;
    if broken.unreadable_reason().is_none() {
        return Err(Violation::new(
            P,
            format!("a damaged row was read as {broken:?}"),
        ));
    }
    expect(
        P,
        "the stand-in's version",
        broken.version(),
        written["broken"].version(),
    )?;
    for name in ["newer", "broken", "fine"] {
        let point = repository
            .flag(&env, &key(name))
            .await
            .map_err(|error| failed(P, &format!("point read of {name}"), error))?;
        let in_snapshot = snapshot.flag(name).map(|flag| (**flag).clone());
        expect(
            P,
            &format!("point read of {name} vs the snapshot"),
            point,
            in_snapshot,
        )?;
    }
    let listed = repository
        .environments()
        .await
        .map_err(|error| failed(P, "environments", error))?
        .into_iter()
        .find(|summary| summary.name == env)
        .map(|summary| summary.flag_count);
    expect(P, "flags listed", listed, Some(3))?;

    let replaced = repository
        .upsert(
            &env,
            definition("broken", body),
            Precondition::Version(written["broken"].version()),
            &flag_core::Actor::system(),
        )
        .await
        .map_err(|error| failed(P, "rewriting the damaged flag", error))?;
    expect(
        P,
        "version of the rewrite",
        replaced.flag.version(),
        written["broken"].version() + 1,
    )?;
    let reread = repository
        .flag(&env, &key("broken"))
        .await
        .map_err(|error| failed(P, "point read after the rewrite", error))?;
    expect(
        P,
        "the rewritten flag",
        reread.as_ref(),
        Some(&replaced.flag),
    )
}

/// Rule 11: segments are versioned like flags, in the environment's revision sequence, and are
/// read with the flags of the same state.
pub async fn segments_are_versioned_with_the_environment(
    repository: &SharedRepository,
) -> Result<(), Violation> {
    const P: &str = "segments_are_versioned_with_the_environment";
    let environment = env("segments");
    let included: Vec<String> = (0..1_000).map(|index| format!("user-{index:04}")).collect();
    let body = json!({"description": "beta 🚩", "included": included, "excluded": ["user-x"],
                      "rules": [{"conditions": [{"attribute": "plan", "operator": "in", "value": ["pro"]},
                                                {"attribute": "app", "operator": "semver_gte", "value": "2.0.0"}]}]});
    let first = repository
        .upsert_segment(
            &environment,
            segment("beta", body.clone()),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .map_err(|error| failed(P, "first segment upsert", error))?;
    expect(P, "created on first write", first.created, true)?;
    expect(P, "version of the first write", first.segment.version(), 1)?;
    expect(
        P,
        "revision of the first write",
        first.revision,
        Revision(1),
    )?;
    let unsaved = segment("beta", body);
    expect(
        P,
        "the stored segment is its definition",
        first
            .segment
            .clone()
            .stored_as(0, flag_core::time::OffsetDateTime::UNIX_EPOCH),
        unsaved,
    )?;
    let read = repository
        .segment(&environment, &segment_key("beta"))
        .await
        .map_err(|error| failed(P, "segment", error))?;
    expect(P, "segment read back", read.as_ref(), Some(&first.segment))?;
    let flag = repository
        .upsert(
            &environment,
            definition("f", json!({})),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .map_err(|error| failed(P, "flag upsert", error))?;
    expect(P, "revision after a flag write", flag.revision, Revision(2))?;
    let second = repository
        .upsert_segment(
            &environment,
            segment("beta", json!({})),
            Precondition::Version(1),
            &flag_core::Actor::system(),
        )
        .await
        .map_err(|error| failed(P, "second segment upsert", error))?;
    expect(
        P,
        "version of the second write",
        second.segment.version(),
        2,
    )?;
    expect(
        P,
        "revision of the second write",
        second.revision,
        Revision(3),
    )?;
    expect(P, "replaced, not created", second.created, false)?;
    let snapshot = repository
        .snapshot(&environment)
        .await
        .map_err(|error| failed(P, "snapshot", error))?;
    expect(P, "snapshot revision", snapshot.revision(), Revision(3))?;
    expect(
        P,
        "the snapshot's segment",
        snapshot.segment("beta").map(|shared| &**shared),
        Some(&second.segment),
    )?;
    expect(P, "the snapshot's flags", snapshot.len(), 1)?;
    for (precondition, what) in [
        (Precondition::Version(1), "a stale If-Match"),
        (
            Precondition::Absent,
            "If-None-Match: * on an existing segment",
        ),
    ] {
        match repository
            .upsert_segment(
                &environment,
                segment("beta", json!({})),
                precondition,
                &flag_core::Actor::system(),
            )
            .await
        {
            Err(RepositoryError::SegmentVersionConflict {
                current: Some(2), ..
            }) => {}
            other => {
                return Err(Violation::new(
                    P,
                    format!("a segment write with {what} answered {other:?}"),
                ));
            }
        }
    }
    match repository.delete_environment(&environment).await {
        Err(RepositoryError::EnvironmentInUse { segments: 1, .. }) => {}
        other => {
            return Err(Violation::new(
                P,
                format!("removing an environment holding a segment answered {other:?}"),
            ));
        }
    }
    expect(
        P,
        "revision after refused writes",
        revision(P, repository, &environment).await?,
        Revision(3),
    )?;
    expect(
        P,
        "another environment's segment",
        repository
            .segment(&env("segments-other"), &segment_key("beta"))
            .await
            .map_err(|error| failed(P, "segment of another environment", error))?,
        None,
    )?;
    let deleted = repository
        .delete_segment(
            &environment,
            &segment_key("beta"),
            Precondition::Version(2),
            &flag_core::Actor::system(),
        )
        .await
        .map_err(|error| failed(P, "delete_segment", error))?;
    expect(P, "deleted version", deleted.version, 2)?;
    expect(P, "revision of the delete", deleted.revision, Revision(4))?;
    match repository
        .delete_segment(
            &environment,
            &segment_key("beta"),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
    {
        Err(RepositoryError::SegmentNotFound { .. }) => {}
        other => {
            return Err(Violation::new(
                P,
                format!("deleting a deleted segment answered {other:?}"),
            ));
        }
    }
    let snapshot = repository
        .snapshot(&environment)
        .await
        .map_err(|error| failed(P, "snapshot after the delete", error))?;
    expect(P, "segments after the delete", snapshot.segments().len(), 0)?;
    expect(
        P,
        "revision after the delete",
        snapshot.revision(),
        Revision(4),
    )
}

/// Rule 12: every write keeps the references between flags and segments, checked in its
/// transaction; a refused write changes nothing.
pub async fn references_are_kept_by_every_write(
    repository: &SharedRepository,
) -> Result<(), Violation> {
    const P: &str = "references_are_kept_by_every_write";
    let environment = env("references");
    let refused = |what: &str, answer: String| {
        Violation::new(
            P,
            format!("{what} was not refused as it should be: {answer}"),
        )
    };
    let uses_beta = || {
        definition(
            "uses",
            json!({"enabled": true, "rules": [{"conditions": [{"operator": "in_segment", "value": "beta"}], "variant": "on"}]}),
        )
    };
    match repository
        .upsert(
            &environment,
            uses_beta(),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
    {
        Err(RepositoryError::Reference(ReferenceError::MissingSegment { .. })) => {}
        other => {
            return Err(refused(
                "a flag naming a missing segment",
                format!("{other:?}"),
            ));
        }
    }
    expect(
        P,
        "revision after a refused write",
        revision(P, repository, &environment).await?,
        Revision(0),
    )?;
    let write = |name: &'static str, body: Value| {
        let repository = Arc::clone(repository);
        let environment = environment.clone();
        async move {
            repository
                .upsert(
                    &environment,
                    definition(name, body),
                    Precondition::None,
                    &flag_core::Actor::system(),
                )
                .await
        }
    };
    repository
        .upsert_segment(
            &environment,
            segment("beta", json!({})),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .map_err(|error| failed(P, "segment upsert", error))?;
    repository
        .upsert(
            &environment,
            uses_beta(),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .map_err(|error| failed(P, "flag naming an existing segment", error))?;
    match repository
        .delete_segment(
            &environment,
            &segment_key("beta"),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
    {
        Err(RepositoryError::Reference(ReferenceError::SegmentInUse { by, .. }))
            if by == [key("uses")] => {}
        other => return Err(refused("deleting a segment in use", format!("{other:?}"))),
    }
    let prerequisite = |flag: &str| json!({"prerequisites": [{"flag": flag, "variants": ["on"]}]});
    match write("orphan", prerequisite("missing")).await {
        Err(RepositoryError::Reference(ReferenceError::MissingPrerequisite { .. })) => {}
        other => return Err(refused("a missing prerequisite", format!("{other:?}"))),
    }
    // A chain of 8 links is the deepest allowed: c0 <- c1 <- ... <- c8.
    const CHAIN: [&str; 10] = ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"];
    write(CHAIN[0], json!({}))
        .await
        .map_err(|error| failed(P, "chain base", error))?;
    for pair in CHAIN[..9].windows(2) {
        write(pair[1], prerequisite(pair[0]))
            .await
            .map_err(|error| failed(P, "a chain of up to 8 links", error))?;
    }
    match write(CHAIN[9], prerequisite(CHAIN[8])).await {
        Err(RepositoryError::Reference(ReferenceError::TooDeep { .. })) => {}
        other => return Err(refused("a chain of 9 links", format!("{other:?}"))),
    }
    match write(CHAIN[0], prerequisite(CHAIN[3])).await {
        Err(RepositoryError::Reference(ReferenceError::Cycle { .. })) => {}
        other => return Err(refused("a cycle", format!("{other:?}"))),
    }
    match repository
        .delete(
            &environment,
            &key(CHAIN[4]),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
    {
        Err(RepositoryError::Reference(ReferenceError::FlagInUse { by, .. }))
            if by == [key(CHAIN[5])] => {}
        other => return Err(refused("deleting a prerequisite", format!("{other:?}"))),
    }
    let before = revision(P, repository, &environment).await?;
    let snapshot = repository
        .snapshot(&environment)
        .await
        .map_err(|error| failed(P, "snapshot", error))?;
    expect(
        P,
        "flags after refused writes",
        snapshot
            .flags()
            .map(|flag| flag.key().to_string())
            .collect::<Vec<_>>(),
        ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "uses"]
            .map(str::to_owned)
            .to_vec(),
    )?;
    // Once nothing refers to them, both can go.
    write("uses", json!({}))
        .await
        .map_err(|error| failed(P, "dropping the segment reference", error))?;
    repository
        .delete_segment(
            &environment,
            &segment_key("beta"),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .map_err(|error| failed(P, "deleting an unused segment", error))?;
    repository
        .delete(
            &environment,
            &key(CHAIN[8]),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .map_err(|error| failed(P, "deleting the top of the chain", error))?;
    expect(
        P,
        "revision after three writes",
        revision(P, repository, &environment).await?,
        Revision(before.get() + 3),
    )
}

/// Rule 13: every successful write appends one audit entry with its actor, action, kind, key,
/// versions, revision and definitions; refused writes append none; pages run newest first and a
/// cursor pages through without repeating or skipping while writes go on.
pub async fn every_write_is_audited_with_its_actor(
    repository: &SharedRepository,
) -> Result<(), Violation> {
    const P: &str = "every_write_is_audited_with_its_actor";
    let environment = env("audited");
    let actor = |name: &str| {
        Actor::parse(name).unwrap_or_else(|error| panic!("suite actor {name:?}: {error}"))
    };
    let (alice, bob, carol) = (actor("alice"), actor("bob"), actor("ci.bot-2"));
    let page = |query: AuditQuery| {
        let environment = environment.clone();
        async move {
            repository
                .audit(&environment, &query)
                .await
                .map_err(|error| failed(P, "audit", error))
        }
    };
    let never = page(AuditQuery::default()).await?;
    expect(
        P,
        "the log of an environment never written",
        never,
        AuditPage::default(),
    )?;

    let mut revisions = Vec::new();
    let created = repository
        .upsert(
            &environment,
            definition("a", json!({})),
            Precondition::Absent,
            &alice,
        )
        .await
        .map_err(|error| failed(P, "create", error))?;
    revisions.push(created.revision);
    let updated = repository
        .upsert(
            &environment,
            definition("a", json!({"enabled": true})),
            Precondition::Version(1),
            &bob,
        )
        .await
        .map_err(|error| failed(P, "update", error))?;
    revisions.push(updated.revision);
    let refused = repository
        .upsert(
            &environment,
            definition("a", json!({})),
            Precondition::Version(9),
            &carol,
        )
        .await;
    expect(P, "a stale write is refused", refused.is_err(), true)?;
    let segment_written = repository
        .upsert_segment(
            &environment,
            segment("a", json!({})),
            Precondition::None,
            &alice,
        )
        .await
        .map_err(|error| failed(P, "segment create", error))?;
    revisions.push(segment_written.revision);
    let deleted = repository
        .delete(&environment, &key("a"), Precondition::None, &bob)
        .await
        .map_err(|error| failed(P, "delete", error))?;
    revisions.push(deleted.revision);
    let other = repository
        .upsert(
            &environment,
            definition("b", json!({})),
            Precondition::None,
            &carol,
        )
        .await
        .map_err(|error| failed(P, "create b", error))?;
    revisions.push(other.revision);

    let all = page(AuditQuery::default()).await?;
    let told: Vec<String> = all
        .entries
        .iter()
        .map(|entry| {
            format!(
                "{} {} {} {} {:?}->{:?}",
                entry.actor,
                entry.action.as_str(),
                entry.kind.as_str(),
                entry.key,
                entry.old_version,
                entry.new_version
            )
        })
        .collect();
    expect(
        P,
        "the log, newest first",
        told,
        [
            "ci.bot-2 create flag b None->Some(1)",
            "bob delete flag a Some(2)->None",
            "alice create segment a None->Some(1)",
            "bob update flag a Some(1)->Some(2)",
            "alice create flag a None->Some(1)",
        ]
        .map(str::to_owned)
        .to_vec(),
    )?;
    expect(
        P,
        "each entry's revision is its write's",
        all.entries
            .iter()
            .map(|entry| entry.revision)
            .collect::<Vec<_>>(),
        revisions.iter().rev().copied().collect(),
    )?;
    expect(P, "the whole log is one page", all.next, None)?;
    let definition_field = |value: &Option<Value>, field: &str| {
        value.as_ref().and_then(|value| value.get(field)).cloned()
    };
    let [create_b, delete_a, _, update_a, create_a] = all.entries.as_slice() else {
        return Err(Violation::new(P, "five entries expected"));
    };
    expect(
        P,
        "a create has nothing before",
        create_a.before.clone(),
        None,
    )?;
    expect(
        P,
        "a create's definition after",
        definition_field(&create_a.after, "version"),
        Some(json!(1)),
    )?;
    expect(
        P,
        "an update's definition before",
        definition_field(&update_a.before, "enabled"),
        Some(json!(false)),
    )?;
    expect(
        P,
        "an update's definition after",
        definition_field(&update_a.after, "enabled"),
        Some(json!(true)),
    )?;
    expect(
        P,
        "a delete's definition before",
        definition_field(&delete_a.before, "version"),
        Some(json!(2)),
    )?;
    expect(
        P,
        "a delete has nothing after",
        delete_a.after.clone(),
        None,
    )?;
    expect(
        P,
        "the definition after names its key",
        definition_field(&create_b.after, "key"),
        Some(json!("b")),
    )?;

    let of_a = page(AuditQuery {
        key: Some("a".to_owned()),
        ..AuditQuery::default()
    })
    .await?;
    expect(
        P,
        "the entries of key a (flag and segment)",
        of_a.entries.len(),
        4,
    )?;

    // Two at a time, with a write landing between pages: the pages still add up to the log as
    // it was, each entry once.
    let first = page(AuditQuery {
        limit: 2,
        ..AuditQuery::default()
    })
    .await?;
    repository
        .upsert(
            &environment,
            definition("b", json!({})),
            Precondition::None,
            &carol,
        )
        .await
        .map_err(|error| failed(P, "a write between pages", error))?;
    let mut paged = first.entries.clone();
    let mut next = first.next;
    let mut pages = 1;
    while let Some(before) = next {
        let more = page(AuditQuery {
            limit: 2,
            before: Some(before),
            ..AuditQuery::default()
        })
        .await?;
        if more.entries.is_empty() {
            return Err(Violation::new(P, "a page with a cursor came back empty"));
        }
        paged.extend(more.entries);
        next = more.next;
        pages += 1;
        if pages > 10 {
            return Err(Violation::new(P, "paging does not end"));
        }
    }
    expect(P, "pages of two add up to the log", paged, all.entries)?;
    expect(P, "five entries make three pages of two", pages, 3)
}

/// Rule 14: an import is one transaction: one revision bump for all it changes, none for a dry
/// run or an import that changes nothing, a stale `If-Match` or an invalid document changes
/// nothing and an invalid one answers every problem with its path, and `replace` deletes what
/// the document does not hold.
pub async fn imports_are_one_transaction(repository: &SharedRepository) -> Result<(), Violation> {
    const P: &str = "imports_are_one_transaction";
    let environment = env("imported");
    let actor = Actor::parse("importer").unwrap_or_else(|error| panic!("suite actor: {error}"));
    let system = Actor::system();
    for (name, body) in [
        ("a", json!({})),
        (
            "b",
            json!({"rules": [{"conditions": [{"operator": "in_segment", "value": "s"}], "variant": "on"}]}),
        ),
    ] {
        if name == "b" {
            repository
                .upsert_segment(
                    &environment,
                    segment("s", json!({"included": ["u1"]})),
                    Precondition::None,
                    &system,
                )
                .await
                .map_err(|error| failed(P, "writing segment s", error))?;
        }
        repository
            .upsert(
                &environment,
                definition(name, body),
                Precondition::None,
                &system,
            )
            .await
            .map_err(|error| failed(P, "writing a flag", error))?;
    }
    let start = revision(P, repository, &environment).await?;
    let snapshot = |label: &'static str| {
        let environment = environment.clone();
        async move {
            repository
                .snapshot(&environment)
                .await
                .map_err(|error| failed(P, label, error))
        }
    };
    let before = snapshot("snapshot").await?;
    let document = |dry_run: bool, mode: ImportMode, expected: Option<Revision>| ImportRequest {
        flags: vec![
            definition("a", json!({"enabled": true})),
            definition(
                "c",
                json!({"rules": [{"conditions": [{"operator": "in_segment", "value": "s"}], "variant": "on"}]}),
            ),
        ],
        segments: vec![segment("s", json!({"included": ["u1"]}))],
        mode,
        expected_revision: expected,
        dry_run,
        max_flags: None,
    };
    let names = |keys: &[String]| keys.to_vec();

    // A dry run answers the diff and changes nothing.
    let dry = repository
        .import(
            &environment,
            document(true, ImportMode::Replace, None),
            &actor,
        )
        .await
        .map_err(|error| failed(P, "dry run", error))?;
    expect(
        P,
        "dry run: flags created",
        names(&dry.diff.flags.created),
        vec!["c".to_owned()],
    )?;
    expect(
        P,
        "dry run: flags updated",
        names(&dry.diff.flags.updated),
        vec!["a".to_owned()],
    )?;
    expect(
        P,
        "dry run: flags deleted",
        names(&dry.diff.flags.deleted),
        vec!["b".to_owned()],
    )?;
    expect(
        P,
        "dry run: segments unchanged",
        names(&dry.diff.segments.unchanged),
        vec!["s".to_owned()],
    )?;
    expect(
        P,
        "dry run: applied",
        (dry.applied, dry.revision),
        (false, start),
    )?;
    expect(
        P,
        "dry run: the environment",
        snapshot("snapshot").await?,
        before.clone(),
    )?;

    // A stale If-Match changes nothing.
    let stale = repository
        .import(
            &environment,
            document(false, ImportMode::Merge, Some(Revision(start.get() + 7))),
            &actor,
        )
        .await;
    expect(
        P,
        "a stale revision",
        stale.err(),
        Some(RepositoryError::RevisionConflict {
            environment: environment.clone(),
            expected: Revision(start.get() + 7),
            current: start,
        }),
    )?;

    // The import itself: one bump for both flags, audited under the importer.
    let imported = repository
        .import(
            &environment,
            document(false, ImportMode::Merge, Some(start)),
            &actor,
        )
        .await
        .map_err(|error| failed(P, "import", error))?;
    expect(
        P,
        "import: applied at the next revision",
        (imported.applied, imported.revision),
        (true, Revision(start.get() + 1)),
    )?;
    expect(
        P,
        "import: revision read back",
        revision(P, repository, &environment).await?,
        Revision(start.get() + 1),
    )?;
    let after = snapshot("snapshot after").await?;
    let version = |key: &str| after.flag(key).map(|flag| flag.version());
    expect(
        P,
        "versions after the import",
        (version("a"), version("b"), version("c")),
        (Some(2), Some(1), Some(1)),
    )?;
    expect(
        P,
        "a is enabled",
        after.flag("a").map(|flag| flag.enabled()),
        Some(true),
    )?;
    let log = repository
        .audit(&environment, &AuditQuery::default())
        .await
        .map_err(|error| failed(P, "audit", error))?;
    let imported_entries: Vec<(String, String, Revision)> = log
        .entries
        .iter()
        .filter(|entry| entry.actor == "importer")
        .map(|entry| {
            (
                entry.key.clone(),
                entry.action.as_str().to_owned(),
                entry.revision,
            )
        })
        .collect();
    let mut keys: Vec<String> = imported_entries
        .iter()
        .map(|(key, ..)| key.clone())
        .collect();
    keys.sort();
    expect(
        P,
        "one audit entry per changed item",
        keys,
        vec!["a".to_owned(), "c".to_owned()],
    )?;
    expect(
        P,
        "all at the import's revision",
        imported_entries
            .iter()
            .all(|(_, _, at)| *at == imported.revision),
        true,
    )?;

    // The same document again changes nothing.
    let again = repository
        .import(
            &environment,
            document(false, ImportMode::Merge, None),
            &actor,
        )
        .await
        .map_err(|error| failed(P, "import again", error))?;
    expect(
        P,
        "again: nothing applied",
        (again.applied, again.revision),
        (false, imported.revision),
    )?;
    expect(
        P,
        "again: all unchanged",
        again.diff.flags.unchanged.len(),
        2,
    )?;

    // An invalid document answers every problem with its path and changes nothing.
    let invalid = ImportRequest {
        flags: vec![
            definition(
                "d",
                json!({"rules": [{"conditions": [{"operator": "in_segment", "value": "nope"}], "variant": "on"}]}),
            ),
            definition(
                "e",
                json!({"prerequisites": [{"flag": "missing", "variants": ["on"]}]}),
            ),
        ],
        ..ImportRequest::default()
    };
    let refused = repository.import(&environment, invalid, &actor).await;
    let paths: Vec<String> = match refused {
        Err(RepositoryError::InvalidImport { problems }) => {
            problems.into_iter().map(|problem| problem.path).collect()
        }
        other => return Err(Violation::new(P, format!("an invalid document: {other:?}"))),
    };
    expect(
        P,
        "every problem with its path",
        paths,
        vec![
            "flags[0].rules[0].conditions[0].value".to_owned(),
            "flags[1].prerequisites[0].flag".to_owned(),
        ],
    )?;
    // Replacing with flags that still use a segment the document drops is refused.
    let dangling = ImportRequest {
        flags: vec![definition(
            "b",
            json!({"rules": [{"conditions": [{"operator": "in_segment", "value": "s"}], "variant": "on"}]}),
        )],
        mode: ImportMode::Replace,
        ..ImportRequest::default()
    };
    let refused = repository.import(&environment, dangling, &actor).await;
    expect(
        P,
        "a replace leaving a reference dangling",
        matches!(refused, Err(RepositoryError::InvalidImport { .. })),
        true,
    )?;
    expect(
        P,
        "refused imports change nothing",
        snapshot("snapshot").await?,
        after.clone(),
    )?;

    // Replace deletes what the document does not hold, at one revision.
    let replace = ImportRequest {
        flags: vec![definition("a", json!({"enabled": true}))],
        mode: ImportMode::Replace,
        ..ImportRequest::default()
    };
    let replaced = repository
        .import(&environment, replace, &actor)
        .await
        .map_err(|error| failed(P, "replace", error))?;
    expect(
        P,
        "replace: deleted flags",
        names(&replaced.diff.flags.deleted),
        vec!["b".to_owned(), "c".to_owned()],
    )?;
    expect(
        P,
        "replace: deleted segments",
        names(&replaced.diff.segments.deleted),
        vec!["s".to_owned()],
    )?;
    expect(
        P,
        "replace: one bump",
        replaced.revision,
        Revision(imported.revision.get() + 1),
    )?;
    let left = snapshot("snapshot after replace").await?;
    expect(
        P,
        "replace: what is left",
        (
            left.flags()
                .map(|flag| flag.key().to_string())
                .collect::<Vec<_>>(),
            left.segments().count(),
        ),
        (vec!["a".to_owned()], 0),
    )
}

/// Runs every repository property, each on a repository from `factory`; returns the violations.
pub async fn check_all<F, Fut>(factory: F) -> Vec<Violation>
where
    F: Fn() -> Fut,
    Fut: Future<Output = SharedRepository>,
{
    let mut violations = Vec::new();
    macro_rules! check {
        ($($property:ident),* $(,)?) => {$(
            if let Err(violation) = $property(&factory().await).await {
                violations.push(violation);
            }
        )*};
    }
    check!(
        versions_start_at_one_and_grow,
        revisions_bump_once_per_write,
        optimistic_concurrency_is_enforced,
        concurrent_writers_never_lose_updates,
        deletes_remove_and_restart_versions,
        environments_are_isolated,
        environments_are_listed,
        environments_are_removed_only_when_empty,
        unusual_flags_round_trip,
        ping_answers,
        segments_are_versioned_with_the_environment,
        references_are_kept_by_every_write,
        every_write_is_audited_with_its_actor,
        imports_are_one_transaction,
        the_outbox_holds_every_committed_write_until_delivered,
    );
    let source_of = |repository: &SharedRepository| -> crate::source::SharedSource {
        Arc::new(crate::source::ImportSource::new(Arc::clone(repository)))
    };
    let repository = factory().await;
    if let Err(violation) =
        crate::source::serves_what_its_source_holds(&repository, &source_of(&repository)).await
    {
        violations.push(violation);
    }
    let repository = factory().await;
    if let Err(violation) = crate::source::revisions_and_versions_follow_the_source(
        &repository,
        &source_of(&repository),
    )
    .await
    {
        violations.push(violation);
    }
    violations
}

/// Rule 15: after `outbox_follow`, every committed write (and no refused one, and none from
/// before) is pending once, in commit order within its environment, until marked delivered;
/// marks never move back, receivers are independent, following again keeps the place, and the
/// right to deliver has one holder at a time until it expires.
pub async fn the_outbox_holds_every_committed_write_until_delivered(
    repository: &SharedRepository,
) -> Result<(), Violation> {
    const P: &str = "the_outbox_holds_every_committed_write_until_delivered";
    // Names of this run only: a shared, durable store may hold receivers of earlier runs.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let (first, second) = (format!("suite-{run}-1"), format!("suite-{run}-2"));
    let (a, b, c) = (env("outbox-a"), env("outbox-b"), env("outbox-c"));
    let ours = [a.clone(), b.clone(), c.clone()];
    let alice = Actor::parse("alice").unwrap_or_else(|error| panic!("suite actor: {error}"));
    let write = |environment: &Environment, name: &str, precondition: Precondition| {
        let (environment, name, alice) = (environment.clone(), name.to_owned(), alice.clone());
        async move {
            repository
                .upsert(
                    &environment,
                    definition(&name, json!({})),
                    precondition,
                    &alice,
                )
                .await
        }
    };
    let pending = |receiver: String| {
        let ours = ours.clone();
        async move {
            let entries = repository
                .outbox_pending(&receiver, 100_000)
                .await
                .map_err(|error| failed(P, "outbox_pending", error))?;
            Ok::<_, Violation>(
                entries
                    .into_iter()
                    .filter(|entry| ours.contains(&entry.environment))
                    .map(|entry| {
                        (
                            entry.environment.to_string(),
                            entry.entry.key,
                            entry.entry.action.as_str().to_owned(),
                            entry.entry.revision.get(),
                            entry.entry.position,
                        )
                    })
                    .collect::<Vec<_>>(),
            )
        }
    };

    write(&a, "before", Precondition::None)
        .await
        .map_err(|error| failed(P, "a write before following", error))?;
    for receiver in [&first, &second] {
        repository
            .outbox_follow(receiver)
            .await
            .map_err(|error| failed(P, "outbox_follow", error))?;
    }
    expect(
        P,
        "pending right after following",
        pending(first.clone()).await?,
        vec![],
    )?;

    let mut revisions = BTreeMap::<String, Vec<u64>>::new();
    let mut record = |environment: &Environment, revision: Revision| {
        revisions
            .entry(environment.to_string())
            .or_default()
            .push(revision.get());
    };
    let created = write(&a, "one", Precondition::Absent)
        .await
        .map_err(|error| failed(P, "create one", error))?;
    record(&a, created.revision);
    let created = write(&b, "two", Precondition::None)
        .await
        .map_err(|error| failed(P, "create two", error))?;
    record(&b, created.revision);
    let refused = write(&a, "one", Precondition::Version(7)).await;
    expect(P, "a stale write is refused", refused.is_err(), true)?;
    let updated = write(&a, "one", Precondition::Version(1))
        .await
        .map_err(|error| failed(P, "update one", error))?;
    record(&a, updated.revision);
    let deleted = repository
        .delete(&b, &key("two"), Precondition::None, &alice)
        .await
        .map_err(|error| failed(P, "delete two", error))?;
    record(&b, deleted.revision);
    let segment_written = repository
        .upsert_segment(&a, segment("seg", json!({})), Precondition::None, &alice)
        .await
        .map_err(|error| failed(P, "segment", error))?;
    record(&a, segment_written.revision);
    // Concurrent writers of one environment: their entries come in commit (revision) order.
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let repository = Arc::clone(repository);
            let (c, alice) = (c.clone(), alice.clone());
            tokio::spawn(async move {
                let mut revisions = Vec::new();
                for round in 0..5 {
                    let name = format!("w{writer}-{round}");
                    let written = repository
                        .upsert(&c, definition(&name, json!({})), Precondition::None, &alice)
                        .await
                        .map_err(|error| failed(P, "a concurrent write", error))?;
                    revisions.push(written.revision.get());
                    tokio::task::yield_now().await;
                }
                Ok::<_, Violation>(revisions)
            })
        })
        .collect();
    let mut concurrent = Vec::new();
    for writer in writers {
        let revisions = writer
            .await
            .map_err(|error| Violation::new(P, format!("a writer panicked: {error}")))??;
        concurrent.extend(revisions);
    }
    concurrent.sort_unstable();
    revisions.insert(c.to_string(), concurrent);

    let all = pending(first.clone()).await?;
    for (environment, expected) in &revisions {
        let seen: Vec<u64> = all
            .iter()
            .filter(|entry| &entry.0 == environment)
            .map(|entry| entry.3)
            .collect();
        expect(
            P,
            &format!("pending revisions of {environment}, in order, each once"),
            &seen,
            expected,
        )?;
    }
    let told: Vec<(String, String, String)> = all
        .iter()
        .filter(|entry| entry.0 != c.to_string())
        .map(|entry| (entry.0.clone(), entry.1.clone(), entry.2.clone()))
        .collect();
    let mut told_sorted = told.clone();
    told_sorted.sort();
    let told_of = |environment: &str, key: &str, action: &str| {
        (environment.to_owned(), key.to_owned(), action.to_owned())
    };
    let mut wanted = vec![
        told_of("outbox-a", "one", "create"),
        told_of("outbox-a", "one", "update"),
        told_of("outbox-a", "seg", "create"),
        told_of("outbox-b", "two", "create"),
        told_of("outbox-b", "two", "delete"),
    ];
    wanted.sort();
    expect(
        P,
        "the writes pending (never the refused one, nor the earlier one)",
        told_sorted,
        wanted,
    )?;
    let ordered = |entries: &[(String, String, String, u64, flag_core::AuditCursor)],
                   environment: &str| {
        entries
            .iter()
            .filter(|entry| entry.0 == environment)
            .map(|entry| entry.4)
            .collect::<Vec<_>>()
    };
    let positions_a = ordered(&all, "outbox-a");
    let mut sorted = positions_a.clone();
    sorted.sort();
    expect(P, "positions grow with commit order", &positions_a, &sorted)?;

    // Marking the first of `a` delivered to the first receiver: gone for it, not for the other.
    let first_of_a = positions_a[0];
    repository
        .outbox_delivered(&first, &a, first_of_a)
        .await
        .map_err(|error| failed(P, "outbox_delivered", error))?;
    let after = pending(first.clone()).await?;
    expect(
        P,
        "the delivered entry is no longer pending",
        after
            .iter()
            .any(|entry| entry.4 == first_of_a && entry.0 == "outbox-a"),
        false,
    )?;
    expect(
        P,
        "the other entries stay pending",
        after.len(),
        all.len() - 1,
    )?;
    expect(
        P,
        "the other receiver still has everything",
        pending(second.clone()).await?.len(),
        all.len(),
    )?;
    // Marking the last of `a` covers every earlier one; an older mark never moves it back.
    let last_of_a = positions_a[positions_a.len() - 1];
    for position in [last_of_a, first_of_a] {
        repository
            .outbox_delivered(&first, &a, position)
            .await
            .map_err(|error| failed(P, "outbox_delivered", error))?;
    }
    let after = pending(first.clone()).await?;
    expect(
        P,
        "nothing of a is pending after its last is marked",
        after.iter().filter(|entry| entry.0 == "outbox-a").count(),
        0,
    )?;
    repository
        .outbox_follow(&first)
        .await
        .map_err(|error| failed(P, "following again", error))?;
    expect(
        P,
        "following again keeps the place",
        pending(first.clone()).await?,
        after,
    )?;
    let limited = repository
        .outbox_pending(&second, 1)
        .await
        .map_err(|error| failed(P, "outbox_pending with a limit", error))?;
    expect(P, "a limit of one answers one entry", limited.len(), 1)?;

    // The right to deliver: one holder until it expires.
    let hold = |holder: &'static str, now_ms: u64| {
        let first = first.clone();
        async move {
            repository
                .outbox_hold(&first, holder, now_ms, 100)
                .await
                .map_err(|error| failed(P, "outbox_hold", error))
        }
    };
    expect(P, "a free right is taken", hold("h1", 1_000).await?, true)?;
    expect(
        P,
        "a held right is refused to another",
        hold("h2", 1_050).await?,
        false,
    )?;
    expect(P, "the holder renews it", hold("h1", 1_060).await?, true)?;
    expect(
        P,
        "still refused to another before the renewed end",
        hold("h2", 1_150).await?,
        false,
    )?;
    expect(
        P,
        "an expired right is taken over",
        hold("h2", 1_200).await?,
        true,
    )?;
    expect(
        P,
        "and refused to the old holder",
        hold("h1", 1_210).await?,
        false,
    )?;
    Ok(())
}
