//! The JSON views of the entities, in Jackson's property order (inherited
//! `id, creationDate, updateDate` first, then Java field order, with
//! `@JsonIgnore`d fields left out). Notification data uses the same views,
//! since Nitrite's field-based mapper sees the same properties.

use super::jackson::{write_array, write_str, Obj};
use super::model::{Account, Answer, Fault, Id, Store};

fn entity<'a>(out: &'a mut String, id: Id, created: Option<i64>, updated: Option<i64>) -> Obj<'a> {
    let mut o = Obj::open(out);
    o.num("id", id)
        .opt_num("creationDate", created)
        .opt_num("updateDate", updated);
    o
}

impl Store {
    fn write_user_fields(o: &mut Obj<'_>, a: &Account) {
        o.str("username", a.username.as_deref())
            .str("userRole", Some(a.role.as_str()))
            .str("telephoneNumber", a.telephone.as_deref())
            .str("firstName", a.first_name.as_deref())
            .str("lastName", a.last_name.as_deref());
    }

    /// `User` (login response) and `Doctor` (R4): the same properties.
    pub(crate) fn write_user(out: &mut String, a: &Account) {
        let mut o = entity(out, a.id, a.stamps.created, a.stamps.updated);
        Self::write_user_fields(&mut o, a);
        o.close();
    }

    /// `Patient`, with its profile.
    pub(crate) fn write_patient(&self, out: &mut String, a: &Account) {
        let mut o = entity(out, a.id, a.stamps.created, a.stamps.updated);
        Self::write_user_fields(&mut o, a);
        o.with("profile", |out| self.write_profile(out, a.profile));
        o.close();
    }

    /// A patient by id, or `null`.
    fn write_patient_ref(&self, out: &mut String, id: Option<Id>) {
        match id.and_then(|id| self.accounts.get(&id)) {
            Some(a) => self.write_patient(out, a),
            None => out.push_str("null"),
        }
    }

    /// `MedicalProfile`, or `null`.
    pub(crate) fn write_profile(&self, out: &mut String, id: Option<Id>) {
        let Some(p) = id.and_then(|id| self.profiles.get(&id)) else {
            out.push_str("null");
            return;
        };
        let mut o = entity(out, p.id, p.stamps.created, p.stamps.updated);
        o.num("age", i64::from(p.age))
            .double("height", p.height)
            .double("weight", p.weight)
            .str("sex", p.sex.map(|s| s.name()))
            .bool("g6pdDeficiency", p.g6pd_deficiency)
            .bool("respiratoryDiseases", p.respiratory_diseases)
            .bool("diabetes", p.diabetes)
            .bool("cardiovascularDiseases", p.cardiovascular_diseases)
            .bool("obesity", p.obesity)
            .with("medications", |out| {
                write_array(out, &p.medications, |out, m| write_str(out, m))
            });
        o.close();
    }

    /// `Question`, or `null`.
    pub(crate) fn write_question(&self, out: &mut String, id: Option<Id>) {
        let Some(q) = id.and_then(|id| self.questions.get(&id)) else {
            out.push_str("null");
            return;
        };
        let mut o = entity(out, q.id, q.stamps.created, q.stamps.updated);
        o.str("question", q.text.as_deref())
            .str("type", q.kind.map(|k| k.name()))
            .bool("answered", q.answered)
            .opt_num("answeredOn", q.answered_on)
            .with("recurrance", |out| {
                write_array(out, &q.recurrance, |out, (hour, minute)| {
                    let mut t = Obj::open(out);
                    t.num("hourOfDay", *hour).num("minuteOfHour", *minute);
                    t.close();
                })
            })
            .opt_num("startDate", q.start_date)
            .opt_num("endDate", q.end_date)
            .bool("recurring", q.recurring);
        o.close();
    }

    fn write_replies(&self, out: &mut String, ids: &[Id]) {
        write_array(
            out,
            ids.iter().filter_map(|id| self.replies.get(id)),
            |out, r| {
                let mut o = entity(out, r.id, r.stamps.created, r.stamps.updated);
                o.str("reply", r.text.as_deref());
                o.close();
            },
        );
    }

    /// `Answer`, with its question.
    pub(crate) fn write_answer(&self, out: &mut String, a: &Answer) {
        let mut o = entity(out, a.id, a.stamps.created, a.stamps.updated);
        o.with("question", |out| self.write_question(out, a.question))
            .with("replies", |out| self.write_replies(out, &a.replies))
            .str("answer", a.text.as_deref())
            .bool("archived", a.archived)
            .opt_num("archiveDate", a.archive_date);
        o.close();
    }

    /// `Symptom`, with `patient_json` (the rendered patient) inlined.
    pub(crate) fn write_symptom(&self, out: &mut String, id: Id, patient_json: Option<&str>) {
        let Some(s) = self.symptoms.get(&id) else {
            out.push_str("null");
            return;
        };
        let mut o = entity(out, s.id, s.stamps.created, s.stamps.updated);
        o.str("symptomCode", s.code.as_deref());
        match patient_json {
            Some(json) => o.raw("patient", json),
            None => o.with("patient", |out| self.write_patient_ref(out, s.patient)),
        };
        o.with("replies", |out| self.write_replies(out, &s.replies))
            .str("note", s.note.as_deref())
            .bool("archived", s.archived)
            .opt_num("archiveDate", s.archive_date);
        o.close();
    }

