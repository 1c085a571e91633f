//! One request through the emulated Javalin application, without hyper.
//!
//! The phases are Javalin's: resolve the route (404 and HEAD-of-GET need no
//! handler), decode path parameters, run the access manager (which creates a
//! session as a side effect on every protected route), run the handler, map
//! exceptions to responses, and finally run the 401/403 error handler that
//! swaps the body for the login page. The result is an [`Outcome`]: status,
//! content type, body and the headers the server layer must add.

use std::sync::{LazyLock, PoisonError};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};

use super::bind::BodyError;
use super::bodies::{self, CodeBody};
use super::model::{Fault, Id, Signup, Store};
use super::pages::{self, View};
use super::routes::{self, Resolution, RouteId};
use super::session::{SessionUser, Sessions};
use super::views::{count_json, notifications_json};
use super::Shared;

/// The ICPC symptom list in server order, served byte for byte.
static ICPC_EN: &str = include_str!("../../data/icpc-symptoms-en.json");
static ICPC_AR: &str = include_str!("../../data/icpc-symptoms-ar.json");
static ICPC_EN_GZ: LazyLock<Bytes> =
    LazyLock::new(|| Bytes::from(super::server::gzip(ICPC_EN.as_bytes())));
static ICPC_AR_GZ: LazyLock<Bytes> =
    LazyLock::new(|| Bytes::from(super::server::gzip(ICPC_AR.as_bytes())));

/// The parts of a request the application looks at.
pub(crate) struct Request<'a> {
    pub(crate) method: &'a Method,
    /// The raw request path (still percent-encoded).
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: &'a [u8],
}

/// Content types the server sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ContentType {
    Text,
    Json,
    Html,
    /// Jetty's own error pages.
    JettyHtml,
}

impl ContentType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ContentType::Text => "text/plain",
            ContentType::Json => "application/json",
            ContentType::Html => "text/html",
            ContentType::JettyHtml => "text/html;charset=iso-8859-1",
        }
    }
}

/// A finished response, before compression and framing.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) status: StatusCode,
    pub(crate) content_type: ContentType,
    pub(crate) body: Bytes,
    /// The body, already gzip-compressed (static payloads only).
    pub(crate) gzipped: Option<Bytes>,
    /// A session created during this request: send `Set-Cookie`.
    pub(crate) new_session: Option<String>,
    /// JavalinVue's `Cache-Control: no-cache, no-store, must-revalidate`.
    pub(crate) no_store: bool,
    /// Jetty refused the request before Javalin saw it (no `Server: Javalin`,
    /// and the connection is closed).
    pub(crate) from_jetty: bool,
}

impl Outcome {
    /// Jetty's answer to a request line it cannot decode
    /// (`ErrorHandler.badMessageError`).
    fn jetty_bad_request() -> Self {
        Outcome {
            status: StatusCode::BAD_REQUEST,
            content_type: ContentType::JettyHtml,
            body: Bytes::from_static(b"<h1>Bad Message 400</h1><pre>reason: Bad Request</pre>"),
            gzipped: None,
            new_session: None,
            no_store: false,
            from_jetty: true,
        }
    }
}

/// What a handler (or the framework around it) ended the request with.
#[derive(Debug)]
enum Reply {
    /// 200, `text/plain`, empty.
    Empty,
    /// 200, `application/json`.
    Json(String),
    /// 200, the ICPC list.
    Icpc { arabic: bool },
    /// 200, a Vue page.
    Page(View),
    /// 400 with an empty body (signup with a taken username).
    BadRequestEmpty,
    /// A Javalin `HttpResponseException` (400 or 404) with its message.
    Http(StatusCode, String),
    /// 401: the access manager refused; becomes the login page.
    Unauthorized,
    /// 403: failed login; becomes the login page.
    Forbidden,
    /// An exception the application handler turned into a 500.
    Exception(Fault),
    /// Any other exception with a message (500 text/plain).
    ExceptionText(String),
}

