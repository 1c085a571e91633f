//! Tests for `decide`: the route table against the upstream document, every
//! route × role × method, a list of known bypass attempts, configured
//! narrowing, and property tests over arbitrary targets, methods and
//! headers.
//!
//! The expectations are written out here by hand ([`EXPECTED`]) rather
//! than read from [`RULES`], so a wrong row in the table fails a test
//! instead of defining what the test expects.

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method};
use proptest::prelude::*;
use uuid::Uuid;

use super::*;

const FID: &str = "3f2b8c1e-9d4a-4e7b-a1c2-5d6e7f809a1b";
const OTHER_FID: &str = "0b7e4c2a-1111-4222-8333-944455566677";
const UPSTREAM_ID: i64 = 4242;

/// (route, method, federation suffix, upstream method, upstream path for
/// patient 4242, least role): the route table of the brief and the
/// upstream document's §2.1 and §8.5.
const EXPECTED: [(RouteId, &str, &str, &str, &str, Role); 7] = [
    (
        RouteId::Record,
        "GET",
        "",
        "GET",
        "/api/doctor/patient/4242",
        Role::Viewer,
    ),
    (
        RouteId::Profile,
        "GET",
        "/profile",
        "GET",
        "/api/doctor/patient/4242/profile",
        Role::Viewer,
    ),
    (
        RouteId::Vitals,
        "GET",
        "/vitals",
        "GET",
        "/api/doctor/patient/4242/vitals",
        Role::Viewer,
    ),
    (
        RouteId::Symptoms,
        "GET",
        "/symptoms",
        "GET",
        "/api/doctor/patient/4242/symptom",
        Role::Viewer,
    ),
    (
        RouteId::Answers,
        "GET",
        "/answers",
        "GET",
        "/api/doctor/patient/4242/answer",
        Role::Viewer,
    ),
    (
        RouteId::Questions,
        "GET",
        "/questions",
        "GET",
        "/api/doctor/patient/4242/question",
        Role::Viewer,
    ),
    (
        RouteId::AskQuestion,
        "POST",
        "/questions",
        "POST",
        "/api/doctor/patient/4242/question",
        Role::Contributor,
    ),
];

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
];

const SUFFIXES: [&str; 6] = [
    "",
    "/profile",
    "/vitals",
    "/symptoms",
    "/answers",
    "/questions",
];

fn fid() -> Uuid {
    Uuid::parse_str(FID).unwrap()
}

fn grant(role: Role) -> GrantFacts {
    GrantFacts {
        patient_fid: fid(),
        upstream_patient_id: UPSTREAM_ID,
        role,
    }
}

fn path(suffix: &str) -> String {
    format!("/federation/v1/records/{FID}{suffix}")
}

fn method(name: &str) -> Method {
    Method::from_bytes(name.as_bytes()).unwrap()
}

