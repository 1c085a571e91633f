//! The access.md route table and Javalin's path matching, as pure code.
//!
//! The table is §2.1 of the upstream document in registration order: Javalin
//! tries the routes of the request's method in that order and the first match
//! wins, so `GET /api/doctor/patient/add` lands on `:id` and
//! `GET /patient/1/question/new` on H6 rather than H7.
//!
//! Matching follows Javalin 3.11's `PathParser` with `ignoreTrailingSlashes`:
//! the raw (still percent-encoded) request path must equal the pattern, a
//! path parameter matches one or more non-`/` characters, and one trailing
//! `/` is optional. Parameter values are then URL-decoded the way
//! `ContextUtil.urlDecode` does it (`+` stays `+`); a malformed escape makes
//! Java's `URLDecoder` throw, which the application turns into a 500.

use http::Method;

/// The role of a session user, `UserRole` in access.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// `ROLE_DOCTOR`.
    Doctor,
    /// `ROLE_PATIENT`.
    Patient,
    /// `ROLE_ADMIN`.
    Admin,
}

impl Role {
    /// The enum name as stored and serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Doctor => "ROLE_DOCTOR",
            Role::Patient => "ROLE_PATIENT",
            Role::Admin => "ROLE_ADMIN",
        }
    }
}

/// The role set a route is registered with (`roles(...)` in `App.java`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// `roles(NONE)`: no check, no session is touched.
    Public,
    /// Only these roles pass; anyone else gets 401.
    Only(&'static [Role]),
}

impl Access {
    /// Whether a request with this session role (None: no session user) passes.
    pub(crate) fn allows(self, role: Option<Role>) -> bool {
        match self {
            Access::Public => true,
            Access::Only(roles) => role.is_some_and(|r| roles.contains(&r)),
        }
    }
}

const DOCTOR: Access = Access::Only(&[Role::Doctor]);
const PATIENT: Access = Access::Only(&[Role::Patient]);
const ADMIN: Access = Access::Only(&[Role::Admin]);
const PATIENT_OR_DOCTOR: Access = Access::Only(&[Role::Patient, Role::Doctor]);

/// Every registered endpoint, named after the document's table (H1–H8, R1–R33).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum RouteId {
    H1LoginPage,
    H2DoctorHome,
    H3PatientList,
    H4PatientProfile,
    H5PatientQuestions,
    H6NewQuestion,
    H7EditQuestion,
    H8AdminHome,
    R1Login,
    R2SymptomCodes,
    R3Notifications,
    R4PatientDoctor,
    R5Signup,
    R6PutProfile,
    R7GetProfile,
    R8Recommendations,
    R9UnansweredQuestions,
    R10AnswerQuestion,
    R11SecurityCode,
    R12AddSymptom,
    R13AddVitals,
    R14Feed,
    R15SymptomCount,
    R16AnswerCount,
    R17PatientCount,
    R18ListPatients,
    R19ConsumeCode,
    R20GetPatient,
    R21PatientProfile,
    R22PatientVitals,
    R23PatientSymptoms,
    R24SymptomSeen,
    R25PatientAnswers,
    R26AnswerSeen,
    R27PatientQuestions,
    R28AskQuestion,
    R29DeleteQuestion,
    R30UpdateQuestion,
    R31GetQuestion,
    R32CreateDoctor,
    R33ListDoctors,
}

/// One registered route.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) id: RouteId,
    pub(crate) method: Method,
    pub(crate) pattern: &'static str,
    pub(crate) access: Access,
}

macro_rules! route {
    ($id:ident, $method:ident, $pattern:literal, $access:expr) => {
        Route {
            id: RouteId::$id,
            method: Method::$method,
            pattern: $pattern,
            access: $access,
        }
    };
}