impl From<Fault> for Reply {
    fn from(fault: Fault) -> Self {
        Reply::Exception(fault)
    }
}

impl From<BodyError> for Reply {
    fn from(error: BodyError) -> Self {
        Reply::Http(StatusCode::BAD_REQUEST, error.to_string())
    }
}

type Handled = Result<Reply, Reply>;

/// Runs one request through the application.
pub(crate) fn handle(shared: &Shared, req: &Request<'_>) -> Outcome {
    // Jetty percent-decodes the path before dispatching, and fails on a bad escape.
    if !routes::jetty_can_decode(req.path) {
        return Outcome::jetty_bad_request();
    }
    let mut new_session = None;
    let mut params: Vec<(&'static str, String)> = Vec::new();
    let reply = match routes::resolve(req.method, req.path) {
        Resolution::NotFound => Reply::Http(StatusCode::NOT_FOUND, "Not found".to_owned()),
        Resolution::HeadOfGet => Reply::Empty,
        Resolution::Endpoint(route, raw) => {
            let decoded: Result<Vec<_>, _> = raw
                .iter()
                .map(|(name, value)| routes::url_decode(value, false).map(|v| (name, v)))
                .collect();
            match decoded {
                // Decoding happens before the access manager runs.
                Err(e) => Reply::ExceptionText(e.0),
                Ok(decoded) => {
                    params = decoded;
                    let mut ctx = Ctx {
                        shared,
                        req,
                        params: &params,
                        user: None,
                        new_session: &mut new_session,
                    };
                    match access(&mut ctx, route.access) {
                        Ok(()) => dispatch(&mut ctx, route.id).unwrap_or_else(|r| r),
                        Err(r) => r,
                    }
                }
            }
        }
    };
    finish(reply, req, &params, new_session)
}

/// Per-request state the handlers share.
struct Ctx<'a, 'r> {
    shared: &'a Shared,
    req: &'a Request<'r>,
    params: &'a [(&'static str, String)],
    user: Option<SessionUser>,
    new_session: &'a mut Option<String>,
}

