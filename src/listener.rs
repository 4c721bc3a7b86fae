//! The broker's listening socket, as hostile clients meet it. Every wait has
//! a bound and every queue a cap:
//!
//! - with `[server] tls`, the TLS handshake must finish within
//!   `header_read_timeout`;
//! - a request's head must arrive whole within `header_read_timeout`,
//!   counted from when the connection starts waiting for it, so an idle
//!   keep-alive connection is closed after it too;
//! - a connection on which nothing is read or written for `idle_timeout` is
//!   closed (a client that stops reading, a body that stalls);
//! - a request body must arrive whole within `body_read_timeout`;
//! - beyond `max_connections` in all, or `max_connections_per_client` from
//!   one client (`max_connections_per_local_client` from this host, where
//!   every local agent connects from; a client is `peer::client_key` of its
//!   address), the open connection idle the longest is closed to make room
//!   (a silent socket has been idle since it connected): idle sockets cannot
//!   keep an agent out. Only when every connection is busy is the new one answered 503
//!   and closed, never queued. Trusted proxies count toward the first cap
//!   only.
//!
//! The decisions are `admit` and `victim`, functions of plain data; the rest
//! is the accept loop that applies them.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tower::ServiceExt;

use crate::config::ServerConfig;

/// How long requests in flight may take to finish once the broker stops.
const DRAIN: Duration = Duration::from_secs(30);

/// The caps a connection is admitted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub total: usize,
    pub per_client: usize,
    pub per_local_client: usize,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Broker { limit: usize },
    Client { limit: usize },
}

/// Whether one more connection may be served, given how many are open in
/// all and from its client. A trusted proxy carries many clients and is held
/// to the broker's cap only.
pub fn admit(caps: &Caps, open: usize, from_client: usize, client: IpAddr, trusted: bool) -> Result<(), Full> {
    if open >= caps.total {
        return Err(Full::Broker { limit: caps.total });
    }
    let limit = if client.is_loopback() {
        caps.per_local_client
    } else {
        caps.per_client
    };
    if !trusted && from_client >= limit {
        return Err(Full::Client { limit });
    }
    Ok(())
}

/// What eviction knows of an open connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnView {
    pub id: u64,
    pub client: IpAddr,
    /// Requests being answered now.
    pub busy: usize,
    /// When it last started or finished a request (or connected), in ms.
    pub last_ms: u64,
}

/// Which open connection to close to make room for a new one under `full`:
/// an idle one (no request being answered), the one idle the longest (a
/// socket that never sent a request has been idle since it connected, so
/// silent ones go first, and a connection that has just arrived last);
/// among the new connection's client's own when the client's cap is full.
pub fn victim(open: &[ConnView], full: Full, client: IpAddr) -> Option<u64> {
    open.iter()
        .filter(|c| c.busy == 0)
        .filter(|c| matches!(full, Full::Broker { .. }) || c.client == client)
        .min_by_key(|c| c.last_ms)
        .map(|c| c.id)
}

/// One open connection, as the registry keeps it.
struct Conn {
    client: IpAddr,
    state: Arc<ConnState>,
}

/// What a connection's task and its service share with the registry.
struct ConnState {
    busy: std::sync::atomic::AtomicUsize,
    last_ms: std::sync::atomic::AtomicU64,
    /// Asks the connection to finish what it is doing and close.
    close: tokio::sync::Notify,
}

/// Open connections, in all and by client.
struct Open {
    started: tokio::time::Instant,
    next: u64,
    conns: HashMap<u64, Conn>,
    by_client: HashMap<IpAddr, usize>,
}

