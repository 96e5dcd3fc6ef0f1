//! How connections are held, against the real binary over real sockets (and the accept loop in
//! process where a handler must be slow on purpose): silent sockets closed after the header
//! timeout while `/healthz` answers, keep-alive connections kept until the idle timeout, the
//! connection cap, `408` for a slow body, abandoned requests counted as `499`, and SIGTERM that
//! closes idle and half-sent connections at once but lets a request in flight finish.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use flag_server::serve::{ConnectionLimits, serve};

mod support;

use support::Running;

/// Whether the server has closed `stream` (a read answers end-of-file or a reset), waiting at
/// most `patience` for it.
fn closed_within(mut stream: &TcpStream, patience: Duration) -> bool {
    stream.set_read_timeout(Some(patience)).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => panic!("the server sent bytes to a silent client"),
        Err(error) => matches!(
            error.kind(),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
        ),
    }
}

/// Reads one HTTP/1.1 answer with a `Content-Length` from a keep-alive connection.
fn read_answer(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "connection closed early"
        );
        raw.push(byte[0]);
    }
    let head = String::from_utf8(raw).unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    head + &String::from_utf8(body).unwrap()
}

fn healthz(address: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.read_to_string(&mut reply).unwrap();
    reply
}

#[test]
fn three_thousand_silent_sockets_are_closed_after_the_header_timeout_while_healthz_answers() {
    let server = Running::start(&[("FLAG_HEADER_TIMEOUT_MS", "1000")]);
    let opened = Instant::now();
    let silent: Vec<TcpStream> = (0..3000)
        .map(|_| TcpStream::connect(&server.address).unwrap())
        .collect();
    assert!(
        healthz(&server.address).starts_with("HTTP/1.1 200"),
        "/healthz must answer while 3,000 silent sockets are held"
    );
    // Wait until every socket is past its deadline (the last connected after `opened`).
    std::thread::sleep(Duration::from_millis(1000).saturating_sub(opened.elapsed()));
    let held = silent
        .iter()
        .filter(|stream| !closed_within(stream, Duration::from_secs(5)))
        .count();
    assert_eq!(held, 0, "sockets still held past the header timeout");
    assert!(healthz(&server.address).starts_with("HTTP/1.1 200"));
}

#[test]
fn a_head_sent_too_slowly_is_closed_and_keep_alive_lasts_until_the_idle_timeout() {
    let server = Running::start(&[
        ("FLAG_HEADER_TIMEOUT_MS", "600"),
        ("FLAG_IDLE_TIMEOUT_MS", "2000"),
    ]);
    // Half a head, then nothing: closed at the header timeout, not before.
    let mut slow = TcpStream::connect(&server.address).unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost").unwrap();
    assert!(closed_within(&slow, Duration::from_secs(5)));
    assert!(started.elapsed() >= Duration::from_millis(600));

    // A keep-alive connection outlives the header timeout between requests...
    let mut kept = TcpStream::connect(&server.address).unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    kept.write_all(request).unwrap();
    assert!(read_answer(&mut kept).starts_with("HTTP/1.1 200"));
    let answered = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    kept.write_all(request).unwrap();
    assert!(
        read_answer(&mut kept).starts_with("HTTP/1.1 200"),
        "a keep-alive connection idle past the header timeout was closed"
    );
    assert!(
        answered.elapsed() < Duration::from_millis(2000),
        "too slow to judge"
    );
    // ... and is closed once idle for the idle timeout.
    let idle = Instant::now();
    assert!(closed_within(&kept, Duration::from_secs(10)));
    assert!(idle.elapsed() >= Duration::from_millis(1900));
}

#[test]
fn connections_past_the_cap_are_closed_at_once() {
    let server = Running::start(&[("FLAG_MAX_CONNECTIONS", "20")]);
    let held: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(&server.address).unwrap())
        .collect();
    // Let the server accept all of them.
    std::thread::sleep(Duration::from_millis(200));
    let extra = TcpStream::connect(&server.address).unwrap();
    assert!(
        closed_within(&extra, Duration::from_secs(2)),
        "a connection past the cap was held"
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert!(healthz(&server.address).starts_with("HTTP/1.1 200"));
}

