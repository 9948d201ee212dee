//! The endpoints of a target (issue 17, item 3): a client may reach a
//! service at any SRV target, at any of its A/AAAA addresses, and an
//! interceptor may sit in front of one of them only. So a target naming a
//! service (`srv`) or a host name (`addresses = "all"`) is checked at each
//! address on its own.
//!
//! The order and the limits are pure ([`order_srv`], [`expand`]); the
//! lookups ([`resolve`]) are thin.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::proto::rr::RData;

use crate::config::{Addresses, TlsTarget};
use crate::detect::tls::ProbeError;

use super::dns::TokioResolver;

/// Endpoints checked per target at most (the rest are named in the log).
pub const MAX_ENDPOINTS: usize = 64;
/// SRV records followed per service at most.
pub const MAX_SRV: usize = 16;

/// One address a client may connect to for the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The host name it came from (the SRV target or the configured host).
    pub host: String,
    pub addr: SocketAddr,
}

/// One SRV record, as the resolver returned it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// Without the trailing dot; "" is RFC 2782's "." (no service).
    pub target: String,
}

/// The SRV records in the order a client would try them (priority, then
/// the heavier first; every one is checked, so no random draw), duplicates
/// dropped, at most [`MAX_SRV`]. A lone "." record means the service is
/// decidedly not offered (RFC 2782): an error.
pub fn order_srv(mut records: Vec<SrvRecord>, name: &str) -> Result<Vec<SrvRecord>, String> {
    if records.len() == 1 && records[0].target.is_empty() {
        return Err(format!(
            "{name}: the service is decidedly not available (SRV target \".\")"
        ));
    }
    records.retain(|r| !r.target.is_empty());
    records.sort_by(|a, b| {
        (a.priority, std::cmp::Reverse(a.weight), &a.target, a.port).cmp(&(
            b.priority,
            std::cmp::Reverse(b.weight),
            &b.target,
            b.port,
        ))
    });
    records.dedup_by(|a, b| a.target.eq_ignore_ascii_case(&b.target) && a.port == b.port);
    records.truncate(MAX_SRV);
    if records.is_empty() {
        return Err(format!("{name} has no SRV record"));
    }
    Ok(records)
}

/// Every address of every host, in order: hosts as given, and within a
/// host IPv6 before IPv4 (in the resolver's order otherwise). An address
/// reached twice (two SRV targets on one machine) is checked once; at most
/// [`MAX_ENDPOINTS`], the second value counts those left out.
pub fn expand(hosts: Vec<(String, u16, Vec<IpAddr>)>) -> (Vec<Endpoint>, usize) {
    let mut out: Vec<Endpoint> = Vec::new();
    let mut left_out = 0;
    for (host, port, mut ips) in hosts {
        ips.sort_by_key(|ip| ip.is_ipv4());
        for ip in ips {
            let addr = SocketAddr::new(ip, port);
            if out.iter().any(|e| e.addr == addr) {
                continue;
            }
            if out.len() >= MAX_ENDPOINTS {
                left_out += 1;
                continue;
            }
            out.push(Endpoint {
                host: host.clone(),
                addr,
            });
        }
    }
    (out, left_out)
}

/// The DNS the endpoints are found with: hickory for SRV records (the
/// configured name servers, or /etc/resolv.conf), and for host names only
/// when name servers are configured — otherwise host names go through
/// getaddrinfo like every other program's (with /etc/hosts).
#[derive(Clone, Default)]
pub struct Dns {
    /// `None` when no resolver could be made (SRV lookups then fail).
    pub resolver: Option<std::sync::Arc<TokioResolver>>,
    /// `[tls] nameservers` is set: host names are asked there too.
    pub configured: bool,
}

/// How the endpoints of a target are found: `None` when it is checked as
/// one (an address literal, `addresses = "first"`, or a host name behind a
/// SOCKS5 proxy, which resolves it itself so that no query leaves here).
pub async fn resolve(target: &TlsTarget, dns: &Dns) -> Result<Option<Vec<Endpoint>>, ProbeError> {
    let for_hosts = dns.resolver.as_deref().filter(|_| dns.configured);
    let hosts = match (&target.srv, &target.address) {
        (Some(srv), _) => {
            let Some(resolver) = dns.resolver.as_deref() else {
                return Err(ProbeError::Resolve {
                    host: srv.clone(),
                    reason: "no resolver".into(),
                });
            };
            let records = srv_records(resolver, srv).await?;
            let mut hosts = Vec::new();
            for r in records {
                let ips = addresses_of(&r.target, r.port, Some(resolver), true).await?;
                hosts.push((r.target, r.port, ips));
            }
            hosts
        }
        (None, Some(a)) => {
            let literal = a.host.parse::<IpAddr>().is_ok();
            if literal || target.addresses == Addresses::First || target.via.is_some() {
                return Ok(None);
            }
            let ips = addresses_of(&a.host, a.port, for_hosts, false).await?;
            vec![(a.host.clone(), a.port, ips)]
        }
        (None, None) => return Ok(None),
    };
    let (endpoints, left_out) = expand(hosts);
    if left_out > 0 {
        tracing::warn!(
            target = %target.name,
            "{} has more than {MAX_ENDPOINTS} addresses: {left_out} are not checked",
            target.service()
        );
    }
    if endpoints.is_empty() {
        return Err(ProbeError::NoAddress(target.service()));
    }
    Ok(Some(endpoints))
}