impl Open {
    fn new() -> Open {
        Open {
            started: tokio::time::Instant::now(),
            next: 0,
            conns: HashMap::new(),
            by_client: HashMap::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn remove(&mut self, id: u64) {
        if let Some(conn) = self.conns.remove(&id)
            && let Some(n) = self.by_client.get_mut(&conn.client)
        {
            *n -= 1;
            if *n == 0 {
                self.by_client.remove(&conn.client);
            }
        }
    }
}

/// A connection's slot, in each of its requests' extensions: a tunnel the
/// forward proxy opens on the connection holds it, so that the tunnel
/// counts among the open connections (and keeps its place) for as long as
/// it lives, past the HTTP connection that carried its CONNECT.
#[derive(Clone)]
pub struct ConnectionSlot(Arc<Slot>);

impl ConnectionSlot {
    /// Counts the connection busy, never closed as idle to make room, until
    /// the hold drops.
    pub fn hold(&self) -> TunnelHold {
        self.0.state.busy.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        TunnelHold(self.0.clone())
    }
}

/// A tunnel's hold on its connection's slot.
pub struct TunnelHold(Arc<Slot>);

impl TunnelHold {
    /// Completes when the broker asks the connection to close.
    pub async fn closed(&self) {
        self.0.state.close.notified().await;
    }
}

impl Drop for TunnelHold {
    fn drop(&mut self) {
        self.0.state.busy.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A connection's place among the open ones, given back when it drops.
struct Slot {
    open: Arc<Mutex<Open>>,
    id: u64,
    state: Arc<ConnState>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.lock().expect("open connections lock").remove(self.id);
    }
}

/// Admits a connection from `client` (its `peer::client_key`), closing the
/// longest-idle one to make room when a cap is full.
fn take_slot(open: &Arc<Mutex<Open>>, caps: &Caps, client: IpAddr, trusted: bool) -> Result<Slot, Full> {
    use std::sync::atomic::Ordering;
    let mut counts = open.lock().expect("open connections lock");
    let from_client = counts.by_client.get(&client).copied().unwrap_or(0);
    if let Err(full) = admit(caps, counts.conns.len(), from_client, client, trusted) {
        let views: Vec<ConnView> = counts
            .conns
            .iter()
            .map(|(id, c)| ConnView {
                id: *id,
                client: c.client,
                busy: c.state.busy.load(Ordering::Acquire),
                last_ms: c.state.last_ms.load(Ordering::Acquire),
            })
            .collect();
        let id = victim(&views, full, client).ok_or(full)?;
        if let Some(conn) = counts.conns.get(&id) {
            conn.state.close.notify_one();
        }
        // Its place is the new connection's from now on.
        counts.remove(id);
    }
    let id = counts.next;
    counts.next += 1;
    let state = Arc::new(ConnState {
        busy: 0.into(),
        last_ms: counts.now_ms().into(),
        close: tokio::sync::Notify::new(),
    });
    counts.conns.insert(
        id,
        Conn {
            client,
            state: state.clone(),
        },
    );
    *counts.by_client.entry(client).or_insert(0) += 1;
    Ok(Slot {
        open: open.clone(),
        id,
        state,
    })
}

/// Serves `app` on `listener` until `shutdown` completes, then lets the
/// requests in flight finish (for up to `DRAIN`).
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    server: &ServerConfig,
    caps: Caps,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    // HTTP/1.1 only: agents' clients speak it, and a server that first
    // sniffs for HTTP/2 would wait on a silent socket with no timer running.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout);
    let app = with_body_deadline(app, server.body_read_timeout);
    let open = Arc::new(Mutex::new(Open::new()));
    let (stopping, stop) = tokio::sync::watch::channel(false);
    let trusted = server.trusted_proxies.clone();
    let idle = server.idle_timeout;
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let handshake_limit = server.header_read_timeout;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, most likely: wait rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Streamed answers go out as the upstream sends them; with Nagle's
        // algorithm a chunk would wait for the agent's delayed ACK.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY on an agent's connection");
        }
        let local = stream.local_addr().ok().map(LocalAddr);
        let is_trusted = trusted.iter().any(|net| net.contains(&peer.ip()));
        let slot = match take_slot(&open, &caps, crate::peer::client_key(peer.ip()), is_trusted) {
            Ok(slot) => slot,
            Err(full) => {
                tokio::spawn(turn_away(stream, full));
                continue;
            }
        };
        let slot = Arc::new(slot);
        let (on_request, on_response) = (slot.state.clone(), slot.state.clone());
        let held = ConnectionSlot(slot.clone());
        let (clock_in, clock_out) = (open.clone(), open.clone());
        let service = TowerToHyperService::new(
            app.clone()
                .map_request(move |mut request: Request<hyper::body::Incoming>| {
                    use std::sync::atomic::Ordering;
                    on_request.busy.fetch_add(1, Ordering::AcqRel);
                    on_request.last_ms.store(
                        clock_in.lock().expect("open connections lock").now_ms(),
                        Ordering::Release,
                    );
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request.extensions_mut().insert(held.clone());
                    if let Some(local) = local {
                        request.extensions_mut().insert(local);
                    }
                    request.map(Body::new)
                })
                .map_response(move |response| {
                    use std::sync::atomic::Ordering;
                    on_response.busy.fetch_sub(1, Ordering::AcqRel);
                    on_response.last_ms.store(
                        clock_out.lock().expect("open connections lock").now_ms(),
                        Ordering::Release,
                    );
                    response
                }),
        );
        let stream = Idle::new(stream, idle);
        let (builder, tls, stop) = (builder.clone(), tls.clone(), stop.clone());
        tokio::spawn(async move {
            let Some(tls) = tls else {
                return drive(
                    builder.serve_connection(TokioIo::new(stream), service).with_upgrades(),
                    slot,
                    stop,
                    peer,
                )
                .await;
            };
            // The handshake is held to the time a request's head has, and
            // ends when the connection is evicted or the broker stops: a
            // silent client must not hold a socket its slot no longer counts.
            let handshake = tokio::time::timeout(handshake_limit, tls.accept(stream));
            let accepted = tokio::select! {
                accepted = handshake => accepted,
                () = slot.state.close.notified() => return,
                () = stopped(stop.clone()) => return,
            };
            match accepted {
                Ok(Ok(stream)) => {
                    drive(
                        builder.serve_connection(TokioIo::new(stream), service).with_upgrades(),
                        slot,
                        stop,
                        peer,
                    )
                    .await
                }
                Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
    drop(listener);
    let _ = stopping.send(true);
    let drained = async {
        while !open.lock().expect("open connections lock").conns.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(DRAIN, drained).await.is_err() {
        tracing::warn!("requests still in flight after {DRAIN:?}; stopping anyway");
    }
    Ok(())
}

/// Serves one connection until it ends, the broker evicts it, or the broker
/// stops (then what is in flight finishes).
async fn drive<C>(connection: C, slot: Arc<Slot>, stop: tokio::sync::watch::Receiver<bool>, peer: std::net::SocketAddr)
where
    C: Graceful,
{
    let stopped = stopped(stop);
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = slot.state.close.notified() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
        () = stopped => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, %peer, "connection ended with an error");
    }
}

/// A connection that can be asked to finish what is in flight and close.
/// Connections are served with upgrades, for the forward proxy's CONNECT,
/// and hyper-util's own trait does not cover those.
trait Graceful: Future<Output = Result<(), hyper::Error>> {
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>);
}

impl<I, S, B> Graceful for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>) {
        hyper::server::conn::http1::UpgradeableConnection::graceful_shutdown(self);
    }
}

