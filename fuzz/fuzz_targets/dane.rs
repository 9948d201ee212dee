//! What a DANE check takes from outside: TLSA records (as a DNS answer
//! carries them) and the certificate chain a server sent. The input is
//! split at the first NUL: records (usage, selector, matching, length,
//! data...) before, certificates (DER, separated by 0xFF 0x00) after. Also
//! the names an SRV answer or a configuration gives.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netsentry::detect::dane::{DaneLookup, Tlsa, judge_ders, tlsa_host, uncovered};

fuzz_target!(|data: &[u8]| {
    let (records, chain) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let mut tlsa = Vec::new();
    let mut rest = records;
    while rest.len() >= 4 && tlsa.len() < 64 {
        let len = usize::from(rest[3]).min(rest.len() - 4);
        tlsa.push(Tlsa {
            usage: rest[0],
            selector: rest[1],
            matching: rest[2],
            data: rest[4..4 + len].to_vec(),
        });
        rest = &rest[4 + len..];
    }
    let ders: Vec<&[u8]> = chain.split(|b| *b == 0xFF).take(8).collect();
    let _ = judge_ders(&DaneLookup::Secure(tlsa.clone()), &ders);
    for r in &tlsa {
        let _ = r.text();
    }
    let text = String::from_utf8_lossy(records);
    let _ = tlsa_host(&text);
    let _ = netsentry::config::srv_domain(&text);
    let _ = netsentry::config::check_srv(&text);
    let pairs = vec![(text.to_string(), text.to_string())];
    let _ = uncovered(&tlsa, &pairs);
});