fn headers(list: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in list {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

/// Decides with the default policy.
fn decide(
    method: &Method,
    target: &[u8],
    headers: &HeaderMap,
    grant: &GrantFacts,
) -> Result<Permit, Deny> {
    Policy::default().decide(
        &RequestFacts {
            method,
            target,
            headers,
            has_body: false,
        },
        grant,
    )
}

fn reason(result: Result<Permit, Deny>) -> DenyReason {
    match result {
        Ok(permit) => panic!("expected a denial, got {permit:?}"),
        Err(deny) => deny.reason,
    }
}

// ------------------------------------------------------------ the table

#[test]
fn table_is_the_documented_one() {
    assert_eq!(RULES.len(), EXPECTED.len());
    assert_eq!(RouteId::ALL.len(), RULES.len());
    for (i, (rule, expected)) in RULES.iter().zip(EXPECTED).enumerate() {
        let (id, m, suffix, up_m, up_path, role) = expected;
        // `RouteId::rule` indexes RULES by discriminant.
        assert_eq!(rule.id, RouteId::ALL[i]);
        assert!(std::ptr::eq(rule.id.rule(), rule));
        assert_eq!(rule.id, id);
        assert_eq!(rule.method.as_str(), m, "{id}");
        assert_eq!(rule.federation_suffix, suffix, "{id}");
        assert_eq!(rule.upstream_method.as_str(), up_m, "{id}");
        assert_eq!(id.upstream_path(UPSTREAM_ID), up_path, "{id}");
        assert_eq!(rule.min_role, role, "{id}");
        assert_eq!(id.federation_path(&fid()), path(suffix));
        let body = if m == "POST" {
            BodyRule::QuestionWhitelist
        } else {
            BodyRule::None
        };
        assert_eq!(rule.body, body, "{id}");
    }
}

#[test]
fn upstream_paths_never_reach_denied_routes() {
    // §8.5: the only upstream routes a permit can name are R20–R28 minus
    // the archive routes; every other shape is unreachable by
    // construction. Spot-check the denied ones against the templates.
    let templates: Vec<String> = RouteId::ALL
        .iter()
        .map(|r| r.upstream_path(UPSTREAM_ID))
        .collect();
    for denied in [
        "/api/doctor/feed",
        "/api/doctor/patient",
        "/api/doctor/patient/add",
        "/api/doctor/patient/count",
        "/api/doctor/patient/symptom/count",
        "/api/doctor/patient/answer/count",
        "/api/notification",
        "/api/admin/doctor",
        "/api/patient/profile",
        "/api/doctor/patient/4242/question/7",
        "/api/doctor/patient/4242/symptom/7/seen",
        "/api/doctor/patient/4242/answer/7/seen",
        "/patient/4242",
    ] {
        assert!(!templates.iter().any(|t| t == denied), "{denied}");
    }
}

#[test]
fn every_route_role_and_method() {
    let policy = Policy::default();
    let mut permits = 0;
    for role in Role::ALL {
        for suffix in SUFFIXES {
            for name in METHODS {
                let m = method(name);
                let target = path(suffix);
                let result = decide(&m, target.as_bytes(), &HeaderMap::new(), &grant(role));
                let row = EXPECTED
                    .iter()
                    .find(|(_, em, es, ..)| *em == name && *es == suffix);
                match (row, result) {
                    (Some((id, _, _, up_m, up_path, least)), result) if role >= *least => {
                        let permit = result.unwrap_or_else(|d| {
                            panic!("{role} {name} {target}: denied {}", d.reason)
                        });
                        assert_eq!(permit.route, *id);
                        assert_eq!(permit.upstream_method.as_str(), *up_m);
                        assert_eq!(permit.upstream_path_and_query, *up_path);
                        assert!(policy.routes(role).contains(*id));
                        permits += 1;
                    }
                    (Some((id, ..)), result) => {
                        let deny = result.expect_err("role too low");
                        assert_eq!(
                            deny.reason,
                            DenyReason::RoleTooLow,
                            "{role} {name} {target}"
                        );
                        assert_eq!(deny.route, Some(*id));
                    }
                    (None, result) => {
                        assert_eq!(
                            reason(result),
                            DenyReason::MethodNotAllowed,
                            "{role} {name} {target}"
                        );
                    }
                }
            }
        }
    }
    // Viewer: six reads; contributor: six reads and the question.
    assert_eq!(permits, 6 + 7);
}

#[test]
fn contributor_includes_viewer() {
    assert!(Role::Contributor > Role::Viewer);
    let policy = Policy::default();
    assert!(policy
        .routes(Role::Viewer)
        .is_subset(policy.routes(Role::Contributor)));
    assert!(!policy.routes(Role::Viewer).contains(RouteId::AskQuestion));
    assert_eq!(policy.routes(Role::Contributor).iter().count(), 7);
}

// ------------------------------------------------------------ bypasses

/// (what is tried, method, target, headers, reason) with the contributor
/// grant for `FID`.
#[rustfmt::skip]
fn bypass_attempts() -> Vec<(&'static str, &'static str, Vec<u8>, HeaderMap, DenyReason)> {
    use DenyReason::*;
    use PathFlaw::*;
    let none = HeaderMap::new;
    let p = |s: &str| path(s).into_bytes();
    let raw = |s: &str| s.as_bytes().to_vec();
    let with = |suffix: &str, extra: &[u8]| {
        let mut t = path(suffix).into_bytes();
        t.extend_from_slice(extra);
        t
    };
    let upper_fid = FID.to_ascii_uppercase();
    let simple_fid = FID.replace('-', "");
    let overlong = format!("{}/{}", path(""), "a".repeat(MAX_TARGET_BYTES));
    vec![
        ("encoded slash", "GET", p("%2Fvitals"), none(), AmbiguousPath(PercentEscape)),
        ("encoded slash, lower hex", "GET", p("%2fvitals"), none(), AmbiguousPath(PercentEscape)),
        ("encoded dot-dot", "GET", raw("/federation/v1/records/%2e%2e/admin"), none(), AmbiguousPath(PercentEscape)),
        ("encoded dot-dot out of the record", "GET", p("/%2e%2e/%2e%2e/%2e%2e/api/doctor/feed"), none(), AmbiguousPath(PercentEscape)),
        ("encoded letter", "GET", p("/vit%61ls"), none(), AmbiguousPath(PercentEscape)),
        ("encoded NUL", "GET", p("/vitals%00"), none(), AmbiguousPath(PercentEscape)),
        ("double-encoded slash", "GET", p("%252Fvitals"), none(), AmbiguousPath(PercentEscape)),
        ("dot segment", "GET", raw(&format!("/federation/v1/./records/{FID}/vitals")), none(), AmbiguousPath(DotSegment)),
        ("dot-dot to another patient", "GET", p(&format!("/../{OTHER_FID}/vitals")), none(), AmbiguousPath(DotSegment)),
        ("dot-dot at the end", "GET", p("/vitals/.."), none(), AmbiguousPath(DotSegment)),
        ("triple dot", "GET", p("/..."), none(), AmbiguousPath(DotSegment)),
        ("double slash", "GET", raw(&format!("/federation/v1/records//{FID}")), none(), AmbiguousPath(EmptySegment)),
        ("leading double slash", "GET", raw(&format!("//federation/v1/records/{FID}")), none(), AmbiguousPath(EmptySegment)),
        ("double slash before the route", "GET", p("//vitals"), none(), AmbiguousPath(EmptySegment)),
        ("trailing slash", "GET", p("/"), none(), AmbiguousPath(TrailingSlash)),
        ("trailing slash after a route", "GET", p("/vitals/"), none(), AmbiguousPath(TrailingSlash)),
        ("jsessionid path parameter", "GET", p("/vitals;jsessionid=node01abc.node0"), none(), AmbiguousPath(PathParameter)),
        ("dot-dot-semicolon", "GET", p("/..;/..;/api/doctor/feed"), none(), AmbiguousPath(PathParameter)),
        ("backslash", "GET", p("\\vitals"), none(), AmbiguousPath(Backslash)),
        ("backslash dot-dot", "GET", p("\\..\\..\\api"), none(), AmbiguousPath(Backslash)),
        ("fragment", "GET", p("/vitals#/../../feed"), none(), AmbiguousPath(Fragment)),
        ("NUL byte", "GET", with("/vitals", b"\0"), none(), AmbiguousPath(ControlByte)),
        ("CR LF", "GET", with("/vitals", b"\r\nX-Injected: 1"), none(), AmbiguousPath(ControlByte)),
        ("tab", "GET", with("", b"\t/vitals"), none(), AmbiguousPath(ControlByte)),
        ("DEL", "GET", with("/vitals", b"\x7f"), none(), AmbiguousPath(ControlByte)),
        ("non-UTF-8 byte", "GET", with("/vit", b"\xffals"), none(), AmbiguousPath(NonAscii)),
        ("overlong UTF-8 slash", "GET", with("", b"\xc0\xafvitals"), none(), AmbiguousPath(NonAscii)),
        ("UTF-8 look-alike", "GET", p("/vital\u{15f}"), none(), AmbiguousPath(NonAscii)),
        ("fullwidth solidus", "GET", p("\u{ff0f}vitals"), none(), AmbiguousPath(NonAscii)),
        ("space", "GET", p("/vitals x"), none(), AmbiguousPath(InvalidCharacter)),
        ("braced UUID", "GET", raw(&format!("/federation/v1/records/{{{FID}}}")), none(), AmbiguousPath(InvalidCharacter)),
        ("upper-case fixed segment", "GET", raw(&format!("/federation/v1/Records/{FID}")), none(), AmbiguousPath(CaseVariant)),
        ("upper-case prefix", "GET", raw(&format!("/FEDERATION/v1/records/{FID}")), none(), AmbiguousPath(CaseVariant)),
        ("upper-case version", "GET", raw(&format!("/federation/V1/records/{FID}")), none(), AmbiguousPath(CaseVariant)),
        ("upper-case route name", "GET", p("/Vitals"), none(), AmbiguousPath(CaseVariant)),
        ("upper-case route name, POST", "POST", p("/QUESTIONS"), none(), AmbiguousPath(CaseVariant)),
        ("upper-case federation id", "GET", raw(&format!("/federation/v1/records/{upper_fid}")), none(), AmbiguousPath(NonCanonicalId)),
        ("one upper-case hex digit", "GET", raw(&format!("/federation/v1/records/3F{}", &FID[2..])), none(), AmbiguousPath(NonCanonicalId)),
        ("federation id without hyphens", "GET", raw(&format!("/federation/v1/records/{simple_fid}")), none(), AmbiguousPath(NonCanonicalId)),
        ("urn federation id", "GET", raw(&format!("/federation/v1/records/urn:uuid:{FID}")), none(), AmbiguousPath(NonCanonicalId)),
        ("absolute form", "GET", raw(&format!("http://a.example.org{}", path(""))), none(), AmbiguousPath(NotOriginForm)),
        ("asterisk form", "OPTIONS", raw("*"), none(), AmbiguousPath(NotOriginForm)),
        ("empty target", "GET", raw(""), none(), AmbiguousPath(NotOriginForm)),
        ("overlong target", "GET", overlong.into_bytes(), none(), PathTooLong),
        ("query", "GET", p("?x=1"), none(), QueryNotAllowed),
        ("query on a route", "GET", p("/vitals?patientId=7"), none(), QueryNotAllowed),
        ("empty query", "GET", p("/vitals?"), none(), QueryNotAllowed),
        ("encoded query mark", "GET", p("/vitals%3Fx=1"), none(), AmbiguousPath(PercentEscape)),
        ("another patient", "GET", raw(&format!("/federation/v1/records/{OTHER_FID}/vitals")), none(), WrongPatient),
        ("another patient, POST", "POST", raw(&format!("/federation/v1/records/{OTHER_FID}/questions")), none(), WrongPatient),
        ("HEAD is not GET", "HEAD", p("/vitals"), none(), MethodNotAllowed),
        ("lower-case get", "get", p("/vitals"), none(), MethodNotAllowed),
        ("PUT a question (R30)", "PUT", p("/questions"), none(), MethodNotAllowed),
        ("DELETE a question (R29)", "DELETE", p("/questions/7"), none(), NotARoute),
        ("question by id (R30/R31)", "GET", p("/questions/7"), none(), NotARoute),
        ("archive a symptom (R24)", "PUT", p("/symptoms/7/seen"), none(), NotARoute),
        ("singular upstream name", "GET", p("/symptom"), none(), NotARoute),
        ("feed (R14)", "GET", raw("/federation/v1/records/feed"), none(), NotARoute),
        ("patient list (R18)", "GET", raw("/federation/v1/records"), none(), NotARoute),
        ("upstream path itself", "GET", raw("/api/doctor/patient/4242"), none(), NotARoute),
        ("link a patient (R19)", "POST", raw("/api/doctor/patient/add"), none(), NotARoute),
        ("notifications (R3)", "GET", raw("/api/notification"), none(), NotARoute),
        ("admin", "POST", raw("/api/admin/doctor"), none(), NotARoute),
        ("HTML page", "GET", raw("/patient/4242"), none(), NotARoute),
        ("root", "GET", raw("/"), none(), NotARoute),
        ("extra segment", "GET", p("/vitals/extra"), none(), NotARoute),
        ("not a UUID", "GET", raw("/federation/v1/records/4242/vitals"), none(), NotARoute),
        ("other version", "GET", raw(&format!("/federation/v2/records/{FID}")), none(), NotARoute),
        ("method override", "POST", p("/questions"), headers(&[("X-HTTP-Method-Override", "PUT")]), MethodOverride),
        ("method override on GET", "GET", p("/vitals"), headers(&[("X-HTTP-Method-Override", "DELETE")]), MethodOverride),
        ("X-HTTP-Method", "GET", p(""), headers(&[("X-HTTP-Method", "DELETE")]), MethodOverride),
        ("X-Method-Override", "GET", p(""), headers(&[("x-method-override", "PUT")]), MethodOverride),
        ("underscored override", "GET", p(""), headers(&[("X_HTTP_METHOD_OVERRIDE", "PUT")]), MethodOverride),
        ("mixed override", "GET", p(""), headers(&[("x-Http_Method", "PUT")]), MethodOverride),
        ("override among others", "GET", p(""), headers(&[("accept", "*/*"), ("x_method-override", "PUT")]), MethodOverride),
        ("X-Original-URL", "GET", p("/vitals"), headers(&[("X-Original-URL", "/api/doctor/feed")]), PathOverride),
        ("X-Rewrite-URL", "GET", p("/vitals"), headers(&[("x_rewrite_url", "/api/doctor/feed")]), PathOverride),
        ("X-Original-URI", "GET", p("/vitals"), headers(&[("X-Original-URI", "/api/doctor/feed")]), PathOverride),
        ("GET with a body", "GET", p("/vitals"), headers(&[("content-length", "2")]), BodyNotAllowed),
        ("GET with chunked body", "GET", p("/vitals"), headers(&[("transfer-encoding", "chunked")]), BodyNotAllowed),
        ("GET with two lengths", "GET", p("/vitals"), headers(&[("content-length", "0"), ("content-length", "0")]), BodyNotAllowed),
    ]
}

#[test]
fn bypass_attempts_are_denied_with_their_reason() {
    let grant = grant(Role::Contributor);
    for (what, m, target, headers, expected) in bypass_attempts() {
        let result = decide(&method(m), &target, &headers, &grant);
        match result {
            Ok(permit) => panic!("{what}: permitted as {permit:?}"),
            Err(deny) => assert_eq!(
                deny.reason,
                expected,
                "{what}: {:?}",
                String::from_utf8_lossy(&target)
            ),
        }
    }
}

#[test]
fn bypass_attempts_are_denied_for_every_role() {
    for role in Role::ALL {
        for (what, m, target, headers, _) in bypass_attempts() {
            assert!(
                decide(&method(m), &target, &headers, &grant(role)).is_err(),
                "{what} as {role}"
            );
        }
    }
}

#[test]
fn viewer_cannot_ask() {
    let deny = decide(
        &Method::POST,
        path("/questions").as_bytes(),
        &HeaderMap::new(),
        &grant(Role::Viewer),
    )
    .expect_err("viewer asks");
    assert_eq!(deny.reason, DenyReason::RoleTooLow);
    assert_eq!(deny.route, Some(RouteId::AskQuestion));
}

#[test]
fn bodies() {
    let policy = Policy::default();
    let g = grant(Role::Contributor);
    let facts = |m: &Method, suffix: &str, h: &[(&str, &str)], b: bool| {
        let headers = headers(h);
        let target = path(suffix);
        policy.decide(
            &RequestFacts {
                method: m,
                target: target.as_bytes(),
                headers: &headers,
                has_body: b,
            },
            &g,
        )
    };
    // A GET with a body, known from the stream or from its framing.
    assert_eq!(
        reason(facts(&Method::GET, "/vitals", &[], true)),
        DenyReason::BodyNotAllowed
    );
    assert_eq!(
        reason(facts(&Method::GET, "", &[("content-length", "1")], false)),
        DenyReason::BodyNotAllowed
    );
    // An explicit empty body is no body.
    let permit = facts(&Method::GET, "/vitals", &[("content-length", "0")], false).unwrap();
    assert_eq!(permit.body, BodyRule::None);
    // The question's body goes through the whitelist.
    let permit = facts(
        &Method::POST,
        "/questions",
        &[("content-length", "20")],
        true,
    )
    .unwrap();
    assert_eq!(permit.body, BodyRule::QuestionWhitelist);
}

#[test]
fn grant_without_upstream_id_is_refused() {
    for id in [0, -1, i64::MIN] {
        let g = GrantFacts {
            upstream_patient_id: id,
            ..grant(Role::Contributor)
        };
        let r = decide(&Method::GET, path("").as_bytes(), &HeaderMap::new(), &g);
        assert_eq!(reason(r), DenyReason::GrantInvalid);
    }
    let g = GrantFacts {
        upstream_patient_id: i64::MAX,
        ..grant(Role::Viewer)
    };
    let permit = decide(&Method::GET, path("").as_bytes(), &HeaderMap::new(), &g).unwrap();
    assert_eq!(
        permit.upstream_path_and_query,
        format!("/api/doctor/patient/{}", i64::MAX)
    );
}

// ------------------------------------------------------------ narrowing

fn set(routes: &[RouteId]) -> RouteSet {
    routes.iter().copied().collect()
}

#[test]
fn a_narrowed_role_loses_exactly_the_routes_left_out() {
    use RouteId::*;
    let viewer = set(&[Record, Profile, Vitals]);
    let policy = Policy::new(viewer, RouteSet::up_to(Role::Contributor)).unwrap();
    for (id, m, suffix, ..) in EXPECTED {
        for role in Role::ALL {
            let target = path(suffix);
            let result = policy.decide(
                &RequestFacts {
                    method: &method(m),
                    target: target.as_bytes(),
                    headers: &HeaderMap::new(),
                    has_body: false,
                },
                &grant(role),
            );
            let allowed = policy.routes(role).contains(id);
            assert_eq!(result.is_ok(), allowed, "{role} {id}");
            if !allowed {
                assert_eq!(reason(result), DenyReason::RoleTooLow);
            }
        }
    }
    assert_eq!(policy.routes(Role::Viewer), viewer);
}

#[test]
fn a_policy_cannot_widen_the_table() {
    use RouteId::*;
    assert_eq!(
        Policy::new(
            set(&[Record, AskQuestion]),
            RouteSet::up_to(Role::Contributor)
        ),
        Err(PolicyError::AboveRole {
            route: AskQuestion,
            role: Role::Viewer,
            needs: Role::Contributor
        })
    );
    assert_eq!(
        Policy::new(set(&[Record, Vitals]), set(&[Record, AskQuestion])),
        Err(PolicyError::ContributorBelowViewer { route: Vitals })
    );
    // Narrowing both, or everything, is allowed.
    assert!(Policy::new(RouteSet::empty(), RouteSet::empty()).is_ok());
    assert!(Policy::new(set(&[Record]), set(&[Record, AskQuestion])).is_ok());
    assert_eq!(
        Policy::new(
            RouteSet::up_to(Role::Viewer),
            RouteSet::up_to(Role::Contributor)
        ),
        Ok(Policy::default())
    );
}

// ------------------------------------------------------- names and labels

#[test]
fn roles_parse_and_display() {
    for role in Role::ALL {
        assert_eq!(role.to_string().parse::<Role>(), Ok(role));
    }
    for bad in ["Viewer", "VIEWER", "admin", "", " viewer", "owner"] {
        assert_eq!(bad.parse::<Role>(), Err(UnknownRole), "{bad}");
    }
    assert_eq!(
        serde_json::to_string(&Role::Contributor).unwrap(),
        "\"contributor\""
    );
    assert!(Role::Viewer < Role::Contributor);
}

#[test]
fn route_ids_parse_and_display() {
    for id in RouteId::ALL {
        assert_eq!(id.to_string().parse::<RouteId>(), Ok(id));
    }
    let e = "vital".parse::<RouteId>().unwrap_err();
    assert_eq!(e.name, "vital");
    assert!(e.to_string().contains("record, profile, vitals"), "{e}");
    assert!("Record".parse::<RouteId>().is_err());
    assert!("feed".parse::<RouteId>().is_err());
    assert_eq!(format!("{:?}", set(&[RouteId::Vitals])), "{\"vitals\"}");
}

#[test]
fn deny_labels_are_stable_and_distinct() {
    use DenyReason::*;
    let all = [
        (NotARoute, "not_a_route", 404),
        (MethodNotAllowed, "method_not_allowed", 405),
        (RoleTooLow, "role_too_low", 403),
        (WrongPatient, "wrong_patient", 403),
        (AmbiguousPath(PathFlaw::DotSegment), "ambiguous_path", 400),
        (PathTooLong, "path_too_long", 414),
        (QueryNotAllowed, "query_not_allowed", 400),
        (MethodOverride, "method_override", 400),
        (PathOverride, "path_override", 400),
        (BodyNotAllowed, "body_not_allowed", 400),
        (GrantInvalid, "grant_invalid", 500),
    ];
    let mut labels: Vec<_> = all.iter().map(|(r, ..)| r.label()).collect();
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels.len(), all.len());
    for (r, label, status) in all {
        assert_eq!(r.label(), label);
        assert_eq!(r.status().as_u16(), status, "{label}");
    }
}

// ---------------------------------------------------------- properties

/// Bytes that make a path ambiguous, to append to segments.
const TRICKY: [&str; 10] = [
    ".", "/", "/.", "%2e", "%2F", ";x=1", "\\", "?x=1", "#", "\0",
];

/// Path segments, canonical and not, from which targets are assembled.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("federation".to_owned()),
        4 => Just("v1".to_owned()),
        4 => Just("records".to_owned()),
        6 => Just(FID.to_owned()),
        2 => Just(OTHER_FID.to_owned()),
        6 => prop::sample::select(vec![
            "profile", "vitals", "symptoms", "answers", "questions", "symptom", "question",
            "feed", "api", "doctor", "patient", "add", "7", "seen",
        ])
        .prop_map(str::to_owned),
        2 => prop::sample::select(vec![
            "", ".", "..", "%2e", "%2F", "Records", "V1", "Vitals", "..;", ";x=1", "\\",
            "?x=1", "#", "%00",
        ])
        .prop_map(str::to_owned),
        1 => Just(FID.to_ascii_uppercase()),
        1 => "[a-z0-9-]{0,12}",
    ]
}

