//! STARTTLS dialogues, without I/O: bytes from the server in, bytes to send out,
//! until the server says "go ahead" and the TLS handshake may begin.
//!
//! Everything is bounded: a line is at most [`MAX_LINE`] bytes and the whole
//! dialogue at most [`MAX_DIALOGUE`]. A server that says anything unexpected
//! ends the dialogue with an error that says what it said.

use crate::config::StartTls;

/// Longest line accepted from a line-based server (SMTP allows 512).
pub const MAX_LINE: usize = 4096;
/// Most bytes a server may send before the handshake.
pub const MAX_DIALOGUE: usize = 64 * 1024;

/// What to do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes, then read again.
    Send(Vec<u8>),
    /// Read more.
    Read,
    /// The server is ready for the TLS handshake.
    Ready,
}

/// Why a STARTTLS dialogue failed (the server's words shortened).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DialogueError {
    #[error("the server sent a line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("the server sent more than {MAX_DIALOGUE} bytes without agreeing to STARTTLS")]
    TooMuch,
    #[error("unexpected greeting: {0}")]
    Greeting(String),
    #[error("the server does not offer STARTTLS ({0})")]
    NotOffered(String),
    #[error("the server refused STARTTLS: {0}")]
    Refused(String),
    #[error(
        "the server sent {0} bytes after agreeing to STARTTLS, before the handshake (plaintext injection?)"
    )]
    Injected(usize),
    #[error("unexpected reply: {0}")]
    Unexpected(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Greeting,
    Capabilities,
    GoAhead,
    Done,
}

/// One STARTTLS dialogue.
#[derive(Debug)]
pub struct Dialogue {
    protocol: StartTls,
    domain: String,
    state: State,
    buf: Vec<u8>,
    received: usize,
    offered: bool,
    capabilities: Vec<String>,
}

