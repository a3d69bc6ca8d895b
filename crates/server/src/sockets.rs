//! Listening sockets bound before the process gives up root: ports below 1024 need root
//! or `CAP_NET_BIND_SERVICE`, so `poplar serve` binds them first, drops to the
//! `[process]` user, and only then starts the runtime and the server on them.

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::listener::ListenerKind;

/// Every configured listening socket, bound and not yet served.
pub struct Sockets {
    pop3: Vec<(ListenerKind, std::net::TcpListener)>,
    /// The metrics and health HTTP listener, if configured.
    metrics: Option<std::net::TcpListener>,
    /// The security page's HTTPS listener, if configured.
    web: Option<std::net::TcpListener>,
}

impl Sockets {
    /// Binds every configured socket. Needs no runtime, so it runs before any thread
    /// exists. Each gets SO_REUSEADDR and a backlog of 1,024 (tokio's own `bind`); an
    /// IPv6 one also IPV6_V6ONLY, so that `0.0.0.0:110` and `[::]:110` can be listed
    /// side by side (Linux would otherwise let the IPv6 socket take IPv4 too, and the
    /// second bind fail with "address already in use").
    pub fn bind(config: &Config) -> anyhow::Result<Self> {
        let pop3 = config.listen.pop3.iter().map(|a| (ListenerKind::Pop3, *a));
        let pop3s = config
            .listen
            .pop3s
            .iter()
            .map(|a| (ListenerKind::Pop3s, *a));
        let mut listeners = Vec::new();
        for (kind, addr) in pop3.chain(pop3s) {
            listeners.push((kind, bind(addr, kind.name())?));
        }
        let metrics = config
            .metrics
            .listen
            .map(|a| bind(a, "metrics"))
            .transpose()?;
        let web = config.web.listen.map(|a| bind(a, "web")).transpose()?;
        Ok(Self {
            pop3: listeners,
            metrics,
            web,
        })
    }

    /// Hands the sockets to the runtime; call it inside one.
    pub(crate) fn into_tokio(self) -> anyhow::Result<TokioSockets> {
        let pop3 = self
            .pop3
            .into_iter()
            .map(|(kind, l)| Ok((kind, TcpListener::from_std(l)?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(TokioSockets {
            pop3,
            metrics: self.metrics.map(TcpListener::from_std).transpose()?,
            web: self.web.map(TcpListener::from_std).transpose()?,
        })
    }
}

/// The listeners, in the runtime.
pub(crate) struct TokioSockets {
    pub pop3: Vec<(ListenerKind, TcpListener)>,
    pub metrics: Option<TcpListener>,
    pub web: Option<TcpListener>,
}

/// Binds one non-blocking listening socket; `what` names it in the error.
fn bind(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<std::net::TcpListener> {
    let listener = listen(addr).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied && addr.port() < 1024 {
            " (ports below 1024 need root, which then drops to [process] user, or CAP_NET_BIND_SERVICE)"
        } else {
            ""
        };
        anyhow::Error::new(e).context(format!("binding {what} on {addr}{hint}"))
    })?;
    // tokio takes over only non-blocking sockets.
    listener
        .set_nonblocking(true)
        .context("making a listening socket non-blocking")?;
    Ok(listener)
}

/// A listening TCP socket on `addr`: SO_REUSEADDR (a restart does not wait for old
/// connections in TIME_WAIT), IPV6_V6ONLY for an IPv6 address, backlog 1,024.
fn listen(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_without_a_runtime_and_serves_inside_one() {
        let config = Config {
            listen: crate::config::Listen {
                pop3: vec!["127.0.0.1:0".parse().unwrap()],
                pop3s: vec!["127.0.0.1:0".parse().unwrap()],
            },
            metrics: crate::config::Metrics {
                listen: Some("127.0.0.1:0".parse().unwrap()),
            },
            web: crate::config::Web {
                listen: Some("127.0.0.1:0".parse().unwrap()),
                ..Default::default()
            },
            ..Config::default()
        };
        let sockets = Sockets::bind(&config).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let sockets = runtime.block_on(async { sockets.into_tokio().unwrap() });
        let kinds: Vec<_> = sockets.pop3.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, [ListenerKind::Pop3, ListenerKind::Pop3s]);
        let metrics = sockets.metrics.unwrap().local_addr().unwrap();
        let web = sockets.web.unwrap().local_addr().unwrap();
        assert_ne!(metrics, web);
        assert!(sockets.pop3.iter().all(|(_, l)| {
            let a = l.local_addr().unwrap();
            a != metrics && a != web
        }));
    }

    #[test]
    fn a_taken_address_names_the_listener() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let config = Config {
            listen: crate::config::Listen {
                pop3: vec![],
                pop3s: vec![taken.local_addr().unwrap()],
            },
            metrics: crate::config::Metrics { listen: None },
            web: crate::config::Web {
                listen: None,
                ..Default::default()
            },
            ..Config::default()
        };
        let err = format!("{:#}", Sockets::bind(&config).err().unwrap());
        assert!(err.starts_with("binding pop3s on 127.0.0.1:"), "{err}");
        let config = Config {
            listen: crate::config::Listen {
                pop3: vec!["127.0.0.1:0".parse().unwrap()],
                pop3s: vec![],
            },
            metrics: crate::config::Metrics {
                listen: Some(taken.local_addr().unwrap()),
            },
            web: crate::config::Web {
                listen: None,
                ..Default::default()
            },
            ..Config::default()
        };
        let err = format!("{:#}", Sockets::bind(&config).err().unwrap());
        assert!(err.starts_with("binding metrics on 127.0.0.1:"), "{err}");
    }

    #[test]
    fn ipv4_and_ipv6_wildcards_share_a_port() {
        // The dual-stack example: `0.0.0.0:P` and `[::]:P` side by side.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let v4 = bind(format!("0.0.0.0:{port}").parse().unwrap(), "pop3").unwrap();
        let v6 = bind(format!("[::]:{port}").parse().unwrap(), "pop3").unwrap();
        assert_eq!(v4.local_addr().unwrap().port(), port);
        assert_eq!(v6.local_addr().unwrap().port(), port);
        // Each answers its own family.
        std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        std::net::TcpStream::connect(("::1", port)).unwrap();
    }
}
