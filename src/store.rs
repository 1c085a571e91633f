//! Store (placeholder until the store work lands).
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

pub trait Store: Send + Sync {
    fn ping(&self) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>>;
}

struct Nothing;
impl Store for Nothing {
    fn ping(&self) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>> {
        Box::pin(async { Ok(()) })
    }
}

pub async fn open(_cfg: &crate::config::Store) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(Nothing))
}

pub async fn migrate(_cfg: &crate::config::Store) -> Result<String, StoreError> {
    Err(StoreError("not built yet".into()))
}