impl Ctx<'_, '_> {
    /// `ctx.pathParam(name, Long.class).get()`.
    fn path_long(&self, name: &str) -> Result<i64, Reply> {
        let value = self
            .params
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, v)| v.as_str());
        routes::java_parse_long(value).ok_or_else(|| {
            Reply::Http(
                StatusCode::BAD_REQUEST,
                format!("Path parameter '{name}' with value '{value}' is not a valid Long"),
            )
        })
    }

    /// The session user's id (`user.getId()`); a missing user is an NPE.
    fn user_id(&self) -> Result<Id, Reply> {
        self.user
            .map(|u| u.id)
            .ok_or(Reply::Exception(Fault::NullPointer))
    }

    /// `req.getSession(true)`: the live session, or a new one.
    fn session(&mut self) -> (String, Option<SessionUser>) {
        let sessions: &Sessions = &self.shared.sessions;
        if let Some(live) = sessions.lookup(self.req.headers, self.req.path) {
            return (live.id, live.user);
        }
        let id = sessions.create();
        *self.new_session = Some(id.clone());
        (id, None)
    }

    fn now(&self) -> i64 {
        self.shared.clock.now_ms()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Store> {
        self.shared
            .store
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Store> {
        self.shared
            .store
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The access manager of `App.java`.
fn access(ctx: &mut Ctx<'_, '_>, rule: routes::Access) -> Result<(), Reply> {
    if rule == routes::Access::Public {
        return Ok(());
    }
    let (_, user) = ctx.session();
    ctx.user = user;
    if rule.allows(user.map(|u| u.role)) {
        Ok(())
    } else {
        Err(Reply::Unauthorized)
    }
}

fn dispatch(ctx: &mut Ctx<'_, '_>, route: RouteId) -> Handled {
    use RouteId::*;
    match route {
        H1LoginPage => Ok(Reply::Page(View::Login)),
        H2DoctorHome => Ok(Reply::Page(View::DoctorHome)),
        H3PatientList => Ok(Reply::Page(View::PatientList)),
        H4PatientProfile => Ok(Reply::Page(View::PatientProfile)),
        H5PatientQuestions => Ok(Reply::Page(View::PatientQuestions)),
        H6NewQuestion => Ok(Reply::Page(View::AddPatientQuestion)),
        H7EditQuestion => Ok(Reply::Page(View::EditPatientQuestion)),
        H8AdminHome => Ok(Reply::Page(View::AdminHome)),
        R1Login => login(ctx),
        R2SymptomCodes => symptom_codes(ctx),
        R3Notifications => {
            let user = ctx.user_id()?;
            let items = ctx.write().drain_notifications(user);
            Ok(Reply::Json(notifications_json(&items)))
        }
        R4PatientDoctor => {
            let user = ctx.user_id()?;
            let store = ctx.read();
            let patient = store.accounts.get(&user).ok_or(Fault::NullPointer)?;
            let doctor = patient
                .doctor
                .and_then(|d| store.accounts.get(&d))
                .ok_or(Fault::NullJson)?;
            let mut out = String::new();
            Store::write_user(&mut out, doctor);
            Ok(Reply::Json(out))
        }
        R5Signup => {
            let input = bodies::user(ctx.req.body)?;
            let now = ctx.now();
            match ctx.write().sign_up(input, now)? {
                Signup::Created => Ok(Reply::Empty),
                Signup::Taken => Ok(Reply::BadRequestEmpty),
            }
        }
        R6PutProfile => {
            let user = ctx.user_id()?;
            let input = bodies::profile(ctx.req.body)?;
            let now = ctx.now();
            ctx.write().replace_profile(user, input, now)?;
            Ok(Reply::Empty)
        }
        R7GetProfile => {
            let user = ctx.user_id()?;
            let store = ctx.read();
            let profile = store.accounts.get(&user).and_then(|p| p.profile);
            if profile.is_none_or(|id| !store.profiles.contains_key(&id)) {
                return Err(Fault::NullJson.into());
            }
            let mut out = String::new();
            store.write_profile(&mut out, profile);
            Ok(Reply::Json(out))
        }
        R8Recommendations => {
            ctx.user_id()?;
            Ok(Reply::Json("[]".to_owned()))
        }
        R9UnansweredQuestions => {
            let user = ctx.user_id()?;
            let store = ctx.read();
            let patient = store.accounts.get(&user).ok_or(Fault::NullPointer)?;
            let open = patient
                .questions
                .iter()
                .filter(|q| store.questions.get(q).is_some_and(|q| !q.answered));
            Ok(Reply::Json(questions_json(&store, open)))
        }
        R10AnswerQuestion => {
            let user = ctx.user_id()?;
            let question = ctx.path_long("id")?;
            let text = bodies::answer_text(ctx.req.body)?;
            let now = ctx.now();
            ctx.write().answer_question(user, question, text, now)?;
            Ok(Reply::Empty)
        }
        R11SecurityCode => {
            let user = ctx.user_id()?;
            let now = ctx.now();
            let mut store = ctx.write();
            let id = store.mint_code(user, now, &mut rand::thread_rng());
            Ok(Reply::Json(store.code_json(id)))
        }
        R12AddSymptom => {
            let user = ctx.user_id()?;
            let input = bodies::symptom(ctx.req.body)?;
            let now = ctx.now();
            ctx.write().add_symptom(user, input, now)?;
            Ok(Reply::Empty)
        }
        R13AddVitals => {
            let user = ctx.user_id()?;
            let input = bodies::vitals(ctx.req.body)?;
            let now = ctx.now();
            ctx.write().add_vitals(user, input, now)?;
            Ok(Reply::Json("200".to_owned()))
        }
        R14Feed => {
            let user = ctx.user_id()?;
            Ok(Reply::Json(ctx.read().feed_json(user)?))
        }
        R15SymptomCount => {
            let user = ctx.user_id()?;
            let store = ctx.read();
            let n = store
                .doctor_patients(user)
                .map(|p| store.unarchived_symptoms(p).count())
                .sum();
            Ok(Reply::Json(count_json(n)))
        }
        R16AnswerCount => {
            let user = ctx.user_id()?;
            let store = ctx.read();
            let n = store
                .doctor_patients(user)
                .map(|p| store.unarchived_answers(p).count())
                .sum();
            Ok(Reply::Json(count_json(n)))
        }
        R17PatientCount => {
            let user = ctx.user_id()?;
            Ok(Reply::Json(count_json(
                ctx.read().doctor_patients(user).count(),
            )))
        }
        R18ListPatients => {
            let user = ctx.user_id()?;
            let store = ctx.read();
            let mut out = String::new();
            super::jackson::write_array(&mut out, store.doctor_patients(user), |out, p| {
                store.write_patient(out, p)
            });
            Ok(Reply::Json(out))
        }
        R19ConsumeCode => {
            let user = ctx.user_id()?;
            match bodies::code(ctx.req.body)?? {
                CodeBody::Missing => {}
                CodeBody::Code(code) => {
                    let now = ctx.now();
                    ctx.write().consume_code(user, &code, now)?;
                }
            }
            Ok(Reply::Empty)
        }
        R20GetPatient => {
            let user = ctx.user_id()?;
            let patient = ctx.path_long("id")?;
            let store = ctx.read();
            let p = store.linked_patient(user, patient).ok_or(Fault::NullJson)?;
            let mut out = String::new();
            store.write_patient(&mut out, p);
            Ok(Reply::Json(out))
        }
        R21PatientProfile => {
            let (store, p) = (ctx.read(), linked(ctx)?);
            let account = store.linked_patient(p.0, p.1).ok_or(Fault::NullPointer)?;
            if account
                .profile
                .is_none_or(|id| !store.profiles.contains_key(&id))
            {
                return Err(Fault::NullJson.into());
            }
            let mut out = String::new();
            store.write_profile(&mut out, account.profile);
            Ok(Reply::Json(out))
        }
        R22PatientVitals => {
            let (store, p) = (ctx.read(), linked(ctx)?);
            let account = store.linked_patient(p.0, p.1).ok_or(Fault::NullPointer)?;
            let mut patient_json = String::new();
            store.write_patient(&mut patient_json, account);
            let mut out = String::with_capacity(account.vitals.len() * (patient_json.len() + 200));
            super::jackson::write_array(&mut out, &account.vitals, |out, id| {
                store.write_vitals(out, *id, Some(&patient_json))
            });
            Ok(Reply::Json(out))
        }
        R23PatientSymptoms => {
            let (store, p) = (ctx.read(), linked(ctx)?);
            let account = store.linked_patient(p.0, p.1).ok_or(Fault::NullPointer)?;
            let mut patient_json = String::new();
            store.write_patient(&mut patient_json, account);
            let mut out = String::new();
            super::jackson::write_array(&mut out, store.unarchived_symptoms(account), |out, s| {
                store.write_symptom(out, s.id, Some(&patient_json))
            });
            Ok(Reply::Json(out))
        }
        R24SymptomSeen => {
            let (doctor, patient) = linked(ctx)?;
            let symptom = ctx.path_long("symptom_id")?;
            let now = ctx.now();
            ctx.write().archive_symptom(doctor, patient, symptom, now)?;
            Ok(Reply::Empty)
        }
        R25PatientAnswers => {
            let (store, p) = (ctx.read(), linked(ctx)?);
            let account = store.linked_patient(p.0, p.1).ok_or(Fault::NullPointer)?;
            let mut out = String::new();
            super::jackson::write_array(&mut out, store.unarchived_answers(account), |out, a| {
                store.write_answer(out, a)
            });
            Ok(Reply::Json(out))
        }
        R26AnswerSeen => {
            let (doctor, patient) = linked(ctx)?;
            let answer = ctx.path_long("answer_id")?;
            let now = ctx.now();
            ctx.write().archive_answer(doctor, patient, answer, now)?;
            Ok(Reply::Empty)
        }
        R27PatientQuestions => {
            let (store, p) = (ctx.read(), linked(ctx)?);
            let account = store.linked_patient(p.0, p.1).ok_or(Fault::NullPointer)?;
            Ok(Reply::Json(questions_json(
                &store,
                account.questions.iter(),
            )))
        }
        R28AskQuestion => {
            let (doctor, patient) = linked(ctx)?;
            let input = bodies::question(ctx.req.body)?;
            let now = ctx.now();
            ctx.write().ask_question(doctor, patient, input, now)?;
            Ok(Reply::Empty)
        }
        R29DeleteQuestion => {
            linked(ctx)?;
            ctx.path_long("question_id")?;
            Ok(Reply::Empty)
        }
        R30UpdateQuestion => {
            let (doctor, patient) = linked(ctx)?;
            let question = ctx.path_long("question_id")?;
            let input = bodies::question(ctx.req.body)?;
            let now = ctx.now();
            ctx.write()
                .update_question(doctor, patient, question, input, now)?;
            Ok(Reply::Empty)
        }
        R31GetQuestion => {
            let (doctor, patient) = linked(ctx)?;
            let question = ctx.path_long("question_id")?;
            let store = ctx.read();
            let account = store
                .linked_patient(doctor, patient)
                .ok_or(Fault::NullPointer)?;
            let found = store
                .find_question(account, question)
                .ok_or(Fault::NullJson)?;
            let mut out = String::new();
            store.write_question(&mut out, Some(found));
            Ok(Reply::Json(out))
        }
        R32CreateDoctor => {
            let input = bodies::user(ctx.req.body)?;
            let now = ctx.now();
            ctx.write().create_doctor(input, now)?;
            Ok(Reply::Empty)
        }
        R33ListDoctors => Ok(Reply::Json("[]".to_owned())),
    }
}

/// The session doctor and the `:id` path parameter (parsed before any
/// service call, so a bad id is a 400 even for an unlinked patient).
fn linked(ctx: &Ctx<'_, '_>) -> Result<(Id, Id), Reply> {
    Ok((ctx.user_id()?, ctx.path_long("id")?))
}

fn questions_json<'s>(store: &Store, ids: impl Iterator<Item = &'s Id>) -> String {
    let mut out = String::new();
    super::jackson::write_array(&mut out, ids, |out, id| {
        store.write_question(out, Some(*id))
    });
    out
}

/// R1: `UserRestService.signIn`.
fn login(ctx: &mut Ctx<'_, '_>) -> Handled {
    let request = bodies::sign_in(ctx.req.body)?;
    let found = {
        let store = ctx.read();
        store
            .sign_in(request.username.as_deref(), request.password.as_deref())?
            .map(|account| {
                let mut out = String::new();
                Store::write_user(&mut out, account);
                (account.id, account.role, out)
            })
    };
    let Some((id, role, json)) = found else {
        return Err(Reply::Forbidden);
    };
    let (session, _) = ctx.session();
    ctx.shared
        .sessions
        .authenticate(&session, SessionUser { id, role });
    Ok(Reply::Json(json))
}

/// R2: the ICPC symptoms, `?language=` (default and fallback `en`).
fn symptom_codes(ctx: &Ctx<'_, '_>) -> Handled {
    let query =
        routes::parse_query(ctx.req.query.unwrap_or("")).map_err(|e| Reply::ExceptionText(e.0))?;
    let language = query
        .iter()
        .find(|(k, _)| k == "language")
        .and_then(|(_, values)| values.first());
    // `new Locale(language)` lower-cases; only `ar` has its own titles.
    let arabic = language.is_some_and(|l| l.eq_ignore_ascii_case("ar"));
    Ok(Reply::Icpc { arabic })
}

/// Javalin's error handling after the endpoint: HTTP exceptions, the app's
/// exception handler, and the 401/403 VueComponent error handler.
fn finish(
    reply: Reply,
    req: &Request<'_>,
    params: &[(&'static str, String)],
    new_session: Option<String>,
) -> Outcome {
    let outcome = |status, content_type, body: Bytes| Outcome {
        status,
        content_type,
        body,
        gzipped: None,
        new_session: new_session.clone(),
        no_store: false,
        from_jetty: false,
    };
    let page = |status, view| match routes::parse_query(req.query.unwrap_or("")) {
        Ok(query) => Outcome {
            no_store: true,
            ..outcome(
                status,
                ContentType::Html,
                Bytes::from(pages::render(view, params, &query)),
            )
        },
        // JavalinVue reads the query map, and a bad escape throws there.
        Err(e) => outcome(
            StatusCode::INTERNAL_SERVER_ERROR,
            ContentType::Text,
            Bytes::from(e.0),
        ),
    };
    match reply {
        Reply::Empty => outcome(StatusCode::OK, ContentType::Text, Bytes::new()),
        Reply::Json(json) => outcome(StatusCode::OK, ContentType::Json, Bytes::from(json)),
        Reply::Icpc { arabic } => {
            let (plain, gz) = if arabic {
                (ICPC_AR, &*ICPC_AR_GZ)
            } else {
                (ICPC_EN, &*ICPC_EN_GZ)
            };
            Outcome {
                gzipped: Some(gz.clone()),
                ..outcome(
                    StatusCode::OK,
                    ContentType::Json,
                    Bytes::from_static(plain.as_bytes()),
                )
            }
        }
        Reply::Page(view) => page(StatusCode::OK, view),
        Reply::Unauthorized => page(StatusCode::UNAUTHORIZED, View::Login),
        Reply::Forbidden => page(StatusCode::FORBIDDEN, View::Login),
        Reply::BadRequestEmpty => outcome(StatusCode::BAD_REQUEST, ContentType::Text, Bytes::new()),
        Reply::Http(status, message) => {
            // Javalin looks at the first Accept header, case-sensitively.
            let wants_json = req
                .headers
                .get(http::header::ACCEPT)
                .is_some_and(|v| v.as_bytes().windows(16).any(|w| w == b"application/json"));
            if wants_json {
                outcome(
                    status,
                    ContentType::Json,
                    Bytes::from(http_error_json(status, &message)),
                )
            } else {
                outcome(status, ContentType::Text, Bytes::from(message))
            }
        }
        Reply::Exception(Fault::NullPointer) => outcome(
            StatusCode::INTERNAL_SERVER_ERROR,
            ContentType::Text,
            Bytes::new(),
        ),
        Reply::Exception(fault) => outcome(
            StatusCode::INTERNAL_SERVER_ERROR,
            ContentType::Text,
            Bytes::from(fault.to_string()),
        ),
        Reply::ExceptionText(message) => outcome(
            StatusCode::INTERNAL_SERVER_ERROR,
            ContentType::Text,
            Bytes::from(message),
        ),
    }
}

/// `HttpResponseExceptionMapper`'s JSON form.
fn http_error_json(status: StatusCode, message: &str) -> String {
    let kind = if status == StatusCode::NOT_FOUND {
        "notfoundresponse"
    } else {
        "badrequestresponse"
    };
    let mut title = String::new();
    super::jackson::write_str(&mut title, message);
    format!(
        "{{\n    \"title\": {title},\n    \"status\": {},\n    \"type\": \"https://javalin.io/documentation#{kind}\",\n    \"details\": []\n}}",
        status.as_u16()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_error_format() {
        assert_eq!(
            http_error_json(StatusCode::BAD_REQUEST, "Couldn't deserialize body to User"),
            "{\n    \"title\": \"Couldn't deserialize body to User\",\n    \"status\": 400,\n    \"type\": \"https://javalin.io/documentation#badrequestresponse\",\n    \"details\": []\n}"
        );
        assert!(http_error_json(StatusCode::NOT_FOUND, "Not found").contains("#notfoundresponse"));
    }
}
