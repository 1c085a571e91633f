//! What the pages need from the access flow, as a trait: [`Access`] in
//! production, a fake in the unit tests (which then exercise routing,
//! sessions and CSRF without an access.md or a store).

use std::time::Duration;

use uuid::Uuid;

use crate::federation::access::{
    Access, AccessError, DoctorRequest, NewInvitation, PatientOverview,
};
use crate::policy::{Role, RouteId};
use crate::store;
use crate::upstream::{NewQuestion, Secret, SignInError, SignedInUser};

/// The access flow as the pages call it; the methods are
/// [`Access`]'s, one for one.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    async fn sign_in(&self, username: &str, password: Secret) -> Result<SignedInUser, SignInError>;
    async fn patient_overview(&self, user: &SignedInUser) -> Result<PatientOverview, AccessError>;
    async fn new_invitation(&self, user: &SignedInUser) -> Result<NewInvitation, AccessError>;
    async fn approve(
        &self,
        user: &SignedInUser,
        request: Uuid,
        code: &str,
        role: Option<Role>,
        duration: Option<Duration>,
    ) -> Result<store::Grant, AccessError>;
    async fn deny(&self, user: &SignedInUser, request: Uuid) -> Result<(), AccessError>;
    async fn revoke(&self, user: &SignedInUser, grant: Uuid) -> Result<(), AccessError>;
    async fn start_request(
        &self,
        user: &SignedInUser,
        payload: &str,
        role: Role,
        duration: Duration,
    ) -> Result<DoctorRequest, AccessError>;
    async fn doctor_requests(&self, user: &SignedInUser)
        -> Result<Vec<DoctorRequest>, AccessError>;
    async fn doctor_request(
        &self,
        user: &SignedInUser,
        id: Uuid,
    ) -> Result<DoctorRequest, AccessError>;
    async fn remote_read(
        &self,
        user: &SignedInUser,
        request: Uuid,
        route: RouteId,
    ) -> Result<serde_json::Value, AccessError>;
    async fn remote_ask(
        &self,
        user: &SignedInUser,
        request: Uuid,
        question: &NewQuestion,
    ) -> Result<(), AccessError>;
    async fn webfinger(&self, resource: &str) -> Result<Option<serde_json::Value>, AccessError>;
}

#[async_trait::async_trait]
impl Backend for Access {
    async fn sign_in(&self, username: &str, password: Secret) -> Result<SignedInUser, SignInError> {
        Access::sign_in(self, username, password).await
    }

    async fn patient_overview(&self, user: &SignedInUser) -> Result<PatientOverview, AccessError> {
        Access::patient_overview(self, user).await
    }

    async fn new_invitation(&self, user: &SignedInUser) -> Result<NewInvitation, AccessError> {
        Access::new_invitation(self, user).await
    }

    async fn approve(
        &self,
        user: &SignedInUser,
        request: Uuid,
        code: &str,
        role: Option<Role>,
        duration: Option<Duration>,
    ) -> Result<store::Grant, AccessError> {
        Access::approve(self, user, request, code, role, duration).await
    }

    async fn deny(&self, user: &SignedInUser, request: Uuid) -> Result<(), AccessError> {
        Access::deny(self, user, request).await
    }

    async fn revoke(&self, user: &SignedInUser, grant: Uuid) -> Result<(), AccessError> {
        Access::revoke(self, user, grant).await
    }

    async fn start_request(
        &self,
        user: &SignedInUser,
        payload: &str,
        role: Role,
        duration: Duration,
    ) -> Result<DoctorRequest, AccessError> {
        Access::start_request(self, user, payload, role, duration).await
    }

    async fn doctor_requests(
        &self,
        user: &SignedInUser,
    ) -> Result<Vec<DoctorRequest>, AccessError> {
        Access::doctor_requests(self, user).await
    }

    async fn doctor_request(
        &self,
        user: &SignedInUser,
        id: Uuid,
    ) -> Result<DoctorRequest, AccessError> {
        Access::doctor_request(self, user, id).await
    }

    async fn remote_read(
        &self,
        user: &SignedInUser,
        request: Uuid,
        route: RouteId,
    ) -> Result<serde_json::Value, AccessError> {
        Access::remote_read(self, user, request, route).await
    }

    async fn remote_ask(
        &self,
        user: &SignedInUser,
        request: Uuid,
        question: &NewQuestion,
    ) -> Result<(), AccessError> {
        Access::remote_ask(self, user, request, question).await
    }

    async fn webfinger(&self, resource: &str) -> Result<Option<serde_json::Value>, AccessError> {
        Access::webfinger(self, resource).await
    }
}
