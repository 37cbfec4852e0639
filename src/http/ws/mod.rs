//! `/graphql/ws`: GraphQL subscriptions over WebSocket, in both protocols.
//! The session authenticates `connection_init` itself (4403 on a bad token,
//! 4408 when it never comes), then hands the socket to async-graphql's
//! protocol engine, standing between the two to cap subscriptions, refuse
//! queries and mutations, send keep-alives, and close the socket when the
//! token expires or the server shuts down. Writes to a client that stops
//! reading time out; its subscriptions meanwhile lose their oldest events.

mod protocol;

use super::{HttpState, RequestLimits};
use crate::auth::{Principal, Verifier, bearer_token};
use crate::config::WebSocketLimits;
use crate::graphql::{AppSchema, GraphqlContext};
use async_graphql::Data;
use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, WebSocketProtocols, WsMessage};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use protocol::{Protocol, Subscriptions, Verdict};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, sleep_until, timeout};

/// Largest message a client may send (a subscribe with its query).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// A client that has not taken a message within this time is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Initial read buffer of a socket. Idle sockets are most sockets, and
/// clients send little (an init, a few subscribes, pongs): it grows for a
/// larger message, up to [`MAX_MESSAGE_BYTES`].
const READ_BUFFER_BYTES: usize = 1024;
/// Client messages waiting for the protocol engine.
const ENGINE_QUEUE: usize = 16;

pub async fn handler(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let ip = super::client_ip::client_ip(peer, &headers, state.trusted_proxy_hops);
    if let Err(wait) = state.limits.check_ip(ip) {
        return super::graphql::rate_limited(wait, "too many requests from this address");
    }
    let Some(protocol) = requested_protocol(&headers) else {
        return (
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Protocol must be graphql-transport-ws or graphql-ws",
        )
            .into_response();
    };
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let request_id = headers
        .get(super::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let context = GraphqlContext {
        principal: None,
        request_id,
        ip: Some(ip.to_string()),
        user_agent,
    };
    // Boxed: the task holds a pointer, not a copy at every layer of its future.
    let session = Box::new(Session::new(SessionState::of(&state), protocol, context));
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        // Idle sockets are most sockets: keep their buffers small.
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .on_upgrade(move |socket| session.run(socket))
}

/// The first protocol the client offers that we speak.
fn requested_protocol(headers: &HeaderMap) -> Option<WebSocketProtocols> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().parse().ok())
}

struct Session {
    state: SessionState,
    engine_protocol: WebSocketProtocols,
    protocol: Protocol,
    context: GraphqlContext,
}

/// What a socket needs of the server for its whole life; only that, since
/// every idle socket holds its own copy (in its task, more than once).
struct SessionState {
    schema: AppSchema,
    verifier: Arc<Verifier>,
    limits: Arc<RequestLimits>,
    websocket: WebSocketLimits,
    shutdown: tokio::sync::watch::Receiver<()>,
}

impl SessionState {
    fn of(state: &HttpState) -> Self {
        Self {
            schema: state.schema.clone(),
            verifier: state.verifier.clone(),
            limits: state.limits.clone(),
            websocket: state.websocket,
            shutdown: state.shutdown.clone(),
        }
    }
}

/// Counts open sockets for `/metrics`.
struct ClientGauge;

impl ClientGauge {
    fn open() -> Self {
        metrics::gauge!("websocket_clients").increment(1.0);
        ClientGauge
    }
}

impl Drop for ClientGauge {
    fn drop(&mut self) {
        metrics::gauge!("websocket_clients").decrement(1.0);
    }
}

enum First {
    Text(String),
    Gone,
    TooBig,
}

impl Session {
    fn new(state: SessionState, engine_protocol: WebSocketProtocols, context: GraphqlContext) -> Self {
        Self {
            state,
            protocol: engine_protocol.into(),
            engine_protocol,
            context,
        }
    }