/// The table, in registration order (`App.startServer`).
pub(crate) static ROUTES: [Route; 41] = [
    route!(H1LoginPage, GET, "/", Access::Public),
    route!(H2DoctorHome, GET, "/dashboard", DOCTOR),
    route!(H3PatientList, GET, "/patient", DOCTOR),
    route!(H4PatientProfile, GET, "/patient/:patientId", DOCTOR),
    route!(
        H5PatientQuestions,
        GET,
        "/patient/:patientId/question",
        DOCTOR
    ),
    route!(
        H6NewQuestion,
        GET,
        "/patient/:patientId/question/new",
        DOCTOR
    ),
    route!(
        H7EditQuestion,
        GET,
        "/patient/:patientId/question/:questionId",
        DOCTOR
    ),
    route!(H8AdminHome, GET, "/admin/dashboard", ADMIN),
    route!(R1Login, POST, "/api/login", Access::Public),
    route!(R2SymptomCodes, GET, "/api/symptom/codes", Access::Public),
    route!(R3Notifications, GET, "/api/notification", PATIENT_OR_DOCTOR),
    route!(R4PatientDoctor, GET, "/api/patient/doctor", PATIENT),
    route!(R5Signup, POST, "/api/patient/signup", Access::Public),
    route!(R6PutProfile, PUT, "/api/patient/profile", PATIENT),
    route!(R7GetProfile, GET, "/api/patient/profile", PATIENT),
    route!(
        R8Recommendations,
        GET,
        "/api/patient/reccomendation",
        PATIENT
    ),
    route!(R9UnansweredQuestions, GET, "/api/patient/question", PATIENT),
    route!(
        R10AnswerQuestion,
        PUT,
        "/api/patient/question/:id/answer",
        PATIENT
    ),
    route!(R11SecurityCode, GET, "/api/patient/code", PATIENT),
    route!(R12AddSymptom, POST, "/api/patient/symptom", PATIENT),
    route!(R13AddVitals, POST, "/api/patient/vitals", PATIENT),
    route!(R14Feed, GET, "/api/doctor/feed", DOCTOR),
    route!(
        R15SymptomCount,
        GET,
        "/api/doctor/patient/symptom/count",
        DOCTOR
    ),
    route!(
        R16AnswerCount,
        GET,
        "/api/doctor/patient/answer/count",
        DOCTOR
    ),
    route!(R17PatientCount, GET, "/api/doctor/patient/count", DOCTOR),
    route!(R18ListPatients, GET, "/api/doctor/patient", DOCTOR),
    route!(R19ConsumeCode, POST, "/api/doctor/patient/add", DOCTOR),
    route!(R20GetPatient, GET, "/api/doctor/patient/:id", DOCTOR),
    route!(
        R21PatientProfile,
        GET,
        "/api/doctor/patient/:id/profile",
        DOCTOR
    ),
    route!(
        R22PatientVitals,
        GET,
        "/api/doctor/patient/:id/vitals",
        DOCTOR
    ),
    route!(
        R23PatientSymptoms,
        GET,
        "/api/doctor/patient/:id/symptom",
        DOCTOR
    ),
    route!(
        R24SymptomSeen,
        PUT,
        "/api/doctor/patient/:id/symptom/:symptom_id/seen",
        DOCTOR
    ),
    route!(
        R25PatientAnswers,
        GET,
        "/api/doctor/patient/:id/answer",
        DOCTOR
    ),
    route!(
        R26AnswerSeen,
        PUT,
        "/api/doctor/patient/:id/answer/:answer_id/seen",
        DOCTOR
    ),
    route!(
        R27PatientQuestions,
        GET,
        "/api/doctor/patient/:id/question",
        DOCTOR
    ),
    route!(
        R28AskQuestion,
        POST,
        "/api/doctor/patient/:id/question",
        DOCTOR
    ),
    route!(
        R29DeleteQuestion,
        DELETE,
        "/api/doctor/patient/:id/question/:question_id",
        DOCTOR
    ),
    route!(
        R30UpdateQuestion,
        PUT,
        "/api/doctor/patient/:id/question/:question_id",
        DOCTOR
    ),
    route!(
        R31GetQuestion,
        GET,
        "/api/doctor/patient/:id/question/:question_id",
        DOCTOR
    ),
    route!(R32CreateDoctor, POST, "/api/admin/doctor", ADMIN),
    route!(R33ListDoctors, GET, "/api/admin/doctor", ADMIN),
];

/// The raw (not yet decoded) values of a matched route's path parameters,
/// in pattern order. No route has more than two.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct RawParams<'p> {
    values: [(&'static str, &'p str); 2],
    len: usize,
}

