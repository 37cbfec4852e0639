//! A small GraphQL-over-WebSocket client for the tests (tokio-tungstenite),
//! speaking either protocol and checking every frame it is given.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const TRANSPORT_WS: &str = "graphql-transport-ws";
pub const LEGACY: &str = "graphql-ws";

pub struct WsClient {
    pub protocol: &'static str,
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Messages read while looking for another subscription's.
    held: std::collections::VecDeque<Value>,
}

/// What the server did next.
#[derive(Debug)]
pub enum Frame {
    Json(Value),
    Closed(u16, String),
    Silent,
}

impl WsClient {
    pub async fn connect(base_url: &str, protocol: &'static str) -> Self {
        let url = format!("{}/graphql/ws", base_url.replace("http://", "ws://"));
        let mut request = url.into_client_request().expect("request");
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(protocol));
        let (socket, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("WebSocket connects");
        assert_eq!(
            response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok()),
            Some(protocol)
        );
        Self {
            protocol,
            socket,
            held: Default::default(),
        }
    }

    /// Connects, sends `connection_init` with the token and waits for the ack.
    pub async fn authenticated(base_url: &str, protocol: &'static str, token: &str) -> Self {
        let mut client = Self::connect(base_url, protocol).await;
        client
            .send(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } }))
            .await;
        match client.next_message(Duration::from_secs(5)).await {
            Frame::Json(m) if m["type"] == "connection_ack" => client,
            other => panic!("expected connection_ack, got {other:?}"),
        }
    }

    pub async fn send(&mut self, message: Value) {
        self.send_text(message.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        self.socket.send(Message::Text(text.into())).await.expect("send");
    }

    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        let kind = if self.protocol == LEGACY { "start" } else { "subscribe" };
        self.send(json!({ "id": id, "type": kind, "payload": { "query": query, "variables": variables } }))
            .await;
    }

    /// The next protocol message, keep-alives included; answers transport pings.
    pub async fn next_frame(&mut self, within: Duration) -> Frame {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.socket.next()).await;
            match next {
                Err(_) => return Frame::Silent,
                Ok(None) => return Frame::Closed(1006, "no close frame".into()),
                Ok(Some(Err(e))) => return Frame::Closed(1006, e.to_string()),
                Ok(Some(Ok(Message::Text(text)))) => {
                    return Frame::Json(serde_json::from_str(text.as_str()).expect("server sends JSON"));
                }
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return match frame {
                        Some(f) => Frame::Closed(u16::from(f.code), f.reason.to_string()),
                        None => Frame::Closed(u16::from(CloseCode::Status), String::new()),
                    };
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// The next message that is not a keep-alive (pings are answered).
    pub async fn next_message(&mut self, within: Duration) -> Frame {
        if let Some(held) = self.held.pop_front() {
            return Frame::Json(held);
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_frame(left).await {
                Frame::Json(m) if m["type"] == "ping" => self.send(json!({ "type": "pong" })).await,
                Frame::Json(m) if m["type"] == "ka" => {}
                other => return other,
            }
        }
    }

    /// The next `next`/`data` payload for subscription `id`; other
    /// subscriptions' messages are held for later (their order is not defined).
    pub async fn next_payload(&mut self, id: &str, within: Duration) -> Value {
        let is_result = |m: &Value| m["id"] == id && (m["type"] == "next" || m["type"] == "data");
        if let Some(at) = self.held.iter().position(is_result) {
            return self.held.remove(at).expect("held")["payload"].clone();
        }
        let deadline = tokio::time::Instant::now() + within;
        let mut later = Vec::new();
        let found = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let held = std::mem::take(&mut self.held);
            let frame = self.next_message(left).await;
            self.held = held;
            match frame {
                Frame::Json(m) if is_result(&m) => break m["payload"].clone(),
                Frame::Json(m) if m["id"].is_string() && m["id"] != id => later.push(m),
                other => panic!("expected a result for {id}, got {other:?}"),
            }
        };
        self.held.extend(later);
        found
    }

    /// Asserts nothing but keep-alives arrives for `within`.
    pub async fn expect_silence(&mut self, within: Duration) {
        match self.next_message(within).await {
            Frame::Silent => {}
            other => panic!("expected nothing, got {other:?}"),
        }
    }

    pub async fn expect_close(&mut self, within: Duration) -> (u16, String) {
        match self.next_message(within).await {
            Frame::Closed(code, reason) => (code, reason),
            other => panic!("expected the socket to close, got {other:?}"),
        }
    }
}
