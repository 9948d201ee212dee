//! A SOCKS5 client (RFC 1928, with RFC 1929 user/password): enough to open a
//! TCP connection to a service through a proxy such as Tor. Names are sent to
//! the proxy unresolved, so no DNS query leaves from this host.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::SocksProxy;

/// Why the proxy did not give us a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SocksError {
    /// Reading from or writing to the proxy failed.
    #[error("the proxy closed or broke the connection: {0}")]
    Io(String),
    /// The other end does not speak SOCKS5.
    #[error("not a SOCKS5 proxy (it answered version {0})")]
    NotSocks5(u8),
    /// User name and password were refused.
    #[error("the proxy rejected the user name and password")]
    Rejected,
    /// The proxy wants an authentication we did not offer.
    #[error("the proxy accepts none of our authentication methods (add user:password to via?)")]
    NoMethod,
    /// The proxy chose a method outside the protocol.
    #[error("the proxy chose an unknown method 0x{0:02x}")]
    UnknownMethod(u8),
    /// The name cannot be sent (longer than 255 bytes).
    #[error("host name {0:?} is too long for SOCKS5")]
    NameTooLong(String),
    /// The proxy could not reach the target.
    #[error("the proxy could not connect to {target}: {reason}")]
    Refused {
        /// `host:port` asked for.
        target: String,
        /// The proxy's reply, in words (RFC 1928 6).
        reason: &'static str,
    },
    /// The reply names an address type outside the protocol.
    #[error("the proxy sent an unknown address type {0}")]
    UnknownAddressType(u8),
}

/// Asks the proxy on `stream` to connect to `host:port`.
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    proxy: &SocksProxy,
    host: &str,
    port: u16,
) -> Result<(), SocksError> {
    let io = |e: std::io::Error| SocksError::Io(e.to_string());
    let methods: &[u8] = if proxy.credentials.is_some() {
        &[0x00, 0x02]
    } else {
        &[0x00]
    };
    let mut hello = vec![5, methods.len() as u8];
    hello.extend_from_slice(methods);
    stream.write_all(&hello).await.map_err(io)?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice).await.map_err(io)?;
    if choice[0] != 5 {
        return Err(SocksError::NotSocks5(choice[0]));
    }
    match (choice[1], &proxy.credentials) {
        (0x00, _) => {}
        (0x02, Some((user, password))) => {
            let mut auth = vec![1, user.len() as u8];
            auth.extend_from_slice(user.as_bytes());
            auth.push(password.len() as u8);
            auth.extend_from_slice(password.as_bytes());
            stream.write_all(&auth).await.map_err(io)?;
            let mut status = [0u8; 2];
            stream.read_exact(&mut status).await.map_err(io)?;
            if status[1] != 0 {
                return Err(SocksError::Rejected);
            }
        }
        (0xff, _) => {
            return Err(SocksError::NoMethod);
        }
        (other, _) => return Err(SocksError::UnknownMethod(other)),
    }
    stream
        .write_all(&connect_request(host, port)?)
        .await
        .map_err(io)?;
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).await.map_err(io)?;
    if head[1] != 0 {
        return Err(SocksError::Refused {
            target: format!("{host}:{port}"),
            reason: reply_text(head[1]),
        });
    }
    // The bound address: skip it.
    let skip = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut n = [0u8; 1];
            stream.read_exact(&mut n).await.map_err(io)?;
            n[0] as usize + 2
        }
        other => return Err(SocksError::UnknownAddressType(other)),
    };
    let mut rest = vec![0u8; skip];
    stream.read_exact(&mut rest).await.map_err(io)?;
    Ok(())
}

/// The CONNECT request for a name or an address.
fn connect_request(host: &str, port: u16) -> Result<Vec<u8>, SocksError> {
    let mut req = vec![5, 1, 0];
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => {
            req.push(1);
            req.extend_from_slice(&ip.octets());
        }
        Ok(std::net::IpAddr::V6(ip)) => {
            req.push(4);
            req.extend_from_slice(&ip.octets());
        }
        Err(_) => {
            if host.len() > 255 {
                return Err(SocksError::NameTooLong(host.to_string()));
            }
            req.push(3);
            req.push(host.len() as u8);
            req.extend_from_slice(host.as_bytes());
        }
    }
    req.extend_from_slice(&port.to_be_bytes());
    Ok(req)
}

fn reply_text(code: u8) -> &'static str {
    match code {
        1 => "general SOCKS server failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unknown error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        assert_eq!(
            connect_request("192.0.2.1", 443).unwrap(),
            vec![5, 1, 0, 1, 192, 0, 2, 1, 1, 187]
        );
        let named = connect_request("example.org", 5222).unwrap();
        assert_eq!(&named[..5], &[5, 1, 0, 3, 11]);
        assert_eq!(&named[5..16], b"example.org");
        assert_eq!(&named[16..], &5222u16.to_be_bytes());
        assert!(connect_request(&"a".repeat(300), 1).is_err());
    }

    /// A scripted proxy on the other end of an in-memory pipe.
    #[tokio::test]
    async fn dialogue_with_credentials_and_refusal() {
        let proxy = SocksProxy::parse("socks5://u:p@127.0.0.1:1080").unwrap();
        let (mut client, mut server) = tokio::io::duplex(1024);
        let script = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let n = server.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], &[5, 2, 0, 2]);
            server.write_all(&[5, 2]).await.unwrap();
            let n = server.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], &[1, 1, b'u', 1, b'p']);
            server.write_all(&[1, 0]).await.unwrap();
            let _ = server.read(&mut buf).await.unwrap();
            server
                .write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0])
                .await
                .unwrap();
        });
        let err = connect(&mut client, &proxy, "example.org", 443)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the proxy could not connect to example.org:443: connection refused"
        );
        script.await.unwrap();
    }
}