/// Completes when the broker stops.
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Answers a connection beyond a cap with 503 and closes it, without
/// reading what it sent.
async fn turn_away(mut stream: TcpStream, full: Full) {
    let detail = match full {
        Full::Broker { limit } => format!("the broker serves at most {limit} connections at once"),
        Full::Client { limit } => format!("the broker serves at most {limit} connections at once from one address"),
    };
    let body = crate::api::Problem::new(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "too_many_connections",
        "Too many connections",
        detail,
    )
    .guidance("Close connections you are not using and try again in a few seconds. This is not a permission problem.")
    .answer()
    .to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// The address a connection reached the broker at: an absolute-form
/// request for it is the broker's own, not one to forward.
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr(pub std::net::SocketAddr);

/// `app` with every request body held to `limit`: what the listener serves,
/// and what serves the requests inside the forward proxy's tunnels.
pub fn with_body_deadline(app: Router, limit: Duration) -> Router {
    app.layer(axum::middleware::from_fn_with_state(limit, body_deadline))
}

/// A request body must arrive whole by a deadline; a body that is still
/// coming then ends in an error, and the connection with it.
async fn body_deadline(
    axum::extract::State(limit): axum::extract::State<Duration>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    if http_body::Body::is_end_stream(request.body()) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let body = Body::new(Deadline {
        inner: body,
        sleep: Box::pin(tokio::time::sleep(limit)),
        limit,
    });
    next.run(Request::from_parts(parts, body)).await
}

struct Deadline {
    inner: Body,
    sleep: Pin<Box<Sleep>>,
    limit: Duration,
}

impl http_body::Body for Deadline {
    type Data = axum::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            let limit = self.limit;
            return Poll::Ready(Some(Err(
                format!("the request body did not arrive within {limit:?}").into()
            )));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A socket that fails once nothing has been read or written on it for
/// `limit`, so that a stalled connection is closed.
struct Idle {
    stream: TcpStream,
    sleep: Pin<Box<Sleep>>,
    limit: Duration,
    /// When bytes last moved. The timer is moved on only when it fires, not
    /// at every read and write.
    last: tokio::time::Instant,
}

impl Idle {
    fn new(stream: TcpStream, limit: Duration) -> Idle {
        Idle {
            stream,
            sleep: Box::pin(tokio::time::sleep(limit)),
            limit,
            last: tokio::time::Instant::now(),
        }
    }

    fn active(&mut self) {
        self.last = tokio::time::Instant::now();
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            let deadline = self.last + self.limit;
            if deadline <= tokio::time::Instant::now() {
                return true;
            }
            self.sleep.as_mut().reset(deadline);
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "nothing was read or written for too long")
}

impl AsyncRead for Idle {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.active();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Idle {
    /// What a write came to: activity when bytes went out, an error once
    /// the socket has been idle too long.
    fn wrote(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.active();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }
}

impl AsyncWrite for Idle {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, data);
        self.wrote(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.wrote(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The descriptors the process may open: raised to the hard limit, and the
/// number left for connections once the broker's own files are counted.
pub fn raise_descriptor_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}

/// The caps of a configuration, the total held below what the descriptor
/// limit allows (a connection is a descriptor, an upstream one another).
pub fn caps(server: &ServerConfig, descriptors: Option<u64>) -> Caps {
    /// Descriptors kept for the store, logs, upstream connections.
    const RESERVED: u64 = 256;
    let total = match descriptors {
        Some(n) => server.max_connections.min(
            usize::try_from(n.saturating_sub(RESERVED) / 2)
                .unwrap_or(usize::MAX)
                .max(1),
        ),
        None => server.max_connections,
    };
    if total < server.max_connections {
        tracing::warn!(
            configured = server.max_connections,
            effective = total,
            "[server] max_connections is above what the descriptor limit allows; raise LimitNOFILE (ulimit -n)"
        );
    }
    Caps {
        total,
        per_client: server.max_connections_per_client,
        per_local_client: server.max_connections_per_local_client,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: Caps = Caps {
        total: 10,
        per_client: 2,
        per_local_client: 5,
    };

    #[test]
    fn connections_are_admitted_under_every_cap() {
        let remote: IpAddr = "203.0.113.9".parse().unwrap();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(admit(&CAPS, 0, 0, remote, false), Ok(()));
        assert_eq!(admit(&CAPS, 3, 2, remote, false), Err(Full::Client { limit: 2 }));
        assert_eq!(admit(&CAPS, 3, 4, local, false), Ok(()));
        assert_eq!(admit(&CAPS, 3, 5, local, false), Err(Full::Client { limit: 5 }));
        // A trusted proxy carries many clients: only the broker's cap holds.
        assert_eq!(admit(&CAPS, 9, 9, remote, true), Ok(()));
        assert_eq!(admit(&CAPS, 10, 0, remote, true), Err(Full::Broker { limit: 10 }));
    }

    #[test]
    fn room_is_made_by_closing_the_longest_idle_connection() {
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "203.0.113.9".parse().unwrap();
        let conn = |id, client, busy, last_ms| ConnView {
            id,
            client,
            busy,
            last_ms,
        };
        let open = [conn(1, a, 0, 10), conn(2, a, 0, 50), conn(3, a, 1, 0), conn(4, b, 0, 5)];
        // Idle before busy, the longest idle first; a new arrival last.
        assert_eq!(victim(&open, Full::Client { limit: 3 }, a), Some(1));
        assert_eq!(victim(&open, Full::Broker { limit: 4 }, a), Some(4));
        assert_eq!(victim(&open[1..3], Full::Client { limit: 2 }, a), Some(2));
        // A client's cap closes only that client's connections.
        assert_eq!(victim(&open[..1], Full::Client { limit: 1 }, b), None);
        // All busy: nothing to close.
        assert_eq!(victim(&[conn(3, a, 1, 0)], Full::Client { limit: 1 }, a), None);
    }

    #[tokio::test]
    async fn slots_are_given_back_and_an_idle_one_is_taken_over() {
        use std::sync::atomic::Ordering;
        let open = Arc::new(Mutex::new(Open::new()));
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        let first = take_slot(&open, &CAPS, client, false).unwrap();
        let second = take_slot(&open, &CAPS, client, false).unwrap();
        second.state.busy.fetch_add(1, Ordering::AcqRel);
        // The cap is full: the idle one is asked to close and its place
        // taken (the busy one, though older, is left).
        let third = take_slot(&open, &CAPS, client, false).unwrap();
        tokio::time::timeout(Duration::from_secs(1), first.state.close.notified())
            .await
            .unwrap();
        assert_eq!(open.lock().unwrap().conns.len(), 2);
        drop(first);
        assert_eq!(
            open.lock().unwrap().conns.len(),
            2,
            "an evicted slot is not given back twice"
        );
        // Every connection busy: the next one is turned away.
        third.state.busy.fetch_add(1, Ordering::AcqRel);
        assert!(matches!(
            take_slot(&open, &CAPS, client, false),
            Err(Full::Client { limit: 2 })
        ));
        drop((second, third));
        assert!(open.lock().unwrap().conns.is_empty());
    }
}