async fn srv_records(resolver: &TokioResolver, srv: &str) -> Result<Vec<SrvRecord>, ProbeError> {
    let fqdn = format!("{}.", srv.trim_end_matches('.'));
    let err = |reason: String| ProbeError::Resolve {
        host: srv.to_string(),
        reason,
    };
    let lookup = resolver
        .lookup(fqdn.as_str(), hickory_resolver::proto::rr::RecordType::SRV)
        .await
        .map_err(|e| err(e.to_string()))?;
    let records = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(SrvRecord {
                priority: s.priority,
                weight: s.weight,
                port: s.port,
                target: s.target.to_ascii().trim_end_matches('.').to_string(),
            }),
            _ => None,
        })
        .collect();
    order_srv(records, srv).map_err(err)
}

/// The A and AAAA of `host`: from the configured name servers, or the
/// system's resolver. A host of an SRV record without address is an
/// empty list (the others are still checked) unless nothing resolves.
async fn addresses_of(
    host: &str,
    port: u16,
    resolver: Option<&TokioResolver>,
    lenient: bool,
) -> Result<Vec<IpAddr>, ProbeError> {
    let err = |reason: String| ProbeError::Resolve {
        host: host.to_string(),
        reason,
    };
    let found: Result<Vec<IpAddr>, ProbeError> = match resolver {
        Some(r) => {
            let fqdn = format!("{}.", host.trim_end_matches('.'));
            r.lookup_ip(fqdn.as_str())
                .await
                .map(|l| l.iter().collect())
                .map_err(|e| err(e.to_string()))
        }
        None => tokio::net::lookup_host((host, port))
            .await
            .map(|a| a.map(|s| s.ip()).collect())
            .map_err(|e| err(e.to_string())),
    };
    match found {
        Err(e) if lenient => {
            tracing::debug!("{e}");
            Ok(Vec::new())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port,
            target: target.into(),
        }
    }

    #[test]
    fn srv_records_in_client_order_without_duplicates() {
        let ordered = order_srv(
            vec![
                srv(20, 0, 5222, "backup.example.org"),
                srv(10, 10, 5222, "light.example.org"),
                srv(10, 60, 5222, "heavy.example.org"),
                srv(10, 60, 5222, "HEAVY.example.org"),
            ],
            "_xmpp-client._tcp.example.org",
        )
        .unwrap();
        let names: Vec<&str> = ordered.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(
            names,
            [
                "HEAVY.example.org",
                "light.example.org",
                "backup.example.org"
            ]
        );
    }

    #[test]
    fn a_dot_target_means_no_service_and_records_are_capped() {
        let e = order_srv(vec![srv(0, 0, 0, "")], "_imaps._tcp.example.org").unwrap_err();
        assert!(e.contains("decidedly not available"), "{e}");
        assert!(order_srv(Vec::new(), "_x._tcp.example.org").is_err());
        let many = (0..40)
            .map(|i| srv(0, 0, 1, &format!("h{i}.example.org")))
            .collect();
        assert_eq!(
            order_srv(many, "_x._tcp.example.org").unwrap().len(),
            MAX_SRV
        );
    }

    #[test]
    fn every_address_once_ipv6_first_and_capped() {
        let v4: IpAddr = "192.0.2.10".parse().unwrap();
        let v6: IpAddr = "2001:db8::10".parse().unwrap();
        let other: IpAddr = "192.0.2.11".parse().unwrap();
        let (eps, left) = expand(vec![
            ("a.example.org".into(), 5222, vec![v4, v6]),
            ("b.example.org".into(), 5222, vec![v4, other]),
            ("b.example.org".into(), 5223, vec![v4]),
        ]);
        let got: Vec<String> = eps
            .iter()
            .map(|e| format!("{} {}", e.host, e.addr))
            .collect();
        assert_eq!(
            got,
            [
                "a.example.org [2001:db8::10]:5222",
                "a.example.org 192.0.2.10:5222",
                "b.example.org 192.0.2.11:5222",
                "b.example.org 192.0.2.10:5223",
            ]
        );
        assert_eq!(left, 0);
        let ips: Vec<IpAddr> = (0..100u8).map(|i| IpAddr::from([198, 18, 0, i])).collect();
        let (eps, left) = expand(vec![("big.example.org".into(), 443, ips)]);
        assert_eq!((eps.len(), left), (MAX_ENDPOINTS, 100 - MAX_ENDPOINTS));
    }
}
