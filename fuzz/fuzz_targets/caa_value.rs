//! CAA record values (RFC 8659 issue values, RFC 8657 parameters) from DNS.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netsentry::detect::caa::{self, CaaRecord, CaaRules};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = caa::parse_issue_value(&text);
    let _ = caa::parse_validation_methods(&text);
    let _ = caa::valid_account_uri(&text);
    let records: Vec<CaaRecord> = text
        .split('\n')
        .map(|line| {
            let (tag, value) = line.split_once(' ').unwrap_or((line, ""));
            CaaRecord {
                flags: 0,
                tag: tag.to_string(),
                value: value.to_string(),
            }
        })
        .collect();
    let rules = CaaRules {
        require_accounturi: true,
        require_validationmethods: true,
    };
    let _ = caa::audit("example.org", Some(("example.org", &records)), rules);
});
