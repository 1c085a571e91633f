//! The public listener: pass-through fidelity, smuggling defences, header
//! hygiene, limits and upstream failures.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::fake::{self, Stepper};
use crate::gate::{self, Gate, GateOptions, FQDN};
use crate::support::{self, Client, Upstream};

/// A support client whose requests go through the gate.
fn via(gate: &Gate) -> Client {
    Client::with_http(&gate.base(), gate.http1())
}

fn without_secure(cookie: &str) -> String {
    cookie.replace("; Secure", "")
}

fn emulator_received(up: &Upstream) -> Option<Vec<mdgate::emulator::RecordedRequest>> {
    up.emulator().map(|_| crate::support::forwarded(up))
}

#[tokio::test]
async fn login_through_the_gate_matches_direct_plus_secure() {
    let up = Upstream::start().await;
    let gate = Gate::start(GateOptions::new(up.base())).await;
    let patient = up.patient("fidelity").await;

    let direct = up
        .client()
        .login(&patient.username, &patient.password)
        .await;
    let through = via(&gate).login(&patient.username, &patient.password).await;
    assert_eq!(direct.status, StatusCode::OK);
    assert_eq!(through.status, direct.status);
    assert_eq!(through.text(), direct.text(), "same user JSON");
    assert_eq!(through.content_type(), direct.content_type());
    assert_eq!(through.header("server"), Some("Javalin"));

    let d = direct.set_cookies();
    let t = through.set_cookies();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(t.len(), 1, "{t:?}");
    assert!(t[0].ends_with("; Secure"), "{}", t[0]);
    // Same attributes; the session ids differ (two logins).
    let attrs = |c: &str| {
        without_secure(c)
            .split(';')
            .skip(1)
            .map(|s| s.trim().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(attrs(t[0]), attrs(d[0]));
    assert!(t[0].starts_with("JSESSIONID="));

    // A request id comes back and was sent upstream.
    let rid = through
        .header("x-request-id")
        .expect("request id")
        .to_owned();
    assert_eq!(rid.len(), 32);
    if let Some(received) = emulator_received(&up) {
        let last = received
            .iter()
            .rev()
            .find(|r| r.path_and_query == "/api/login")
            .unwrap();
        assert_eq!(last.header("x-request-id"), Some(rid.as_str()));
    }
    gate.stop().await;
}

#[tokio::test]
async fn upstream_role_checks_come_back_unchanged() {
    let up = Upstream::start().await;
    let gate = Gate::start(GateOptions::new(up.base())).await;
    let patient = up.patient("roles").await;
    let client = via(&gate);
    client.login(&patient.username, &patient.password).await;

    // A patient on a doctor route: the upstream's 401 with its login page.
    let resp = client.get("/api/doctor/feed").await;
    resp.assert_login_page(StatusCode::UNAUTHORIZED);
    let direct = up.client();
    direct.login(&patient.username, &patient.password).await;
    let d = direct.get("/api/doctor/feed").await;
    assert_eq!(resp.status, d.status);
    assert_eq!(resp.text(), d.text());

    // A failed login: 403 with the HTML page, no cookie.
    let bad = via(&gate).login(&patient.username, "wrong").await;
    bad.assert_login_page(StatusCode::FORBIDDEN);
    assert!(bad.set_cookies().is_empty());
    gate.stop().await;
}

#[tokio::test]
async fn gzip_and_head_pass_through() {
    let up = Upstream::start().await;
    let gate = Gate::start(GateOptions::new(up.base())).await;
    let http = gate.http1();
    let url = format!("{}/api/symptom/codes", gate.base());

    let gz = http
        .get(&url)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gz.status(), StatusCode::OK);
    assert_eq!(gz.headers()["content-encoding"], "gzip");
    let compressed = gz.bytes().await.unwrap();
    let mut decoder = flate2::read::GzDecoder::new(&compressed[..]);
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut decoder, &mut plain).unwrap();
    let list: Vec<Value> = serde_json::from_str(&plain).unwrap();
    assert_eq!(list.len(), 308);
    let direct = up
        .client()
        .call(reqwest::Method::GET, "/api/symptom/codes")
        .header("accept-encoding", "gzip")
        .send()
        .await;
    assert_eq!(direct.decoded(), plain.as_bytes(), "same list as direct");

    let head = http.head(&url).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert!(head.bytes().await.unwrap().is_empty());
    gate.stop().await;
}

