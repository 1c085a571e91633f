//! Unit tests of the pages: the pure helpers (escaping, paths, forms,
//! origins, cookies, CSRF tokens, session expiry) and whole requests
//! through [`Web::handle_any`] against a fake access flow.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use uuid::Uuid;

use super::form::{self, Form, Refusal};
use super::html::{self, esc};
use super::session::{self, CookieKind, Csrf, SessionId, Sessions};
use super::*;
use crate::dns::ManualClock;
use crate::federation::access::{DoctorRequest, NewInvitation, PatientOverview};
use crate::federation::transfer::{HandOver, HandOverError, TransferData, TransferView};
use crate::policy::Role;
use crate::store;
use crate::transfer::machine::{source, target};
use crate::upstream::{NewQuestion, SessionCookie, SignedInUser, UpstreamError, UpstreamId};

// ------------------------------------------------------------ helpers

#[test]
fn escaping() {
    let cases = [
        ("", ""),
        ("plain text", "plain text"),
        (
            "<script>alert(1)</script>",
            "&lt;script&gt;alert(1)&lt;/script&gt;",
        ),
        ("a & b", "a &amp; b"),
        ("\"quoted\" 'single'", "&quot;quoted&quot; &#39;single&#39;"),
        ("&amp;", "&amp;amp;"),
        ("Zoë – 100 %", "Zoë – 100 %"),
        ("<<>>", "&lt;&lt;&gt;&gt;"),
    ];
    for (input, want) in cases {
        assert_eq!(html::escape(input), want, "{input:?}");
        assert_eq!(format!("{}", esc(input)), want);
    }
}

#[test]
fn serves_exactly_its_paths() {
    for path in [
        "/federation",
        "/federation/",
        "/federation/patient",
        "/federation/anything/else",
        "/.well-known/webfinger",
    ] {
        assert!(Web::serves(path), "{path}");
    }
    for path in [
        "/",
        "/federationx",
        "/federation-x/",
        "/federationpatient",
        "/Federation/",
        "/api/federation/",
        "/.well-known/webfingerx",
        "/.well-known/webfinger/x",
        "/.well-known/mdgate/keys",
        "//federation/",
    ] {
        assert!(!Web::serves(path), "{path}");
    }
}

#[test]
fn resolves_routes_from_exact_paths() {
    let id = Uuid::parse_str("0b8f5c7e-6f0a-4a55-9d1e-2f3b4c5d6e7f").unwrap();
    let s = "0b8f5c7e-6f0a-4a55-9d1e-2f3b4c5d6e7f";
    let good = [
        ("/federation", Route::Bare),
        ("/federation/", Route::Index),
        ("/federation/sign-in", Route::SignIn),
        ("/federation/sign-out", Route::SignOut),
        ("/federation/patient", Route::Patient),
        ("/federation/patient/invitation", Route::NewInvitation),
        (
            &format!("/federation/patient/requests/{s}/approve"),
            Route::Approve(id),
        ),
        (
            &format!("/federation/patient/requests/{s}/deny"),
            Route::Deny(id),
        ),
        (
            &format!("/federation/patient/grants/{s}/revoke"),
            Route::Revoke(id),
        ),
        ("/federation/doctor", Route::Doctor),
        ("/federation/doctor/requests", Route::StartRequest),
        (
            &format!("/federation/doctor/requests/{s}"),
            Route::DoctorRequest(id),
        ),
        (
            &format!("/federation/doctor/requests/{s}/record/vitals"),
            Route::Record(id, RouteId::Vitals),
        ),
        (
            &format!("/federation/doctor/requests/{s}/questions"),
            Route::Ask(id),
        ),
        ("/.well-known/webfinger", Route::WebFinger),
        (
            &format!("/federation/patient/transfers/{s}/approve"),
            Route::ApproveTransfer(id),
        ),
        ("/federation/doctor/transfers", Route::StartTransfer),
        (
            &format!("/federation/doctor/transfers/{s}"),
            Route::DoctorTransfer(id),
        ),
        (
            &format!("/federation/doctor/transfers/{s}/bundle.jsonl"),
            Route::BundleJsonl(id),
        ),
        (
            &format!("/federation/doctor/transfers/{s}/bundle.fhir.json"),
            Route::BundleFhir(id),
        ),
        (&format!("/federation/transfer/{s}"), Route::HandOver(id)),
    ];
    for (path, want) in good {
        assert_eq!(resolve(path), Some(want), "{path}");
    }
    let upper = s.to_uppercase();
    let simple = s.replace('-', "");
    for path in [
        "/federation/patient/",
        "/federation//patient",
        "/federation/patient/../doctor",
        "/federation/Patient",
        &format!("/federation/doctor/requests/{upper}"),
        &format!("/federation/doctor/requests/{simple}"),
        &format!("/federation/doctor/requests/{{{s}}}"),
        &format!("/federation/doctor/requests/{s}/record/ask_question"),
        &format!("/federation/doctor/requests/{s}/record/Vitals"),
        &format!("/federation/doctor/requests/{s}/record/"),
        "/federation/doctor/requests/not-a-uuid",
        "/federation/v1/records",
        "/federation/transfer/",
        &format!("/federation/transfer/{upper}"),
        &format!("/federation/transfer/{s}/"),
        &format!("/federation/doctor/transfers/{s}/bundle.json"),
        &format!("/federation/doctor/transfers/{s}/bundle.jsonl/"),
        &format!("/federation/patient/transfers/{s}"),
    ] {
        assert_eq!(resolve(path), None, "{path}");
    }
}

#[test]
fn form_parsing() {
    let f = Form::parse(b"a=1&b=hello+world&c=%3Cx%3E%26&empty=&novalue&&").unwrap();
    assert_eq!(f.get("a"), Some("1"));
    assert_eq!(f.get("b"), Some("hello world"));
    assert_eq!(f.get("c"), Some("<x>&"));
    assert_eq!(f.get("empty"), Some(""));
    assert_eq!(f.non_empty("empty"), None);
    assert_eq!(f.get("novalue"), Some(""));
    assert_eq!(f.get("missing"), None);
    // A literal plus is sent as %2B; UTF-8 escapes decode.
    let f = Form::parse(b"pw=a%2Bb&name=Zo%C3%AB").unwrap();
    assert_eq!(f.get("pw"), Some("a+b"));
    assert_eq!(f.get("name"), Some("Zoë"));
    // A field twice is ambiguous: refused, never "first wins".
    assert_eq!(Form::parse(b"csrf=a&csrf=b"), Err(Refusal::Malformed));
    // Invalid UTF-8 after decoding is refused, not replaced.
    assert_eq!(Form::parse(b"pw=%FF%FE"), Err(Refusal::Malformed));
    // Too many fields.
    let many: Vec<String> = (0..=form::MAX_FIELDS).map(|i| format!("f{i}=x")).collect();
    assert_eq!(
        Form::parse(many.join("&").as_bytes()),
        Err(Refusal::Malformed)
    );
    // `take` removes the value.
    let mut f = Form::parse(b"password=secret&x=1").unwrap();
    assert_eq!(f.take("password").as_deref(), Some("secret"));
    assert_eq!(f.get("password"), None);
    // Repeats are kept by `pairs` (WebFinger's rel).
    let p = form::pairs(b"rel=a&rel=b").unwrap();
    assert_eq!(p.len(), 2);
}

