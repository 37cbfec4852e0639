//! The two GraphQL-over-WebSocket protocols, as far as the session needs to
//! look into them: which client message is which, what may be forwarded to
//! the executor, and the server's own replies (errors, keep-alives). Close
//! codes follow graphql-transport-ws (4400 bad message, 4401 subscribe
//! before init, 4403 forbidden, 4408 init timeout, 4409 duplicate id, 4429
//! repeated init); the legacy protocol answers with `error` messages.

use async_graphql::http::WebSocketProtocols;
use async_graphql::parser::types::OperationType;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashSet;

/// Which protocol a socket speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `graphql-transport-ws`, the protocol of the `graphql-ws` npm client.
    TransportWs,
    /// `graphql-ws`, the legacy subscriptions-transport-ws protocol.
    Legacy,
}

impl From<WebSocketProtocols> for Protocol {
    fn from(p: WebSocketProtocols) -> Self {
        match p {
            // async-graphql's naming is the other way round (STACK.md P5).
            WebSocketProtocols::GraphQLWS => Protocol::TransportWs,
            WebSocketProtocols::SubscriptionsTransportWS => Protocol::Legacy,
        }
    }
}

/// What to do with one client message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    /// Answer the client directly; the executor never sees the message.
    Reply(String),
    Close(u16, String),
}

#[derive(Deserialize)]
struct ClientMessage<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(borrow)]
    id: Option<&'a str>,
    payload: Option<Value>,
}

/// The first message: must be `connection_init`; returns its payload.
pub fn init_payload(protocol: Protocol, text: &str) -> Result<Value, (u16, &'static str)> {
    match serde_json::from_str::<ClientMessage>(text) {
        Ok(m) if m.kind == "connection_init" => Ok(m.payload.unwrap_or(Value::Null)),
        Ok(m) if protocol == Protocol::TransportWs && m.kind == "subscribe" => Err((4401, "Unauthorized")),
        _ => Err((4400, "Expected connection_init")),
    }
}

/// The bearer token from a `connection_init` payload: `{"authorization": "Bearer …"}`
/// or `{"headers": {"Authorization": "Bearer …"}}` (either capitalisation).
pub fn authorization(payload: &Value) -> Option<&str> {
    fn field(v: &Value) -> Option<&str> {
        v.get("authorization")
            .or_else(|| v.get("Authorization"))
            .and_then(Value::as_str)
    }
    field(payload).or_else(|| payload.get("headers").and_then(field))
}

/// The subscriptions a socket holds, and the checks on what it asks for next.
pub struct Subscriptions {
    protocol: Protocol,
    max: usize,
    active: HashSet<String>,
}

impl Subscriptions {
    pub fn new(protocol: Protocol, max: usize) -> Self {
        Self {
            protocol,
            max,
            active: HashSet::new(),
        }
    }

    /// Judges a client message sent after the handshake.
    pub fn inspect(&mut self, text: &str) -> Verdict {
        let Ok(message) = serde_json::from_str::<ClientMessage>(text) else {
            return self.invalid("Invalid message received");
        };
        let (start, stop) = match self.protocol {
            Protocol::TransportWs => ("subscribe", "complete"),
            Protocol::Legacy => ("start", "stop"),
        };
        match (self.protocol, message.kind) {
            (_, kind) if kind == start => self.start(message.id, message.payload.as_ref()),
            (_, kind) if kind == stop => {
                if let Some(id) = message.id {
                    self.active.remove(id);
                }
                Verdict::Forward
            }
            (Protocol::TransportWs, "connection_init") => {
                Verdict::Close(4429, "Too many initialisation requests".into())
            }
            (Protocol::TransportWs, "ping" | "pong") => Verdict::Forward,
            (Protocol::Legacy, "connection_init" | "connection_terminate") => Verdict::Forward,
            _ => self.invalid("Invalid message type"),
        }
    }