#[test]
fn a_body_sent_too_slowly_is_408_and_an_abandoned_request_is_counted_499() {
    let server = Running::start(&[("FLAG_REQUEST_TIMEOUT_MS", "500")]);
    let body = r#"{"context": {"targetingKey": "u"}}"#;
    let send_half = |path: &str, extra: &str| {
        let mut stream = TcpStream::connect(&server.address).unwrap();
        let method = if path.starts_with("/v1/") {
            "PUT"
        } else {
            "POST"
        };
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
            body.len(),
            &body[..5]
        )
        .unwrap();
        stream
    };
    let mut single = send_half("/ofrep/v1/evaluate/flags/my-flag", "");
    let mut reply = String::new();
    single.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    let json: serde_json::Value =
        serde_json::from_str(reply.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(json["key"], "my-flag");
    assert_eq!(json["errorCode"], "GENERAL");

    let mut management = send_half(
        "/v1/environments/production/flags/my-flag",
        "Authorization: Bearer admin-secret\r\n",
    );
    let mut reply = String::new();
    management.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains(r#""code":"request_timeout""#), "{reply}");

    // A client that goes away with its body half sent.
    let abandoned = send_half("/ofrep/v1/evaluate/flags", "");
    std::thread::sleep(Duration::from_millis(100));
    drop(abandoned);
    let series =
        r#"flag_http_requests_total{route="/ofrep/v1/evaluate/flags",method="POST",status="499"}"#;
    let deadline = Instant::now() + Duration::from_secs(5);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    loop {
        let counted = runtime.block_on(async {
            let reply = support::request(server.socket(), "GET", "/metrics", &[], "").await;
            reply.body.contains(&format!("{series} 1"))
        });
        if counted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned request was never counted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_closes_idle_and_half_sent_connections_at_once() {
    let mut server = Running::start(&[]);
    // Idle keep-alive, half a head, and a whole head with half a body.
    let mut idle = TcpStream::connect(&server.address).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert!(read_answer(&mut idle).starts_with("HTTP/1.1 200"));
    let mut head = TcpStream::connect(&server.address).unwrap();
    head.write_all(b"GET /healthz HTTP/1.1\r\nHo").unwrap();
    let mut body = TcpStream::connect(&server.address).unwrap();
    body.write_all(
        b"PUT /v1/environments/production/flags/f HTTP/1.1\r\nHost: t\r\n\
          Authorization: Bearer admin-secret\r\nContent-Length: 100\r\n\r\n{\"ena",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    server.terminate();
    let exit = server.child.wait().unwrap();
    let took = signalled.elapsed();
    assert!(exit.success(), "{exit:?}");
    assert!(
        took < Duration::from_secs(1),
        "SIGTERM took {took:?} with idle and half-sent connections"
    );
    for stream in [&mut idle, &mut head, &mut body] {
        assert!(closed_within(stream, Duration::from_secs(1)));
    }
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish() {
    let app = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            "done"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, app, ConnectionLimits::default(), async {
        let _ = stopped.await;
    }));
    let request = tokio::spawn(support::request(address, "GET", "/slow", &[], ""));
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.send(()).unwrap();
    let reply = request.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "done");
    tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .expect("the server stops once the request in flight is answered")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "the listener is closed after shutdown"
    );
}

#[tokio::test]
async fn two_hundred_concurrent_oversized_bodies_are_refused_at_once_with_bounded_memory() {
    let server = Running::start(&[]);
    let address = server.socket();
    // Warm up, then measure the peak from here.
    assert!(healthz(&server.address).starts_with("HTTP/1.1 200"));
    let peak_before = server.memory_kb("VmHWM");
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..200 {
        tasks.spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let stream = tokio::net::TcpStream::connect(address).await.unwrap();
            let (mut reader, mut writer) = stream.into_split();
            let length = 950_000;
            let path = if index % 2 == 0 {
                "/ofrep/v1/evaluate/flags"
            } else {
                "/ofrep/v1/evaluate/flags/f"
            };
            let sender = tokio::spawn(async move {
                let head = format!(
                    "POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
                     Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
                );
                let _ = writer.write_all(head.as_bytes()).await;
                let chunk = vec![b' '; 64 * 1024];
                let mut sent = 0;
                while sent < length {
                    let size = chunk.len().min(length - sent);
                    if writer.write_all(&chunk[..size]).await.is_err() {
                        break;
                    }
                    sent += size;
                }
            });
            let mut reply = Vec::new();
            let _ = reader.read_to_end(&mut reply).await;
            sender.abort();
            String::from_utf8_lossy(&reply).into_owned()
        });
    }
    let mut refused = 0;
    while let Some(reply) = tasks.join_next().await {
        let reply = reply.unwrap();
        assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
        refused += 1;
    }
    let took = started.elapsed();
    let peak_after = server.memory_kb("VmHWM");
    eprintln!("200 oversized bodies refused in {took:?}; peak {peak_before} kB -> {peak_after} kB");
    assert_eq!(refused, 200);
    assert!(took < Duration::from_secs(10), "refusing took {took:?}");
    assert!(
        peak_after < peak_before + 20 * 1024,
        "peak resident memory grew from {peak_before} kB to {peak_after} kB"
    );
}

#[test]
fn a_low_soft_descriptor_limit_is_raised_so_silent_sockets_do_not_starve_healthz() {
    // Started as `prlimit --nofile=256:<hard>` would leave it: 256 descriptors unless raised.
    let hard = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "ulimit -Hn"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let hard: u64 = hard.trim().parse().unwrap_or(4096);
    assert!(
        hard > 1024,
        "this test needs a hard descriptor limit above 1024, not {hard}"
    );
    let server = Running::start_under(&format!("256:{hard}"), &[]);
    let silent: Vec<TcpStream> = (0..400)
        .map(|_| TcpStream::connect(&server.address).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        healthz(&server.address).starts_with("HTTP/1.1 200"),
        "/healthz must answer with 400 silent sockets held under a soft limit of 256"
    );
    drop(silent);
}