#[test]
fn origin_checks() {
    let same = [
        ("https://gate.test", "https", "gate.test"),
        ("https://GATE.test", "https", "gate.test"),
        ("https://gate.test:443", "https", "gate.test"),
        ("https://gate.test", "https", "gate.test:443"),
        ("https://gate.test:8443", "https", "gate.test:8443"),
        ("http://127.0.0.1:8080", "http", "127.0.0.1:8080"),
        ("https://[::1]:8443", "https", "[::1]:8443"),
        (
            "https://gate.test/federation/patient?x=1",
            "https",
            "gate.test",
        ),
    ];
    for (url, scheme, host) in same {
        assert!(form::same_origin(url, scheme, host), "{url} vs {host}");
    }
    let other = [
        ("null", "https", "gate.test"),
        ("http://gate.test", "https", "gate.test"),
        ("https://gate.test", "http", "gate.test"),
        ("https://gate.test:8443", "https", "gate.test"),
        ("https://evil.test", "https", "gate.test"),
        ("https://gate.test.evil.test", "https", "gate.test"),
        ("https://evil.test@gate.test", "https", "gate.test"),
        ("https://gate.test@evil.test", "https", "gate.test"),
        ("https://gate.test:abc", "https", "gate.test"),
        ("https://", "https", "gate.test"),
        ("gate.test", "https", "gate.test"),
        ("https://gate.test", "https", ""),
    ];
    for (url, scheme, host) in other {
        assert!(!form::same_origin(url, scheme, host), "{url} vs {host}");
    }

    let check = |pairs: &[(&'static str, &'static str)]| {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        form::check_origin(&h, "https", "gate.test")
    };
    assert_eq!(check(&[("origin", "https://gate.test")]), Ok(()));
    assert_eq!(
        check(&[("referer", "https://gate.test/federation/")]),
        Ok(())
    );
    assert_eq!(
        check(&[
            ("origin", "https://gate.test"),
            ("sec-fetch-site", "same-origin")
        ]),
        Ok(())
    );
    assert_eq!(check(&[]), Err(Refusal::NoOrigin));
    assert_eq!(
        check(&[("origin", "https://evil.test")]),
        Err(Refusal::WrongOrigin)
    );
    assert_eq!(check(&[("origin", "null")]), Err(Refusal::WrongOrigin));
    // A wrong Origin is not saved by a good Referer.
    assert_eq!(
        check(&[
            ("origin", "https://evil.test"),
            ("referer", "https://gate.test/")
        ]),
        Err(Refusal::WrongOrigin)
    );
    assert_eq!(
        check(&[
            ("origin", "https://gate.test"),
            ("sec-fetch-site", "cross-site")
        ]),
        Err(Refusal::CrossSite)
    );
    assert_eq!(
        check(&[
            ("origin", "https://gate.test"),
            ("sec-fetch-site", "same-site")
        ]),
        Err(Refusal::CrossSite)
    );
}

#[test]
fn content_types() {
    let ct = |v: &'static str| {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
        form::check_content_type(&h)
    };
    assert_eq!(ct("application/x-www-form-urlencoded"), Ok(()));
    assert_eq!(
        ct("application/x-www-form-urlencoded; charset=UTF-8"),
        Ok(())
    );
    assert_eq!(ct("Application/X-WWW-Form-Urlencoded"), Ok(()));
    assert_eq!(ct("application/json"), Err(Refusal::NotForm));
    assert_eq!(ct("multipart/form-data; boundary=x"), Err(Refusal::NotForm));
    assert_eq!(ct("text/plain"), Err(Refusal::NotForm));
    assert_eq!(
        form::check_content_type(&HeaderMap::new()),
        Err(Refusal::NotForm)
    );
}

#[test]
fn cookie_attributes() {
    let id = SessionId::random();
    let value = id.encode();
    assert_eq!(value.len(), 43);
    assert_eq!(
        session::set_cookie(CookieKind::Session, true, &id),
        format!("__Host-mdgate={value}; Path=/; Secure; HttpOnly; SameSite=Strict")
    );
    assert_eq!(
        session::set_cookie(CookieKind::Session, false, &id),
        format!("mdgate={value}; Path=/; HttpOnly; SameSite=Strict")
    );
    assert_eq!(
        session::set_cookie(CookieKind::SignIn, true, &id),
        format!("__Host-mdgate-signin={value}; Path=/; Secure; HttpOnly; SameSite=Strict")
    );
    let cleared = session::clear_cookie(CookieKind::Session, true);
    assert!(cleared.starts_with("__Host-mdgate=; "), "{cleared}");
    assert!(cleared.contains("Max-Age=0"));
    assert!(cleared.contains("Secure") && cleared.contains("HttpOnly"));
    // No Domain attribute ever (the __Host- prefix forbids it).
    assert!(!session::set_cookie(CookieKind::Session, true, &id).contains("Domain"));
    // Debug never shows the id.
    assert_eq!(format!("{id:?}"), "SessionId([redacted])");

    let headers = |v: String| {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::try_from(v).unwrap());
        h
    };
    let h = headers(format!("other=1; mdgate={value}; x=y"));
    assert_eq!(session::read_cookie(&h, "mdgate"), Some(id.clone()));
    assert_eq!(session::read_cookie(&h, "__Host-mdgate"), None);
    // Two cookies of our name: none is trusted.
    let h = headers(format!(
        "mdgate={value}; mdgate={}",
        SessionId::random().encode()
    ));
    assert_eq!(session::read_cookie(&h, "mdgate"), None);
    for bad in ["mdgate=short", "mdgate=", "mdgate=!!!"] {
        assert_eq!(
            session::read_cookie(&headers(bad.to_owned()), "mdgate"),
            None
        );
    }
}

#[test]
fn csrf_tokens() {
    let csrf = Csrf::with_key(b"k");
    let id = SessionId::random();
    let token = csrf.token(CookieKind::Session, &id);
    assert!(csrf.verify(CookieKind::Session, &id, &token));
    // Bound to the id, the purpose and the key.
    assert!(!csrf.verify(CookieKind::Session, &SessionId::random(), &token));
    assert!(!csrf.verify(CookieKind::SignIn, &id, &token));
    assert!(!Csrf::with_key(b"other").verify(CookieKind::Session, &id, &token));
    for bad in ["", "x", "%%%", &token[..token.len() - 1]] {
        assert!(!csrf.verify(CookieKind::Session, &id, bad), "{bad:?}");
    }
}

fn user(name: &str, role: upstream::Role, id: i64) -> SignedInUser {
    SignedInUser {
        upstream_id: UpstreamId(id),
        username: name.to_owned(),
        role,
        display_name: format!("Name of {name}"),
        session: SessionCookie::from_value(format!("node0{name}.node0")).unwrap(),
    }
}

#[tokio::test]
async fn sessions_expire_when_idle_and_at_their_maximum() {
    let clock = Arc::new(ManualClock::new());
    let idle = Duration::from_secs(60);
    let max = Duration::from_secs(150);
    let sessions = Sessions::new(10, idle, max, clock.clone());

    // Idle: used within the idle time it lives on; left longer it ends.
    let id = sessions.create(user("p", upstream::Role::Patient, 1)).await;
    clock.advance(Duration::from_secs(59));
    assert!(sessions.get(&id).await.is_some());
    clock.advance(Duration::from_secs(59));
    assert!(
        sessions.get(&id).await.is_some(),
        "use resets the idle time"
    );
    clock.advance(Duration::from_secs(60));
    assert!(sessions.get(&id).await.is_none(), "idle too long");
    assert!(sessions.get(&id).await.is_none(), "and gone for good");

    // Absolute: ends at `max` however busy.
    let id = sessions.create(user("p", upstream::Role::Patient, 1)).await;
    for _ in 0..4 {
        clock.advance(Duration::from_secs(30));
        assert!(sessions.get(&id).await.is_some());
    }
    clock.advance(Duration::from_secs(30));
    assert!(sessions.get(&id).await.is_none(), "past session_max");

    // Removal, and ids that were never issued.
    let id = sessions.create(user("p", upstream::Role::Patient, 1)).await;
    sessions.remove(&id).await;
    assert!(sessions.get(&id).await.is_none());
    assert!(sessions.get(&SessionId::random()).await.is_none());
}