#[tokio::test]
async fn http2_by_alpn_reaches_the_http1_upstream() {
    let up = Upstream::start().await;
    let gate = Gate::start(GateOptions::new(up.base())).await;
    let resp = gate
        .http()
        .get(format!("{}/api/symptom/codes?language=ar", gate.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    let list: Vec<Value> = resp.json().await.unwrap();
    assert_eq!(list.len(), 308);
    gate.stop().await;
}

#[tokio::test]
async fn response_bodies_stream_without_buffering() {
    let stepper = Stepper::start().await;
    let gate = Gate::start(GateOptions::new(&stepper.addr.to_string())).await;
    let mut resp = gate
        .http1()
        .get(format!("{}/stream", gate.base()))
        .send()
        .await
        .unwrap();
    // The first chunk arrives while the upstream is still holding the rest:
    // mdgate did not wait for the whole body.
    let first = tokio::time::timeout(Duration::from_secs(5), resp.chunk())
        .await
        .expect("first chunk before the upstream finished")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"first;");
    stepper.release().await;
    let rest = resp.bytes().await.unwrap();
    assert_eq!(&rest[..], b"rest");
    gate.stop().await;
}

#[tokio::test]
async fn request_bodies_stream_without_buffering() {
    let stepper = Stepper::start().await;
    let gate = Gate::start(GateOptions::new(&stepper.addr.to_string())).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let http = gate.http1();
    let url = format!("{}/upload", gate.base());
    let call = tokio::spawn(async move {
        http.post(url)
            .body(body)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    tx.send(Ok(vec![b'a'; 64 * 1024])).await.unwrap();
    // The upstream sees the first part while the client still holds the rest.
    let mut chunks = stepper.chunks.lock().await;
    let seen = tokio::time::timeout(Duration::from_secs(5), chunks.recv())
        .await
        .expect("upstream received data before the body ended")
        .unwrap();
    assert!(seen > 0);
    for _ in 0..15 {
        tx.send(Ok(vec![b'b'; 64 * 1024])).await.unwrap();
    }
    drop(tx);
    let total = call.await.unwrap();
    assert_eq!(total, (16 * 64 * 1024).to_string());
    gate.stop().await;
}

/// A `Stream` over an mpsc receiver (without extra crates).
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Raw requests that must be refused before anything reaches the upstream.
#[tokio::test]
async fn smuggling_attempts_are_refused_and_never_forwarded() {
    let Some(up) = Upstream::emulator_only(
        "smuggling",
        "needs the emulator's record of received requests",
        Default::default(),
    )
    .await
    else {
        return;
    };
    let gate = Gate::start(GateOptions::new(up.base())).await;
    let host = format!("{FQDN}:{}", gate.public.port());
    let cases: Vec<(String, &str, &str)> = vec![
        (
            format!("POST /api/login HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            "400",
            "content_length_with_transfer_encoding",
        ),
        (
            format!("POST /api/login HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{{}}"),
            "400",
            "duplicate_content_length",
        ),
        (
            format!("POST /api/login HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
            "400",
            "unsupported_transfer_encoding",
        ),
        (
            format!("GET /api/patient/profile;jsessionid=node0abc.node0 HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            "400",
            "path_parameter",
        ),
        (
            format!("GET /api/patient/profile%3Bjsessionid=x HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            "400",
            "path_parameter",
        ),
        (
            "GET /api/symptom/codes HTTP/1.1\r\nHost: other.example.org\r\n\r\n".to_owned(),
            "421",
            "sni_host_mismatch",
        ),
    ];
    for (request, status, reason) in &cases {
        let (resp, _) = gate
            .raw(FQDN, request.as_bytes(), Duration::from_secs(3))
            .await;
        let first_line = resp.lines().next().unwrap_or("");
        assert!(
            first_line.starts_with(&format!("HTTP/1.1 {status}")),
            "{request:?} -> {resp}"
        );
        assert!(
            resp.contains(&format!("\"error\":\"{reason}\"")),
            "{request:?} -> {resp}"
        );
        assert!(resp.contains("\"request_id\":\""), "{resp}");
        if *status == "400" {
            assert!(
                resp.to_ascii_lowercase().contains("connection: close"),
                "{resp}"
            );
        }
    }
    let received = crate::support::forwarded(&up);
    assert!(
        received.is_empty(),
        "nothing may reach the upstream: {received:?}"
    );
    let metrics = gate.metrics().await;
    assert!(
        gate::metric(
            &metrics,
            "mdgate_requests_rejected_total{listener=\"public\",reason=\"path_parameter\"}"
        ) >= 2.0,
        "{metrics}"
    );
    gate.stop().await;
}

#[tokio::test]
async fn client_forwarding_and_hop_by_hop_headers_never_reach_the_upstream() {
    let Some(up) = Upstream::emulator_only(
        "header hygiene",
        "needs the emulator's record of received requests",
        Default::default(),
    )
    .await
    else {
        return;
    };
    let gate = Gate::start(GateOptions::new(up.base())).await;
    let resp = gate
        .http1()
        .get(format!("{}/api/symptom/codes", gate.base()))
        .header("X-Forwarded-For", "6.6.6.6")
        .header("X_Forwarded_For", "7.7.7.7")
        .header("x-forwarded_host", "evil.example.org")
        .header("X-Forwarded-Proto", "http")
        .header("Forwarded", "for=6.6.6.6")
        .header("X-Real-IP", "6.6.6.6")
        .header("X-Request-Id", "client-chosen")
        .header("X-Mdgate-Peer", "hospital.example.org")
        .header("Connection", "keep-alive, X-Hop-Secret")
        .header("X-Hop-Secret", "must-not-pass")
        .header("Keep-Alive", "timeout=5")
        .header("Proxy-Connection", "keep-alive")
        .header("TE", "trailers")
        .header("Upgrade", "websocket")
        .header("X-Ordinary", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(rid, "client-chosen");

    let received = crate::support::forwarded(&up);
    assert_eq!(received.len(), 1, "{received:?}");
    let r = &received[0];
    let names: Vec<String> = r
        .headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect();
    for gone in [
        "x_forwarded_for",
        "x-forwarded_host",
        "x-real-ip",
        "x-mdgate-peer",
        "x-hop-secret",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
    ] {
        assert!(
            !names.iter().any(|n| n == gone),
            "{gone} reached the upstream: {names:?}"
        );
    }
    let all = |name: &str| {
        r.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(all("x-forwarded-proto"), vec!["https"]);
    assert_eq!(
        all("x-forwarded-host"),
        vec![format!("{FQDN}:{}", gate.public.port())]
    );
    assert_eq!(
        all("forwarded"),
        vec![format!(
            "for=127.0.0.1;proto=https;host=\"{FQDN}:{}\"",
            gate.public.port()
        )]
    );
    assert_eq!(all("x-request-id"), vec![rid]);
    assert_eq!(all("x-ordinary"), vec!["kept"]);
    gate.stop().await;
}

#[tokio::test]
async fn upstream_down_gives_502_json() {
    let port = fake::closed_port().await;
    let gate = Gate::start(GateOptions::new(&port.to_string())).await;
    let resp = gate
        .http1()
        .get(format!("{}/api/symptom/codes", gate.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": "upstream_unavailable", "request_id": rid})
    );
    let metrics = gate.metrics().await;
    assert!(
        gate::metric(&metrics, "mdgate_upstream_errors_total{kind=\"connect\"}") >= 1.0,
        "{metrics}"
    );
    assert!(
        gate::metric(
            &metrics,
            "mdgate_requests_total{listener=\"public\",route_class=\"api\",status=\"502\"}"
        ) >= 1.0
    );
    gate.stop().await;
}

#[tokio::test]
async fn upstream_too_slow_gives_504_in_bounded_time() {
    let addr = fake::silent_upstream().await;
    let mut opts = GateOptions::new(&addr.to_string());
    opts.upstream_extra = String::new();
    let gate = Gate::start(opts.clone()).await;
    // The gate's response timeout is 5 s (see gate::config_text).
    let start = Instant::now();
    let resp = gate
        .http1()
        .get(format!("{}/api/symptom/codes", gate.base()))
        .send()
        .await
        .unwrap();
    let took = start.elapsed();
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "upstream_timeout");
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(15),
        "{took:?}"
    );
    gate.stop().await;
}

#[tokio::test]
async fn oversized_bodies_get_413_and_are_not_forwarded() {
    let Some(up) = Upstream::emulator_only(
        "oversized",
        "needs the emulator's record of received requests",
        Default::default(),
    )
    .await
    else {
        return;
    };
    let mut opts = GateOptions::new(up.base());
    opts.public_limits = "max_body_bytes = 1024".into();
    let gate = Gate::start(opts).await;
    let http = gate.http1();
    let url = format!("{}/api/patient/signup", gate.base());

    // Declared length over the limit: refused before contacting the upstream.
    let resp = http.post(&url).body(vec![b' '; 2048]).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "request_too_large");
    assert!(crate::support::forwarded(&up).is_empty());

    // Chunked, no declared length: cut off once the limit is passed.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b' '; 512])).collect();
    let resp = http
        .post(&url)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Under the limit still works.
    let ok = http
        .post(&url)
        .json(&json!({"username": support::unique("small"), "password": "pw"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    gate.stop().await;
}

#[tokio::test]
async fn upstream_restart_passes_through_as_the_upstream_answers() {
    let Some(up) =
        Upstream::emulator_only("restart", "restarts the emulator", Default::default()).await
    else {
        return;
    };
    let gate = Gate::start(GateOptions::new(up.base())).await;
    let patient = up.patient("restart").await;
    let client = via(&gate);
    client.login(&patient.username, &patient.password).await;
    assert_eq!(
        client.get("/api/patient/profile").await.status,
        StatusCode::OK
    );
    up.emulator().unwrap().restart();
    // The user's session died upstream: the upstream's own 401 comes back.
    client
        .get("/api/patient/profile")
        .await
        .assert_login_page(StatusCode::UNAUTHORIZED);
    gate.stop().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let up = Upstream::start().await;
    let mut opts = GateOptions::new(up.base());
    opts.public_limits = "idle_timeout = \"1s\"".into();
    let gate = Gate::start(opts).await;
    let request = format!("GET /api/symptom/codes HTTP/1.1\r\nHost: {FQDN}\r\n\r\n");
    let start = Instant::now();
    let (resp, _) = gate
        .raw(FQDN, request.as_bytes(), Duration::from_secs(10))
        .await;
    let took = start.elapsed();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    // Closed by the server after about a second of idleness (well before
    // the 2 s header-read timeout and the 10 s the client would wait).
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(1900),
        "{took:?}"
    );
    gate.stop().await;
}

/// Reads one response head (a response to HEAD has nothing after it);
/// what came if the connection closed first.
async fn read_head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A gate with `idle_timeout` (its head timeout is the test
/// configuration's 2 s) and a TLS connection to it that has had one
/// answer (to `HEAD`, so nothing follows the head).
async fn kept_alive(
    idle_timeout: &str,
) -> (
    Upstream,
    Gate,
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) {
    use tokio::io::AsyncWriteExt as _;
    let up = Upstream::start().await;
    let mut opts = GateOptions::new(up.base());
    opts.public_limits = format!("idle_timeout = \"{idle_timeout}\"");
    let gate = Gate::start(opts).await;
    let mut tls = gate.tls(FQDN).await;
    tls.write_all(probe_head().as_bytes()).await.unwrap();
    let first = read_head(&mut tls).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    (up, gate, tls)
}

fn probe_head() -> String {
    format!("HEAD /api/symptom/codes HTTP/1.1\r\nHost: {FQDN}\r\n\r\n")
}

/// How long until the server closes `s`, and what it sent before.
async fn until_closed<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> (Duration, Vec<u8>) {
    use tokio::io::AsyncReadExt as _;
    let start = Instant::now();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    (start.elapsed(), rest)
}

#[tokio::test]
async fn a_kept_alive_connection_waits_for_the_idle_timeout_not_the_head_timeout() {
    use tokio::io::AsyncWriteExt as _;
    let (_up, gate, mut tls) = kept_alive("4s").await;
    // Idle for longer than a head may take (2 s): the connection stays.
    tokio::time::sleep(Duration::from_secs(3)).await;
    tls.write_all(probe_head().as_bytes()).await.unwrap();
    let second = read_head(&mut tls).await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    // Then it idles out, about 4 s after the second answer.
    let (took, _) = until_closed(&mut tls).await;
    assert!(
        took >= Duration::from_millis(3500) && took < Duration::from_millis(6000),
        "{took:?}"
    );
    gate.stop().await;
}

#[tokio::test]
async fn a_client_that_starts_a_second_head_and_stalls_is_cut_off() {
    use tokio::io::AsyncWriteExt as _;
    let (_up, gate, mut tls) = kept_alive("30s").await;
    // Part of a second head, then nothing: cut off after the head's 2 s,
    // long before the 30 s idle timeout.
    tokio::time::sleep(Duration::from_millis(500)).await;
    tls.write_all(format!("GET / HTTP/1.1\r\nHost: {FQDN}\r\nX-Slow: ").as_bytes())
        .await
        .unwrap();
    let (took, rest) = until_closed(&mut tls).await;
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_millis(4500),
        "{took:?}"
    );
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    gate.stop().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_head_is_cut_off() {
    let up = Upstream::start().await;
    let gate = Gate::start(GateOptions::new(up.base())).await;
    let start = Instant::now();
    let (resp, _) = gate
        .raw(
            FQDN,
            format!("GET / HTTP/1.1\r\nHost: {FQDN}\r\nX-Slow: ").as_bytes(),
            Duration::from_secs(10),
        )
        .await;
    let took = start.elapsed();
    // header_read_timeout is 2 s in the test configuration.
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(5),
        "{took:?} {resp}"
    );
    assert!(!resp.contains("200 OK"));
    gate.stop().await;
}

#[tokio::test]
async fn oversized_heads_are_refused() {
    let Some(up) = Upstream::emulator_only(
        "oversized head",
        "needs the emulator's record of received requests",
        Default::default(),
    )
    .await
    else {
        return;
    };
    let gate = Gate::start(GateOptions::new(up.base())).await;
    let big = "a".repeat(20 * 1024);
    let request =
        format!("GET /api/symptom/codes HTTP/1.1\r\nHost: {FQDN}\r\nX-Big: {big}\r\n\r\n");
    let (resp, _) = gate
        .raw(FQDN, request.as_bytes(), Duration::from_secs(5))
        .await;
    assert!(
        resp.starts_with("HTTP/1.1 431"),
        "{}",
        &resp[..resp.len().min(200)]
    );
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let request = format!("GET /api/symptom/codes HTTP/1.1\r\nHost: {FQDN}\r\n{many}\r\n");
    let (resp, _) = gate
        .raw(FQDN, request.as_bytes(), Duration::from_secs(5))
        .await;
    assert!(
        resp.starts_with("HTTP/1.1 431"),
        "{}",
        &resp[..resp.len().min(200)]
    );
    assert!(crate::support::forwarded(&up).is_empty());
    gate.stop().await;
}
