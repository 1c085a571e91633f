//! The emulated database: access.md's entities and the service-layer
//! operations on them, as pure code (time and randomness come in as
//! arguments; there is no I/O).
//!
//! The shapes follow the Hibernate mapping rather than a tidy model, because
//! the quirks live there: `User`, `Patient` and `Doctor` are one `APP_USER`
//! row ([`Account`]); a patient's questions, symptoms and vitals and a
//! doctor's patients are ordered join-table collections; `Question.patient`
//! and `Answer.question` are separate foreign keys that can disagree with
//! those collections. Every entity draws its id from one global sequence.
//!
//! Failures are reported as [`Fault`]s named after the Java exception the
//! real server would throw; `api` turns them into the matching 500 bodies.
//! Sequence values taken before a failing commit stay used, as in Derby.

use std::collections::HashMap;

use rand::Rng;

use super::bodies::{
    ProfileInput, QuestionInput, ReplyInput, SymptomInput, UserInput, VitalsInput,
};
use super::clock;
use super::routes::Role;
use super::Fidelity;

/// An entity id (`Long`), drawn from the single global sequence.
pub(crate) type Id = i64;

/// A Java exception the real server would end a request with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Fault {
    /// A commit failed (constraint violation, `VARCHAR(255)` overflow,
    /// non-finite double): Narayana's `RollbackException` (500T).
    #[error("ARJUNA016053: Could not commit transaction.")]
    Commit,
    /// `ctx.json(null)` (500N).
    #[error(
        "Parameter specified as non-null is null: method io.javalin.http.Context.json, parameter obj"
    )]
    NullJson,
    /// A `NullPointerException`, whose null message crashes the exception
    /// handler and leaves an empty 500 (500E).
    #[error("")]
    NullPointer,
    /// `getSingleResult` found several rows.
    #[error("query did not return a unique result: {0}")]
    NonUnique(usize),
    /// `(String) map.get("code")` on a non-string JSON value.
    #[error(
        "class {0} cannot be cast to class java.lang.String ({0} and java.lang.String are in module java.base of loader 'bootstrap')"
    )]
    ClassCast(&'static str),
}

/// `Sex`, stored by ordinal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sex {
    Female,
    Male,
}

impl Sex {
    pub(crate) const NAMES: [&'static str; 2] = ["Female", "Male"];
    pub(crate) const ALL: [Sex; 2] = [Sex::Female, Sex::Male];

    pub(crate) fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// `QuestionType`, stored by ordinal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QuestionType {
    Scale,
    Binary,
    Text,
    Vitals,
}

impl QuestionType {
    pub(crate) const NAMES: [&'static str; 4] = ["Scale", "Binary", "Text", "Vitals"];
    pub(crate) const ALL: [QuestionType; 4] = [
        QuestionType::Scale,
        QuestionType::Binary,
        QuestionType::Text,
        QuestionType::Vitals,
    ];

    pub(crate) fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// `SecurityCodeStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CodeStatus {
    Valid,
    Consumed,
    Invalidated,
    Timeout,
}

/// Creation and update timestamps (`@CreationTimestamp`/`@UpdateTimestamp`);
/// a merge can null `created`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamps {
    pub(crate) created: Option<i64>,
    pub(crate) updated: Option<i64>,
}

impl Stamps {
    fn new(now: i64) -> Self {
        Stamps {
            created: Some(now),
            updated: Some(now),
        }
    }
}

/// One `APP_USER` row, seen as User, Patient or Doctor.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub(crate) id: Id,
    pub(crate) stamps: Stamps,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) role: Role,
    pub(crate) telephone: Option<String>,
    pub(crate) first_name: Option<String>,
    pub(crate) last_name: Option<String>,
    /// `Patient.doctor`, the foreign key the per-link checks use.
    pub(crate) doctor: Option<Id>,
    /// `Patient.profile`.
    pub(crate) profile: Option<Id>,
    pub(crate) questions: Vec<Id>,
    pub(crate) symptoms: Vec<Id>,
    pub(crate) vitals: Vec<Id>,
    /// `Doctor.patients`, the join table behind lists, counts and the feed.
    pub(crate) patients: Vec<Id>,
}

/// `MedicalProfile`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Profile {
    pub(crate) id: Id,
    pub(crate) stamps: Stamps,
    pub(crate) age: i32,
    pub(crate) height: f64,
    pub(crate) weight: f64,
    pub(crate) sex: Option<Sex>,
    pub(crate) g6pd_deficiency: bool,
    pub(crate) respiratory_diseases: bool,
    pub(crate) diabetes: bool,
    pub(crate) cardiovascular_diseases: bool,
    pub(crate) obesity: bool,
    pub(crate) medications: Vec<String>,
}