#[test]
fn formatters() {
    assert_eq!(html::duration(Duration::from_secs(3_600)), "1 hour");
    assert_eq!(html::duration(Duration::from_secs(7 * 86_400)), "7 days");
    assert_eq!(html::duration(Duration::from_secs(36 * 3_600)), "36 hours");
    assert_eq!(html::duration(Duration::from_secs(90)), "2 minutes");
    assert_eq!(html::time(0), "1 Jan 1970, 00:00 UTC");
    assert_eq!(html::time(1_795_000_000_000), "18 Nov 2026, 11:06 UTC");
    let day = Duration::from_secs(86_400);
    assert_eq!(
        patient::duration_choices(7 * day),
        vec![
            7 * day,
            3 * day,
            day,
            Duration::from_secs(4 * 3_600),
            Duration::from_secs(3_600)
        ]
    );
    assert_eq!(
        patient::duration_choices(Duration::from_secs(1_800)),
        vec![Duration::from_secs(1_800)]
    );
    assert_eq!(
        patient::parse_choices(Some("viewer"), Some("3600")).unwrap(),
        (Some(Role::Viewer), Some(Duration::from_secs(3_600)))
    );
    assert!(patient::parse_choices(Some("admin"), None).is_err());
    assert!(patient::parse_choices(None, Some("0")).is_err());
    assert!(patient::parse_choices(None, Some("-5")).is_err());
}

#[test]
fn questions_are_checked_before_they_leave() {
    let q = doctor::parse_question(Some("  How do you sleep?  "), Some("Text")).unwrap();
    assert_eq!(q.question, "How do you sleep?");
    assert!(doctor::parse_question(Some("   "), Some("Text")).is_err());
    assert!(doctor::parse_question(Some("ok"), Some("Vitals")).is_err());
    assert!(doctor::parse_question(Some("ok"), None).is_err());
    assert!(doctor::parse_question(Some(&"é".repeat(255)), Some("Scale")).is_ok());
    assert!(doctor::parse_question(Some(&"é".repeat(256)), Some("Scale")).is_err());
    // Characters outside the BMP count twice, as access.md counts them.
    assert!(doctor::parse_question(Some(&"😀".repeat(128)), Some("Binary")).is_err());
}

#[test]
fn audit_entries_in_plain_words() {
    let entry = |kind: &str, actor: &str, detail: serde_json::Value| store::AuditEntry {
        seq: 1,
        at: 0,
        kind: kind.to_owned(),
        actor: actor.to_owned(),
        patient: None,
        detail,
        prev_hash: [0; 32],
        hash: [0; 32],
    };
    let me = "p1@s1.test";
    let cases = [
        (
            entry(
                "access.requested",
                "dr@s2.test",
                serde_json::json!({"doctor": "dr@s2.test", "role": "viewer", "duration_s": 86400}),
            ),
            ("dr@s2.test", "asked to read your record for 1 day"),
        ),
        (
            entry(
                "access.approved",
                me,
                serde_json::json!({"doctor": "dr@s2.test", "role": "contributor", "expires_at": 0}),
            ),
            (
                "You",
                "approved: dr@s2.test may read your record and ask you questions until 1 Jan 1970, 00:00 UTC",
            ),
        ),
        (
            entry("access.denied", me, serde_json::json!({"doctor": "dr@s2.test"})),
            ("You", "denied the request of dr@s2.test"),
        ),
        (
            entry("access.revoked", me, serde_json::json!({"doctor": "dr@s2.test"})),
            ("You", "revoked the access of dr@s2.test"),
        ),
        (
            entry("record.read", "dr@s2.test", serde_json::json!({"route": "vitals"})),
            ("dr@s2.test", "read your vital signs"),
        ),
        (
            entry("record.question", "dr@s2.test", serde_json::json!({})),
            ("dr@s2.test", "asked you a question"),
        ),
        (
            entry("access.wrong_code", me, serde_json::json!({"attempt": 2})),
            ("You", "a wrong code was typed (try 2)"),
        ),
        (
            entry("transfer.started", "system", serde_json::json!({})),
            ("This server", "transfer.started"),
        ),
    ];
    for (e, (who, what)) in cases {
        let got = patient::describe(&e, me);
        assert_eq!((got.0.as_str(), got.1.as_str()), (who, what), "{}", e.kind);
    }
}

#[test]
fn csp_allows_the_inline_style_and_only_the_scan_script() {
    let plain = html::content_security_policy(None);
    assert!(plain.starts_with("default-src 'none'; "));
    assert!(plain.contains(&format!("style-src {}", html::csp_hash(html::STYLE))));
    assert!(!plain.contains("script-src"));
    assert!(plain.contains("form-action 'self'"));
    assert!(plain.contains("frame-ancestors 'none'"));
    assert!(!plain.contains("unsafe"));
    let doctor = html::content_security_policy(Some(doctor::SCAN_JS));
    assert!(doctor.contains(&format!("script-src {}", html::csp_hash(doctor::SCAN_JS))));
}

#[test]
fn qr_codes_render_as_inline_svg() {
    let svg = patient::qr_svg(
        "mdgate:0b8f5c7e-6f0a-4a55-9d1e-2f3b4c5d6e7f@s1.example.org?invitation=AAAAAAAAAAAAAAAAAAAAAA",
    )
    .unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
    assert!(!svg.contains("<?xml"));
    assert!(!svg.contains("style="), "the CSP forbids style attributes");
    assert!(svg.trim_end().ends_with("</svg>"));
}

#[test]
fn records_render_as_tables_with_a_json_fallback() {
    let mut out = String::new();
    record::render(
        RouteId::Vitals,
        &serde_json::json!([{"id": 5, "creationDate": 0, "heartBeatsPerMinute": 72.0,
            "systolicPressure": 120.0, "diastolicPressure": 80.0, "bloodOxygenation": 97.5,
            "breathingRate": 14.0}]),
        &mut out,
    );
    assert!(out.contains("<table>"), "{out}");
    assert!(
        out.contains("<td>120/80</td>") && out.contains("<td>97.5</td>"),
        "{out}"
    );

    let mut out = String::new();
    record::render(
        RouteId::Profile,
        &serde_json::json!({"age": 41, "height": 170.0, "weight": 65.5, "sex": "Female",
            "diabetes": true, "medications": ["<b>metformin</b>"]}),
        &mut out,
    );
    assert!(out.contains("<dt>Age</dt><dd>41</dd>"), "{out}");
    assert!(out.contains("<dt>Diabetes</dt><dd>yes</dd>"), "{out}");
    assert!(
        out.contains("&lt;b&gt;metformin&lt;/b&gt;"),
        "escaped: {out}"
    );

    let mut out = String::new();
    record::render(
        RouteId::Symptoms,
        &serde_json::json!({"unexpected": "<shape>"}),
        &mut out,
    );
    assert!(out.starts_with("<pre>"), "{out}");
    assert!(out.contains("&lt;shape&gt;"), "{out}");
    let mut out = String::new();
    record::render(RouteId::Profile, &serde_json::json!({"x": 1}), &mut out);
    assert!(out.starts_with("<pre>"), "{out}");

    let mut out = String::new();
    record::render(RouteId::Answers, &serde_json::json!([]), &mut out);
    assert!(
        out.starts_with("<p>Nothing recorded.</p><details>"),
        "{out}"
    );
}

// ------------------------------------------------- a fake access flow

const GOOD_CODE: &str = "ABCDE-FGHJK";
const PASSWORD: &str = "correct horse";

#[derive(Default)]
struct FakeState {
    pending: Vec<store::AccessRequest>,
    grants: Vec<store::Grant>,
    requests: Vec<DoctorRequest>,
    invitations: u32,
    asked: Vec<String>,
    /// Transfers: the patient's moves (old home), the hand-over page's
    /// transfer (new home), and what was sent to the backend.
    moves: Vec<TransferView>,
    handover: Option<TransferView>,
    transfer_approvals: Vec<(Uuid, String)>,
    handed: Vec<(String, String)>,
}

#[derive(Default)]
struct Fake {
    state: Mutex<FakeState>,
    /// Every call answers "access.md session ended" (upstream restart).
    ended: AtomicBool,
    /// Sign-ins fail as if access.md were down.
    down: AtomicBool,
    /// Invitations expire this soon (default an hour).
    short_invitations: AtomicBool,
}

