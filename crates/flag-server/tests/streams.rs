//! OFREP event streams and CORS over real sockets: what bulk answers advertise, the stream's
//! framing, ids, `Last-Event-ID`, heartbeats, coalescing, credentials, limits, changes from other
//! instances (Redis bus, and revision polling on a shared database), `flagConfigEtag`, SIGTERM,
//! and the CORS headers of allowed and other origins.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use flag_fixtures::PostgresDatabase;
use flag_server::config::CacheBackend;
use serde_json::{Value, json};
use support::{Backend, Running, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PATIENCE: Duration = Duration::from_secs(10);

/// An open event stream: the status and what arrived so far.
struct Stream {
    socket: TcpStream,
    status: u16,
    head: String,
    received: String,
}

impl Stream {
    /// Opens `path` on `address` with `headers`; for a status other than 200, the whole answer.
    async fn open(address: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Self {
        let mut socket = TcpStream::connect(address).await.unwrap();
        let mut head = format!("GET {path} HTTP/1.1\r\nHost: test\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        socket.write_all(head.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let deadline = Instant::now() + PATIENCE;
        let end = loop {
            if let Some(end) = raw.windows(4).position(|window| window == b"\r\n\r\n") {
                break end;
            }
            assert!(Instant::now() < deadline, "no head");
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout(PATIENCE, socket.read(&mut chunk))
                .await
                .expect("no head in time")
                .unwrap();
            assert!(read > 0, "closed before a head");
            raw.extend_from_slice(&chunk[..read]);
        };
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        Self {
            socket,
            status,
            head,
            received: String::from_utf8_lossy(&raw[end + 4..]).into_owned(),
        }
    }

    /// Reads until `wanted` holds for what arrived, or the stream ends; answers whether it held.
    async fn until(&mut self, within: Duration, wanted: impl Fn(&str) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while !wanted(&self.received) {
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.socket.read(&mut chunk)).await {
                Ok(Ok(read)) if read > 0 => {
                    self.received
                        .push_str(&String::from_utf8_lossy(&chunk[..read]));
                }
                _ => return false,
            }
        }
        true
    }

    /// Whether the server ended the stream within `within`.
    async fn ends_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.socket.read(&mut chunk)).await {
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(read)) => self
                    .received
                    .push_str(&String::from_utf8_lossy(&chunk[..read])),
                Err(_) => return false,
            }
        }
    }

    /// The ids of the events received so far.
    fn ids(&self) -> Vec<u64> {
        self.received
            .lines()
            .filter_map(|line| line.strip_prefix("id: ")?.trim().parse().ok())
            .collect()
    }
}

fn flag(enabled: bool) -> String {
    json!({"enabled": enabled}).to_string()
}

async fn write(address: SocketAddr, env: &str, key: &str, enabled: bool) -> u16 {
    support::request(
        address,
        "PUT",
        &format!("/v1/environments/{env}/flags/{key}"),
        &[("Authorization", "Bearer admin-secret")],
        &flag(enabled),
    )
    .await
    .status
}