    /// Splits the socket before anything waits, so that the task does not
    /// keep the (moved-out) socket beside its two halves.
    fn run(self: Box<Self>, socket: WebSocket) -> impl Future<Output = ()> + Send + 'static {
        let (sink, stream) = socket.split();
        self.session(sink, stream)
    }

    async fn session(mut self: Box<Self>, mut sink: SplitSink<WebSocket, Message>, mut stream: SplitStream<WebSocket>) {
        let _gauge = ClientGauge::open();
        let limits = self.state.websocket;

        let first = match timeout(limits.init_timeout, first_text(&mut stream)).await {
            Err(_) => return close(&mut sink, 4408, "Connection initialisation timeout").await,
            Ok(First::Gone) => return,
            Ok(First::TooBig) => return close(&mut sink, 1009, "Message too big").await,
            Ok(First::Text(text)) => text,
        };
        let payload = match protocol::init_payload(self.protocol, &first) {
            Ok(payload) => payload,
            Err((code, reason)) => return close(&mut sink, code, reason).await,
        };
        let ip = self.context.ip.as_deref().and_then(|ip| ip.parse().ok());
        if let Some(ip) = ip
            && self.state.limits.auth_brake(ip).is_some()
        {
            return close(&mut sink, 4429, "Too many failed authentications").await;
        }
        // Boxed: a future is as large as its largest await, and this one is
        // done long before the socket's life ends (see BENCHMARKS.md).
        let principal = match Box::pin(self.authenticate(&payload)).await {
            Ok(principal) => principal,
            Err(reason) => {
                if let Some(ip) = ip {
                    self.state.limits.record_auth_failure(ip);
                }
                tracing::info!(%reason, "WebSocket authentication failed");
                return close(&mut sink, 4403, "Forbidden").await;
            }
        };
        // Not kept for the socket's life (it holds the token, too).
        drop(payload);
        self.serve(principal, first, &mut sink, &mut stream).await;
    }

    async fn authenticate(&self, payload: &serde_json::Value) -> Result<Principal, String> {
        let token = protocol::authorization(payload).ok_or("connection_init carries no authorization")?;
        let token = bearer_token(token).ok_or("the authorization must be `Bearer <token>`")?;
        self.state.verifier.verify(token).await.map_err(|e| e.to_string())
    }

    /// The authenticated session: the executor behind our checks until either side ends it.
    async fn serve(
        &mut self,
        principal: Principal,
        init: String,
        sink: &mut SplitSink<WebSocket, Message>,
        stream: &mut SplitStream<WebSocket>,
    ) {
        let limits = self.state.websocket;
        let expires_at = token_deadline(&principal);
        let mut data = Data::default();
        data.insert(GraphqlContext {
            principal: Some(principal),
            ..std::mem::take(&mut self.context)
        });
        // futures' channel: an idle one is a few hundred bytes smaller than tokio's.
        let (mut to_engine, from_client) = futures_channel::mpsc::channel::<String>(ENGINE_QUEUE);
        // The executor answers the init we already checked with its ack.
        let _ = to_engine.send(init).await;
        let engine = async_graphql::http::WebSocket::new(self.state.schema.clone(), from_client, self.engine_protocol)
            .connection_data(data);
        tokio::pin!(engine);
        let mut subscriptions = Subscriptions::new(self.protocol, limits.max_subscriptions);
        let mut keepalive =
            tokio::time::interval_at(Instant::now() + limits.keepalive_interval, limits.keepalive_interval);
        let mut shutdown = self.state.shutdown.clone();
        let expiry = sleep_until(expires_at);
        tokio::pin!(expiry);

        loop {
            tokio::select! {
                incoming = stream.next() => match incoming {
                    Some(Ok(Message::Text(text))) => match subscriptions.inspect(text.as_str()) {
                        Verdict::Forward => {
                            if to_engine.send(text.as_str().to_owned()).await.is_err() {
                                break;
                            }
                        }
                        Verdict::Reply(reply) => {
                            if !send(sink, reply).await {
                                break;
                            }
                        }
                        Verdict::Close(code, reason) => return close(sink, code, &reason).await,
                    },
                    Some(Ok(Message::Binary(_))) => {
                        return close(sink, 4400, "Binary messages are not supported").await;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Err(error)) => {
                        if is_too_big(&error) {
                            return close(sink, 1009, "Message too big").await;
                        }
                        break;
                    }
                },
                outgoing = engine.next() => match outgoing {
                    Some(WsMessage::Text(text)) => {
                        subscriptions.observe_server(&text);
                        if !send(sink, text).await {
                            break;
                        }
                    }
                    Some(WsMessage::Close(code, reason)) => return close(sink, code, &reason).await,
                    None => break,
                },
                _ = keepalive.tick() => {
                    if !send(sink, protocol::keepalive(self.protocol).to_owned()).await {
                        break;
                    }
                }
                _ = &mut expiry => return close(sink, 4403, "Forbidden: token expired").await,
                _ = shutdown.changed() => return close(sink, 1001, "Server shutting down").await,
            }
        }
        let _ = sink.close().await;
    }
}

/// When the token stops being accepted (its `exp` plus the leeway HTTP requests get too).
fn token_deadline(principal: &Principal) -> Instant {
    let until = principal.expires_at + chrono::Duration::seconds(crate::auth::LEEWAY_SECS as i64);
    Instant::now() + (until - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO)
}

async fn first_text(stream: &mut SplitStream<WebSocket>) -> First {
    while let Some(message) = stream.next().await {
        match message {
            Ok(Message::Text(text)) => return First::Text(text.as_str().to_owned()),
            Ok(Message::Binary(_)) => return First::Text(String::new()),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(Message::Close(_)) => return First::Gone,
            Err(error) if is_too_big(&error) => return First::TooBig,
            Err(_) => return First::Gone,
        }
    }
    First::Gone
}

fn is_too_big(error: &axum::Error) -> bool {
    use std::error::Error as _;
    let mut source = error.source();
    while let Some(inner) = source {
        if let Some(tungstenite) = inner.downcast_ref::<tokio_tungstenite::tungstenite::Error>() {
            return matches!(tungstenite, tokio_tungstenite::tungstenite::Error::Capacity(_));
        }
        source = inner.source();
    }
    false
}

/// Sends one message; false when the client is gone or stopped reading.
async fn send(sink: &mut SplitSink<WebSocket, Message>, text: String) -> bool {
    matches!(
        timeout(WRITE_TIMEOUT, sink.send(Message::Text(text.into()))).await,
        Ok(Ok(()))
    )
}

async fn close(sink: &mut SplitSink<WebSocket, Message>, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.chars().take(120).collect::<String>().into(),
    };
    let _ = timeout(WRITE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
    let _ = timeout(WRITE_TIMEOUT, sink.close()).await;
}