impl<'p> RawParams<'p> {
    fn push(&mut self, name: &'static str, value: &'p str) {
        // Invariant: patterns in ROUTES have at most two parameters, so
        // `len < 2` holds here; guard anyway rather than index out of range.
        if let Some(slot) = self.values.get_mut(self.len) {
            *slot = (name, value);
            self.len += 1;
        }
    }

    /// The (name, raw value) pairs.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&'static str, &'p str)> + '_ {
        self.values[..self.len].iter().copied()
    }
}

/// What Javalin does with a request before any handler or access check.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Resolution<'p> {
    /// A registered endpoint matched.
    Endpoint(&'static Route, RawParams<'p>),
    /// `HEAD` on a path with a `GET` route: 200, empty, nothing runs.
    HeadOfGet,
    /// Nothing matched: 404 `Not found`, no access check.
    NotFound,
}

/// Resolves a request the way `JavalinServlet.service` does.
pub(crate) fn resolve<'p>(method: &Method, path: &'p str) -> Resolution<'p> {
    if let Some(hit) = first_match(method, path) {
        return Resolution::Endpoint(hit.0, hit.1);
    }
    if method == Method::HEAD && first_match(&Method::GET, path).is_some() {
        return Resolution::HeadOfGet;
    }
    Resolution::NotFound
}

fn first_match<'p>(method: &Method, path: &'p str) -> Option<(&'static Route, RawParams<'p>)> {
    ROUTES
        .iter()
        .filter(|route| route.method == method)
        .find_map(|route| match_pattern(route.pattern, path).map(|params| (route, params)))
}

/// Matches a path against one pattern: the regex `^/<segments>/?$` with
/// `[^/]+?` for each `:param`.
fn match_pattern<'p>(pattern: &'static str, path: &'p str) -> Option<RawParams<'p>> {
    let rest = path.strip_prefix('/')?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let mut params = RawParams::default();
    // Javalin drops empty pattern segments, so "/" has none and matches "/" or "//".
    let mut wanted = pattern.split('/').filter(|s| !s.is_empty()).peekable();
    if wanted.peek().is_none() {
        return rest.is_empty().then_some(params);
    }
    let mut got = rest.split('/');
    for segment in wanted {
        let part = got.next()?;
        match segment.strip_prefix(':') {
            Some(name) if !part.is_empty() => params.push(name, part),
            Some(_) => return None,
            None if part == segment => {}
            None => return None,
        }
    }
    got.next().is_none().then_some(params)
}

/// Java's `URLDecoder` failure, with the message it carries on Java 11.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub(crate) struct UrlDecodeError(pub(crate) String);

