// Subscribes to the caller's live events with the `graphql-ws` client (the
// one the React app uses) and prints one JSON line per message on stdout:
// {"ready":true} once acknowledged, then {"event": …, "receivedAt": ms}, and
// {"closed": code} when the server closes the socket.
//
//   WS_URL=ws://127.0.0.1:8080/graphql/ws TOKEN=… node subscribe.mjs
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const url = process.env.WS_URL;
const token = process.env.TOKEN;
const print = (value) => process.stdout.write(JSON.stringify(value) + '\n');

const client = createClient({
  url,
  webSocketImpl: WebSocket,
  // The React app's form: the bearer token in the connection_init payload.
  connectionParams: { authorization: `Bearer ${token}` },
  keepAlive: 10_000,
  retryAttempts: 0,
  lazy: false,
  on: {
    connected: () => print({ ready: true }),
    closed: (event) => {
      print({ closed: event.code, reason: event.reason });
      process.exit(0);
    },
  },
});

client.subscribe(
  {
    query: `subscription {
      connectionEvents { kind connectionId status previousStatus at
        health { consecutiveFailures lastError { code message } } }
    }`,
  },
  {
    next: (message) => print({ event: message, receivedAt: Date.now() }),
    error: (error) => print({ error: String(error?.message ?? error?.code ?? error) }),
    complete: () => print({ complete: true }),
  },
);