/// Targets: assembled from segments (often canonical), or arbitrary bytes.
fn target() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => prop::collection::vec(segment(), 0..7).prop_map(|s| {
            let mut t = String::new();
            for seg in s {
                t.push('/');
                t.push_str(&seg);
            }
            t.into_bytes()
        }),
        3 => prop::sample::select(SUFFIXES.to_vec()).prop_map(|s| path(s).into_bytes()),
        // A canonical path with some segments swapped for others, case
        // flipped, or with something appended.
        6 => (
            prop::sample::select(SUFFIXES.to_vec()),
            prop::collection::vec(
                (0..8u8, segment(), any::<u64>(), prop::sample::select(TRICKY.to_vec())),
                5,
            ),
        )
            .prop_map(|(suffix, edits)| {
                let mut segments: Vec<String> = ["federation", "v1", "records", FID]
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect();
                if let Some(name) = suffix.strip_prefix('/') {
                    segments.push(name.to_owned());
                }
                for (segment, (dice, other, flips, tricky)) in segments.iter_mut().zip(edits) {
                    match dice {
                        0 => *segment = other,
                        1 => {
                            *segment = segment
                                .chars()
                                .enumerate()
                                .map(|(i, c)| {
                                    if flips >> (i % 64) & 1 == 1 {
                                        c.to_ascii_uppercase()
                                    } else {
                                        c
                                    }
                                })
                                .collect();
                        }
                        2 => segment.push_str(tricky),
                        _ => {}
                    }
                }
                format!("/{}", segments.join("/")).into_bytes()
            }),
        2 => prop::collection::vec(any::<u8>(), 0..80),
        1 => (prop::sample::select(SUFFIXES.to_vec()), prop::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(s, tail)| {
                let mut t = path(s).into_bytes();
                t.extend(tail);
                t
            }),
    ]
}