/// `java.net.URLDecoder.decode(s, UTF_8)` as of Java 11; `plus_is_space` is
/// false for path parameters (Javalin protects `+` there) and true for
/// query strings.
pub(crate) fn url_decode(s: &str, plus_is_space: bool) -> Result<String, UrlDecodeError> {
    if !s.contains(['%', '+']) {
        return Ok(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => {
                out.push(' ');
                i += 1;
            }
            b'%' => {
                // A run of escapes is decoded together, as UTF-8, like Java does.
                let mut run = Vec::new();
                while i + 2 < bytes.len() && bytes[i] == b'%' {
                    run.push(java_parse_hex(&bytes[i + 1..i + 3]).map_err(|detail| {
                        UrlDecodeError(format!(
                            "URLDecoder: Illegal hex characters in escape (%) pattern - {detail}"
                        ))
                    })?);
                    i += 3;
                }
                if i < bytes.len() && bytes[i] == b'%' {
                    return Err(UrlDecodeError(
                        "URLDecoder: Incomplete trailing escape (%) pattern".to_owned(),
                    ));
                }
                out.push_str(&String::from_utf8_lossy(&run));
            }
            _ => {
                // Copy the next character whole (it may be multi-byte).
                let ch = s[i..].chars().next().unwrap_or('\u{FFFD}');
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    Ok(out)
}

/// `Integer.parseInt(s, i + 1, i + 3, 16)` on the two characters after a
/// `%`, with the message of its `NumberFormatException` (Java 11), or the
/// "negative value" URLDecoder reports for a leading `-`.
fn java_parse_hex(pair: &[u8]) -> Result<u8, String> {
    let shown = String::from_utf8_lossy(pair);
    let error_at = |index: usize| format!("Error at index {index} in: \"{shown}\"");
    let (negative, start) = match pair.first() {
        Some(b'-') => (true, 1),
        Some(b'+') => (false, 1),
        _ => (false, 0),
    };
    let mut value: u8 = 0;
    for (index, b) in pair.iter().enumerate().skip(start) {
        let digit = (*b as char).to_digit(16).ok_or_else(|| error_at(index))?;
        // Two hex digits always fit in a byte.
        value = value.wrapping_mul(16).wrapping_add(digit as u8);
    }
    if negative && value != 0 {
        return Err("negative value".to_owned());
    }
    Ok(value)
}

/// Whether Jetty 9.4 can decode a request path: every `%` must start a
/// `%XX` or `%uXXXX` escape. Jetty answers anything else with a 400 of its
/// own before the request reaches Javalin.
pub(crate) fn jetty_can_decode(path: &str) -> bool {
    let bytes = path.as_bytes();
    let hex = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|b| b.iter().all(u8::is_ascii_hexdigit))
    };
    let mut i = 0;
    while let Some(offset) = bytes[i..].iter().position(|b| *b == b'%') {
        let at = i + offset;
        if bytes.get(at + 1) == Some(&b'u') && hex(at + 2..at + 6) {
            i = at + 6;
        } else if hex(at + 1..at + 3) {
            i = at + 3;
        } else {
            return false;
        }
    }
    true
}

/// Parses a query string the way `ContextUtil.splitKeyValueStringAndGroupByKey`
/// does: `&`-separated, split at the first `=`, decoded, grouped by key in
/// first-seen order.
pub(crate) fn parse_query(query: &str) -> Result<Vec<(String, Vec<String>)>, UrlDecodeError> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    if query.is_empty() {
        return Ok(groups);
    }
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = url_decode(key, true)?;
        let value = url_decode(value, true)?;
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, values)) => values.push(value),
            None => groups.push((key, vec![value])),
        }
    }
    Ok(groups)
}