    /// Notes the server's `complete` and `error` messages, which end a subscription.
    pub fn observe_server(&mut self, text: &str) {
        if !(text.contains("\"complete\"") || text.contains("\"error\"")) {
            return;
        }
        if let Ok(message) = serde_json::from_str::<ClientMessage>(text)
            && matches!(message.kind, "complete" | "error")
            && let Some(id) = message.id
        {
            self.active.remove(id);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.active.len()
    }

    fn start(&mut self, id: Option<&str>, payload: Option<&Value>) -> Verdict {
        let Some(id) = id.filter(|id| !id.is_empty() && id.len() <= 128) else {
            return self.invalid("A subscribe message needs an id");
        };
        if self.active.contains(id) {
            return match self.protocol {
                Protocol::TransportWs => Verdict::Close(4409, format!("Subscriber for {id} already exists")),
                Protocol::Legacy => self.error(id, "a subscription with this id is already running"),
            };
        }
        if self.active.len() >= self.max {
            return self.error(
                id,
                &format!("too many subscriptions on this socket (at most {})", self.max),
            );
        }
        let query = payload.and_then(|p| p.get("query")).and_then(Value::as_str);
        let operation = payload.and_then(|p| p.get("operationName")).and_then(Value::as_str);
        if let Some(query) = query
            && let Some(kind) = operation_type(query, operation)
            && kind != OperationType::Subscription
        {
            return self.error(
                id,
                "only subscriptions are served over WebSocket; send queries and mutations with POST /graphql",
            );
        }
        self.active.insert(id.to_string());
        Verdict::Forward
    }

    /// A protocol violation: transport-ws closes, legacy answers with an error.
    fn invalid(&self, message: &str) -> Verdict {
        match self.protocol {
            Protocol::TransportWs => Verdict::Close(4400, message.into()),
            Protocol::Legacy => {
                Verdict::Reply(json!({ "type": "error", "payload": { "message": message } }).to_string())
            }
        }
    }

    /// An error for one operation; the socket stays open.
    fn error(&self, id: &str, message: &str) -> Verdict {
        let payload = json!({ "message": message, "extensions": { "code": "BAD_USER_INPUT" } });
        Verdict::Reply(match self.protocol {
            Protocol::TransportWs => json!({ "id": id, "type": "error", "payload": [payload] }).to_string(),
            Protocol::Legacy => json!({ "id": id, "type": "error", "payload": payload }).to_string(),
        })
    }
}

/// The server's keep-alive message.
pub fn keepalive(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::TransportWs => r#"{"type":"ping"}"#,
        Protocol::Legacy => r#"{"type":"ka"}"#,
    }
}