/// `Question`.
#[derive(Debug, Clone)]
pub(crate) struct Question {
    pub(crate) id: Id,
    pub(crate) stamps: Stamps,
    pub(crate) text: Option<String>,
    pub(crate) answers: Vec<Id>,
    pub(crate) patient: Option<Id>,
    pub(crate) kind: Option<QuestionType>,
    pub(crate) answered: bool,
    pub(crate) answered_on: Option<i64>,
    /// `(hourOfDay, minuteOfHour)` pairs.
    pub(crate) recurrance: Vec<(i64, i64)>,
    pub(crate) start_date: Option<i64>,
    pub(crate) end_date: Option<i64>,
    pub(crate) recurring: bool,
}

/// `Answer`.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) id: Id,
    pub(crate) stamps: Stamps,
    pub(crate) question: Option<Id>,
    pub(crate) replies: Vec<Id>,
    pub(crate) text: Option<String>,
    pub(crate) archived: bool,
    pub(crate) archive_date: Option<i64>,
}

/// `Symptom`.
#[derive(Debug, Clone)]
pub(crate) struct Symptom {
    pub(crate) id: Id,
    pub(crate) stamps: Stamps,
    pub(crate) code: Option<String>,
    pub(crate) patient: Option<Id>,
    pub(crate) replies: Vec<Id>,
    pub(crate) note: Option<String>,
    pub(crate) archived: bool,
    pub(crate) archive_date: Option<i64>,
}

/// `VitalsMeasurment` (sic).
#[derive(Debug, Clone)]
pub(crate) struct Vitals {
    pub(crate) id: Id,
    pub(crate) stamps: Stamps,
    pub(crate) patient: Option<Id>,
    pub(crate) heart_beats_per_minute: f64,
    pub(crate) systolic_pressure: f64,
    pub(crate) diastolic_pressure: f64,
    pub(crate) blood_oxygenation: f64,
    pub(crate) breathing_rate: f64,
}

/// `Reply` (table `RECCOMENDATION`); only request bodies ever create one.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) id: Id,
    pub(crate) stamps: Stamps,
    pub(crate) text: Option<String>,
}

/// `SecurityCode`.
#[derive(Debug, Clone)]
pub(crate) struct SecurityCode {
    pub(crate) id: Id,
    pub(crate) stamps: Stamps,
    pub(crate) code: String,
    /// Full epoch millis in memory; only the time of day is stored.
    pub(crate) valid_until: i64,
    pub(crate) status: CodeStatus,
    pub(crate) belongs_to: Id,
    pub(crate) consumed_by: Id,
    pub(crate) consumed_on: Option<i64>,
}

/// Result of a signup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signup {
    /// The patient was created (empty 200).
    Created,
    /// The username is taken (400, empty body).
    Taken,
}

/// A queued notification, already rendered as `{"name":..,"data":..}`.
pub(crate) type Notification = String;

/// Everything the real server keeps in Derby and Nitrite.
#[derive(Debug)]
pub(crate) struct Store {
    pub(crate) fidelity: Fidelity,
    code_ttl_ms: i64,
    next_id: Id,
    pub(crate) accounts: HashMap<Id, Account>,
    by_username: HashMap<String, Vec<Id>>,
    pub(crate) profiles: HashMap<Id, Profile>,
    pub(crate) questions: HashMap<Id, Question>,
    pub(crate) answers: HashMap<Id, Answer>,
    pub(crate) symptoms: HashMap<Id, Symptom>,
    pub(crate) vitals: HashMap<Id, Vitals>,
    pub(crate) replies: HashMap<Id, Reply>,
    pub(crate) codes: HashMap<Id, SecurityCode>,
    /// Codes with status VALID, by code text.
    valid_codes: HashMap<String, Vec<Id>>,
    notifications: HashMap<Id, Vec<Notification>>,
}

/// `VARCHAR(255)`, counted in UTF-16 units as Derby does.
fn fits(s: Option<&str>) -> bool {
    s.is_none_or(|s| s.len() <= 255 || s.encode_utf16().count() <= 255)
}

fn check_fits<'a>(texts: impl IntoIterator<Item = Option<&'a str>>) -> Result<(), Fault> {
    if texts.into_iter().all(fits) {
        Ok(())
    } else {
        Err(Fault::Commit)
    }
}