impl Fake {
    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap()
    }

    fn live(&self) -> Result<(), AccessError> {
        if self.ended.load(Ordering::SeqCst) {
            Err(AccessError::SessionEnded)
        } else {
            Ok(())
        }
    }

    fn add_pending(&self, doctor: &str, role: &str) -> Uuid {
        let id = Uuid::new_v4();
        self.state().pending.push(store::AccessRequest {
            id,
            kind: store::RequestKind::Access,
            patient: Uuid::nil(),
            invitation: Uuid::nil(),
            server_fqdn: "s2.test".to_owned(),
            doctor: doctor.to_owned(),
            role: role.to_owned(),
            duration_ms: 7 * 86_400_000,
            code_hash: [0; 32],
            requester_cert_sha256: None,
            attempts: 0,
            state: store::RequestState::Pending,
            created_at: now_ms(),
            expires_at: now_ms() + 600_000,
            decided_at: None,
            idempotency_key: id.to_string(),
        });
        id
    }
}

#[async_trait::async_trait]
impl Backend for Fake {
    async fn sign_in(&self, username: &str, password: Secret) -> Result<SignedInUser, SignInError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(SignInError::Unavailable(UpstreamError::Interrupted {
                route: "login",
            }));
        }
        if password.expose() != PASSWORD {
            return Err(SignInError::WrongCredentials);
        }
        let role = match username {
            "alice" => upstream::Role::Patient,
            "drbob" => upstream::Role::Doctor,
            "admin" => upstream::Role::Admin,
            _ => return Err(SignInError::WrongCredentials),
        };
        Ok(user(username, role, 7))
    }

    async fn patient_overview(&self, user: &SignedInUser) -> Result<PatientOverview, AccessError> {
        self.live()?;
        if user.role != upstream::Role::Patient {
            return Err(AccessError::WrongRole);
        }
        let s = self.state();
        Ok(PatientOverview {
            address: "p1@s1.test".to_owned(),
            patient: store::Patient {
                federation_id: Uuid::nil(),
                upstream_id: 7,
                created_at: 0,
                moved_to: None,
            },
            pending: s.pending.clone(),
            grants: s.grants.clone(),
            log: Vec::new(),
        })
    }

    async fn new_invitation(&self, _user: &SignedInUser) -> Result<NewInvitation, AccessError> {
        self.live()?;
        let mut s = self.state();
        s.invitations += 1;
        Ok(NewInvitation {
            payload: format!(
                "mdgate:00000000-0000-4000-8000-000000000000@s1.test?invitation=TOKEN{}",
                s.invitations
            ),
            expires_at: now_ms()
                + if self.short_invitations.load(Ordering::SeqCst) {
                    10_000
                } else {
                    3_600_000
                },
        })
    }

    async fn approve(
        &self,
        _user: &SignedInUser,
        request: Uuid,
        code: &str,
        role: Option<Role>,
        duration: Option<Duration>,
    ) -> Result<store::Grant, AccessError> {
        self.live()?;
        let mut s = self.state();
        let i = s
            .pending
            .iter()
            .position(|r| r.id == request)
            .ok_or(AccessError::NotFound)?;
        let typed: String = code.chars().filter(|c| *c != '-' && *c != ' ').collect();
        if !typed.eq_ignore_ascii_case(&GOOD_CODE.replace('-', "")) {
            s.pending[i].attempts += 1;
            let left = 3 - s.pending[i].attempts;
            if left == 0 {
                s.pending.remove(i);
            }
            return Err(AccessError::WrongCode {
                attempts_left: left,
            });
        }
        let req = s.pending.remove(i);
        let grant = store::Grant {
            id: Uuid::new_v4(),
            request_id: req.id,
            patient: Uuid::nil(),
            server_fqdn: req.server_fqdn.clone(),
            server_key_sha256: [0; 32],
            doctor: req.doctor.clone(),
            role: role.map_or(req.role.clone(), |r| r.as_str().to_owned()),
            not_before: now_ms() - 1,
            expires_at: now_ms() + duration.map_or(req.duration_ms, |d| d.as_millis() as i64),
            revoked_at: None,
        };
        s.grants.push(grant.clone());
        Ok(grant)
    }

    async fn deny(&self, _user: &SignedInUser, request: Uuid) -> Result<(), AccessError> {
        self.live()?;
        let mut s = self.state();
        let before = s.pending.len();
        s.pending.retain(|r| r.id != request);
        if s.pending.len() == before {
            return Err(AccessError::NotFound);
        }
        Ok(())
    }

    async fn revoke(&self, _user: &SignedInUser, grant: Uuid) -> Result<(), AccessError> {
        self.live()?;
        let mut s = self.state();
        let g = s
            .grants
            .iter_mut()
            .find(|g| g.id == grant)
            .ok_or(AccessError::NotFound)?;
        g.revoked_at = Some(now_ms());
        Ok(())
    }

    async fn start_request(
        &self,
        user: &SignedInUser,
        payload: &str,
        role: Role,
        duration: Duration,
    ) -> Result<DoctorRequest, AccessError> {
        self.live()?;
        if user.role != upstream::Role::Doctor {
            return Err(AccessError::WrongRole);
        }
        if !payload.starts_with("mdgate:") {
            return Err(AccessError::BadInput(
                "the QR code is not an mdgate patient code",
            ));
        }
        let r = DoctorRequest {
            id: Uuid::new_v4(),
            patient_address: "p1@s1.test".to_owned(),
            server: "s1.test".to_owned(),
            role,
            duration,
            code: Some(GOOD_CODE.to_owned()),
            state: "pending",
            reason: None,
            created_at: now_ms(),
            expires_at: now_ms() + 600_000,
            granted_role: None,
            grant_expires_at: None,
            readable: false,
        };
        self.state().requests.push(r.clone());
        Ok(r)
    }

    async fn doctor_requests(
        &self,
        _user: &SignedInUser,
    ) -> Result<Vec<DoctorRequest>, AccessError> {
        self.live()?;
        Ok(self.state().requests.clone())
    }

    async fn doctor_request(
        &self,
        _user: &SignedInUser,
        id: Uuid,
    ) -> Result<DoctorRequest, AccessError> {
        self.live()?;
        self.state()
            .requests
            .iter()
            .find(|r| r.id == id)
            .cloned()
            .ok_or(AccessError::NotFound)
    }

    async fn remote_read(
        &self,
        _user: &SignedInUser,
        _request: Uuid,
        route: RouteId,
    ) -> Result<serde_json::Value, AccessError> {
        self.live()?;
        Ok(match route {
            RouteId::Vitals => serde_json::json!([{"id": 1, "creationDate": 0,
                "heartBeatsPerMinute": 61.0, "systolicPressure": 118.0,
                "diastolicPressure": 79.0, "bloodOxygenation": 98.0, "breathingRate": 12.0}]),
            _ => serde_json::json!({"something": "else"}),
        })
    }

    async fn remote_ask(
        &self,
        _user: &SignedInUser,
        _request: Uuid,
        question: &NewQuestion,
    ) -> Result<(), AccessError> {
        self.live()?;
        self.state().asked.push(question.question.clone());
        Ok(())
    }

    async fn approve_transfer(
        &self,
        _user: &SignedInUser,
        request: Uuid,
        code: &str,
        key: &str,
    ) -> Result<TransferView, AccessError> {
        self.live()?;
        if code != GOOD_CODE {
            return Err(AccessError::WrongCode { attempts_left: 2 });
        }
        let mut s = self.state();
        s.pending.retain(|r| r.id != request);
        s.transfer_approvals.push((request, key.to_owned()));
        Ok(transfer_view(
            request,
            store::TransferSide::Source,
            source::APPROVED,
        ))
    }

    async fn patient_transfers(
        &self,
        _user: &SignedInUser,
    ) -> Result<Vec<TransferView>, AccessError> {
        self.live()?;
        Ok(self.state().moves.clone())
    }

    async fn handover_view(&self, id: Uuid) -> Result<TransferView, AccessError> {
        self.state()
            .handover
            .clone()
            .filter(|v| v.transfer.id == id)
            .ok_or(AccessError::NotFound)
    }

    async fn hand_over(&self, id: Uuid, form: HandOver) -> Result<(), HandOverError> {
        let mut s = self.state();
        let v = s
            .handover
            .as_mut()
            .filter(|v| v.transfer.id == id)
            .ok_or(HandOverError::NotFound)?;
        if form.username == "taken" {
            return Err(HandOverError::Refused {
                reason: "username_taken",
                detail: "taken".to_owned(),
            });
        }
        v.transfer.state = target::IMPORTED.to_owned();
        s.handed.push((form.username, form.key));
        Ok(())
    }

    async fn webfinger(&self, resource: &str) -> Result<Option<serde_json::Value>, AccessError> {
        Ok((resource == "acct:p1@s1.test").then(|| {
            serde_json::json!({"subject": "acct:p1@s1.test", "aliases": [], "links": [
                {"rel": "https://mdgate.org/rel/federation", "href": "https://s1.test/x"},
                {"rel": "other", "href": "https://s1.test/y"}]})
        }))
    }
}

