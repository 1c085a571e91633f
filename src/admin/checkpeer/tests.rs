//! The judging functions on observed facts: clock skew, the identity
//! answer, refusals, the key document's labels.

use super::*;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn reply(status: StatusCode, body: &str) -> Reply {
    Reply {
        status,
        date: None,
        content_type: Some("application/json".into()),
        body: Bytes::from(body.to_owned()),
        received_at: at(1_800_000_000),
    }
}

#[test]
fn clock_skew_is_measured_against_the_tolerance() {
    let tolerance = Duration::from_secs(60);
    let t = 1_800_000_000;
    let c = clock_check(Some((at(t), at(t))), tolerance);
    assert_eq!(c.status, Status::Pass);
    let c = clock_check(Some((at(t + 30), at(t))), tolerance);
    assert_eq!(c.status, Status::Pass);
    assert!(c.reason.contains("30 s ahead of ours"), "{}", c.reason);
    let c = clock_check(Some((at(t - 95), at(t))), tolerance);
    assert_eq!(c.status, Status::Warn);
    assert!(
        c.reason
            .contains("95 s behind ours, beyond the tolerance of 60 s"),
        "{}",
        c.reason
    );
    assert_eq!(c.detail["skew_seconds"], -95);
    assert_eq!(clock_check(None, tolerance).status, Status::Skip);
}

#[test]
fn the_identity_answer_says_whether_the_peer_admits_us() {
    let t = Duration::from_secs(5);
    let ok = reply(
        StatusCode::OK,
        r#"{"server":"p.example.org","peer":"us.example.org"}"#,
    );
    let c = admits_check("p.example.org", "us.example.org", Ok(ok), t);
    assert_eq!(c.status, Status::Pass, "{}", c.reason);

    let other = reply(
        StatusCode::OK,
        r#"{"server":"p.example.org","peer":"x.example.org"}"#,
    );
    let c = admits_check("p.example.org", "us.example.org", Ok(other), t);
    assert_eq!(c.status, Status::Fail);
    assert!(
        c.reason.contains("sees us as x.example.org"),
        "{}",
        c.reason
    );

    let elsewhere = reply(
        StatusCode::OK,
        r#"{"server":"q.example.org","peer":"us.example.org"}"#,
    );
    let c = admits_check("p.example.org", "us.example.org", Ok(elsewhere), t);
    assert!(
        c.reason.contains("answers as q.example.org"),
        "{}",
        c.reason
    );

    let missing = reply(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#);
    let c = admits_check("p.example.org", "us.example.org", Ok(missing), t);
    assert_eq!(c.status, Status::Fail);
    assert!(
        c.reason.contains("404 Not Found (not_found)"),
        "{}",
        c.reason
    );

    let closed = HttpError::Closed {
        alert: None,
        detail: "connection closed before message completed".into(),
    };
    let c = admits_check("p.example.org", "us.example.org", Err(closed), t);
    assert_eq!(c.detail["label"], "peer_refused");
    assert!(c
        .reason
        .starts_with("the peer refused our certificate: check that our records"));

    let c = admits_check(
        "p.example.org",
        "us.example.org",
        Err(HttpError::Timeout),
        t,
    );
    assert_eq!(c.detail["label"], "http_timeout");
    assert!(c.reason.contains("after the handshake"), "{}", c.reason);
}

#[test]
fn handshake_failures_name_the_step() {
    let port = 8443;
    let t = Duration::from_secs(10);
    let c = handshake_failed(&HandshakeError::Timeout, port, t);
    assert!(
        c.reason.contains("TCP connected, but the TLS handshake"),
        "{}",
        c.reason
    );
    let alert = std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
    );
    let c = handshake_failed(&HandshakeError::Io(alert), port, t);
    assert_eq!(c.detail["label"], "peer_refused");
    let other = std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        rustls::Error::AlertReceived(AlertDescription::ProtocolVersion),
    );
    let c = handshake_failed(&HandshakeError::Io(other), port, t);
    assert_eq!(c.detail["label"], "tls_alert");
    let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
    let c = handshake_failed(&HandshakeError::Io(eof), port, t);
    assert_eq!(c.detail["label"], "tls_eof");
}

#[test]
fn host_headers_omit_default_ports() {
    assert_eq!(host_header("p.example.org", 443, 443), "p.example.org");
    assert_eq!(
        host_header("p.example.org", 8443, 443),
        "p.example.org:8443"
    );
}
