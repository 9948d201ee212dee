//! Certificate Transparency source: pages of issuances for our domains from
//! Cert Spotter's API (`/v1/issuances`), after the last position, honouring
//! 429 + `Retry-After`. Bounded: time per request, bytes per page, pages per round.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::CtConfig;
use crate::detect::ct::{Issuance, NotIssuances, parse_issuances};
use crate::detect::tls::ManifestState;
use crate::source::manifest_fetch::{self, Manifests};

/// Why a page could not be fetched (tried again next round).
#[derive(Debug, thiserror::Error)]
pub enum CtError {
    /// The request failed (connect, TLS, timeout).
    #[error("CT API: {0}")]
    Request(String),
    /// The answer broke off.
    #[error("CT API: reading the answer: {0}")]
    Read(String),
    /// The answer is larger than a page can be.
    #[error("CT API: answer larger than {0} bytes")]
    TooLarge(usize),
    /// The API answered with an error status.
    #[error("CT API answered {status}: {text}")]
    Status {
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// The start of the answer (200 characters at most).
        text: String,
    },
    /// The answer is not a page of issuances.
    #[error(transparent)]
    Format(#[from] NotIssuances),
}

/// What the CT task reports to the agent.
#[derive(Debug)]
pub enum CtEvent {
    /// One page of issuances for `domain`; the position is now `last_id`.
    Page {
        domain: String,
        issuances: Vec<Issuance>,
        damaged: usize,
        last_id: String,
        /// Certificates the `authorized_manifests` list (ours).
        authorized: Vec<crate::cert::CertIdentity>,
    },
    /// Something went wrong for `domain`; tried again next round.
    Failed {
        /// The domain whose page failed.
        domain: String,
        /// What went wrong.
        error: CtError,
    },
}

/// Largest answer read (one page).
const MAX_BODY: usize = 16 << 20;
/// Pages fetched per domain per round (the rest follow next round).
const MAX_PAGES: usize = 100;
/// The longest `Retry-After` obeyed at once.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

enum Fetch {
    Page(Vec<Issuance>, usize),
    RateLimited(Duration),
}

async fn fetch(
    client: &reqwest::Client,
    config: &CtConfig,
    key: Option<&str>,
    domain: &str,
    after: Option<&str>,
) -> Result<Fetch, CtError> {
    // Checked when the configuration was loaded.
    let mut url =
        reqwest::Url::parse(&config.api_url).map_err(|e| CtError::Request(e.to_string()))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("domain", domain)
            .append_pair("include_subdomains", "true")
            .append_pair("expand", "dns_names")
            .append_pair("expand", "issuer");
        if let Some(a) = after {
            q.append_pair("after", a);
        }
    }
    let mut request = client.get(url).timeout(config.timeout.0);
    if let Some(k) = key {
        request = request.bearer_auth(k);
    }
    let mut response = request
        .send()
        .await
        .map_err(|e| CtError::Request(e.to_string()))?;
    let status = response.status();
    if status.as_u16() == 429 {
        let wait = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(60))
            .min(MAX_RETRY_AFTER);
        return Ok(Fetch::RateLimited(wait));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| CtError::Read(e.to_string()))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(CtError::TooLarge(MAX_BODY));
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        return Err(CtError::Status {
            status,
            text: text.chars().take(200).collect(),
        });
    }
    let (list, damaged) = parse_issuances(&body)?;
    Ok(Fetch::Page(list, damaged))
}

/// The certificates our other servers' signed manifests list (each fetched
/// once per round, kept copies used while valid). A manifest that is not
/// believed lists nothing; that is logged.
async fn authorized_by_manifests(
    config: &CtConfig,
    manifests: &Manifests,
) -> Vec<crate::cert::CertIdentity> {
    let mut out = Vec::new();
    for m in &config.authorized_manifests {
        let client = manifest_fetch::client(None, config.timeout.0);
        let report = manifests.fetch_for(&m.url, &m.key, None, client).await;
        match &report.state {
            ManifestState::Fresh => {}
            ManifestState::Invalid(why) => tracing::error!(
                "[ct] authorized manifest {}: forged or replayed ({why}); its certificates are not taken as ours",
                m.url
            ),
            ManifestState::Cached(why) | ManifestState::Unavailable(why) => tracing::warn!(
                "[ct] authorized manifest {}: {why}; {} certificates from the kept copy",
                m.url,
                report.ids.len()
            ),
        }
        out.extend(report.ids);
    }
    out
}

/// The CT task: every `interval`, for each domain, fetches pages after the
/// last position until an empty page. `positions` are where the previous run
/// stopped (from `state_dir`).
pub fn start(
    config: CtConfig,
    positions: std::collections::BTreeMap<String, String>,
    state_dir: &std::path::Path,
) -> (mpsc::Receiver<CtEvent>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(16);
    let manifests = Manifests::new(state_dir, Duration::ZERO);
    let task =
        tokio::spawn(async move {
            let key = config.api_key_file.as_ref().and_then(|p| {
                match crate::files::read_regular_text(p) {
                    Ok(k) => Some(k.trim().to_string()),
                    Err(e) => {
                        tracing::warn!(
                            "[ct] api_key_file {}: {e}; querying without a key",
                            p.display()
                        );
                        None
                    }
                }
            });
            let client = match reqwest::Client::builder()
                .user_agent(concat!("netsentry/", env!("CARGO_PKG_VERSION")))
                .build()
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("CT monitoring is off: {e}");
                    return;
                }
            };
            let mut positions = positions;
            let mut tick = tokio::time::interval(config.interval.0);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let authorized = authorized_by_manifests(&config, &manifests).await;
                for domain in &config.domains {
                    let mut pages = 0;
                    while pages < MAX_PAGES {
                        let after = positions.get(domain).map(String::as_str);
                        match fetch(&client, &config, key.as_deref(), domain, after).await {
                            Ok(Fetch::RateLimited(wait)) => {
                                tracing::info!(
                                    "CT API: rate limited; waiting {} s as asked",
                                    wait.as_secs()
                                );
                                tokio::time::sleep(wait).await;
                            }
                            Ok(Fetch::Page(list, damaged)) => {
                                pages += 1;
                                let Some(last) = list.last().map(|i| i.id.clone()) else {
                                    break;
                                };
                                positions.insert(domain.clone(), last.clone());
                                let event = CtEvent::Page {
                                    domain: domain.clone(),
                                    issuances: list,
                                    damaged,
                                    last_id: last,
                                    authorized: authorized.clone(),
                                };
                                if tx.send(event).await.is_err() {
                                    return;
                                }
                            }
                            Err(error) => {
                                let event = CtEvent::Failed {
                                    domain: domain.clone(),
                                    error,
                                };
                                if tx.send(event).await.is_err() {
                                    return;
                                }
                                break;
                            }
                        }
                    }
                }
            }
        });
    (rx, task)
}