/// A transfer row as the backend would show it.
fn transfer_view(id: Uuid, side: store::TransferSide, state: &str) -> TransferView {
    TransferView {
        transfer: store::Transfer {
            id,
            side,
            state: state.to_owned(),
            peer_fqdn: "s2.test".to_owned(),
            patient: None,
            doctor: "dr@s2.test".to_owned(),
            data: serde_json::Value::Null,
            version: 1,
            created_at: now_ms(),
            updated_at: now_ms(),
        },
        data: TransferData::default(),
    }
}

// ------------------------------------------------- a tiny browser

const HOST: &str = "gate.test";

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The first CSRF token on the page.
    fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.body.find(marker).expect("a form with a CSRF token") + marker.len();
        let end = self.body[start..].find('"').unwrap();
        self.body[start..start + end].to_owned()
    }

    fn cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
}

/// Keeps cookies like a browser and sends `Origin` like one.
struct Browser {
    web: Arc<Web>,
    tls: bool,
    jar: HashMap<String, String>,
    origin: Option<String>,
    extra: Vec<(&'static str, String)>,
}

impl Browser {
    fn new(web: &Arc<Web>, tls: bool) -> Browser {
        let scheme = if tls { "https" } else { "http" };
        Browser {
            web: web.clone(),
            tls,
            jar: HashMap::new(),
            origin: Some(format!("{scheme}://{HOST}")),
            extra: Vec::new(),
        }
    }

    async fn send(&mut self, method: Method, path: &str, body: Option<String>) -> Answer {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, HOST);
        if !self.jar.is_empty() {
            let cookie: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            b = b.header(header::COOKIE, cookie.join("; "));
        }
        if body.is_some() && !self.extra.iter().any(|(k, _)| *k == "content-type") {
            b = b.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        if body.is_some() {
            if let Some(o) = &self.origin {
                b = b.header(header::ORIGIN, o.as_str());
            }
        }
        for (k, v) in &self.extra {
            b = b.header(*k, v.as_str());
        }
        let req = b
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .unwrap();
        let resp = self.web.handle_any(self.tls, "public", req).await;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let answer = Answer {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        };
        for c in answer.cookies() {
            let (pair, attrs) = c.split_once(';').unwrap_or((&c, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.jar.remove(name);
            } else {
                self.jar.insert(name.to_owned(), value.to_owned());
            }
        }
        answer
    }

    async fn get(&mut self, path: &str) -> Answer {
        self.send(Method::GET, path, None).await
    }

    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    utf8_percent_encode(k, NON_ALPHANUMERIC),
                    utf8_percent_encode(v, NON_ALPHANUMERIC)
                )
            })
            .collect();
        self.send(Method::POST, path, Some(body.join("&"))).await
    }

    async fn sign_in(&mut self, username: &str, password: &str) -> Answer {
        let page = self.get("/federation/").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let csrf = page.csrf();
        self.post(
            "/federation/sign-in",
            &[
                ("csrf", &csrf),
                ("username", username),
                ("password", password),
            ],
        )
        .await
    }

    /// The CSRF token of the page at `path`.
    async fn token(&mut self, path: &str) -> String {
        self.get(path).await.csrf()
    }
}

fn web_with(fake: &Arc<Fake>) -> Arc<Web> {
    let cfg = crate::config::Access::default();
    Arc::new(Web::with_backend(
        fake.clone(),
        &cfg,
        Arc::new(crate::admin::Metrics::new()),
        Arc::new(ManualClock::new()),
    ))
}

fn assert_page_headers(a: &Answer) {
    let h = |n: header::HeaderName| a.headers.get(n).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        h(header::X_CONTENT_TYPE_OPTIONS).as_deref(),
        Some("nosniff")
    );
    assert_eq!(h(header::CACHE_CONTROL).as_deref(), Some("no-store"));
    assert_eq!(h(header::REFERRER_POLICY).as_deref(), Some("same-origin"));
    let csp = h(header::CONTENT_SECURITY_POLICY).expect("a CSP");
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
}

// ------------------------------------------------- whole requests

#[tokio::test]
async fn sign_in_wrong_then_right_rotates_the_session() {
    let fake = Arc::new(Fake::default());
    let web = web_with(&fake);
    let mut b = Browser::new(&web, true);

    let page = b.get("/federation/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_page_headers(&page);
    assert!(page
        .body
        .contains("<form method=\"post\" action=\"/federation/sign-in\">"));
    assert!(page.body.contains("<meta name=\"viewport\""));
    assert!(page.body.contains("<label for=\"password\">"));
    let signin_cookie = page.cookies().join("\n");
    assert!(
        signin_cookie.starts_with("__Host-mdgate-signin=") && signin_cookie.contains("Secure"),
        "{signin_cookie}"
    );

    let wrong = b.sign_in("alice", "nope").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("The username or the password is wrong"));
    assert!(wrong.body.contains("value=\"alice\""), "the username stays");
    assert!(
        !wrong.body.contains("nope"),
        "the password never comes back"
    );
    assert!(!b.jar.contains_key("__Host-mdgate"));

    let ok = b.sign_in("alice", PASSWORD).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert_eq!(ok.location(), "/federation/patient");
    let set = ok.cookies();
    let session_cookie = set
        .iter()
        .find(|c| c.starts_with("__Host-mdgate="))
        .expect("a session cookie");
    assert!(
        session_cookie.ends_with("; Path=/; Secure; HttpOnly; SameSite=Strict"),
        "{session_cookie}"
    );
    assert!(set
        .iter()
        .any(|c| c.starts_with("__Host-mdgate-signin=;") && c.contains("Max-Age=0")));
    let first = b.jar["__Host-mdgate"].clone();

    // Signed in, the index sends the patient to their page.
    let index = b.get("/federation/").await;
    assert_eq!(index.location(), "/federation/patient");

    // A session id chosen before sign-in (planted by someone else) is
    // never the one signed in: each sign-in makes a new id.
    let mut victim = Browser::new(&web, true);
    let planted = SessionId::random().encode();
    victim.jar.insert("__Host-mdgate".into(), planted.clone());
    assert_eq!(
        victim.sign_in("alice", PASSWORD).await.status,
        StatusCode::SEE_OTHER
    );
    let second = victim.jar["__Host-mdgate"].clone();
    assert_ne!(second, planted);
    assert_ne!(second, first);
    let mut attacker = Browser::new(&web, true);
    attacker.jar.insert("__Host-mdgate".into(), planted);
    assert_eq!(
        attacker.get("/federation/patient").await.location(),
        "/federation/"
    );

    // Sign-out ends it.
    let csrf = b.token("/federation/patient").await;
    let out = b.post("/federation/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(!b.jar.contains_key("__Host-mdgate"));
    let mut replay = Browser::new(&web, true);
    replay.jar.insert("__Host-mdgate".into(), first);
    assert_eq!(
        replay.get("/federation/patient").await.location(),
        "/federation/"
    );
}

#[tokio::test]
async fn plain_http_uses_the_unprefixed_cookie() {
    let fake = Arc::new(Fake::default());
    let web = web_with(&fake);
    let mut b = Browser::new(&web, false);
    let ok = b.sign_in("drbob", PASSWORD).await;
    assert_eq!(ok.location(), "/federation/doctor");
    let c = ok
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("mdgate="))
        .expect("plain cookie");
    assert!(!c.contains("Secure"), "{c}");
    assert!(c.contains("HttpOnly; SameSite=Strict"), "{c}");
}