/// `Long.parseLong`: optional sign, ASCII digits, in range.
pub(crate) fn java_parse_long(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Rust's parser accepts the same sign forms once the digits are checked.
    s.parse::<i64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(method: Method, path: &str) -> Option<(RouteId, Vec<(&'static str, String)>)> {
        match resolve(&method, path) {
            Resolution::Endpoint(route, params) => Some((
                route.id,
                params.iter().map(|(n, v)| (n, v.to_owned())).collect(),
            )),
            _ => None,
        }
    }

    #[test]
    fn table_matches_in_registration_order() {
        let cases: &[(Method, &str, RouteId)] = &[
            (Method::GET, "/", RouteId::H1LoginPage),
            (Method::GET, "//", RouteId::H1LoginPage),
            (
                Method::GET,
                "/patient/7/question/new",
                RouteId::H6NewQuestion,
            ),
            (
                Method::GET,
                "/patient/7/question/9",
                RouteId::H7EditQuestion,
            ),
            (
                Method::GET,
                "/api/doctor/patient/count",
                RouteId::R17PatientCount,
            ),
            (
                Method::GET,
                "/api/doctor/patient/symptom/count",
                RouteId::R15SymptomCount,
            ),
            (
                Method::GET,
                "/api/doctor/patient/add",
                RouteId::R20GetPatient,
            ),
            (
                Method::POST,
                "/api/doctor/patient/add",
                RouteId::R19ConsumeCode,
            ),
            (
                Method::GET,
                "/api/doctor/patient/",
                RouteId::R18ListPatients,
            ),
            (
                Method::PUT,
                "/api/patient/question/3/answer/",
                RouteId::R10AnswerQuestion,
            ),
            (
                Method::DELETE,
                "/api/doctor/patient/1/question/2",
                RouteId::R29DeleteQuestion,
            ),
            (Method::GET, "/api/admin/doctor", RouteId::R33ListDoctors),
        ];
        for (method, path, want) in cases {
            assert_eq!(
                hit(method.clone(), path).map(|h| h.0),
                Some(*want),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn unknown_paths_and_methods_are_not_found() {
        for (method, path) in [
            (Method::POST, "/api/doctor/patient/5"),
            (Method::GET, "/api/login"),
            (Method::GET, "/api/login//"),
            (Method::GET, "/API/login"),
            (Method::GET, "/api/doctor/patient//profile"),
            (Method::OPTIONS, "/api/login"),
            (Method::GET, "/admin/doctors"),
            (Method::GET, "/api/patient/recommendation"),
            (Method::GET, "///"),
        ] {
            assert_eq!(
                resolve(&method, path),
                Resolution::NotFound,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn head_of_a_get_route_is_answered_without_a_handler() {
        assert_eq!(
            resolve(&Method::HEAD, "/api/doctor/feed"),
            Resolution::HeadOfGet
        );
        assert_eq!(resolve(&Method::HEAD, "/api/login"), Resolution::NotFound);
    }

    #[test]
    fn parameters_are_captured_raw() {
        let (id, params) = hit(Method::PUT, "/api/doctor/patient/12/symptom/x%31/seen").unwrap();
        assert_eq!(id, RouteId::R24SymptomSeen);
        assert_eq!(
            params,
            vec![("id", "12".to_owned()), ("symptom_id", "x%31".to_owned())]
        );
    }

    #[test]
    fn url_decoding_follows_java() {
        assert_eq!(url_decode("a%31+b", false).unwrap(), "a1+b");
        assert_eq!(url_decode("a%31+b", true).unwrap(), "a1 b");
        assert_eq!(url_decode("%C3%A9", false).unwrap(), "é");
        assert_eq!(
            url_decode("%zz", false).unwrap_err().0,
            "URLDecoder: Illegal hex characters in escape (%) pattern - Error at index 0 in: \"zz\""
        );
        assert_eq!(
            url_decode("%u0041", false).unwrap_err().0,
            "URLDecoder: Illegal hex characters in escape (%) pattern - Error at index 0 in: \"u0\""
        );
        assert_eq!(
            url_decode("%4g", false).unwrap_err().0,
            "URLDecoder: Illegal hex characters in escape (%) pattern - Error at index 1 in: \"4g\""
        );
        assert_eq!(
            url_decode("%-1", false).unwrap_err().0,
            "URLDecoder: Illegal hex characters in escape (%) pattern - negative value"
        );
        assert_eq!(url_decode("%+f", false).unwrap(), "\u{f}");
        assert_eq!(
            url_decode("1%2", false).unwrap_err().0,
            "URLDecoder: Incomplete trailing escape (%) pattern"
        );
    }

    #[test]
    fn jetty_rejects_undecodable_paths() {
        for ok in ["/", "/a%20b", "/p/%u0041/x", "/%C3%A9"] {
            assert!(jetty_can_decode(ok), "{ok}");
        }
        for bad in ["/%zz", "/a%2", "/%", "/%u00", "/%u00zz"] {
            assert!(!jetty_can_decode(bad), "{bad}");
        }
    }

    #[test]
    fn query_strings_group_by_key() {
        let q = parse_query("language=ar&x&language=en&a+b=c%20d").unwrap();
        assert_eq!(
            q,
            vec![
                (
                    "language".to_owned(),
                    vec!["ar".to_owned(), "en".to_owned()]
                ),
                ("x".to_owned(), vec![String::new()]),
                ("a b".to_owned(), vec!["c d".to_owned()]),
            ]
        );
    }

    #[test]
    fn longs_parse_like_java() {
        assert_eq!(java_parse_long("42"), Some(42));
        assert_eq!(java_parse_long("+42"), Some(42));
        assert_eq!(java_parse_long("-7"), Some(-7));
        assert_eq!(java_parse_long("007"), Some(7));
        for bad in ["", "+", "x", " 1", "1.0", "9223372036854775808"] {
            assert_eq!(java_parse_long(bad), None, "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn a_trailing_slash_never_changes_the_match(path in "(/[a-z0-9:]{1,8}){0,6}") {
            let path = if path.is_empty() { "/".to_owned() } else { path };
            let plain = resolve(&Method::GET, &path);
            let slashed = format!("{path}/");
            let with_slash = resolve(&Method::GET, &slashed);
            let same = match (&plain, &with_slash) {
                (Resolution::Endpoint(a, _), Resolution::Endpoint(b, _)) => a.id == b.id,
                (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
            };
            proptest::prop_assert!(same);
        }
    }
}
