//! The access.md client and the upstream identities mdgate acts through.
//!
//! access.md has no delegation API: only the doctor linked to a patient can
//! read that patient's history, and only the patient can append to it. So
//! mdgate talks to it as accounts it holds credentials or sessions for
//! (`DESIGN.md`, "Working around the unmodified upstream"):
//!
//! ```text
//!  web (sign-in) ──▶ sign_in ──R1──▶ SignedInUser { id, role, session }   (password dropped)
//!                                         │
//!  approval ──▶ Accounts::link_patient ◀──┘ PatientSession ──R4, R11──▶ access.md
//!                    │ federation account ──R19, R20──▶ access.md
//!                    ▼
//!  federation ──▶ Accounts::identity_for_patient ──▶ UpstreamIdentity
//!                    (Reach: patient → account, from R18)      │
//!                 read_record (R20-R27), ask_question (R28) ◀──┘ call: re-login on 401, retry once
//! ```
//!
//! The parts:
//!
//! * `access`: [`AccessMd`], one exchange (`Full<Bytes>` bodies, gzip,
//!   timeout) and R1 login; [`ApiRequest`] and [`Reply`] for raw calls.
//! * [`ops`]: every route mdgate uses as a typed [`Op`], with the route's
//!   status rules (401, 403, 500N vs 500E, empty-200 writes, R13's `200`).
//! * `model`: tolerant read models and exact write bodies.
//! * `identity`: [`UpstreamIdentity`], one account and its cookie jar,
//!   with serialised re-login.
//! * `sign_in`: [`sign_in`] for mdgate's pages, and [`PatientSession`].
//! * `reach`: [`Accounts`] from the configuration, and the [`Reach`] map.
//! * `link`: [`Accounts::link_patient`].
//! * `record`: [`read_record`] and [`ask_question`].
//! * `secret`: [`Secret`] and [`SessionCookie`], which never print.
//!
//! Cookies: each identity has its own jar of one `JSESSIONID`; logins are
//! sent without a cookie; an upstream `Set-Cookie` is read only by the
//! login code and never reaches a [`Reply`]'s public surface, so it cannot
//! be forwarded. No password, session cookie or link code appears in a log
//! line or an error message.

mod access;
mod error;
mod identity;
mod link;
mod model;
pub mod ops;
mod reach;
mod record;
mod secret;
mod sign_in;

pub use access::{AccessMd, ApiRequest, Fault, Login, Reply, LOGIN_ROUTE, MAX_BODY};
pub use error::UpstreamError;
pub use identity::{Account, IdentityError, UpstreamIdentity, REFUSED_LOGIN_COOLDOWN};
pub use link::{LinkError, LinkOutcome};
pub use model::{
    Answer, Doctor, DoctorReply, MedicalProfile, NewPatientAccount, NewQuestion, NewSymptom,
    Patient, ProfileUpdate, Question, QuestionType, Recurrence, Role, SecurityCode, Sex, Symptom,
    UpstreamId, User, Vitals, VitalsMeasurement,
};
pub use ops::{CodeConsumption, Op, SignUp};
pub use reach::{
    AccountReport, Accounts, Reach, ReachError, RefreshReport, DEFAULT_MIN_REFRESH_INTERVAL,
};
pub use record::{ask_question, ask_typed_question, read_record, Record};
pub use secret::{Secret, SecretFormatError, SessionCookie};
pub use sign_in::{sign_in, PatientSession, SignInError, SignedInUser};