const XMPP_TLS_NS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// LDAP StartTLS extended request (RFC 4511 4.14.1), message id 1.
const LDAP_STARTTLS: &[u8] = b"\x30\x1d\x02\x01\x01\x77\x18\x80\x16\x31\x2e\x33\x2e\x36\x2e\x31\x2e\x34\x2e\x31\x2e\x31\x34\x36\x36\x2e\x32\x30\x30\x33\x37";
/// PostgreSQL SSLRequest: length 8, code 80877103.
const PG_SSLREQUEST: &[u8] = &[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

impl Dialogue {
    /// `domain` is the XMPP domain (the server name).
    pub fn new(protocol: StartTls, domain: &str) -> Dialogue {
        Dialogue {
            protocol,
            domain: domain.to_string(),
            state: State::Greeting,
            buf: Vec::new(),
            received: 0,
            offered: false,
            capabilities: Vec::new(),
        }
    }

    /// What the client says first (protocols where the client speaks first).
    pub fn opening(&mut self) -> Step {
        match self.protocol {
            StartTls::None => {
                self.state = State::Done;
                Step::Ready
            }
            StartTls::Xmpp | StartTls::XmppServer => {
                let ns = if self.protocol == StartTls::Xmpp {
                    "jabber:client"
                } else {
                    "jabber:server"
                };
                self.state = State::Capabilities;
                Step::Send(
                    format!(
                        "<?xml version='1.0'?><stream:stream to='{}' version='1.0' xml:lang='en' xmlns='{ns}' xmlns:stream='http://etherx.jabber.org/streams'>",
                        xml_escape(&self.domain)
                    )
                    .into_bytes(),
                )
            }
            StartTls::Ldap => {
                self.state = State::GoAhead;
                Step::Send(LDAP_STARTTLS.to_vec())
            }
            StartTls::Postgres => {
                self.state = State::GoAhead;
                Step::Send(PG_SSLREQUEST.to_vec())
            }
            StartTls::Smtp | StartTls::Imap | StartTls::Pop3 => Step::Read,
        }
    }

    /// Feeds bytes received from the server.
    pub fn receive(&mut self, data: &[u8]) -> Result<Step, DialogueError> {
        if self.state == State::Done {
            return Err(DialogueError::Injected(data.len()));
        }
        self.received += data.len();
        if self.received > MAX_DIALOGUE {
            return Err(DialogueError::TooMuch);
        }
        self.buf.extend_from_slice(data);
        match self.protocol {
            StartTls::None => Ok(Step::Ready),
            StartTls::Smtp | StartTls::Imap | StartTls::Pop3 => self.lines(),
            StartTls::Xmpp | StartTls::XmppServer => self.xmpp(),
            StartTls::Ldap => self.ldap(),
            StartTls::Postgres => self.postgres(),
        }
    }

    fn ready(&mut self, rest: usize) -> Result<Step, DialogueError> {
        self.state = State::Done;
        if rest > 0 {
            return Err(DialogueError::Injected(rest));
        }
        Ok(Step::Ready)
    }

    /// Line-based protocols: handle each complete line.
    fn lines(&mut self) -> Result<Step, DialogueError> {
        let mut reply = None;
        while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
            if end > MAX_LINE {
                return Err(DialogueError::LineTooLong);
            }
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line)
                .trim_end_matches(['\r', '\n'])
                .to_string();
            match self.line(&line)? {
                Step::Read => {}
                Step::Ready => return self.ready(self.buf.len()),
                send => reply = Some(send),
            }
        }
        if self.buf.len() > MAX_LINE {
            return Err(DialogueError::LineTooLong);
        }
        Ok(reply.unwrap_or(Step::Read))
    }

    /// One line of the server's, by protocol and state. (~80 lines: one arm
    /// per protocol step, the dialogue's whole grammar in one match.)
    fn line(&mut self, line: &str) -> Result<Step, DialogueError> {
        let shown = || shorten(line);
        match (self.protocol, self.state) {
            // SMTP (RFC 5321, RFC 3207): multi-line replies are "250-..." then "250 ...".
            (StartTls::Smtp, State::Greeting) => match smtp_reply(line) {
                Some((220, false)) => Ok(Step::Read),
                Some((220, true)) => {
                    self.state = State::Capabilities;
                    Ok(Step::Send(b"EHLO netsentry.invalid\r\n".to_vec()))
                }
                _ => Err(DialogueError::Greeting(shown())),
            },
            (StartTls::Smtp, State::Capabilities) => match smtp_reply(line) {
                Some((250, last)) => {
                    let keyword = line.get(4..).unwrap_or("").trim();
                    if keyword.eq_ignore_ascii_case("STARTTLS") {
                        self.offered = true;
                    } else if self.capabilities.len() < 32 {
                        // Each shortened, so that the error quotes at most ~200 characters.
                        self.capabilities.push(keyword.chars().take(40).collect());
                    }
                    if !last {
                        return Ok(Step::Read);
                    }
                    if !self.offered {
                        return Err(DialogueError::NotOffered(format!(
                            "EHLO reply: {}",
                            shorten(&self.capabilities.join(", "))
                        )));
                    }
                    self.state = State::GoAhead;
                    Ok(Step::Send(b"STARTTLS\r\n".to_vec()))
                }
                _ => Err(DialogueError::Unexpected(format!("to EHLO: {}", shown()))),
            },
            (StartTls::Smtp, State::GoAhead) => match smtp_reply(line) {
                Some((220, true)) => Ok(Step::Ready),
                Some((220, false)) => Ok(Step::Read),
                _ => Err(DialogueError::Refused(shown())),
            },
            // IMAP (RFC 9051 6.2.1): greeting "* OK", then "a STARTTLS" answered by "a OK".
            (StartTls::Imap, State::Greeting) => {
                if starts_with_ci(line, "* OK") {
                    self.state = State::GoAhead;
                    if line.to_ascii_uppercase().contains("[CAPABILITY")
                        && !line.to_ascii_uppercase().contains("STARTTLS")
                    {
                        return Err(DialogueError::NotOffered(format!("greeting: {}", shown())));
                    }
                    Ok(Step::Send(b"a STARTTLS\r\n".to_vec()))
                } else {
                    Err(DialogueError::Greeting(shown()))
                }
            }
            (StartTls::Imap, State::GoAhead) => {
                if line.starts_with("* ") {
                    Ok(Step::Read)
                } else if starts_with_ci(line, "a OK") {
                    Ok(Step::Ready)
                } else {
                    Err(DialogueError::Refused(shown()))
                }
            }
            // POP3 (RFC 2595 4): "+OK" greeting, "STLS", "+OK".
            (StartTls::Pop3, State::Greeting) => {
                if line.starts_with("+OK") {
                    self.state = State::GoAhead;
                    Ok(Step::Send(b"STLS\r\n".to_vec()))
                } else {
                    Err(DialogueError::Greeting(shown()))
                }
            }
            (StartTls::Pop3, State::GoAhead) => {
                if line.starts_with("+OK") {
                    Ok(Step::Ready)
                } else {
                    Err(DialogueError::Refused(shown()))
                }
            }
            _ => Err(DialogueError::Unexpected(shown())),
        }
    }

    /// XMPP (RFC 6120 5.4): wait for the stream features, ask for STARTTLS,
    /// wait for `<proceed/>`.
    fn xmpp(&mut self) -> Result<Step, DialogueError> {
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        if let Some(at) = text.find("<stream:error") {
            let condition = text[at..]
                .split('<')
                .nth(2)
                .and_then(|s| s.split([' ', '/', '>']).next())
                .unwrap_or("unknown")
                .to_string();
            return Err(DialogueError::Unexpected(format!(
                "stream error <{condition}/>"
            )));
        }
        match self.state {
            State::Capabilities => {
                // Positions in the bytes received, not in their lossy text: a
                // byte that is not UTF-8 is one byte here and three there.
                let end = [&b"</stream:features>"[..], b"<stream:features/>"]
                    .iter()
                    .filter_map(|m| find(&self.buf, m).map(|i| i + m.len()))
                    .min();
                let Some(end) = end else {
                    return Ok(Step::Read);
                };
                if find(&self.buf[..end], XMPP_TLS_NS.as_bytes()).is_none() {
                    return Err(DialogueError::NotOffered(
                        "stream features without urn:ietf:params:xml:ns:xmpp-tls".into(),
                    ));
                }
                self.buf.drain(..end);
                self.state = State::GoAhead;
                Ok(Step::Send(
                    format!("<starttls xmlns='{XMPP_TLS_NS}'/>").into_bytes(),
                ))
            }
            State::GoAhead => {
                if let Some(at) = find(&self.buf, b"<failure") {
                    let failure = String::from_utf8_lossy(&self.buf[at..]);
                    return Err(DialogueError::Refused(shorten(&failure)));
                }
                let Some(at) = find(&self.buf, b"<proceed") else {
                    if text.trim().is_empty() || "<proceed".starts_with(text.trim()) {
                        return Ok(Step::Read);
                    }
                    return Err(DialogueError::Unexpected(shorten(&text)));
                };
                let tail = &self.buf[at..];
                let end = match (find(tail, b"/>"), find(tail, b"</proceed>")) {
                    (Some(a), _) if !tail[..a].contains(&b'>') => a + 2,
                    (_, Some(b)) => b + "</proceed>".len(),
                    _ => return Ok(Step::Read),
                };
                let rest = self.buf.len() - (at + end);
                self.ready(rest)
            }
            _ => Err(DialogueError::Unexpected(shorten(&text))),
        }
    }

    /// LDAP (RFC 4511 4.14): the ExtendedResponse to our StartTLS request.
    fn ldap(&mut self) -> Result<Step, DialogueError> {
        let Some((message, used)) = ber_element(&self.buf)? else {
            return Ok(Step::Read);
        };
        let rest = self.buf.len() - used;
        // LDAPMessage ::= SEQUENCE { messageID INTEGER, protocolOp [APPLICATION 24] ... }
        if message.tag != 0x30 {
            return Err(DialogueError::Unexpected(format!(
                "not an LDAP message (tag 0x{:02x})",
                message.tag
            )));
        }
        let (id, used_id) = ber_element(message.body)?.ok_or_else(truncated)?;
        let (op, _) = ber_element(&message.body[used_id..])?.ok_or_else(truncated)?;
        if id.tag != 0x02 || op.tag != 0x78 {
            return Err(DialogueError::Unexpected(format!(
                "not an ExtendedResponse (operation tag 0x{:02x})",
                op.tag
            )));
        }
        let (code, used_code) = ber_element(op.body)?.ok_or_else(truncated)?;
        if code.tag != 0x0a || code.body.len() != 1 {
            return Err(DialogueError::Unexpected("no resultCode".into()));
        }
        let result = code.body[0];
        if id.body != [1] {
            // Message id 0 is a Notice of Disconnection (RFC 4511 4.4.1).
            return Err(DialogueError::Refused(format!(
                "the server disconnected (resultCode {result})"
            )));
        }
        if result != 0 {
            let mut diagnostic = String::new();
            let after = &op.body[used_code..];
            if let Ok(Some((_matched, n))) = ber_element(after)
                && let Ok(Some((msg, _))) = ber_element(&after[n..])
            {
                diagnostic = String::from_utf8_lossy(msg.body).into_owned();
            }
            return Err(DialogueError::Refused(format!(
                "resultCode {result} ({}){}",
                ldap_result_name(result),
                if diagnostic.is_empty() {
                    String::new()
                } else {
                    format!(": {}", shorten(&diagnostic))
                }
            )));
        }
        self.ready(rest)
    }

    /// PostgreSQL (protocol 53.2.10): one byte, `S` or `N`.
    fn postgres(&mut self) -> Result<Step, DialogueError> {
        match self.buf.first() {
            None => Ok(Step::Read),
            Some(b'S') => self.ready(self.buf.len() - 1),
            Some(b'N') => Err(DialogueError::Refused(
                "the server does not accept SSL connections".into(),
            )),
            Some(b'E') => Err(DialogueError::Refused(format!(
                "error response: {}",
                shorten(&String::from_utf8_lossy(&self.buf[1..]))
            ))),
            Some(other) => Err(DialogueError::Unexpected(format!(
                "reply byte 0x{other:02x} to SSLRequest"
            ))),
        }
    }
}

