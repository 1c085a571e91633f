//! Where a peer's federation listener is: its addresses (A/AAAA through
//! the same resolvers as its keys) and its port (the index's `fp=`).

use std::net::SocketAddr;

use super::{DnsError, KeyResolver};

impl KeyResolver {
    /// The socket addresses of `fqdn`'s federation listener.
    pub async fn locate(&self, fqdn: &str) -> Result<Vec<SocketAddr>, DnsError> {
        let keys = self.peer_keys(fqdn).await?;
        let port = keys.index.federation_port;
        let found = self.lookup_ip(fqdn).await?;
        if found.addrs.is_empty() {
            return Err(DnsError::NoRecord {
                name: format!("{}.", found.fqdn),
                what: "no A or AAAA record",
            });
        }
        Ok(found
            .addrs
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }
}
