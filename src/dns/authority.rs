//! The resolver as the federation listener's key authority: a peer's TLS
//! key is admitted when its own DNS publishes it.

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::KeyResolver;
use crate::tls::KeyAuthority;

impl KeyAuthority for KeyResolver {
    fn check_tls_key<'a>(
        &'a self,
        fqdn: &'a str,
        spki_sha256: &'a [u8; 32],
    ) -> BoxFuture<'a, Result<(), &'static str>> {
        async move {
            KeyResolver::check_tls_key(self, fqdn, spki_sha256)
                .await
                .map(|_| ())
                .map_err(|refusal| refusal.as_str())
        }
        .boxed()
    }
}

impl std::fmt::Debug for KeyResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyResolver").finish_non_exhaustive()
    }
}
