CREATE TABLE "alert_seq" (
	"id" smallint PRIMARY KEY NOT NULL,
	"last" bigint NOT NULL,
	CONSTRAINT "alert_seq_single_row" CHECK ("alert_seq"."id" = 1)
);
--> statement-breakpoint
ALTER TABLE "alerts" ALTER COLUMN "seq" DROP IDENTITY;--> statement-breakpoint
INSERT INTO "alert_seq" ("id", "last") SELECT 1, coalesce(max("seq"), 0) FROM "alerts";--> statement-breakpoint
-- Inserts one batch of alerts and numbers the new ones in commit order (docs/websocket.md,
-- "The resume guarantee"). Alerts whose alert_id is already stored are skipped.
CREATE FUNCTION insert_alert_batch(
	p_alert_id uuid[], p_host_id uuid[], p_ts bigint[], p_type text[], p_rule text[],
	p_severity text[], p_detail jsonb[], p_received bigint[]
) RETURNS TABLE (alert_id uuid, seq bigint)
LANGUAGE plpgsql AS $$
DECLARE
	base bigint;
BEGIN
	-- The counter row stays locked until this transaction commits, so batches take their
	-- numbers in commit order: a reader that sees seq N has seen every batch before N.
	SELECT s.last INTO base FROM alert_seq s WHERE s.id = 1 FOR UPDATE;
	-- A new statement, so a new snapshot: it sees every batch committed before the lock.
	RETURN QUERY
	WITH input AS (
		SELECT u.*
		FROM unnest(p_alert_id, p_host_id, p_ts, p_type, p_rule, p_severity, p_detail, p_received)
			WITH ORDINALITY AS u(alert_id, host_id, ts, tripwire_type, rule_name, severity, event_detail, received, ord)
	), fresh AS (
		SELECT DISTINCT ON (i.alert_id) i.*
		FROM input i
		WHERE NOT EXISTS (SELECT 1 FROM alerts a WHERE a.alert_id = i.alert_id)
		ORDER BY i.alert_id, i.ord
	), numbered AS (
		SELECT f.*, base + row_number() OVER (ORDER BY f.ord) AS new_seq FROM fresh f
	)
	INSERT INTO alerts AS a (alert_id, seq, host_id, "timestamp", tripwire_type, rule_name, severity, event_detail, received_at)
	SELECT n.alert_id, n.new_seq, n.host_id,
		timestamptz 'epoch' + n.ts * interval '1 microsecond',
		n.tripwire_type, n.rule_name, n.severity, n.event_detail,
		timestamptz 'epoch' + n.received * interval '1 microsecond'
	FROM numbered n
	ORDER BY n.new_seq
	ON CONFLICT ON CONSTRAINT alerts_pkey DO NOTHING
	RETURNING a.alert_id, a.seq;
	UPDATE alert_seq s SET last = (SELECT coalesce(max(a.seq), base) FROM alerts a WHERE a.seq > base)
	WHERE s.id = 1;
END;
$$;
