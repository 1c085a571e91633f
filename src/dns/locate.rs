//! Where a peer's federation listener is: its addresses (A/AAAA through
//! the same resolvers as its keys) and its port (the index's `fp=`).

use std::net::{IpAddr, SocketAddr};

use super::client::{QueryFailure, QueryOutcome};
use super::{DnsError, KeyResolver};

impl KeyResolver {
    /// The socket addresses of `fqdn`'s federation listener.
    pub async fn locate(&self, fqdn: &str) -> Result<Vec<SocketAddr>, DnsError> {
        let keys = self.peer_keys(fqdn).await?;
        let port = keys.index.federation_port;
        let ips = self.lookup_ip(fqdn).await?;
        Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }

    /// The addresses of `fqdn` (A, else AAAA). Not cached here: the
    /// connection pool keeps connections, so lookups are rare.
    pub async fn lookup_ip(&self, fqdn: &str) -> Result<Vec<IpAddr>, DnsError> {
        let name = format!("{}.", fqdn.trim_end_matches('.'));
        match self.client().ips(&name).await {
            QueryOutcome::Answer { records, .. } => Ok(records),
            QueryOutcome::NxDomain { .. } => Err(DnsError::NoRecord {
                name,
                what: "no such name (NXDOMAIN)",
            }),
            QueryOutcome::NoData { .. } => Err(DnsError::NoRecord {
                name,
                what: "no A or AAAA record",
            }),
            QueryOutcome::Failed(QueryFailure::Bogus) => Err(DnsError::Bogus { name }),
            QueryOutcome::Failed(QueryFailure::ServFail) => Err(DnsError::ServFail { name }),
            QueryOutcome::Failed(QueryFailure::Timeout) => Err(DnsError::Timeout { name }),
            QueryOutcome::Failed(QueryFailure::Other(detail)) => {
                Err(DnsError::Other { name, detail })
            }
        }
    }
}
