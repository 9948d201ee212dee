//! CAA audit (pure): does a domain's CAA policy keep an attacker who controls
//! the network path from getting a certificate?
//!
//! RFC 8659 (CAA): the relevant record set is the first non-empty one walking
//! from the name up the tree. RFC 8657: `accounturi` binds issuance to one ACME
//! account, `validationmethods` to methods (dns-01) a path attacker cannot pass.
//! The jabber.ru interceptor got certificates by answering HTTP-01 on the
//! intercepted path; `accounturi` plus `validationmethods=dns-01` stops that.

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::alert::{Finding, Kind};

/// One CAA resource record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaaRecord {
    pub flags: u8,
    pub tag: String,
    pub value: String,
}

/// The value of an `issue`/`issuewild` property (RFC 8659 4.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssueValue {
    /// The CA's domain; `None` for `";"` (no CA may issue).
    pub issuer: Option<String>,
    pub parameters: Vec<(String, String)>,
}

impl IssueValue {
    /// The value of parameter `tag` (RFC 8659 4.2), if given.
    pub fn parameter(&self, tag: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(t, _)| t.eq_ignore_ascii_case(tag))
            .map(|(_, v)| v.as_str())
    }
}

fn is_tag(text: &str) -> bool {
    // tag = (ALPHA / DIGIT) *( *("-") (ALPHA / DIGIT) )
    let b = text.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

fn is_domain(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Parses an issue value: `[issuer-domain-name] [";" parameters]`.
pub fn parse_issue_value(value: &str) -> Result<IssueValue, String> {
    let value = value.trim_matches([' ', '\t']);
    let (issuer, rest) = match value.split_once(';') {
        Some((i, r)) => (i.trim_matches([' ', '\t']), Some(r)),
        None => (value, None),
    };
    let issuer = if issuer.is_empty() {
        None
    } else if is_domain(issuer) {
        Some(issuer.to_ascii_lowercase())
    } else {
        return Err(format!("{issuer:?} is not an issuer domain name"));
    };
    let mut parameters = Vec::new();
    for part in rest.unwrap_or("").split(';') {
        let part = part.trim_matches([' ', '\t']);
        if part.is_empty() {
            continue;
        }
        let (tag, val) = part
            .split_once('=')
            .ok_or_else(|| format!("parameter {part:?} has no '='"))?;
        let (tag, val) = (tag.trim_matches([' ', '\t']), val.trim_matches([' ', '\t']));
        if !is_tag(tag) {
            return Err(format!("{tag:?} is not a parameter tag"));
        }
        // value = *(%x21-3A / %x3C-7E): visible characters except ';'.
        if !val.bytes().all(|c| (0x21..=0x7e).contains(&c) && c != b';') {
            return Err(format!(
                "parameter {tag}: value {val:?} has invalid characters"
            ));
        }
        parameters.push((tag.to_ascii_lowercase(), val.to_string()));
    }
    Ok(IssueValue { issuer, parameters })
}

/// RFC 8657 `validationmethods`: a comma-separated list of method labels.
pub fn parse_validation_methods(value: &str) -> Result<Vec<String>, String> {
    let methods: Vec<String> = value.split(',').map(|m| m.trim().to_string()).collect();
    if methods
        .iter()
        .any(|m| m.is_empty() || !m.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'))
    {
        return Err(format!(
            "validationmethods={value:?} is not a list of method names"
        ));
    }
    Ok(methods)
}

/// RFC 8657 `accounturi`: an absolute URI (Let's Encrypt:
/// `https://acme-v02.api.letsencrypt.org/acme/acct/<number>`).
pub fn valid_account_uri(value: &str) -> bool {
    url::Url::parse(value).is_ok_and(|u| u.has_host() && matches!(u.scheme(), "https" | "http"))
}

/// The names whose CAA records apply to `domain`, in the order to query them:
/// the name itself, then each parent up to (and including) the top-level domain.
pub fn lookup_order(domain: &str) -> Vec<String> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = domain.split('.').collect();
    (0..labels.len()).map(|i| labels[i..].join(".")).collect()
}

/// What the audit requires (from `[caa]`).
#[derive(Clone, Copy, Debug)]
pub struct CaaRules {
    pub require_accounturi: bool,
    pub require_validationmethods: bool,
}

/// The problems with the policy for `domain`; `found` is where the relevant
/// record set was found and what it holds (`None`: no CAA up the tree).
pub fn audit(domain: &str, found: Option<(&str, &[CaaRecord])>, rules: CaaRules) -> Vec<String> {
    let example = |name: &str| {
        format!(
            "{name}. CAA 0 issue \"letsencrypt.org; accounturi=https://acme-v02.api.letsencrypt.org/acme/acct/<your account id>; validationmethods=dns-01\""
        )
    };
    let Some((owner, records)) = found else {
        return vec![format!(
            "{domain} has no CAA record (nor has any parent): any CA may issue for it to whoever passes a challenge on the network path. Add, for example: {} and {domain}. CAA 0 issuewild \";\"",
            example(domain)
        )];
    };
    let mut problems = Vec::new();
    let issue: Vec<&CaaRecord> = records
        .iter()
        .filter(|r| r.tag.eq_ignore_ascii_case("issue"))
        .collect();
    let issuewild = records
        .iter()
        .any(|r| r.tag.eq_ignore_ascii_case("issuewild"));
    for record in &issue {
        let parsed = match parse_issue_value(&record.value) {
            Ok(p) => p,
            Err(e) => {
                problems.push(format!(
                    "{owner} CAA issue \"{}\" does not parse ({e}); CAs treat it as forbidding issuance by anyone, which may not be what you meant",
                    record.value
                ));
                continue;
            }
        };
        let Some(ca) = parsed.issuer.as_deref() else {
            continue; // ";" — nobody may issue: as strong as it gets.
        };
        let mut missing = Vec::new();
        match parsed.parameter("accounturi") {
            Some(uri) if !valid_account_uri(uri) => problems.push(format!(
                "{owner} CAA issue \"{}\": accounturi {uri:?} is not an absolute URI",
                record.value
            )),
            None if rules.require_accounturi => missing.push("accounturi"),
            _ => {}
        }
        match parsed.parameter("validationmethods") {
            Some(v) if parse_validation_methods(v).is_err() => problems.push(format!(
                "{owner} CAA issue \"{}\": validationmethods {v:?} is not a list of methods",
                record.value
            )),
            None if rules.require_validationmethods => missing.push("validationmethods"),
            _ => {}
        }
        if !missing.is_empty() {
            problems.push(format!(
                "{owner} CAA issue \"{}\" lets {ca} issue to any of its accounts by any validation method (no {}): a path attacker can pass HTTP-01. Use, for example: {}",
                record.value,
                missing.join(" and no "),
                example(owner)
            ));
        }
    }
    let restricted = !issue.is_empty();
    if restricted && !issuewild {
        problems.push(format!(
            "{owner} restricts issue but has no issuewild: wildcard certificates follow the issue records; say it explicitly, e.g. {owner}. CAA 0 issuewild \";\" (no wildcards)"
        ));
    }
    if !restricted && !issuewild {
        problems.push(format!(
            "{owner} has CAA records but no issue property: any CA may issue. Add, for example: {}",
            example(owner)
        ));
    }
    problems
}

/// One `caa_weak` per problem text, for a domain.
pub fn findings(domain: &str, problems: &[String], now: DateTime<Utc>) -> Vec<Finding> {
    problems
        .iter()
        .map(|p| {
            Finding::new(
                Kind::CaaWeak,
                now,
                format!("CAA policy of {domain} is weak: {p}"),
                json!({"domain": domain, "problem": p}),
            )
        })
        .collect()
}

/// The CAA audit's memory: the problems reported per domain, so each is
/// reported once (again only after it was fixed and came back).
#[derive(Default)]
pub struct CaaWatch {
    reported: std::collections::HashMap<String, Vec<String>>,
}

/// What one audit of a domain gave.
pub struct CaaOutcome {
    /// Problems not reported before.
    pub findings: Vec<Finding>,
    /// The domain had problems before and has none now.
    pub fixed: bool,
}

impl CaaWatch {
    /// Audits the records found for `domain` (`None`: no CAA anywhere up the
    /// tree) and reports each problem once per episode.
    pub fn observe(
        &mut self,
        domain: &str,
        found: Option<(&str, &[CaaRecord])>,
        rules: CaaRules,
        now: DateTime<Utc>,
    ) -> CaaOutcome {
        let problems = audit(domain, found, rules);
        let before = self.reported.remove(domain).unwrap_or_default();
        let new: Vec<String> = problems
            .iter()
            .filter(|p| !before.contains(p))
            .cloned()
            .collect();
        let fixed = problems.is_empty() && !before.is_empty();
        self.reported.insert(domain.to_string(), problems);
        CaaOutcome {
            findings: findings(domain, &new, now),
            fixed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(tag: &str, value: &str) -> CaaRecord {
        CaaRecord {
            flags: 0,
            tag: tag.into(),
            value: value.into(),
        }
    }

    const RULES: CaaRules = CaaRules {
        require_accounturi: true,
        require_validationmethods: true,
    };

    #[test]
    fn issue_values_per_rfc_8659_and_8657() {
        let v = parse_issue_value(
            "letsencrypt.org; accounturi=https://acme-v02.api.letsencrypt.org/acme/acct/1234567;validationmethods=dns-01,tls-alpn-01",
        )
        .unwrap();
        assert_eq!(v.issuer.as_deref(), Some("letsencrypt.org"));
        assert_eq!(
            v.parameter("accounturi"),
            Some("https://acme-v02.api.letsencrypt.org/acme/acct/1234567")
        );
        assert_eq!(
            parse_validation_methods(v.parameter("validationmethods").unwrap()).unwrap(),
            vec!["dns-01", "tls-alpn-01"]
        );
        assert!(valid_account_uri(v.parameter("accounturi").unwrap()));
        assert_eq!(parse_issue_value(";").unwrap().issuer, None);
        assert_eq!(
            parse_issue_value("  ca.example.net  ").unwrap().parameters,
            vec![]
        );
        assert_eq!(
            parse_issue_value("ca.example.net; ; policy = ev")
                .unwrap()
                .parameters,
            vec![("policy".to_string(), "ev".to_string())]
        );
        for bad in [
            "ca.example.net; x",
            "not a domain",
            "ca.example.net; -x=1",
            "ca..net",
        ] {
            assert!(parse_issue_value(bad).is_err(), "{bad}");
        }
        assert!(parse_validation_methods("dns-01,").is_err());
        assert!(!valid_account_uri("acct/123"));
    }

    #[test]
    fn the_tree_is_climbed_to_the_tld() {
        assert_eq!(
            lookup_order("xmpp.Example.org."),
            vec!["xmpp.example.org", "example.org", "org"]
        );
    }

    #[test]
    fn a_strong_policy_passes() {
        let records = [
            rec(
                "issue",
                "letsencrypt.org; accounturi=https://acme-v02.api.letsencrypt.org/acme/acct/42; validationmethods=dns-01",
            ),
            rec("issuewild", ";"),
            rec("iodef", "mailto:security@example.org"),
        ];
        assert_eq!(
            audit("xmpp.example.org", Some(("example.org", &records)), RULES),
            Vec::<String>::new()
        );
        // Nobody may issue at all: strong too.
        let none = [rec("issue", ";"), rec("issuewild", ";")];
        assert!(audit("example.org", Some(("example.org", &none)), RULES).is_empty());
    }

    #[test]
    fn weak_policies_say_what_to_add() {
        let p = audit("example.org", None, RULES);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("has no CAA record"), "{}", p[0]);
        assert!(
            p[0].contains("example.org. CAA 0 issue \"letsencrypt.org; accounturi="),
            "{}",
            p[0]
        );

        let plain = [rec("issue", "letsencrypt.org")];
        let p = audit("example.org", Some(("example.org", &plain)), RULES);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].contains("no accounturi and no validationmethods"),
            "{}",
            p[0]
        );
        assert!(p[1].contains("no issuewild"), "{}", p[1]);

        let lax = CaaRules {
            require_accounturi: true,
            require_validationmethods: false,
        };
        let bound = [
            rec(
                "issue",
                "letsencrypt.org; accounturi=https://acme-v02.api.letsencrypt.org/acme/acct/42",
            ),
            rec("issuewild", ";"),
        ];
        assert!(audit("example.org", Some(("example.org", &bound)), lax).is_empty());
        assert_eq!(
            audit("example.org", Some(("example.org", &bound)), RULES).len(),
            1
        );

        let only_iodef = [rec("iodef", "mailto:x@example.org")];
        assert!(
            audit("example.org", Some(("example.org", &only_iodef)), RULES)[0]
                .contains("no issue property")
        );
        let garbage = [rec("issue", "bad value here"), rec("issuewild", ";")];
        assert!(
            audit("example.org", Some(("example.org", &garbage)), RULES)[0]
                .contains("does not parse")
        );
    }
}