fn truncated() -> DialogueError {
    DialogueError::Unexpected("truncated LDAP message".into())
}

/// `250-text` → (250, false); `250 text` → (250, true).
fn smtp_reply(line: &str) -> Option<(u16, bool)> {
    let code: u16 = line.get(..3)?.parse().ok()?;
    match line.as_bytes().get(3) {
        None | Some(b' ') => Some((code, true)),
        Some(b'-') => Some((code, false)),
        _ => None,
    }
}

fn starts_with_ci(line: &str, prefix: &str) -> bool {
    line.len() >= prefix.len()
        && line.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// At most 200 characters of what a server said, control characters replaced.
/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn shorten(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    if text.chars().count() > 200 {
        format!("{}…", clean.trim_end())
    } else {
        clean.trim_end().to_string()
    }
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('\'', "&apos;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

struct Ber<'a> {
    tag: u8,
    body: &'a [u8],
}

/// One BER element (definite length, at most 4 length bytes): the element and
/// the bytes it used, or `None` when more bytes are needed.
fn ber_element(data: &[u8]) -> Result<Option<(Ber<'_>, usize)>, DialogueError> {
    let (Some(&tag), Some(&first)) = (data.first(), data.get(1)) else {
        return Ok(None);
    };
    let (len, header) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return Err(DialogueError::Unexpected(
                "unsupported BER length in LDAP reply".into(),
            ));
        }
        if data.len() < 2 + n {
            return Ok(None);
        }
        let len = data[2..2 + n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, 2 + n)
    };
    if len > MAX_DIALOGUE {
        return Err(DialogueError::TooMuch);
    }
    if data.len() < header + len {
        return Ok(None);
    }
    Ok(Some((
        Ber {
            tag,
            body: &data[header..header + len],
        },
        header + len,
    )))
}

