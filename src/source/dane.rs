//! The TLSA lookup of one endpoint (issue 17, item 5), DNSSEC-validated by
//! hickory from the configured trust anchor; the judgement is pure
//! (`detect::dane`).

use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::dnssec::Proof;
use hickory_resolver::proto::rr::{RData, RecordType};

use super::dns::TokioResolver;
use crate::detect::dane::{DaneLookup, DaneVerdict, Tlsa, judge_ders};

/// `_5222._tcp.xmpp.example.org` (RFC 6698 3; RFC 7673: the SRV target's
/// name and port for a service found by SRV).
pub fn tlsa_name(host: &str, port: u16) -> String {
    format!("_{port}._tcp.{}", host.trim_end_matches('.'))
}

/// The TLSA records at `name`, with what DNSSEC says of them.
pub async fn lookup(resolver: &TokioResolver, name: &str) -> DaneLookup {
    let fqdn = format!("{name}.");
    match resolver.lookup(fqdn.as_str(), RecordType::TLSA).await {
        Ok(found) => {
            let mut records = Vec::new();
            let mut proofs = Vec::new();
            for r in found.answers() {
                if let RData::TLSA(t) = &r.data {
                    proofs.push(r.proof);
                    records.push(Tlsa {
                        usage: u8::from(t.cert_usage),
                        selector: u8::from(t.selector),
                        matching: u8::from(t.matching),
                        data: t.cert_data.clone(),
                    });
                }
            }
            if proofs.contains(&Proof::Bogus) {
                DaneLookup::Bogus("a signature does not validate".into())
            } else if proofs.iter().all(|p| p.is_secure()) {
                DaneLookup::Secure(records)
            } else {
                DaneLookup::Insecure
            }
        }
        Err(e) => from_error(e),
    }
}

/// A failed lookup: a denial is only believed when DNSSEC proves it.
fn from_error(e: NetError) -> DaneLookup {
    match e {
        NetError::Dns(DnsError::Nsec { proof, .. }) => match proof {
            Proof::Secure => DaneLookup::Secure(Vec::new()),
            Proof::Bogus => {
                DaneLookup::Bogus("the denial of the TLSA records does not validate".into())
            }
            _ => DaneLookup::Insecure,
        },
        NetError::Dns(DnsError::NoRecordsFound(no)) => {
            let proofs: Vec<Proof> = no
                .authorities
                .iter()
                .flat_map(|a| a.iter().map(|r| r.proof))
                .collect();
            if proofs.contains(&Proof::Bogus) {
                DaneLookup::Bogus("the denial of the TLSA records does not validate".into())
            } else {
                DaneLookup::Insecure
            }
        }
        NetError::Dns(DnsError::DnssecBogus) => {
            DaneLookup::Bogus("DNSSEC validation failed".into())
        }
        other => {
            let text = other.to_string();
            match text.contains("DNSSEC") || text.contains("RRSIG") || text.contains("bogus") {
                true => DaneLookup::Bogus(text),
                false => DaneLookup::Failed(text),
            }
        }
    }
}

/// Looks up and judges one check's chain (leaf first, DER).
pub async fn verdict(resolver: &TokioResolver, name: &str, chain: &[Vec<u8>]) -> DaneVerdict {
    judge_ders(&lookup(resolver, name).await, chain)
}

/// The TLSA records at each of `names`, as looked up (or why not).
pub type TlsaRound = Vec<(String, Result<Vec<Tlsa>, String>)>;

/// The publisher's TLSA watch (`[publish] tlsa_names`): every `refresh`, the
/// records at each name, plainly (the publisher compares its own records
/// with its own certificates; validation is the probers' job).
pub fn watch(
    names: Vec<String>,
    nameservers: Vec<String>,
    refresh: std::time::Duration,
) -> super::Feed<TlsaRound> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let task = tokio::spawn(async move {
        let resolver = match super::dns::resolver(&nameservers, "tls") {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("[publish] tlsa_names: no resolver ({e}); dane_stale is off");
                return;
            }
        };
        let mut tick = tokio::time::interval(refresh.max(std::time::Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let mut round = Vec::new();
            for name in &names {
                let fqdn = format!("{}.", name.trim_end_matches('.'));
                let found = match resolver.lookup(fqdn.as_str(), RecordType::TLSA).await {
                    Ok(l) => Ok(l
                        .answers()
                        .iter()
                        .filter_map(|r| match &r.data {
                            RData::TLSA(t) => Some(Tlsa {
                                usage: u8::from(t.cert_usage),
                                selector: u8::from(t.selector),
                                matching: u8::from(t.matching),
                                data: t.cert_data.clone(),
                            }),
                            _ => None,
                        })
                        .collect()),
                    Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
                    Err(e) => Err(e.to_string()),
                };
                round.push((name.clone(), found));
            }
            if tx.send(round).await.is_err() {
                return;
            }
        }
    });
    super::Feed::new((rx, task))
}