#[tokio::test]
async fn sign_in_problems_get_clear_pages() {
    let fake = Arc::new(Fake::default());
    let web = web_with(&fake);
    let mut b = Browser::new(&web, true);
    let admin = b.sign_in("admin", PASSWORD).await;
    assert_eq!(admin.status, StatusCode::FORBIDDEN);
    assert!(admin.body.contains("for patients and doctors"));

    fake.down.store(true, Ordering::SeqCst);
    let down = b.sign_in("alice", PASSWORD).await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(down.body.contains("not answering right now"));
    assert!(
        !down.body.contains("nterrupted"),
        "no internal detail: {}",
        down.body
    );

    fake.down.store(false, Ordering::SeqCst);
    let page = b.get("/federation/").await;
    let empty = b
        .post(
            "/federation/sign-in",
            &[("csrf", &page.csrf()), ("username", "alice")],
        )
        .await;
    assert_eq!(empty.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn csrf_refusals() {
    let fake = Arc::new(Fake::default());
    let web = web_with(&fake);
    let mut b = Browser::new(&web, true);
    assert_eq!(
        b.sign_in("alice", PASSWORD).await.status,
        StatusCode::SEE_OTHER
    );
    let csrf = b.token("/federation/patient").await;

    // No token, a wrong token, another session's token.
    for token in [
        None,
        Some("x".to_owned()),
        Some(csrf.replace('A', "B") + "A"),
    ] {
        let fields: Vec<(&str, &str)> = token.iter().map(|t| ("csrf", t.as_str())).collect();
        let r = b.post("/federation/patient/invitation", &fields).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{token:?}");
        assert!(r.body.contains("Form not accepted"));
        assert_page_headers(&r);
    }
    let mut other = Browser::new(&web, true);
    other.sign_in("alice", PASSWORD).await;
    let theirs = other.token("/federation/patient").await;
    let invitations = fake.state().invitations;
    let r = b
        .post("/federation/patient/invitation", &[("csrf", &theirs)])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // The right token from the wrong origin, or cross-site, or with no
    // origin at all.
    b.origin = Some("https://evil.test".into());
    let r = b
        .post("/federation/patient/invitation", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    b.origin = None;
    let r = b
        .post("/federation/patient/invitation", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    b.origin = Some(format!("https://{HOST}"));
    b.extra = vec![("sec-fetch-site", "cross-site".to_owned())];
    let r = b
        .post("/federation/patient/invitation", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        fake.state().invitations,
        invitations,
        "no refused form changed anything"
    );

    // A Referer of this site stands in for a missing Origin.
    b.origin = None;
    b.extra = vec![("referer", format!("https://{HOST}/federation/patient"))];
    let r = b
        .post("/federation/patient/invitation", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(fake.state().invitations, invitations + 1);

    // The sign-in form is protected the same way.
    let mut c = Browser::new(&web, true);
    let page = c.get("/federation/").await;
    c.jar.clear();
    let r = c
        .post(
            "/federation/sign-in",
            &[
                ("csrf", &page.csrf()),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "sign-in without its cookie"
    );
}

#[tokio::test]
async fn bodies_methods_and_unknown_paths() {
    let fake = Arc::new(Fake::default());
    let web = web_with(&fake);
    let mut b = Browser::new(&web, true);
    b.sign_in("alice", PASSWORD).await;
    let csrf = b.token("/federation/patient").await;

    let big = "x".repeat(form::MAX_FORM_BYTES + 1);
    let r = b
        .post(
            "/federation/patient/invitation",
            &[("csrf", &csrf), ("pad", &big)],
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);

    let r = b.send(Method::POST, "/federation/sign-out", None).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "no Origin on a body-less post"
    );

    b.extra = vec![("content-type", "application/json".into())];
    let r = b.post("/federation/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    b.extra.clear();

    let r = b.get("/federation/nothing-here").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.contains("There is no such page here."));
    assert_page_headers(&r);

    let r = b.send(Method::PUT, "/federation/patient", None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers[header::ALLOW], "GET, HEAD, POST");
    let r = b.send(Method::DELETE, "/federation/nothing", None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let r = b.get("/federation/sign-out").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers[header::ALLOW], "POST");
    let r = b.post("/federation/patient", &[("csrf", &csrf)]).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        b.get("/federation/sign-in").await.location(),
        "/federation/"
    );
    assert_eq!(b.get("/federation").await.location(), "/federation/");

    let r = b.send(Method::HEAD, "/federation/patient", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn pages_need_a_session_and_the_right_role() {
    let fake = Arc::new(Fake::default());
    let web = web_with(&fake);
    let mut anon = Browser::new(&web, true);
    assert_eq!(
        anon.get("/federation/patient").await.location(),
        "/federation/"
    );
    // A link from another site: the page reloads itself from here, so
    // the browser sends its SameSite=Strict cookie.
    anon.extra = vec![("sec-fetch-site", "cross-site".into())];
    let bounce = anon.get("/federation/patient").await;
    assert_eq!(bounce.status, StatusCode::OK);
    assert!(bounce
        .body
        .contains("<meta http-equiv=\"refresh\" content=\"0;url=/federation/patient\">"));

    let mut p = Browser::new(&web, true);
    p.sign_in("alice", PASSWORD).await;
    let r = p.get("/federation/doctor").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("href=\"/federation/patient\""));

    let mut d = Browser::new(&web, true);
    d.sign_in("drbob", PASSWORD).await;
    let r = d.get("/federation/patient").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn patient_approves_with_the_code_after_a_wrong_one_and_revokes() {
    let fake = Arc::new(Fake::default());
    let web = web_with(&fake);
    let mut b = Browser::new(&web, true);
    b.sign_in("alice", PASSWORD).await;

    // Nothing pending: the QR code, and the page reloads itself.
    let page = b.get("/federation/patient").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<svg"), "a QR code");
    assert!(page.body.contains("invitation=TOKEN1"));
    assert!(page
        .body
        .contains("<meta http-equiv=\"refresh\" content=\"15\">"));
    // The same invitation is shown again, not a new one per load.
    let again = b.get("/federation/patient").await;
    assert!(again.body.contains("invitation=TOKEN1"));
    assert_eq!(fake.state().invitations, 1);

    let id = fake.add_pending("<b>dr</b>@s2.test", "contributor");
    let page = b.get("/federation/patient").await;
    assert!(page.body.contains("Your code was used"), "single use");
    assert!(!page.body.contains("invitation=TOKEN1"));
    assert!(
        !page.body.contains("http-equiv=\"refresh\""),
        "no reload while typing"
    );
    assert!(
        page.body.contains("&lt;b&gt;dr&lt;/b&gt;@s2.test"),
        "escaped"
    );
    assert!(!page.body.contains("<b>dr</b>"));
    assert!(page.body.contains("autocomplete=\"off\""));
    assert!(page.body.contains("autocapitalize=\"characters\""));
    assert!(
        page.body.contains("<option value=\"viewer\">"),
        "a lower role"
    );
    let csrf = page.csrf();
    let approve = format!("/federation/patient/requests/{id}/approve");

    let wrong = b
        .post(&approve, &[("csrf", &csrf), ("code", "ZZZZZ-ZZZZZ")])
        .await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(wrong.body.contains("2 tries left"), "{}", wrong.body);
    assert!(wrong.body.contains("autofocus"));

    let ok = b
        .post(
            &approve,
            &[
                ("csrf", &csrf),
                ("code", "abcde fghjk"),
                ("role", "viewer"),
                ("duration", "86400"),
            ],
        )
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    let page = b.get("/federation/patient").await;
    assert!(page.body.contains("Approved."), "{}", page.body);
    assert!(page.body.contains("Requests waiting for you (0)"));
    let grant = fake.state().grants[0].clone();
    assert_eq!(grant.role, "viewer");
    assert!(page
        .body
        .contains(&format!("/federation/patient/grants/{}/revoke", grant.id)));

    let revoke = format!("/federation/patient/grants/{}/revoke", grant.id);
    let r = b.post(&revoke, &[("csrf", &csrf)]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(fake.state().grants[0].revoked_at.is_some());
    let page = b.get("/federation/patient").await;
    assert!(page.body.contains("Revoked."));
    assert!(page.body.contains("<h3>Ended</h3>"));

    // Deny, and a request that is gone.
    let id = fake.add_pending("dr@s2.test", "viewer");
    let deny = format!("/federation/patient/requests/{id}/deny");
    assert_eq!(
        b.post(&deny, &[("csrf", &csrf)]).await.status,
        StatusCode::SEE_OTHER
    );
    let gone = b.post(&deny, &[("csrf", &csrf)]).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert!(gone.body.contains("There is no such item."));
}

#[tokio::test]
async fn an_expired_invitation_is_not_replaced_behind_the_patients_back() {
    let fake = Arc::new(Fake::default());
    fake.short_invitations.store(true, Ordering::SeqCst);
    let web = web_with(&fake);
    let mut b = Browser::new(&web, true);
    b.sign_in("alice", PASSWORD).await;
    let first = b.get("/federation/patient").await;
    assert!(
        first.body.contains("invitation=TOKEN1"),
        "the first visit gets a code"
    );
    let later = b.get("/federation/patient").await;
    assert!(
        later.body.contains("Your code has expired"),
        "{}",
        later.body
    );
    assert!(!later.body.contains("<svg"));
    assert!(
        !later.body.contains("http-equiv=\"refresh\""),
        "no reloading all day"
    );
    assert_eq!(fake.state().invitations, 1);
    // "New code" makes one.
    let csrf = later.csrf();
    let r = b
        .post("/federation/patient/invitation", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(fake.state().invitations, 2);
}

#[tokio::test]
async fn a_session_ended_upstream_means_signing_in_again() {
    let fake = Arc::new(Fake::default());
    let web = web_with(&fake);
    let mut b = Browser::new(&web, true);
    b.sign_in("alice", PASSWORD).await;
    assert_eq!(b.get("/federation/patient").await.status, StatusCode::OK);

    fake.ended.store(true, Ordering::SeqCst);
    let r = b.get("/federation/patient").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("Please sign in again."));
    assert!(r.body.contains("action=\"/federation/sign-in\""));
    assert!(!b.jar.contains_key("__Host-mdgate"), "cookie cleared");
    assert_eq!(web.sessions.count().await, 0);

    fake.ended.store(false, Ordering::SeqCst);
    let csrf = r.csrf();
    let r = b
        .post(
            "/federation/sign-in",
            &[
                ("csrf", &csrf),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.location(), "/federation/patient");
}

#[tokio::test]
async fn doctor_starts_a_request_sees_the_code_reads_and_asks() {
    let fake = Arc::new(Fake::default());
    let web = web_with(&fake);
    let mut b = Browser::new(&web, false);
    b.sign_in("drbob", PASSWORD).await;

    let page = b.get("/federation/doctor").await;
    assert_eq!(page.status, StatusCode::OK);
    let csp = page.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.contains("script-src 'sha256-"), "{csp}");
    assert!(page.body.contains("id=\"scan\" hidden"));
    assert!(page.body.contains("<option value=\"contributor\">"));
    assert!(page.body.contains(">30 days</option>"), "up to max_grant");
    assert!(!page.body.contains(">90 days</option>"));
    let csrf = page.csrf();

    let bad = b
        .post(
            "/federation/doctor/requests",
            &[
                ("csrf", &csrf),
                ("payload", "hello"),
                ("role", "viewer"),
                ("duration", "3600"),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("not an mdgate patient code"));
    assert!(bad.body.contains("value=\"hello\""), "what was typed stays");

    let payload = "mdgate:00000000-0000-4000-8000-000000000000@s1.test?invitation=T";
    let ok = b
        .post(
            "/federation/doctor/requests",
            &[
                ("csrf", &csrf),
                ("payload", payload),
                ("role", "contributor"),
                ("duration", "86400"),
            ],
        )
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    let id = fake.state().requests[0].id;
    assert_eq!(ok.location(), format!("/federation/doctor/requests/{id}"));

    let page = b.get(ok.location()).await;
    assert!(
        page.body.contains("<p class=\"bigcode\" id=\"code\""),
        "{}",
        page.body
    );
    assert!(page.body.contains(">ABCDE FGHJK</p>"));
    assert!(page
        .body
        .contains("aria-label=\"The code: A B C D E, F G H J K\""));
    assert!(page
        .body
        .contains("<meta http-equiv=\"refresh\" content=\"5\">"));

    // Approved: the code goes, the record links come.
    {
        let mut s = fake.state();
        let r = &mut s.requests[0];
        r.state = "approved";
        r.readable = true;
        r.granted_role = Some(Role::Contributor);
        r.grant_expires_at = Some(now_ms() + 86_400_000);
    }
    let page = b.get(&format!("/federation/doctor/requests/{id}")).await;
    assert!(!page.body.contains("class=\"bigcode\""));
    assert!(!page.body.contains("http-equiv=\"refresh\""));
    assert!(page
        .body
        .contains(&format!("/federation/doctor/requests/{id}/record/vitals")));
    assert!(page.body.contains("Ask the patient a question"));

    let vitals = b
        .get(&format!("/federation/doctor/requests/{id}/record/vitals"))
        .await;
    assert_eq!(vitals.status, StatusCode::OK);
    assert!(vitals.body.contains("<td>118/79</td>"), "{}", vitals.body);
    let other = b
        .get(&format!("/federation/doctor/requests/{id}/record/profile"))
        .await;
    assert!(other.body.contains("<pre>"), "unknown shape as JSON");
    assert!(!other.body.contains("<dt>Age</dt>"), "{}", other.body);

    let ask = format!("/federation/doctor/requests/{id}/questions");
    let r = b
        .post(
            &ask,
            &[
                ("csrf", &csrf),
                ("question", "Any pain today?"),
                ("type", "Binary"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(fake.state().asked, vec!["Any pain today?".to_owned()]);
    let long = "x".repeat(256);
    let r = b
        .post(
            &ask,
            &[("csrf", &csrf), ("question", &long), ("type", "Text")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("longer than 255"));
}

#[tokio::test]
async fn webfinger_answers_per_rfc_7033() {
    let fake = Arc::new(Fake::default());
    let web = web_with(&fake);
    let mut b = Browser::new(&web, true);
    let r = b.get("/.well-known/webfinger").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let r = b
        .get("/.well-known/webfinger?resource=acct:nobody@s1.test")
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let r = b
        .get("/.well-known/webfinger?resource=acct%3Ap1%40s1.test")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/jrd+json");
    assert_eq!(r.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let jrd: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(jrd["subject"], "acct:p1@s1.test");
    assert_eq!(jrd["links"].as_array().unwrap().len(), 2);
    let r = b
        .get("/.well-known/webfinger?resource=acct:p1@s1.test&rel=other")
        .await;
    let jrd: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(jrd["links"].as_array().unwrap().len(), 1);
    let r = b.get("/.well-known/webfinger?resource=a&resource=b").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = b.post("/.well-known/webfinger", &[]).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

/// A `MakeWriter` into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn logs_never_hold_secrets() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let fake = Arc::new(Fake::default());
    let web = web_with(&fake);
    let mut b = Browser::new(&web, true);
    b.sign_in("alice", "wrong password here").await;
    b.sign_in("alice", PASSWORD).await;
    let session = b.jar["__Host-mdgate"].clone();
    let csrf = b.token("/federation/patient").await;
    let id = fake.add_pending("dr@s2.test", "viewer");
    let approve = format!("/federation/patient/requests/{id}/approve");
    b.post(&approve, &[("csrf", &csrf), ("code", "QQQQQ-QQQQQ")])
        .await;
    b.post(&approve, &[("csrf", &csrf), ("code", GOOD_CODE)])
        .await;
    b.origin = Some("https://evil.test".into());
    b.post("/federation/sign-out", &[("csrf", &csrf)]).await;
    b.origin = Some(format!("https://{HOST}"));
    b.post("/federation/sign-out", &[("csrf", &csrf)]).await;
    fake.ended.store(true, Ordering::SeqCst);
    b.sign_in("alice", PASSWORD).await;
    b.get("/federation/patient").await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("signed in to the pages"), "{logs}");
    assert!(logs.contains("alice"), "usernames are logged");
    for secret in [
        PASSWORD,
        "wrong password here",
        session.as_str(),
        csrf.as_str(),
        "QQQQQ",
        "ABCDE",
        "node0alice",
        "invitation=TOKEN",
    ] {
        assert!(!logs.contains(secret), "{secret:?} in the logs:\n{logs}");
    }
}

// ------------------------------------------------------------ transfers

#[tokio::test]
async fn patient_approves_a_move_with_a_key_and_continues_on_the_new_server() {
    let fake = Arc::new(Fake::default());
    let web = web_with(&fake);
    let id = fake.add_pending("dr@s2.test", "viewer");
    fake.state().pending[0].kind = store::RequestKind::Transfer;
    let mut p = Browser::new(&web, true);
    p.sign_in("alice", PASSWORD).await;
    let page = p.get("/federation/patient").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page
        .body
        .contains("Move your whole record to s2.test (asked by dr@s2.test)"));
    assert!(page.body.contains(&format!(
        "action=\"/federation/patient/transfers/{id}/approve\" data-transfer=\"{id}\""
    )));
    assert!(page
        .body
        .contains("<input type=\"hidden\" name=\"key\" value=\"\">"));
    assert!(page.body.contains("Approve the move"));
    assert!(page.body.contains(&format!(
        "formaction=\"/federation/patient/requests/{id}/deny\""
    )));
    let csp = page.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains(&html::csp_hash(transfer::PATIENT_JS)), "{csp}");
    let csrf = page.csrf();
    let path = format!("/federation/patient/transfers/{id}/approve");

    // Without the browser's key (no JavaScript) nothing reaches the flow.
    let r = p
        .post(&path, &[("csrf", &csrf), ("code", GOOD_CODE), ("key", "")])
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(r.body.contains("enable JavaScript"));
    assert!(fake.state().transfer_approvals.is_empty());
    // A wrong code is shown on the card; the key is not echoed.
    let key = "k".repeat(43);
    let r = p
        .post(&path, &[("csrf", &csrf), ("code", "WRONG"), ("key", &key)])
        .await;
    assert!(r.status.is_client_error(), "{}", r.status);
    assert!(!r.body.contains(&key));
    // Without a CSRF token: refused.
    let r = p.post(&path, &[("code", GOOD_CODE), ("key", &key)]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = p
        .post(
            &path,
            &[("csrf", &csrf), ("code", GOOD_CODE), ("key", &key)],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(fake.state().transfer_approvals, vec![(id, key.clone())]);

    // Delivered: the link to the new server carries the approval in its
    // fragment (the script adds the key); moved: the new address.
    let mut delivered = transfer_view(id, store::TransferSide::Source, source::DELIVERED);
    delivered.data.approval = Some("aaa.bbb.ccc".to_owned());
    let mut moved = transfer_view(Uuid::new_v4(), store::TransferSide::Source, source::MOVED);
    moved.data.new_address = Some("p9@s2.test".to_owned());
    fake.state().moves = vec![delivered, moved];
    let page = p.get("/federation/patient").await;
    assert!(page.body.contains(&format!(
        "href=\"https://s2.test/federation/transfer/{id}#approval=aaa.bbb.ccc\">Continue on s2.test</a>"
    )));
    assert!(page.body.contains("Your record now lives at p9@s2.test"));
}

#[tokio::test]
async fn hand_over_needs_no_session_but_refuses_foreign_posts() {
    let fake = Arc::new(Fake::default());
    let web = web_with(&fake);
    let id = Uuid::new_v4();
    fake.state().handover = Some(transfer_view(
        id,
        store::TransferSide::Target,
        target::RECEIVED,
    ));
    let path = format!("/federation/transfer/{id}");
    let mut anon = Browser::new(&web, true);
    let page = anon.get(&path).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_page_headers(&page);
    assert!(page.body.contains("id=\"handover\""));
    assert!(page.body.contains("name=\"password2\""));
    let csp = page.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains(&html::csp_hash(transfer::HANDOVER_JS)),
        "{csp}"
    );
    // An unknown transfer is simply not there.
    let other = anon
        .get(&format!("/federation/transfer/{}", Uuid::new_v4()))
        .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);

    let key = "K".repeat(43);
    let fields = [
        ("key", key.as_str()),
        ("approval", "aaa.bbb.ccc"),
        ("username", "newalice"),
        ("password", "pw-one-secret"),
        ("password2", "pw-one-secret"),
    ];
    // No Origin (nor Referer), another origin, or cross-site: refused
    // before anything is read.
    anon.origin = None;
    let r = anon.post(&path, &fields).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    anon.origin = Some("https://evil.test".into());
    let r = anon.post(&path, &fields).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    anon.origin = Some(format!("https://{HOST}"));
    anon.extra = vec![("sec-fetch-site", "cross-site".into())];
    let r = anon.post(&path, &fields).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    anon.extra.clear();
    assert!(fake.state().handed.is_empty());

    // Passwords that differ, or a refusal: 422, nothing secret echoed.
    let mut differ = fields;
    differ[4] = ("password2", "pw-two-secret");
    let r = anon.post(&path, &differ).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("The two passwords differ"));
    assert!(!r.body.contains(&key) && !r.body.contains("pw-one-secret"));
    let mut taken = fields;
    taken[2] = ("username", "taken");
    let r = anon.post(&path, &taken).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("That username is taken"));
    assert!(!r.body.contains(&key) && !r.body.contains("pw-one-secret"));
    assert!(fake.state().handed.is_empty());

    let r = anon.post(&path, &fields).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), path);
    assert_eq!(
        fake.state().handed,
        vec![("newalice".to_owned(), key.clone())]
    );
    let page = anon.get(&path).await;
    assert!(page.body.contains("Your record is here."));
    assert!(page.body.contains("href=\"/federation/\""));
    assert!(anon.jar.is_empty(), "the hand-over sets no cookie");
}

#[tokio::test]
async fn doctor_page_offers_the_move_form() {
    let fake = Arc::new(Fake::default());
    let web = web_with(&fake);
    let mut d = Browser::new(&web, true);
    d.sign_in("drbob", PASSWORD).await;
    let page = d.get("/federation/doctor").await;
    assert!(page.body.contains("Move a patient to this server"));
    assert!(page
        .body
        .contains("action=\"/federation/doctor/transfers\""));
    // GET on the form target goes back to the page.
    let r = d.get("/federation/doctor/transfers").await;
    assert_eq!(r.location(), "/federation/doctor");
    // A patient cannot start one.
    let mut p = Browser::new(&web, true);
    p.sign_in("alice", PASSWORD).await;
    let csrf = p.token("/federation/patient").await;
    let r = p
        .post(
            "/federation/doctor/transfers",
            &[("csrf", &csrf), ("payload", "mdgate:x")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}