/// The type of the operation a document would run; `None` when it does not
/// parse or names no single operation (the executor then reports the error).
fn operation_type(query: &str, name: Option<&str>) -> Option<OperationType> {
    let document = async_graphql::parser::parse_query(query).ok()?;
    let mut operations = document.operations.iter();
    match name {
        Some(name) => operations.find(|(n, _)| n.is_some_and(|n| n.as_str() == name)),
        None => operations.next(),
    }
    .map(|(_, op)| op.node.ty)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "subscription { auditEvents { id } }";

    fn subscribe(id: &str, query: &str) -> String {
        json!({ "id": id, "type": "subscribe", "payload": { "query": query } }).to_string()
    }

    #[test]
    fn the_token_is_found_in_both_payload_forms() {
        assert_eq!(authorization(&json!({ "authorization": "Bearer a" })), Some("Bearer a"));
        assert_eq!(authorization(&json!({ "Authorization": "Bearer b" })), Some("Bearer b"));
        assert_eq!(
            authorization(&json!({ "headers": { "Authorization": "Bearer c" } })),
            Some("Bearer c")
        );
        assert_eq!(
            authorization(&json!({ "headers": { "authorization": "Bearer d" } })),
            Some("Bearer d")
        );
        assert_eq!(authorization(&json!({ "token": "x" })), None);
        assert_eq!(authorization(&json!({ "authorization": 5 })), None);
        assert_eq!(authorization(&Value::Null), None);
    }

    #[test]
    fn the_first_message_must_be_connection_init() {
        let p = Protocol::TransportWs;
        assert!(init_payload(p, r#"{"type":"connection_init","payload":{"a":1}}"#).is_ok());
        assert_eq!(init_payload(p, &subscribe("1", SUB)), Err((4401, "Unauthorized")));
        assert_eq!(init_payload(p, "garbage"), Err((4400, "Expected connection_init")));
        assert_eq!(
            init_payload(Protocol::Legacy, r#"{"type":"start"}"#),
            Err((4400, "Expected connection_init"))
        );
    }

    #[test]
    fn subscriptions_are_capped_per_socket_and_freed_when_they_end() {
        let mut subs = Subscriptions::new(Protocol::TransportWs, 2);
        assert_eq!(subs.inspect(&subscribe("a", SUB)), Verdict::Forward);
        assert_eq!(subs.inspect(&subscribe("b", SUB)), Verdict::Forward);
        let Verdict::Reply(reply) = subs.inspect(&subscribe("c", SUB)) else {
            panic!("expected an error reply")
        };
        assert!(
            reply.contains("too many subscriptions") && reply.contains(r#""id":"c""#),
            "{reply}"
        );
        subs.inspect(r#"{"type":"complete","id":"a"}"#);
        assert_eq!(subs.inspect(&subscribe("c", SUB)), Verdict::Forward);
        subs.observe_server(r#"{"type":"complete","id":"b"}"#);
        subs.observe_server(r#"{"type":"next","id":"c","payload":{"data":{"x":"complete"}}}"#);
        assert_eq!(subs.len(), 1);
    }

    #[test]
    fn bad_messages_are_answered_as_each_protocol_says() {
        let mut subs = Subscriptions::new(Protocol::TransportWs, 5);
        assert_eq!(subs.inspect(&subscribe("a", SUB)), Verdict::Forward);
        assert!(matches!(subs.inspect(&subscribe("a", SUB)), Verdict::Close(4409, _)));
        assert!(matches!(subs.inspect(r#"{"type":"bogus"}"#), Verdict::Close(4400, _)));
        assert!(matches!(subs.inspect("[1,2"), Verdict::Close(4400, _)));
        assert!(matches!(
            subs.inspect(r#"{"type":"subscribe","payload":{}}"#),
            Verdict::Close(4400, _)
        ));
        assert!(matches!(
            subs.inspect(r#"{"type":"connection_init"}"#),
            Verdict::Close(4429, _)
        ));
        assert_eq!(subs.inspect(r#"{"type":"ping"}"#), Verdict::Forward);

        let mut legacy = Subscriptions::new(Protocol::Legacy, 5);
        assert!(
            matches!(legacy.inspect(r#"{"type":"bogus"}"#), Verdict::Reply(r) if r.contains("Invalid message type"))
        );
        let start = json!({ "id": "1", "type": "start", "payload": { "query": SUB } }).to_string();
        assert_eq!(legacy.inspect(&start), Verdict::Forward);
        assert!(matches!(legacy.inspect(&start), Verdict::Reply(r) if r.contains("already running")));
    }

    #[test]
    fn only_subscriptions_run_over_the_socket() {
        let mut subs = Subscriptions::new(Protocol::TransportWs, 5);
        for query in [
            "{ connections { id } }",
            "mutation { revokeConnection(id: \"x\") { id } }",
        ] {
            assert!(
                matches!(subs.inspect(&subscribe("q", query)), Verdict::Reply(r) if r.contains("only subscriptions")),
                "{query}"
            );
        }
        let named = json!({ "id": "n", "type": "subscribe", "payload": {
            "query": "query A { connections { id } } subscription B { auditEvents { id } }",
            "operationName": "B" } });
        assert_eq!(subs.inspect(&named.to_string()), Verdict::Forward);
        // A document that does not parse goes to the executor, which reports it.
        assert_eq!(subs.inspect(&subscribe("p", "subscription {")), Verdict::Forward);
        assert_eq!(subs.len(), 2);
    }
}
