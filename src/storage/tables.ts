/**
 * The database tables. drizzle-kit generates the migrations in drizzle/ from this file
 * (`npm run db:generate`); the server applies them at start.
 */
import { sql } from "drizzle-orm";
import {
  bigint,
  check,
  index,
  jsonb,
  pgTable,
  smallint,
  text,
  timestamp,
  uuid,
} from "drizzle-orm/pg-core";

/** One row per monitored host; the hostname is its identity. */
export const hosts = pgTable("hosts", {
  hostId: uuid("host_id").primaryKey().defaultRandom(),
  hostname: text("hostname").notNull().unique(),
  platform: text("platform").notNull().default(""),
  agentVersion: text("agent_version").notNull().default(""),
  registeredAt: timestamp("registered_at", { withTimezone: true, precision: 6 })
    .notNull()
    .defaultNow(),
  lastSeen: timestamp("last_seen", { withTimezone: true, precision: 6 }).notNull().defaultNow(),
});

/**
 * One row per alert. `alert_id` (the agent's UUID) is the idempotency key: a replayed
 * alert conflicts on it and is not stored twice. `seq` orders alerts for cursors; it is
 * assigned by `insert_alert_batch()` (drizzle/0001) from `alert_seq`, in commit order.
 */
export const alerts = pgTable(
  "alerts",
  {
    alertId: uuid("alert_id").primaryKey(),
    seq: bigint("seq", { mode: "bigint" }).notNull().unique(),
    hostId: uuid("host_id")
      .notNull()
      .references(() => hosts.hostId),
    timestamp: timestamp("timestamp", { withTimezone: true, precision: 6 }).notNull(),
    tripwireType: text("tripwire_type").notNull(),
    ruleName: text("rule_name").notNull(),
    severity: text("severity").notNull(),
    eventDetail: jsonb("event_detail"),
    receivedAt: timestamp("received_at", { withTimezone: true, precision: 6 })
      .notNull()
      .default(sql`now()`),
  },
  (t) => [
    index("alerts_host_seq_idx").on(t.hostId, t.seq),
    index("alerts_timestamp_idx").on(t.timestamp),
    // The retention job (src/storage/retention.ts) deletes the oldest by server time.
    index("alerts_received_at_idx").on(t.receivedAt),
  ],
);

/**
 * The last seq handed out: one row, locked by each batch insert until it commits, so
 * batches take their numbers in commit order (docs/websocket.md, the resume guarantee).
 */
export const alertSeq = pgTable(
  "alert_seq",
  {
    id: smallint("id").primaryKey(),
    last: bigint("last", { mode: "bigint" }).notNull(),
  },
  (t) => [check("alert_seq_single_row", sql`${t.id} = 1`)],
);
