//! The service's change feed: followers of an environment hear of this instance's writes, of
//! other instances' writes through a bus or a revision check, and a bulk read after an event is
//! never older than the event's revision, while a false claim costs little.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

mod support;

use std::sync::Arc;
use std::time::Duration;

use flag_core::{
    BusError, BusEvent, Environment, FeatureFlagService, InvalidationBus, Precondition, Revision,
    async_trait,
};
use support::{FakeCache, FakeRepository, boolean, env};
use tokio::sync::{broadcast, watch};

fn service() -> (Arc<FakeRepository>, FeatureFlagService) {
    let repository = Arc::new(FakeRepository::default());
    let service = FeatureFlagService::new(repository.clone(), Arc::new(FakeCache::default()));
    (repository, service)
}

async fn next(changes: &mut watch::Receiver<Revision>) -> Revision {
    tokio::time::timeout(Duration::from_secs(5), changes.changed())
        .await
        .expect("no change announced")
        .unwrap();
    *changes.borrow_and_update()
}

/// A bus whose events the test sends.
#[derive(Debug)]
struct ScriptedBus(broadcast::Sender<BusEvent>);

#[async_trait]
impl InvalidationBus for ScriptedBus {
    fn backend(&self) -> &'static str {
        "scripted"
    }
    async fn publish(&self, env: &Environment, revision: Revision) -> Result<(), BusError> {
        let _ = self.0.send(BusEvent::Invalidated {
            environment: env.clone(),
            revision,
        });
        Ok(())
    }
    fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.0.subscribe()
    }
    fn is_live(&self) -> bool {
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_hear_this_instances_writes_and_polled_writes_of_others() {
    let (repository, service) = service();
    let production = env("production");
    service
        .upsert(
            &production,
            boolean("banner", true),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .unwrap();
    let mut changes = service.watch_changes(&production).await.unwrap();
    assert_eq!(
        *changes.borrow(),
        Revision(1),
        "starts at the current revision"
    );

    service
        .upsert(
            &production,
            boolean("banner", false),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .unwrap();
    assert_eq!(next(&mut changes).await, Revision(2));

    // Another instance writes; with no bus, the revision check finds it.
    let _poller = service.follow_changes(None, Duration::from_millis(20));
    let written = repository
        .write_behind_the_service(&production, boolean("banner", true))
        .await;
    assert_eq!(next(&mut changes).await, written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_checks_every_followed_environment_and_a_bus_event_reaches_followers() {
    let (repository, service) = service();
    let production = env("production");
    service
        .upsert(
            &production,
            boolean("banner", true),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .unwrap();
    let bus = Arc::new(ScriptedBus(broadcast::channel(16).0));
    // A poll interval far beyond the test: only the bus can move the followers.
    let _follower = service.follow_changes(Some(bus.clone()), Duration::from_secs(3600));
    let mut changes = service.watch_changes(&production).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    // Written while the subscription was down: the restore reads every followed revision.
    let written = repository
        .write_behind_the_service(&production, boolean("banner", false))
        .await;
    let _ = bus.0.send(BusEvent::Lost);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !changes.has_changed().unwrap(),
        "a loss alone announces nothing"
    );
    let _ = bus.0.send(BusEvent::Restored);
    assert_eq!(next(&mut changes).await, written);

    // An event on the bus is announced as it is, with no repository read.
    let reads = repository.reads();
    bus.publish(&production, Revision(7)).await.unwrap();
    assert_eq!(next(&mut changes).await, Revision(7));
    assert_eq!(repository.reads(), reads);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_after_an_event_is_never_older_than_its_revision_and_a_false_claim_costs_little() {
    let (repository, service) = service();
    let production = env("production");
    service
        .upsert(
            &production,
            boolean("banner", false),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .unwrap();
    assert_eq!(
        service.bulk(&production).await.unwrap().revision(),
        Revision(1)
    );
    // Another instance's write: this one's cache still holds revision 1.
    let written = repository
        .write_behind_the_service(&production, boolean("banner", true))
        .await;
    assert_eq!(
        service.bulk(&production).await.unwrap().revision(),
        Revision(1)
    );
    let after = service
        .bulk_after_event(&production, Some(written))
        .await
        .unwrap();
    assert_eq!(after.revision(), written);
    // Every later read keeps to it.
    assert_eq!(service.bulk(&production).await.unwrap().revision(), written);

    // A claim of a revision that does not exist: answered with the newest there is, and a
    // hundred of them at once cost at most two repository reads.
    let before = repository.reads();
    let claims: Vec<_> = (0..100)
        .map(|_| {
            let (service, production) = (service.clone(), production.clone());
            tokio::spawn(async move {
                service
                    .bulk_after_event(&production, Some(Revision(999_999)))
                    .await
                    .unwrap()
                    .revision()
            })
        })
        .collect();
    for claim in claims {
        assert_eq!(claim.await.unwrap(), written);
    }
    assert!(
        repository.reads() - before <= 2,
        "{} reads",
        repository.reads() - before
    );
}
