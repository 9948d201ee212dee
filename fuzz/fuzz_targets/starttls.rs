//! What a server (or an interceptor) answers in a STARTTLS dialogue. The first
//! byte picks the protocol; the rest arrives in chunks cut at 0xff 0x00.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netsentry::config::StartTls;
use netsentry::source::starttls::{Dialogue, Step};

const PROTOCOLS: [StartTls; 7] = [
    StartTls::Xmpp,
    StartTls::XmppServer,
    StartTls::Smtp,
    StartTls::Imap,
    StartTls::Pop3,
    StartTls::Ldap,
    StartTls::Postgres,
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let mut d = Dialogue::new(PROTOCOLS[pick as usize % PROTOCOLS.len()], "example.org");
    let _ = d.opening();
    let mut chunks = vec![];
    let mut start = 0;
    for i in 0..rest.len().saturating_sub(1) {
        if rest[i] == 0xff && rest[i + 1] == 0 {
            chunks.push(&rest[start..i]);
            start = i + 2;
        }
    }
    chunks.push(&rest[start.min(rest.len())..]);
    for chunk in chunks {
        match d.receive(chunk) {
            Ok(Step::Ready) | Err(_) => return,
            Ok(_) => {}
        }
    }
});