fn any_method() -> impl Strategy<Value = Method> {
    prop_oneof![
        6 => Just(Method::GET),
        2 => Just(Method::POST),
        4 => prop::sample::select(METHODS.to_vec()).prop_map(method),
        1 => "[A-Za-z]{1,10}".prop_map(|m| method(&m)),
    ]
}

/// Header names: ordinary ones, and the override names in any case with
/// `_` or `-`.
fn header_name() -> impl Strategy<Value = String> {
    let tricky = prop::sample::select(vec![
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-original-url",
        "x-rewrite-url",
    ])
    .prop_flat_map(|n| {
        let n = n.to_owned();
        prop::collection::vec(any::<(bool, bool)>(), n.len()).prop_map(move |flips| {
            n.chars()
                .zip(flips)
                .map(|(c, (upper, underscore))| match c {
                    '-' if underscore => '_',
                    c if upper => c.to_ascii_uppercase(),
                    c => c,
                })
                .collect()
        })
    });
    prop_oneof![
        4 => prop::sample::select(vec!["accept", "user-agent", "x-request-id", "authorization"])
            .prop_map(str::to_owned),
        1 => tricky,
        1 => "[a-z][a-z_-]{0,20}",
    ]
}

fn any_grant() -> impl Strategy<Value = GrantFacts> {
    (
        prop_oneof![4 => Just(FID), 1 => Just(OTHER_FID)],
        1..=i64::MAX,
        prop::sample::select(Role::ALL.to_vec()),
    )
        .prop_map(|(f, id, role)| GrantFacts {
            patient_fid: Uuid::parse_str(f).unwrap(),
            upstream_patient_id: id,
            role,
        })
}

