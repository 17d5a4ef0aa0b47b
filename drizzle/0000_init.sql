CREATE TABLE "alerts" (
	"alert_id" uuid PRIMARY KEY NOT NULL,
	"seq" bigint GENERATED ALWAYS AS IDENTITY (sequence name "alerts_seq_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"host_id" uuid NOT NULL,
	"timestamp" timestamp (6) with time zone NOT NULL,
	"tripwire_type" text NOT NULL,
	"rule_name" text NOT NULL,
	"severity" text NOT NULL,
	"event_detail" jsonb,
	"received_at" timestamp (6) with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "alerts_seq_unique" UNIQUE("seq")
);
--> statement-breakpoint
CREATE TABLE "hosts" (
	"host_id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"hostname" text NOT NULL,
	"platform" text DEFAULT '' NOT NULL,
	"agent_version" text DEFAULT '' NOT NULL,
	"registered_at" timestamp (6) with time zone DEFAULT now() NOT NULL,
	"last_seen" timestamp (6) with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "hosts_hostname_unique" UNIQUE("hostname")
);
--> statement-breakpoint
ALTER TABLE "alerts" ADD CONSTRAINT "alerts_host_id_hosts_host_id_fk" FOREIGN KEY ("host_id") REFERENCES "public"."hosts"("host_id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "alerts_host_seq_idx" ON "alerts" USING btree ("host_id","seq");--> statement-breakpoint
CREATE INDEX "alerts_timestamp_idx" ON "alerts" USING btree ("timestamp");