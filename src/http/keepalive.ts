/**
 * HTTP/2 keepalive: a peer that vanished without closing (a pulled cable, a half-open
 * TCP connection, a frozen process) answers no PING, and its session is destroyed, which
 * ends its streams and frees what they hold.
 */
import type * as http2 from "node:http2";

/** Pings `session` every `intervalMs`; destroys it when a ping is not answered in time. */
export function keepSessionAlive(session: http2.ServerHttp2Session, intervalMs: number): void {
  if (intervalMs <= 0) return;
  let waiting = false;
  const timer = setInterval(() => {
    if (session.destroyed || session.closed) {
      clearInterval(timer);
      return;
    }
    if (waiting) {
      // The previous ping is still unanswered after a whole interval.
      clearInterval(timer);
      session.destroy();
      return;
    }
    waiting = true;
    try {
      session.ping((err) => {
        if (err === null) waiting = false;
      });
    } catch {
      // Too many unacknowledged pings or a session that is going away: treat as dead.
      clearInterval(timer);
      session.destroy();
    }
  }, intervalMs);
  timer.unref();
  session.once("close", () => clearInterval(timer));
}