/// Derby's `DOUBLE`: non-finite values are rejected, `-0.0` becomes `0.0`.
fn derby_double(d: f64) -> Result<f64, Fault> {
    if d.is_finite() {
        Ok(if d == 0.0 { 0.0 } else { d })
    } else {
        Err(Fault::Commit)
    }
}

/// `RandomStringUtils.random(8, true, true).toLowerCase()`: uniform over
/// `[A-Za-z0-9]`, then lower-cased, so each letter is twice as likely as a digit.
pub(crate) fn new_code(rng: &mut impl Rng) -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..8)
        .map(|_| char::from(ALNUM[rng.gen_range(0..ALNUM.len())].to_ascii_lowercase()))
        .collect()
}

/// `RandomStringUtils.random(16, true, true)`: the bootstrap admin password.
pub(crate) fn new_admin_password(rng: &mut impl Rng) -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..16)
        .map(|_| char::from(ALNUM[rng.gen_range(0..ALNUM.len())]))
        .collect()
}

impl Store {
    /// An empty database with the bootstrap admin (`createAdminIfNotFound`)
    /// taking the first id.
    pub(crate) fn new(
        fidelity: Fidelity,
        first_id: Id,
        code_ttl_ms: i64,
        admin_password: &str,
        now: i64,
    ) -> Self {
        let mut store = Store {
            fidelity,
            code_ttl_ms,
            next_id: first_id,
            accounts: HashMap::new(),
            by_username: HashMap::new(),
            profiles: HashMap::new(),
            questions: HashMap::new(),
            answers: HashMap::new(),
            symptoms: HashMap::new(),
            vitals: HashMap::new(),
            replies: HashMap::new(),
            codes: HashMap::new(),
            valid_codes: HashMap::new(),
            notifications: HashMap::new(),
        };
        let id = store.alloc();
        store.insert_account(Account {
            id,
            stamps: Stamps::new(now),
            username: Some("admin".to_owned()),
            password: Some(admin_password.to_owned()),
            role: Role::Admin,
            telephone: None,
            first_name: None,
            last_name: None,
            doctor: None,
            profile: None,
            questions: Vec::new(),
            symptoms: Vec::new(),
            vitals: Vec::new(),
            patients: Vec::new(),
        });
        store
    }

