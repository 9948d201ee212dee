//! Property tests for the parsers of wire data: any bytes, and any mutation or
//! truncation of valid frames, give a result or an error, never a panic.

use chrono::{TimeZone, Utc};
use netsentry::detect::arp::{ArpDetector, ArpSettings};
use netsentry::wire::{self, build};
use proptest::prelude::*;

fn seeds() -> Vec<Vec<u8>> {
    let m = [2, 0, 0, 0, 0, 1];
    let ll: std::net::Ipv6Addr = "fe80::1".parse().unwrap();
    let all: std::net::Ipv6Addr = "ff02::1".parse().unwrap();
    let arp = build::gratuitous_arp(m, "192.0.2.1".parse().unwrap());
    vec![
        arp.clone(),
        build::tagged(&arp, 10),
        build::icmpv6(m, m, ll, all, &build::na_body(ll, true, false, true, m)),
        build::icmpv6(m, m, ll, all, &build::ra_body(m, 1800)),
        build::tagged(&build::icmpv6(m, m, ll, all, &build::ra_body(m, 0)), 4000),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = wire::parse(&bytes);
        let mut stats = netsentry::source::netlink::ParseStats::default();
        let _ = netsentry::source::netlink::parse_events(&bytes, &mut stats);
    }

    #[test]
    fn mutated_frames_never_panic_the_detector(
        seed in 0usize..5,
        flips in proptest::collection::vec((0usize..120, any::<u8>()), 0..8),
        cut in 0usize..130,
    ) {
        let mut frame = seeds()[seed].clone();
        for (at, value) in flips {
            if at < frame.len() {
                frame[at] = value;
            }
        }
        frame.truncate(cut.max(1));
        let mut d = ArpDetector::new(ArpSettings::default());
        d.set_gateways(&[("192.0.2.1".parse().unwrap(), None), ("fe80::1".parse().unwrap(), None)]);
        let t = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let _ = d.observe("eth0", &frame, t);
        let _ = d.observe("eth0", &frame, t);
        let c = d.counters();
        prop_assert_eq!(c.frames, 2);
        // Every frame is counted once: ARP, NDP, malformed, another
        // protocol, or another VLAN's.
        prop_assert_eq!(c.arp + c.ndp + c.malformed + c.other + c.other_vlan, 2);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Whatever a server says before TLS, in whatever chunks: a step or an
    /// error, never a panic, and never more than the dialogue's byte limit read.
    #[test]
    fn starttls_dialogues_never_panic(
        protocol in 0usize..8,
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..12),
    ) {
        use netsentry::config::StartTls;
        use netsentry::source::starttls::{Dialogue, MAX_DIALOGUE};
        let protocols = [
            StartTls::None, StartTls::Xmpp, StartTls::XmppServer, StartTls::Smtp,
            StartTls::Imap, StartTls::Pop3, StartTls::Ldap, StartTls::Postgres,
        ];
        let mut d = Dialogue::new(protocols[protocol], "example.org");
        let _ = d.opening();
        let mut total = 0;
        for chunk in chunks {
            total += chunk.len();
            match d.receive(&chunk) {
                Ok(_) => prop_assert!(total <= MAX_DIALOGUE),
                Err(_) => break,
            }
        }
    }

    /// CAA values and CT answers from the network: parsed or refused, never a panic.
    #[test]
    fn caa_values_and_ct_answers_never_panic(text in ".{0,200}", bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = netsentry::detect::caa::parse_issue_value(&text);
        let _ = netsentry::detect::caa::parse_validation_methods(&text);
        let _ = netsentry::detect::caa::lookup_order(&text);
        let records = [netsentry::detect::caa::CaaRecord { flags: 0, tag: "issue".into(), value: text.clone() }];
        let rules = netsentry::detect::caa::CaaRules { require_accounturi: true, require_validationmethods: true };
        let _ = netsentry::detect::caa::audit("example.org", Some(("example.org", &records)), rules);
        let _ = netsentry::detect::ct::parse_issuances(&bytes);
        let _ = netsentry::detect::ct::parse_issuances(text.as_bytes());
    }
}