    /// `VitalsMeasurment`, with `patient_json` inlined.
    pub(crate) fn write_vitals(&self, out: &mut String, id: Id, patient_json: Option<&str>) {
        let Some(v) = self.vitals.get(&id) else {
            out.push_str("null");
            return;
        };
        let mut o = entity(out, v.id, v.stamps.created, v.stamps.updated);
        match patient_json {
            Some(json) => o.raw("patient", json),
            None => o.with("patient", |out| self.write_patient_ref(out, v.patient)),
        };
        o.double("heartBeatsPerMinute", v.heart_beats_per_minute)
            .double("systolicPressure", v.systolic_pressure)
            .double("diastolicPressure", v.diastolic_pressure)
            .double("bloodOxygenation", v.blood_oxygenation)
            .double("breathingRate", v.breathing_rate);
        o.close();
    }

    /// The `answerCreated` notification data.
    pub(crate) fn answer_json(&self, id: Id) -> String {
        let mut out = String::new();
        match self.answers.get(&id) {
            Some(a) => self.write_answer(&mut out, a),
            None => out.push_str("null"),
        }
        out
    }

    /// The `symptomCreated` notification data.
    pub(crate) fn symptom_json(&self, id: Id) -> String {
        let mut out = String::new();
        self.write_symptom(&mut out, id, None);
        out
    }

    /// The `vitalsMeasurmentCreated` notification data.
    pub(crate) fn vitals_json(&self, id: Id) -> String {
        let mut out = String::new();
        self.write_vitals(&mut out, id, None);
        out
    }

    /// The `questionCreated` notification data.
    pub(crate) fn question_json(&self, id: Id) -> String {
        let mut out = String::new();
        self.write_question(&mut out, Some(id));
        out
    }

    /// R11's `SecurityCode`: only `code` and `validUntil` are visible.
    pub(crate) fn code_json(&self, id: Id) -> String {
        let mut out = String::new();
        match self.codes.get(&id) {
            Some(c) => {
                let mut o = entity(&mut out, c.id, c.stamps.created, c.stamps.updated);
                o.str("code", Some(&c.code))
                    .num("validUntil", c.valid_until);
                o.close();
            }
            None => out.push_str("null"),
        }
        out
    }

    /// R14: `PatientUpdateVo`s, first unarchived answers then unarchived
    /// symptoms. An answer whose question lost its patient (after R30) makes
    /// the Java code throw a `NullPointerException`.
    pub(crate) fn feed_json(&self, doctor: Id) -> Result<String, Fault> {
        let mut out = String::from("[");
        let item = |out: &mut String,
                    patient: &Account,
                    entity_id: Id,
                    kind: &str,
                    time: Option<i64>,
                    value: Option<&str>| {
            if out.len() > 1 {
                out.push(',');
            }
            let name = format!(
                "{} {}",
                patient.first_name.as_deref().unwrap_or("null"),
                patient.last_name.as_deref().unwrap_or("null")
            );
            let mut o = Obj::open(out);
            o.num("patientId", patient.id)
                .num("entityId", entity_id)
                .str("patientName", Some(&name))
                .str("type", Some(kind))
                .opt_num("time", time)
                .str("value", value);
            o.close();
        };
        for patient in self.doctor_patients(doctor) {
            for answer in self.unarchived_answers(patient) {
                let question = answer
                    .question
                    .and_then(|q| self.questions.get(&q))
                    .ok_or(Fault::NullPointer)?;
                let owner = question
                    .patient
                    .and_then(|p| self.accounts.get(&p))
                    .ok_or(Fault::NullPointer)?;
                item(
                    &mut out,
                    owner,
                    answer.id,
                    "UNSEEN_ANSWER",
                    answer.stamps.created,
                    question.text.as_deref(),
                );
            }
        }
        for patient in self.doctor_patients(doctor) {
            for symptom in self.unarchived_symptoms(patient) {
                let owner = symptom
                    .patient
                    .and_then(|p| self.accounts.get(&p))
                    .ok_or(Fault::NullPointer)?;
                item(
                    &mut out,
                    owner,
                    symptom.id,
                    "UNSEEN_SYMPTOM",
                    symptom.stamps.created,
                    symptom.code.as_deref(),
                );
            }
        }
        out.push(']');
        Ok(out)
    }
}

/// `{"count":n}`.
pub(crate) fn count_json(n: usize) -> String {
    format!("{{\"count\":{n}}}")
}

/// A rendered list of notifications.
pub(crate) fn notifications_json(items: &[String]) -> String {
    let mut out = String::with_capacity(items.iter().map(|i| i.len() + 1).sum::<usize>() + 2);
    write_array(&mut out, items, |out, n| out.push_str(n));
    out
}