    /// The next value of `hibernate_sequence`.
    fn alloc(&mut self) -> Id {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// An Envers revision (the only `@Audited` entity is MedicalProfile),
    /// which takes a sequence value too.
    fn audit_revision(&mut self) {
        if self.fidelity.envers_revision_ids {
            self.alloc();
        }
    }

    fn insert_account(&mut self, account: Account) {
        if let Some(name) = &account.username {
            self.by_username
                .entry(name.clone())
                .or_default()
                .push(account.id);
        }
        self.accounts.insert(account.id, account);
    }

    /// `User.byUsername` with `getSingleResult`: `Ok(None)` for no row, an
    /// error for several. A null username matches nothing.
    fn user_by_username(&self, username: Option<&str>) -> Result<Option<Id>, Fault> {
        let ids = username
            .and_then(|name| self.by_username.get(name))
            .map_or(&[][..], Vec::as_slice);
        match ids {
            [] => Ok(None),
            [id] => Ok(Some(*id)),
            many => Err(Fault::NonUnique(many.len())),
        }
    }

    /// R1: the user whose username and (plaintext, null-equals-null)
    /// password match, if any.
    pub(crate) fn sign_in(
        &self,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Result<Option<&Account>, Fault> {
        let Some(id) = self.user_by_username(username)? else {
            return Ok(None);
        };
        Ok(self
            .accounts
            .get(&id)
            .filter(|account| account.password.as_deref() == password))
    }

    /// R5: creates a patient with a default profile unless the username is taken.
    pub(crate) fn sign_up(&mut self, input: UserInput, now: i64) -> Result<Signup, Fault> {
        if self.user_by_username(input.username.as_deref())?.is_some() {
            return Ok(Signup::Taken);
        }
        let id = self.alloc();
        let profile_id = self.alloc();
        check_fits([
            input.username.as_deref(),
            input.password.as_deref(),
            input.telephone.as_deref(),
            input.first_name.as_deref(),
            input.last_name.as_deref(),
        ])?;
        self.profiles.insert(
            profile_id,
            ProfileInput::default().into_profile(profile_id, Stamps::new(now)),
        );
        self.insert_account(Account {
            id,
            stamps: Stamps::new(now),
            username: input.username,
            password: input.password,
            role: Role::Patient,
            telephone: input.telephone,
            first_name: input.first_name,
            last_name: input.last_name,
            doctor: None,
            profile: Some(profile_id),
            questions: Vec::new(),
            symptoms: Vec::new(),
            vitals: Vec::new(),
            patients: Vec::new(),
        });
        self.audit_revision();
        Ok(Signup::Created)
    }

    /// R32: creates a doctor; no uniqueness check.
    pub(crate) fn create_doctor(&mut self, input: UserInput, now: i64) -> Result<(), Fault> {
        let id = self.alloc();
        check_fits([
            input.username.as_deref(),
            input.password.as_deref(),
            input.telephone.as_deref(),
            input.first_name.as_deref(),
            input.last_name.as_deref(),
        ])?;
        self.insert_account(Account {
            id,
            stamps: Stamps::new(now),
            username: input.username,
            password: input.password,
            role: Role::Doctor,
            telephone: input.telephone,
            first_name: input.first_name,
            last_name: input.last_name,
            doctor: None,
            profile: None,
            questions: Vec::new(),
            symptoms: Vec::new(),
            vitals: Vec::new(),
            patients: Vec::new(),
        });
        Ok(())
    }

    fn account_mut(&mut self, id: Id) -> Result<&mut Account, Fault> {
        self.accounts.get_mut(&id).ok_or(Fault::NullPointer)
    }

    /// R6: `patient.setProfile(body)` and merge. Without an `id` (or with
    /// one that names no profile) a new row is inserted; with the id of an
    /// existing profile the body replaces that row, whoever it belongs to.
    pub(crate) fn replace_profile(
        &mut self,
        patient: Id,
        input: ProfileInput,
        now: i64,
    ) -> Result<(), Fault> {
        let target = input
            .id
            .filter(|id| self.fidelity.profile_idor && self.profiles.contains_key(id));
        let (profile_id, stamps) = match target {
            Some(id) => (
                id,
                Stamps {
                    created: input.creation_date,
                    updated: Some(now),
                },
            ),
            None => (self.alloc(), Stamps::new(now)),
        };
        check_fits(input.medications.iter().map(|m| Some(m.as_str())))?;
        let height = derby_double(input.height)?;
        let weight = derby_double(input.weight)?;
        let mut profile = input.into_profile(profile_id, stamps);
        profile.height = height;
        profile.weight = weight;
        self.profiles.insert(profile_id, profile);
        let account = self.account_mut(patient)?;
        if account.profile != Some(profile_id) {
            account.profile = Some(profile_id);
            account.stamps.updated = Some(now);
        }
        self.audit_revision();
        Ok(())
    }

    /// R10: appends an answer to one of the patient's questions (matched
    /// with `Objects.equals`); an unknown question is a silent no-op. The
    /// `answerCreated` handler then runs: Vitals answers are archived, others
    /// notify the doctor; either needs `question.patient.doctor`.
    pub(crate) fn answer_question(
        &mut self,
        patient: Id,
        question_id: Id,
        text: Option<String>,
        now: i64,
    ) -> Result<(), Fault> {
        let owns = self
            .accounts
            .get(&patient)
            .is_some_and(|p| p.questions.contains(&question_id));
        if !owns {
            return Ok(());
        }
        let answer_id = self.alloc();
        check_fits([text.as_deref()])?;
        self.answers.insert(
            answer_id,
            Answer {
                id: answer_id,
                stamps: Stamps::new(now),
                question: Some(question_id),
                replies: Vec::new(),
                text,
                archived: false,
                archive_date: None,
            },
        );
        let Some(question) = self.questions.get_mut(&question_id) else {
            return Err(Fault::NullPointer);
        };
        question.answers.push(answer_id);
        question.answered = true;
        question.answered_on = Some(now);
        question.stamps.updated = Some(now);
        let kind = question.kind;
        let doctor = question
            .patient
            .and_then(|p| self.accounts.get(&p))
            .and_then(|p| p.doctor);
        // The handler's NPE (no patient or no doctor) is only logged.
        if let Some(doctor) = doctor {
            if kind == Some(QuestionType::Vitals) {
                if let Some(answer) = self.answers.get_mut(&answer_id) {
                    answer.archived = true;
                    answer.archive_date = Some(now);
                    answer.stamps.updated = Some(now);
                }
            } else {
                let data = self.answer_json(answer_id);
                self.notify(doctor, "answerCreated", &data);
            }
        }
        Ok(())
    }

    /// R11: invalidates the patient's VALID codes and mints a new one.
    pub(crate) fn mint_code(&mut self, patient: Id, now: i64, rng: &mut impl Rng) -> Id {
        let stale: Vec<Id> = self
            .valid_codes
            .values()
            .flatten()
            .copied()
            .filter(|id| self.codes.get(id).is_some_and(|c| c.belongs_to == patient))
            .collect();
        for id in stale {
            self.set_code_status(id, CodeStatus::Invalidated, now);
        }
        let id = self.alloc();
        let code = new_code(rng);
        self.valid_codes.entry(code.clone()).or_default().push(id);
        self.codes.insert(
            id,
            SecurityCode {
                id,
                stamps: Stamps::new(now),
                code,
                valid_until: now + self.code_ttl_ms,
                status: CodeStatus::Valid,
                belongs_to: patient,
                consumed_by: 0,
                consumed_on: None,
            },
        );
        id
    }

    fn set_code_status(&mut self, id: Id, status: CodeStatus, now: i64) {
        let Some(code) = self.codes.get_mut(&id) else {
            return;
        };
        if code.status == CodeStatus::Valid && status != CodeStatus::Valid {
            if let Some(ids) = self.valid_codes.get_mut(&code.code) {
                ids.retain(|other| *other != id);
                if ids.is_empty() {
                    self.valid_codes.remove(&code.code);
                }
            }
        }
        code.status = status;
        code.stamps.updated = Some(now);
    }

    /// The expiry task (`SecurityCodesExpiryService`, every 5 s): VALID codes
    /// with `validUntil < now` time out. With the TIME fidelity switch only
    /// the second of the day is compared, as Derby's `TIME` column does.
    pub(crate) fn expire_codes(&mut self, now: i64) {
        let by_time_of_day = self.fidelity.time_of_day_code_expiry;
        let expired: Vec<Id> = self
            .valid_codes
            .values()
            .flatten()
            .copied()
            .filter(|id| {
                self.codes.get(id).is_some_and(|c| {
                    if by_time_of_day {
                        clock::sql_time_of_day(c.valid_until) < clock::sql_time_of_day(now)
                    } else {
                        c.valid_until < now
                    }
                })
            })
            .collect();
        for id in expired {
            self.set_code_status(id, CodeStatus::Timeout, now);
        }
    }

    /// R19: consumes a VALID code (exact match) and links its patient to
    /// the doctor. The code is consumed in its own transaction, so a failing
    /// link (the patient already has a doctor: join-table unique constraint)
    /// still burns it.
    pub(crate) fn consume_code(&mut self, doctor: Id, code: &str, now: i64) -> Result<(), Fault> {
        let id = match self.valid_codes.get(code).map(Vec::as_slice) {
            None | Some([]) => return Ok(()),
            Some([id]) => *id,
            Some(many) => return Err(Fault::NonUnique(many.len())),
        };
        self.set_code_status(id, CodeStatus::Consumed, now);
        let Some(entry) = self.codes.get_mut(&id) else {
            return Ok(());
        };
        entry.consumed_by = doctor;
        entry.consumed_on = Some(now);
        let patient = entry.belongs_to;
        if patient > 0 {
            self.link(doctor, patient, now)?;
        }
        Ok(())
    }

    /// `DoctorServiceImpl.assignPatientToDoctor`. The join table has a unique
    /// constraint on the patient, so a patient who already has a doctor
    /// (this one included) fails at commit and nothing changes.
    fn link(&mut self, doctor: Id, patient: Id, now: i64) -> Result<(), Fault> {
        if self.account_mut(patient)?.doctor.is_some() {
            return Err(Fault::Commit);
        }
        self.account_mut(doctor)?.patients.push(patient);
        let p = self.account_mut(patient)?;
        p.doctor = Some(doctor);
        p.stamps.updated = Some(now);
        Ok(())
    }

    /// `Patient.byDoctorAndId`: the patient if its doctor is this doctor.
    pub(crate) fn linked_patient(&self, doctor: Id, patient: Id) -> Option<&Account> {
        self.accounts
            .get(&patient)
            .filter(|p| p.doctor == Some(doctor))
    }

    fn require_linked(&self, doctor: Id, patient: Id) -> Result<(), Fault> {
        self.linked_patient(doctor, patient)
            .map(|_| ())
            .ok_or(Fault::NullPointer)
    }

    /// Allocates ids for the replies a body carries (cascaded persists);
    /// a reply `id` naming an existing row makes the commit fail.
    fn insert_replies(&mut self, replies: Vec<ReplyInput>, now: i64) -> Result<Vec<Id>, Fault> {
        let mut ids = Vec::with_capacity(replies.len());
        let mut rows = Vec::with_capacity(replies.len());
        for reply in replies {
            if reply.id.is_some_and(|id| self.replies.contains_key(&id)) {
                return Err(Fault::Commit);
            }
            let id = self.alloc();
            ids.push(id);
            rows.push(Reply {
                id,
                stamps: Stamps::new(now),
                text: reply.reply,
            });
        }
        check_fits(rows.iter().map(|r| r.text.as_deref()))?;
        for row in rows {
            self.replies.insert(row.id, row);
        }
        Ok(ids)
    }

    /// R12: appends a symptom and notifies the doctor, if any.
    pub(crate) fn add_symptom(
        &mut self,
        patient: Id,
        input: SymptomInput,
        now: i64,
    ) -> Result<(), Fault> {
        if input.id.is_some_and(|id| self.symptoms.contains_key(&id)) {
            return Err(Fault::Commit);
        }
        let id = self.alloc();
        let replies = self.insert_replies(input.replies, now)?;
        check_fits([input.symptom_code.as_deref(), input.note.as_deref()])?;
        self.symptoms.insert(
            id,
            Symptom {
                id,
                stamps: Stamps::new(now),
                code: input.symptom_code,
                patient: Some(patient),
                replies,
                note: input.note,
                archived: input.archived,
                archive_date: input.archive_date,
            },
        );
        let account = self.account_mut(patient)?;
        account.symptoms.push(id);
        if let Some(doctor) = account.doctor {
            let data = self.symptom_json(id);
            self.notify(doctor, "symptomCreated", &data);
        }
        Ok(())
    }

    /// R13: appends a vitals measurement and notifies the doctor, if any.
    pub(crate) fn add_vitals(
        &mut self,
        patient: Id,
        input: VitalsInput,
        now: i64,
    ) -> Result<(), Fault> {
        if input.id.is_some_and(|id| self.vitals.contains_key(&id)) {
            return Err(Fault::Commit);
        }
        let id = self.alloc();
        let row = Vitals {
            id,
            stamps: Stamps::new(now),
            patient: Some(patient),
            heart_beats_per_minute: derby_double(input.heart_beats_per_minute)?,
            systolic_pressure: derby_double(input.systolic_pressure)?,
            diastolic_pressure: derby_double(input.diastolic_pressure)?,
            blood_oxygenation: derby_double(input.blood_oxygenation)?,
            breathing_rate: derby_double(input.breathing_rate)?,
        };
        self.vitals.insert(id, row);
        let account = self.account_mut(patient)?;
        account.vitals.push(id);
        if let Some(doctor) = account.doctor {
            let data = self.vitals_json(id);
            self.notify(doctor, "vitalsMeasurmentCreated", &data);
        }
        Ok(())
    }

    fn new_question(
        &self,
        id: Id,
        input: QuestionInput,
        stamps: Stamps,
        patient: Option<Id>,
    ) -> Question {
        Question {
            id,
            stamps,
            text: input.question,
            answers: Vec::new(),
            patient,
            kind: input.kind,
            answered: input.answered,
            answered_on: input.answered_on,
            recurrance: input.recurrance,
            start_date: input.start_date.map(clock::sql_date),
            end_date: input.end_date.map(clock::sql_date),
            recurring: input.recurring,
        }
    }

    /// R28: appends a question for a linked patient and notifies the patient.
    pub(crate) fn ask_question(
        &mut self,
        doctor: Id,
        patient: Id,
        input: QuestionInput,
        now: i64,
    ) -> Result<(), Fault> {
        self.require_linked(doctor, patient)?;
        if input.id.is_some_and(|id| self.questions.contains_key(&id)) {
            return Err(Fault::Commit);
        }
        let id = self.alloc();
        check_fits([input.question.as_deref()])?;
        let question = self.new_question(id, input, Stamps::new(now), Some(patient));
        self.questions.insert(id, question);
        self.account_mut(patient)?.questions.push(id);
        let data = self.question_json(id);
        self.notify(patient, "questionCreated", &data);
        Ok(())
    }

    /// `Patient.findQuestion`: `==` on boxed `Long`s, which only holds for
    /// the cached values -128..=127 (when that fidelity switch is on).
    pub(crate) fn find_question(&self, patient: &Account, question_id: Id) -> Option<Id> {
        if self.fidelity.boxed_long_identity && !(-128..=127).contains(&question_id) {
            return None;
        }
        patient
            .questions
            .iter()
            .copied()
            .find(|q| *q == question_id)
    }

    /// R30: `Patient.updateQuestion` then merge.
    pub(crate) fn update_question(
        &mut self,
        doctor: Id,
        patient: Id,
        question_id: Id,
        input: QuestionInput,
        now: i64,
    ) -> Result<(), Fault> {
        let account = self
            .linked_patient(doctor, patient)
            .ok_or(Fault::NullPointer)?;
        match self.find_question(account, question_id) {
            Some(found) => {
                check_fits([input.question.as_deref()])?;
                let detach = self.fidelity.question_update_detaches;
                let Some(old) = self.questions.get(&found) else {
                    return Err(Fault::NullPointer);
                };
                let (answers, owner) = if detach {
                    (Vec::new(), None)
                } else {
                    (old.answers.clone(), old.patient)
                };
                let stamps = Stamps {
                    created: input.creation_date,
                    updated: Some(now),
                };
                let mut replaced = self.new_question(found, input, stamps, owner);
                replaced.answers = answers;
                self.questions.insert(found, replaced);
                let account = self.account_mut(patient)?;
                account.questions.retain(|q| *q != found);
                account.questions.push(found);
                Ok(())
            }
            // The merged question would sit in two join-table rows.
            None if self.questions.contains_key(&question_id) => Err(Fault::Commit),
            None => {
                // Merging a detached entity whose id has no row inserts it
                // under a fresh id; `patient` is JSON-ignored, so it stays null.
                let id = self.alloc();
                check_fits([input.question.as_deref()])?;
                let question = self.new_question(id, input, Stamps::new(now), None);
                self.questions.insert(id, question);
                self.account_mut(patient)?.questions.push(id);
                Ok(())
            }
        }
    }

    /// R24: archives one of the patient's symptoms (unknown id: no-op).
    pub(crate) fn archive_symptom(
        &mut self,
        doctor: Id,
        patient: Id,
        symptom_id: Id,
        now: i64,
    ) -> Result<(), Fault> {
        let account = self
            .linked_patient(doctor, patient)
            .ok_or(Fault::NullPointer)?;
        if account.symptoms.contains(&symptom_id) {
            if let Some(symptom) = self.symptoms.get_mut(&symptom_id) {
                symptom.archived = true;
                symptom.archive_date = Some(now);
                symptom.stamps.updated = Some(now);
            }
        }
        Ok(())
    }

    /// R26: archives an answer to one of the patient's questions.
    pub(crate) fn archive_answer(
        &mut self,
        doctor: Id,
        patient: Id,
        answer_id: Id,
        now: i64,
    ) -> Result<(), Fault> {
        let account = self
            .linked_patient(doctor, patient)
            .ok_or(Fault::NullPointer)?;
        let reachable = account.questions.iter().any(|q| {
            self.questions
                .get(q)
                .is_some_and(|q| q.answers.contains(&answer_id))
        });
        if reachable {
            if let Some(answer) = self.answers.get_mut(&answer_id) {
                answer.archived = true;
                answer.archive_date = Some(now);
                answer.stamps.updated = Some(now);
            }
        }
        Ok(())
    }

    /// `Patient.getUnarchivedAnswers`: answers reachable through the
    /// patient's questions, in question order.
    pub(crate) fn unarchived_answers<'s>(
        &'s self,
        patient: &'s Account,
    ) -> impl Iterator<Item = &'s Answer> + 's {
        patient
            .questions
            .iter()
            .filter_map(|q| self.questions.get(q))
            .flat_map(|q| q.answers.iter())
            .filter_map(|a| self.answers.get(a))
            .filter(|a| !a.archived)
    }

    /// `Patient.getUnarchivedSymptoms`.
    pub(crate) fn unarchived_symptoms<'s>(
        &'s self,
        patient: &'s Account,
    ) -> impl Iterator<Item = &'s Symptom> + 's {
        patient
            .symptoms
            .iter()
            .filter_map(|s| self.symptoms.get(s))
            .filter(|s| !s.archived)
    }