fn ldap_result_name(code: u8) -> &'static str {
    match code {
        1 => "operationsError",
        2 => "protocolError",
        8 => "strongerAuthRequired",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plays a recorded server transcript: each server chunk is fed in turn and
    /// the client's answers collected. Returns the client's bytes and the end.
    fn play(protocol: StartTls, server: &[&[u8]]) -> (Vec<u8>, Result<Step, DialogueError>) {
        let mut d = Dialogue::new(protocol, "example.org");
        let mut client = Vec::new();
        if let Step::Send(b) = d.opening() {
            client.extend(b);
        }
        let mut last = Ok(Step::Read);
        for chunk in server {
            last = d.receive(chunk);
            match &last {
                Ok(Step::Send(b)) => client.extend(b),
                Ok(Step::Read) => {}
                _ => break,
            }
        }
        (client, last)
    }

    #[test]
    fn smtp_postfix_transcript() {
        let (client, end) = play(
            StartTls::Smtp,
            &[
                b"220-mail.example.org ESMTP Postfix (Debian/GNU)\r\n220 ready\r\n",
                b"250-mail.example.org\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-STARTTLS\r\n",
                b"250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n",
                b"220 2.0.0 Ready to start TLS\r\n",
            ],
        );
        assert_eq!(client, b"EHLO netsentry.invalid\r\nSTARTTLS\r\n");
        assert_eq!(end, Ok(Step::Ready));
    }

    #[test]
    fn smtp_failures() {
        let (_, end) = play(
            StartTls::Smtp,
            &[
                b"220 mx ESMTP\r\n",
                b"250-mx\r\n250-SIZE 1\r\n250 8BITMIME\r\n",
            ],
        );
        assert_eq!(
            end,
            Err(DialogueError::NotOffered(
                "EHLO reply: mx, SIZE 1, 8BITMIME".into()
            ))
        );
        let (_, end) = play(StartTls::Smtp, &[b"554 go away\r\n"]);
        assert_eq!(end, Err(DialogueError::Greeting("554 go away".into())));
        let (_, end) = play(
            StartTls::Smtp,
            &[
                b"220 mx\r\n",
                b"250 STARTTLS\r\n",
                b"454 TLS not available\r\n",
            ],
        );
        assert_eq!(
            end,
            Err(DialogueError::Refused("454 TLS not available".into()))
        );
        // A go-ahead with plaintext piggy-backed (CVE-2011-0411 style).
        let (_, end) = play(
            StartTls::Smtp,
            &[
                b"220 mx\r\n",
                b"250 STARTTLS\r\n",
                b"220 go\r\n250 injected\r\n",
            ],
        );
        assert_eq!(end, Err(DialogueError::Injected(14)));
    }

    #[test]
    fn imap_dovecot_transcript() {
        let (client, end) = play(
            StartTls::Imap,
            &[
                b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS LOGINDISABLED] Dovecot (Debian) ready.\r\n",
                b"a OK Begin TLS negotiation now.\r\n",
            ],
        );
        assert_eq!(client, b"a STARTTLS\r\n");
        assert_eq!(end, Ok(Step::Ready));
        let (_, end) = play(StartTls::Imap, &[b"* BYE too busy\r\n"]);
        assert_eq!(end, Err(DialogueError::Greeting("* BYE too busy".into())));
        let (_, end) = play(StartTls::Imap, &[b"* OK [CAPABILITY IMAP4rev1] hi\r\n"]);
        assert!(matches!(end, Err(DialogueError::NotOffered(_))));
        let (_, end) = play(StartTls::Imap, &[b"* OK hi\r\n", b"a NO not now\r\n"]);
        assert_eq!(end, Err(DialogueError::Refused("a NO not now".into())));
    }

    #[test]
    fn pop3_transcript() {
        let (client, end) = play(
            StartTls::Pop3,
            &[b"+OK Dovecot ready.\r\n", b"+OK Begin TLS\r\n"],
        );
        assert_eq!(client, b"STLS\r\n");
        assert_eq!(end, Ok(Step::Ready));
        let (_, end) = play(StartTls::Pop3, &[b"+OK\r\n", b"-ERR no\r\n"]);
        assert!(matches!(end, Err(DialogueError::Refused(_))));
    }

    #[test]
    fn xmpp_prosody_transcript() {
        let (client, end) = play(
            StartTls::Xmpp,
            &[
                b"<?xml version='1.0'?><stream:stream xmlns:db='jabber:server:dialback' xmlns:stream='http://etherx.jabber.org/streams' version='1.0' from='example.org' id='8e1f' xml:lang='en' xmlns='jabber:client'>",
                b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:fea",
                b"tures>",
                b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
            ],
        );
        let client = String::from_utf8(client).unwrap();
        assert!(client.starts_with("<?xml version='1.0'?><stream:stream to='example.org'"));
        assert!(client.contains("xmlns='jabber:client'"));
        assert!(client.ends_with("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"));
        assert_eq!(end, Ok(Step::Ready));
    }

    /// Found by fuzzing: a byte that is not UTF-8 before the features moved
    /// every position by two (lossy text) and the dialogue panicked.
    #[test]
    fn xmpp_bytes_that_are_not_utf8_do_not_panic() {
        let header: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
        let features: &[u8] = b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>";
        let (client, end) = play(StartTls::Xmpp, &[header, b"\xff", features]);
        assert!(client.ends_with(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"));
        assert_eq!(
            end,
            Ok(Step::Send(
                b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>".to_vec()
            ))
        );
        // And in the go-ahead: junk before <proceed/> (tolerated, as any
        // bytes before it are), and bytes after it (injection).
        let (_, end) = play(
            StartTls::Xmpp,
            &[
                header,
                features,
                b"\xff\xfe<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
            ],
        );
        assert_eq!(end, Ok(Step::Ready));
        let (_, end) = play(
            StartTls::Xmpp,
            &[
                header,
                features,
                b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\xff",
            ],
        );
        assert_eq!(end, Err(DialogueError::Injected(1)));
    }

    #[test]
    fn xmpp_failures() {
        let header: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>";
        let (_, end) = play(
            StartTls::XmppServer,
            &[header, b"<stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>"],
        );
        assert!(matches!(end, Err(DialogueError::NotOffered(_))));
        let (_, end) = play(
            StartTls::Xmpp,
            &[header, b"<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"],
        );
        assert_eq!(
            end,
            Err(DialogueError::Unexpected(
                "stream error <host-unknown/>".into()
            ))
        );
        let (_, end) = play(
            StartTls::Xmpp,
            &[
                header,
                b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features>",
                b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
            ],
        );
        assert!(matches!(end, Err(DialogueError::Refused(_))));
    }

    #[test]
    fn ldap_transcripts() {
        // OpenLDAP's success: ExtendedResponse, resultCode 0, responseName = the OID.
        let ok: &[u8] = b"\x30\x24\x02\x01\x01\x78\x1f\x0a\x01\x00\x04\x00\x04\x00\x8a\x16\x31\x2e\x33\x2e\x36\x2e\x31\x2e\x34\x2e\x31\x2e\x31\x34\x36\x36\x2e\x32\x30\x30\x33\x37";
        let (client, end) = play(StartTls::Ldap, &[&ok[..5], &ok[5..]]);
        assert_eq!(client, LDAP_STARTTLS);
        assert_eq!(end, Ok(Step::Ready));
        // unavailable (52) with a diagnostic message.
        let no: &[u8] = b"\x30\x1a\x02\x01\x01\x78\x15\x0a\x01\x34\x04\x00\x04\x0eTLS not set up";
        let (_, end) = play(StartTls::Ldap, &[no]);
        assert_eq!(
            end,
            Err(DialogueError::Refused(
                "resultCode 52 (unavailable): TLS not set up".into()
            ))
        );
        let (_, end) = play(StartTls::Ldap, &[b"\x04\x01x"]);
        assert!(matches!(end, Err(DialogueError::Unexpected(_))));
    }

    #[test]
    fn postgres_transcripts() {
        let (client, end) = play(StartTls::Postgres, &[b"S"]);
        assert_eq!(client, PG_SSLREQUEST);
        assert_eq!(end, Ok(Step::Ready));
        let (_, end) = play(StartTls::Postgres, &[b"N"]);
        assert!(matches!(end, Err(DialogueError::Refused(_))));
        let (_, end) = play(StartTls::Postgres, &[b"SX"]);
        assert_eq!(end, Err(DialogueError::Injected(1)));
    }

    #[test]
    fn hostile_servers_are_bounded() {
        // An endless banner without a newline.
        let mut d = Dialogue::new(StartTls::Smtp, "x");
        d.opening();
        let chunk = vec![b'A'; 1024];
        let mut end = Ok(Step::Read);
        for _ in 0..10 {
            end = d.receive(&chunk);
            if end.is_err() {
                break;
            }
        }
        assert_eq!(end, Err(DialogueError::LineTooLong));
        // An endless multi-line greeting of short lines.
        let mut d = Dialogue::new(StartTls::Smtp, "x");
        d.opening();
        let mut end = Ok(Step::Read);
        for _ in 0..10_000 {
            end = d.receive(b"220-still greeting\r\n");
            if end.is_err() {
                break;
            }
        }
        assert_eq!(end, Err(DialogueError::TooMuch));
        // XMPP that never finishes its features.
        let mut d = Dialogue::new(StartTls::Xmpp, "x");
        d.opening();
        let mut end = Ok(Step::Read);
        for _ in 0..100 {
            end = d.receive(&[b' '; 1024]);
            if end.is_err() {
                break;
            }
        }
        assert_eq!(end, Err(DialogueError::TooMuch));
        // Binary garbage where a greeting should be.
        let mut d = Dialogue::new(StartTls::Imap, "x");
        d.opening();
        assert!(matches!(
            d.receive(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n"),
            Err(DialogueError::Greeting(_))
        ));
        // A huge LDAP length.
        let mut d = Dialogue::new(StartTls::Ldap, "x");
        d.opening();
        assert_eq!(
            d.receive(b"\x30\x84\x7f\xff\xff\xff"),
            Err(DialogueError::TooMuch)
        );
    }

    #[test]
    fn an_smtp_server_without_starttls_is_quoted_briefly() {
        let long = format!("250-{}\r\n", "X".repeat(4000));
        let mut lines: Vec<Vec<u8>> = vec![b"220 mx ESMTP\r\n".to_vec()];
        lines.extend(std::iter::repeat_n(long.into_bytes(), 15));
        lines.push(b"250 SIZE 1000\r\n".to_vec());
        let refs: Vec<&[u8]> = lines.iter().map(|l| l.as_slice()).collect();
        let (_, end) = play(StartTls::Smtp, &refs);
        let Err(DialogueError::NotOffered(text)) = end else {
            panic!("{end:?}")
        };
        assert!(text.len() < 300, "{} bytes of server text", text.len());
    }
}