async fn bulk(address: SocketAddr, env: &str, query: &str, headers: &[(&str, &str)]) -> Value {
    let mut all = vec![("X-Environment", env)];
    all.extend_from_slice(headers);
    let reply = support::request(
        address,
        "POST",
        &format!("/ofrep/v1/evaluate/flags{query}"),
        &all,
        r#"{"context":{"targetingKey":"u"}}"#,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

fn stream_uri(answer: &Value) -> String {
    let streams = answer["eventStreams"].as_array().unwrap();
    assert_eq!(streams.len(), 1, "{answer}");
    assert_eq!(streams[0]["type"], "sse");
    assert_eq!(streams[0]["inactivityDelaySec"], 120);
    streams[0]["endpoint"]["requestUri"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_reaches_an_open_stream_as_one_event_with_its_revision() {
    let server = TestServer::start(Backend::Embedded).await;
    assert_eq!(write(server.address, "web", "banner", false).await, 201);
    let answer = bulk(server.address, "web", "", &[]).await;
    assert_eq!(
        answer["metadata"],
        json!({"environment": "web", "revision": 1})
    );
    let uri = stream_uri(&answer);
    assert_eq!(
        uri, "/ofrep/v1/events/web",
        "open OFREP needs no credential"
    );

    let mut stream = Stream::open(server.address, &uri, &[]).await;
    assert_eq!(stream.status, 200);
    assert!(
        stream
            .head
            .to_ascii_lowercase()
            .contains("content-type: text/event-stream")
    );
    assert!(
        stream
            .until(PATIENCE, |text| text.contains("retry: "))
            .await
    );
    assert!(stream.ids().is_empty(), "no event before a change");

    assert_eq!(write(server.address, "web", "banner", true).await, 200);
    assert!(
        stream
            .until(PATIENCE, |text| text.contains("id: 2\n"))
            .await
    );
    let data = stream
        .received
        .lines()
        .find_map(|line| line.strip_prefix("data: "))
        .unwrap();
    let data: Value = serde_json::from_str(data).unwrap();
    assert_eq!(data["type"], "refetchEvaluation");
    assert_eq!(data["etag"], "2");
    assert!(data["lastModified"].as_u64().unwrap() > 1_700_000_000);
    assert!(stream.received.contains("event: message\n"));

    // A burst is coalesced: at most one event per 100 ms, and the last revision always arrives.
    for round in 0..20 {
        write(server.address, "web", "banner", round % 2 == 0).await;
    }
    assert!(
        stream
            .until(PATIENCE, |text| text.contains("id: 22\n"))
            .await
    );
    let ids = stream.ids();
    assert!(
        ids.len() < 20,
        "a burst of 20 writes sent {} events",
        ids.len()
    );
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");

    // Other environments' writes are not this stream's.
    write(server.address, "other", "banner", true).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.until(Duration::from_millis(100), |_| false).await;
    assert_eq!(stream.ids().last(), Some(&22));
}

/// Offline mode: a reloaded flags file reaches an open stream as a write does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_flags_file_reaches_an_open_stream() {
    let directory = flag_fixtures::ScratchDir::new().unwrap();
    let path = directory.path().join("flags.json");
    let file = |enabled: bool| {
        json!({"environment": "web", "flags": [{"key": "banner", "enabled": enabled}]}).to_string()
    };
    std::fs::write(&path, file(false)).unwrap();
    let server = TestServer::start_with(Backend::Embedded, |config| {
        config.database_url = format!("file://{}", path.display());
        config.file_poll_ms = 3_600_000;
    })
    .await;
    let answer = bulk(server.address, "web", "", &[]).await;
    let before = answer["metadata"]["revision"].as_u64().unwrap();
    let mut stream = Stream::open(server.address, &stream_uri(&answer), &[]).await;
    assert_eq!(stream.status, 200);
    assert!(
        stream
            .until(PATIENCE, |text| text.contains("retry: "))
            .await
    );

    let staged = path.with_extension("staged");
    std::fs::write(&staged, file(true)).unwrap();
    std::fs::rename(&staged, &path).unwrap();
    assert!(
        stream.until(PATIENCE, |text| text.contains("id: ")).await,
        "{}",
        stream.received
    );
    let id = stream.ids()[0];
    assert!(id > before, "event {id} after revision {before}");
    let answer = bulk(server.address, "web", "", &[]).await;
    assert_eq!(answer["metadata"]["revision"].as_u64(), Some(id));
    assert_eq!(answer["flags"][0]["value"], json!(true), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_catches_up_heartbeats_keep_a_quiet_stream_and_the_limit_holds() {
    let server = TestServer::start_with(Backend::Embedded, |config| {
        config.stream_heartbeat_ms = 100;
        config.max_streams = 2;
    })
    .await;
    for _ in 0..3 {
        write(server.address, "web", "banner", true).await;
    }
    // Behind the current revision: one event at once.
    let mut behind = Stream::open(
        server.address,
        "/ofrep/v1/events/web",
        &[("Last-Event-ID", "1")],
    )
    .await;
    assert!(
        behind
            .until(PATIENCE, |text| text.contains("id: 3\n"))
            .await
    );
    // Up to date: nothing but heartbeats (comment lines).
    let mut current = Stream::open(
        server.address,
        "/ofrep/v1/events/web",
        &[("Last-Event-ID", "3")],
    )
    .await;
    assert!(
        current
            .until(PATIENCE, |text| text.matches(":\n\n").count() >= 3)
            .await
    );
    assert!(current.ids().is_empty());
    assert_eq!(server.metric("flag_event_streams_open").await, 2.0);
    // A third stream is past FLAG_MAX_STREAMS = 2.
    let third = Stream::open(server.address, "/ofrep/v1/events/web", &[]).await;
    assert_eq!(third.status, 503);
    // A closed stream gives its place back.
    drop(behind);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let again = Stream::open(server.address, "/ofrep/v1/events/web", &[]).await;
        if again.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a closed stream's place was never given back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // An invalid environment is a 400.
    let bad = Stream::open(server.address, "/ofrep/v1/events/Bad*Name", &[]).await;
    assert_eq!(bad.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_client_tokens_a_stream_needs_the_credential_of_its_own_environment() {
    let server = TestServer::start_with(Backend::Embedded, |config| {
        config.client_tokens = Some(vec!["web|app:client-secret".to_owned()]);
        config.stream_credential_ttl_ms = 1_500;
    })
    .await;
    write(server.address, "web", "banner", true).await;
    write(server.address, "app", "banner", true).await;
    let token = [("Authorization", "Bearer client-secret")];
    let web = stream_uri(&bulk(server.address, "web", "", &token).await);
    let app = stream_uri(&bulk(server.address, "app", "", &token).await);
    let credential = web
        .split_once("?credential=")
        .expect("a credential")
        .1
        .to_owned();
    assert!(credential.len() > 40);

    assert_eq!(Stream::open(server.address, &web, &[]).await.status, 200);
    assert_eq!(Stream::open(server.address, &app, &[]).await.status, 200);
    // The credential with its last digit changed (to one it is not: a fixed replacement would
    // leave one credential in sixteen untouched).
    let last = if credential.ends_with('0') { '1' } else { '0' };
    let refused = [
        "/ofrep/v1/events/web".to_owned(),
        format!("/ofrep/v1/events/app?credential={credential}"),
        format!(
            "/ofrep/v1/events/web?credential={}{last}",
            &credential[..credential.len() - 1]
        ),
        "/ofrep/v1/events/web?credential=garbage".to_owned(),
    ];
    for path in &refused {
        let stream = Stream::open(server.address, path, &[]).await;
        assert_eq!(stream.status, 401, "{path}");
        assert!(
            stream.head.contains("www-authenticate") || stream.head.contains("WWW-Authenticate")
        );
    }
    // A client token in a header serves as well (server SDKs).
    assert_eq!(
        Stream::open(server.address, "/ofrep/v1/events/web", &token)
            .await
            .status,
        200
    );
    // Expired.
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    assert_eq!(Stream::open(server.address, &web, &[]).await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_allowed_origins_only_and_only_on_ofrep() {
    let server = TestServer::start_with(Backend::Embedded, |config| {
        config.cors_origins = Some(vec!["http://app.test:3000".to_owned()]);
    })
    .await;
    write(server.address, "production", "banner", true).await;
    let address = server.address;
    let preflight = async |origin: &str, path: &str| {
        support::request(
            address,
            "OPTIONS",
            path,
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                (
                    "Access-Control-Request-Headers",
                    "content-type, authorization",
                ),
            ],
            "",
        )
        .await
    };
    let allowed = preflight("http://app.test:3000", "/ofrep/v1/evaluate/flags").await;
    assert_eq!(allowed.status, 204);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("http://app.test:3000")
    );
    assert_eq!(allowed.header("vary"), Some("Origin"));
    assert_eq!(
        allowed.header("access-control-allow-methods"),
        Some("GET, POST, OPTIONS")
    );
    assert_eq!(
        allowed.header("access-control-allow-headers"),
        Some("authorization, content-type, if-none-match, x-api-key, x-environment")
    );
    assert_eq!(allowed.header("access-control-max-age"), Some("600"));
    let stream_preflight = preflight("http://app.test:3000", "/ofrep/v1/events/production").await;
    assert_eq!(stream_preflight.status, 204);

    let other = preflight("http://evil.test", "/ofrep/v1/evaluate/flags").await;
    assert!(
        other
            .headers
            .iter()
            .all(|(name, _)| !name.starts_with("access-control-"))
    );
    let management = preflight("http://app.test:3000", "/v1/environments").await;
    assert!(
        management
            .headers
            .iter()
            .all(|(name, _)| !name.starts_with("access-control-"))
    );

    let answer = support::request(
        server.address,
        "POST",
        "/ofrep/v1/evaluate/flags",
        &[("Origin", "http://app.test:3000")],
        r#"{"context":{}}"#,
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some("http://app.test:3000")
    );
    assert_eq!(answer.header("access-control-expose-headers"), Some("ETag"));
    let stream = Stream::open(
        server.address,
        "/ofrep/v1/events/production",
        &[("Origin", "http://app.test:3000")],
    )
    .await;
    assert!(
        stream
            .head
            .to_ascii_lowercase()
            .contains("access-control-allow-origin: http://app.test:3000")
    );
    let elsewhere = support::request(
        server.address,
        "POST",
        "/ofrep/v1/evaluate/flags",
        &[("Origin", "http://evil.test")],
        r#"{"context":{}}"#,
    )
    .await;
    assert!(elsewhere.header("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_hears_of_a_write_through_redis() {
    let first = TestServer::start(Backend::RedisPostgres).await;
    let config = first.config.clone();
    for backend in [CacheBackend::Redis, CacheBackend::Tiered] {
        let second = TestServer::start_with(Backend::RedisPostgres, |mine| {
            *mine = config.clone();
            mine.cache_backend = Some(backend);
        })
        .await;
        write(first.address, "shared", "banner", true).await;
        let mut stream = Stream::open(second.address, "/ofrep/v1/events/shared", &[]).await;
        assert!(stream.until(PATIENCE, |text| text.contains("retry:")).await);
        // The bus subscription may still be coming up on the second instance.
        let deadline = Instant::now() + PATIENCE;
        let mut heard = false;
        while !heard && Instant::now() < deadline {
            write(first.address, "shared", "banner", true).await;
            heard = stream
                .until(Duration::from_millis(500), |text| text.contains("id: "))
                .await;
        }
        assert!(
            heard,
            "{backend:?}: a write on another instance never reached the stream"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_shared_database_without_redis_streams_poll_and_flag_config_etag_is_honoured() {
    let database = PostgresDatabase::create()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let on_shared = |config: &mut flag_server::config::Config| {
        config.database_url = database.url().to_owned();
        config.cache_backend = Some(CacheBackend::Memory);
        config.stream_poll_ms = 200;
    };
    let writer = TestServer::start_with(Backend::Embedded, on_shared).await;
    let reader = TestServer::start_with(Backend::Embedded, on_shared).await;
    write(writer.address, "shared", "banner", false).await;
    // The reader caches revision 1 for its TTL (5 minutes).
    assert_eq!(
        bulk(reader.address, "shared", "", &[]).await["metadata"]["revision"],
        1
    );
    let mut stream = Stream::open(reader.address, "/ofrep/v1/events/shared", &[]).await;
    assert!(stream.until(PATIENCE, |text| text.contains("retry:")).await);

    write(writer.address, "shared", "banner", true).await;
    assert!(
        stream
            .until(PATIENCE, |text| text.contains("id: 2\n"))
            .await,
        "the poll never saw the other instance's write"
    );
    // Without the event's etag the reader may answer from its cache; with it, never older.
    let fresh = bulk(reader.address, "shared", "?flagConfigEtag=2", &[]).await;
    assert_eq!(fresh["metadata"]["revision"], 2);
    assert_eq!(fresh["flags"][0]["value"], true);
    // A claim of a revision that does not exist changes nothing and fails nothing.
    let bogus = bulk(
        reader.address,
        "shared",
        "?flagConfigEtag=999999&flagConfigLastModified=x",
        &[],
    )
    .await;
    assert_eq!(bogus["metadata"]["revision"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_open_streams_at_once_and_no_credential_reaches_the_logs() {
    let server = Running::start(&[
        ("FLAG_CLIENT_TOKENS", "client-secret"),
        ("RUST_LOG", "debug"),
        ("FLAG_LOG_FORMAT", "json"),
    ]);
    let address = server.socket();
    write(address, "production", "banner", true).await;
    let token = [("Authorization", "Bearer client-secret")];
    let uri = stream_uri(&bulk(address, "production", "", &token).await);
    let credential = uri.split_once("?credential=").unwrap().1.to_owned();
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut stream = Stream::open(address, &uri, &[]).await;
        assert_eq!(stream.status, 200);
        assert!(stream.until(PATIENCE, |text| text.contains("retry:")).await);
        streams.push(stream);
    }
    let stopped = Instant::now();
    server.terminate();
    for stream in &mut streams {
        assert!(
            stream.ends_within(Duration::from_secs(2)).await,
            "a stream outlived SIGTERM"
        );
    }
    let mut server = server;
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        stopped.elapsed() < Duration::from_secs(3),
        "{:?}",
        stopped.elapsed()
    );
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut server.child.stderr.take().unwrap(), &mut logs).unwrap();
    assert!(
        logs.contains("/ofrep/v1/events"),
        "requests are logged at debug: {logs}"
    );
    let (expiry, signature) = credential.split_once('.').unwrap();
    assert!(
        !logs.contains(signature) && !logs.contains(expiry),
        "a credential was logged"
    );
}