    /// The doctor's patients in join-table order.
    pub(crate) fn doctor_patients(&self, doctor: Id) -> impl Iterator<Item = &Account> {
        self.accounts
            .get(&doctor)
            .map(|d| d.patients.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|p| self.accounts.get(p))
    }

    fn notify(&mut self, user: Id, name: &str, data: &str) {
        let mut n = String::with_capacity(data.len() + name.len() + 20);
        n.push_str("{\"name\":");
        super::jackson::write_str(&mut n, name);
        n.push_str(",\"data\":");
        n.push_str(data);
        n.push('}');
        self.notifications.entry(user).or_default().push(n);
    }

    /// R3: returns and deletes the user's notifications.
    pub(crate) fn drain_notifications(&mut self, user: Id) -> Vec<Notification> {
        self.notifications.remove(&user).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const NOW: i64 = 1_611_000_000_000;

    fn store() -> Store {
        Store::new(Fidelity::default(), 1, 300_000, "pw", NOW)
    }

    fn user(name: &str) -> UserInput {
        UserInput {
            username: Some(name.to_owned()),
            password: Some("pw".to_owned()),
            ..UserInput::default()
        }
    }

    fn id_of(store: &Store, name: &str) -> Id {
        store.by_username[name][0]
    }

    #[test]
    fn ids_come_from_one_sequence() {
        let mut s = store();
        assert_eq!(id_of(&s, "admin"), 1);
        s.create_doctor(user("dr"), NOW).unwrap();
        assert_eq!(id_of(&s, "dr"), 2);
        assert_eq!(s.sign_up(user("p"), NOW), Ok(Signup::Created));
        // patient 3, profile 4, Envers revision 5
        assert_eq!(id_of(&s, "p"), 3);
        assert_eq!(s.accounts[&3].profile, Some(4));
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert_eq!(s.mint_code(3, NOW, &mut rng), 6);
    }

    #[test]
    fn codes_are_lowercase_alphanumerics() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let code = new_code(&mut rng);
            assert_eq!(code.len(), 8);
            assert!(code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        }
        let pw = new_admin_password(&mut rng);
        assert_eq!(pw.len(), 16);
        assert!(pw.bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn one_valid_code_per_patient_and_time_of_day_expiry() {
        let mut s = store();
        s.sign_up(user("p"), NOW).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let first = s.mint_code(2, NOW, &mut rng);
        let second = s.mint_code(2, NOW, &mut rng);
        assert_eq!(s.codes[&first].status, CodeStatus::Invalidated);
        assert_eq!(s.codes[&second].status, CodeStatus::Valid);
        s.expire_codes(NOW + 300_000);
        assert_eq!(s.codes[&second].status, CodeStatus::Valid);
        s.expire_codes(NOW + 301_000);
        assert_eq!(s.codes[&second].status, CodeStatus::Timeout);

        // Minted at 23:58 UTC, valid until 00:03: expired at the next sweep.
        let late = clock::sql_date(NOW) + clock::DAY_MS - 120_000;
        let code = s.mint_code(2, late, &mut rng);
        s.expire_codes(late + 5_000);
        assert_eq!(s.codes[&code].status, CodeStatus::Timeout);
    }

    #[test]
    fn relinking_burns_the_code_and_fails() {
        let mut s = store();
        s.create_doctor(user("d1"), NOW).unwrap();
        s.create_doctor(user("d2"), NOW).unwrap();
        s.sign_up(user("p"), NOW).unwrap();
        let (d1, d2, p) = (id_of(&s, "d1"), id_of(&s, "d2"), id_of(&s, "p"));
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let c = s.mint_code(p, NOW, &mut rng);
        let text = s.codes[&c].code.clone();
        assert_eq!(s.consume_code(d1, "WRONG", NOW), Ok(()));
        assert_eq!(s.consume_code(d1, &text, NOW), Ok(()));
        assert_eq!(s.accounts[&p].doctor, Some(d1));
        assert_eq!(
            s.consume_code(d1, &text, NOW),
            Ok(()),
            "consumed codes do nothing"
        );
        let c2 = s.mint_code(p, NOW, &mut rng);
        let text2 = s.codes[&c2].code.clone();
        assert_eq!(s.consume_code(d2, &text2, NOW), Err(Fault::Commit));
        assert_eq!(s.codes[&c2].status, CodeStatus::Consumed);
        assert_eq!(s.accounts[&p].doctor, Some(d1));
        assert!(s.accounts[&d2].patients.is_empty());
    }

    #[test]
    fn duplicate_usernames_break_lookups() {
        let mut s = store();
        s.create_doctor(user("twin"), NOW).unwrap();
        s.create_doctor(user("twin"), NOW).unwrap();
        assert_eq!(
            s.sign_in(Some("twin"), Some("pw")).map(|a| a.is_some()),
            Err(Fault::NonUnique(2))
        );
        assert_eq!(s.sign_up(user("twin"), NOW), Err(Fault::NonUnique(2)));
        assert_eq!(s.sign_up(user("admin"), NOW), Ok(Signup::Taken));
    }

    #[test]
    fn long_strings_fail_at_commit_but_use_ids() {
        let mut s = store();
        let long = "x".repeat(256);
        assert_eq!(s.sign_up(user(&long), NOW), Err(Fault::Commit));
        assert!(!s.by_username.contains_key(&long));
        assert_eq!(s.next_id, 4, "patient and profile ids are spent");
        assert_eq!(s.sign_up(user(&"é".repeat(255)), NOW), Ok(Signup::Created));
    }
}