fn is_override(name: &str) -> bool {
    let n = name.to_ascii_lowercase().replace('_', "-");
    [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-original-url",
        "x-rewrite-url",
        "x-original-uri",
    ]
    .contains(&n.as_str())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    /// A permit names one of the table's upstream templates filled with
    /// the grant's id, and only for the canonical path of that route and
    /// the grant's patient, with the route's method, a role that reaches
    /// it, and no override header.
    #[test]
    fn permits_are_exactly_the_table(
        m in any_method(),
        target in target(),
        names in prop::collection::vec(header_name(), 0..4),
        has_body in any::<bool>(),
        grant in any_grant(),
    ) {
        let headers = {
            let mut h = HeaderMap::new();
            for n in &names {
                let name = HeaderName::from_bytes(n.as_bytes()).unwrap();
                h.append(name, HeaderValue::from_static("x"));
            }
            h
        };
        let result = Policy::default().decide(
            &RequestFacts { method: &m, target: &target, headers: &headers, has_body },
            &grant,
        );
        if let Ok(permit) = result {
            let (id, em, suffix, up_m, _, least) = EXPECTED
                .iter()
                .find(|row| row.0 == permit.route)
                .copied()
                .unwrap();
            let canonical = format!("/federation/v1/records/{}{suffix}", grant.patient_fid);
            prop_assert_eq!(&target, canonical.as_bytes());
            prop_assert_eq!(m.as_str(), em);
            prop_assert_eq!(permit.upstream_method.as_str(), up_m);
            let upstream_suffix = match id {
                RouteId::Record => "",
                RouteId::Profile => "/profile",
                RouteId::Vitals => "/vitals",
                RouteId::Symptoms => "/symptom",
                RouteId::Answers => "/answer",
                RouteId::Questions | RouteId::AskQuestion => "/question",
            };
            prop_assert_eq!(
                permit.upstream_path_and_query,
                format!("/api/doctor/patient/{}{upstream_suffix}", grant.upstream_patient_id)
            );
            prop_assert!(grant.role >= least);
            prop_assert!(!names.iter().any(|n| is_override(n)));
            prop_assert!(em == "POST" || !has_body);
        } else if names.iter().any(|n| is_override(n)) {
            let reason = result.unwrap_err().reason;
            prop_assert!(
                reason == DenyReason::MethodOverride || reason == DenyReason::PathOverride,
                "{:?}", reason
            );
        }
    }

    /// Mutating a permitted target (inserting `%`, a dot segment or `/`,
    /// flipping the case of a byte, replacing or deleting a byte) never
    /// yields a permit unless the bytes are unchanged.
    #[test]
    fn mutated_permitted_targets_are_denied(
        row in 0..EXPECTED.len(),
        mutation in 0..7usize,
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let (id, m, suffix, ..) = EXPECTED[row];
        let original = path(suffix).into_bytes();
        let g = grant(Role::Contributor);
        let m = method(m);
        let none = HeaderMap::new();
        prop_assert_eq!(decide(&m, &original, &none, &g).map(|p| p.route), Ok(id));

        let mut t = original.clone();
        let i = at.index(t.len() + 1);
        let slashes: Vec<usize> =
            (0..t.len()).filter(|&j| t[j] == b'/').collect();
        let slash = slashes[at.index(slashes.len())];
        match mutation {
            0 => { t.insert(i, b'%'); }
            1 => { t.splice(slash..slash, b"/.".iter().copied()); }
            2 => { t.splice(slash..slash, b"/..".iter().copied()); }
            3 => { t.insert(i, b'/'); }
            4 => {
                let j = at.index(t.len());
                t[j] = if t[j].is_ascii_lowercase() {
                    t[j].to_ascii_uppercase()
                } else {
                    t[j].to_ascii_lowercase()
                };
            }
            5 => { let j = at.index(t.len()); t[j] = byte; }
            _ => { let j = at.index(t.len()); t.remove(j); }
        }
        let result = decide(&m, &t, &none, &g);
        if t == original {
            prop_assert_eq!(result.map(|p| p.route), Ok(id));
        } else {
            prop_assert!(result.is_err(), "{:?} permitted", String::from_utf8_lossy(&t));
        }
    }
}

/// The generators above must produce permits often enough for the first
/// property to mean something.
#[test]
fn the_generators_reach_permits() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = (any_method(), target(), any_grant());
    let mut permits = 0;
    for _ in 0..2000 {
        let (m, t, g) = strategy.new_tree(&mut runner).unwrap().current();
        if decide(&m, &t, &HeaderMap::new(), &g).is_ok() {
            permits += 1;
        }
    }
    assert!(permits >= 100, "only {permits} permits in 2000 samples");
}
