/**
 * The `tripwire-dashboard` bin as a real process (`node --import tsx src/main.ts`): what
 * it prints, its exit codes, and what migrate leaves in a real database.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { PGlite } from "@electric-sql/pglite";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { settings } from "../../src/config.js";
import { backends } from "../support/databases.js";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** The environment of the runner minus every setting: each test sets its own. */
function cleanEnv(extra: Readonly<Record<string, string>>): Record<string, string> {
  const known = new Set(Object.values(settings).map((s) => s.env));
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value === undefined || known.has(key) || key === "NODE_OPTIONS") continue;
    env[key] = value;
  }
  return { ...env, ...extra };
}

function start(args: readonly string[], env: Readonly<Record<string, string>>): ChildProcess {
  return spawn(process.execPath, ["--import", "tsx", "src/main.ts", ...args], {
    cwd: repoRoot,
    env: cleanEnv(env),
    stdio: ["ignore", "pipe", "pipe"],
  });
}

/** Runs the bin to its end. */
async function run(args: readonly string[], env: Record<string, string> = {}): Promise<Run> {
  const child = start(args, env);
  let stdout = "";
  let stderr = "";
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    stdout += chunk;
  });
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  const [code] = (await once(child, "close")) as [number | null];
  return { code, stdout, stderr };
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "cli-bin-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function configFile(name: string, content: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, content);
  return path;
}

const packageVersion = (
  JSON.parse(await readFile(join(repoRoot, "package.json"), "utf8")) as { version: string }
).version;

describe("tripwire-dashboard --help and --version", () => {
  it("--help lists every setting of config.ts with its variable, default and doc", async () => {
    const result = await run(["--help"]);
    expect(result.code).toBe(0);
    expect(result.stderr).toBe("");
    expect(result.stdout).toContain(`tripwire-dashboard ${packageVersion}`);
    for (const command of ["serve", "migrate", "check-config", "--config FILE"]) {
      expect(result.stdout).toContain(`  ${command} `);
    }
    const flat = result.stdout.replace(/\s+/g, " ");
    for (const setting of Object.values(settings)) {
      const shown = setting.defaultText === "(unset)" ? "unset" : setting.defaultText;
      expect(result.stdout).toContain(`\n  ${setting.env} (default: ${shown})\n`);
      expect(flat).toContain(setting.doc.replaceAll("`", "").replace(/\s+/g, " "));
    }
  });

  it("--version prints the version of package.json", async () => {
    const result = await run(["--version"]);
    expect(result).toEqual({ code: 0, stdout: `${packageVersion}\n`, stderr: "" });
  });

  it("an unknown command exits 2 naming it and pointing to --help", async () => {
    const result = await run(["start"]);
    expect(result.code).toBe(2);
    expect(result.stdout).toBe("");
    expect(result.stderr).toContain('unknown command "start"');
    expect(result.stderr).toContain('Run "tripwire-dashboard --help"');
  });
});

describe("tripwire-dashboard check-config", () => {
  it("prints the effective values with passwords and tokens redacted, and exits 0", async () => {
    const result = await run(["check-config"], {
      DATABASE_URL: "postgres://tw:db-s3cret@db.internal:5432/tripwire",
      REDIS_URL: "redis://:redis-s3cret@cache.internal:6379",
      TRIPWIRE_WS_TOKENS: "viewer-token-1,viewer-token-2",
      TRIPWIRE_BATCH_SIZE: "500",
    });
    expect(result.code).toBe(0);
    expect(result.stderr).toBe("");
    expect(result.stdout).toMatch(
      /^DATABASE_URL +environment +postgres:\/\/tw:\*\*\*@db\.internal:5432\/tripwire$/m,
    );
    expect(result.stdout).toMatch(
      /^REDIS_URL +environment +redis:\/\/:\*\*\*@cache\.internal:6379$/m,
    );
    expect(result.stdout).toMatch(/^TRIPWIRE_WS_TOKENS +environment +\*\*\*,\*\*\*$/m);
    expect(result.stdout).toMatch(/^TRIPWIRE_BATCH_SIZE +environment +500$/m);
    expect(result.stdout).not.toMatch(/s3cret|viewer-token/);
    for (const setting of Object.values(settings)) {
      expect(result.stdout).toMatch(new RegExp(`^${setting.env} `, "m"));
    }
  });

  it("exits 2 with the configuration error for a bad value", async () => {
    const result = await run(["check-config"], { TRIPWIRE_BATCH_SIZE: "lots" });
    expect(result.code).toBe(2);
    expect(result.stdout).toBe("");
    expect(result.stderr).toBe(
      'configuration error: TRIPWIRE_BATCH_SIZE="lots" is not valid: expected a whole number from 1 to 100000\n',
    );
  });

  it("uses the --config file's values, with the environment overriding them", async () => {
    const path = await configFile(
      "fleet.json",
      JSON.stringify({ PORT: 9000, TRIPWIRE_BATCH_SIZE: 50, HOST: "0.0.0.0" }),
    );
    const result = await run(["check-config", "--config", path], { PORT: "9100" });
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(`over config file ${path}`);
    expect(result.stdout).toMatch(/^PORT +environment +9100$/m);
    expect(result.stdout).toMatch(/^TRIPWIRE_BATCH_SIZE +config file +50$/m);
    expect(result.stdout).toMatch(/^HOST +config file +0\.0\.0\.0$/m);
    expect(result.stdout).toMatch(/^TRIPWIRE_FLUSH_INTERVAL_MS +default +100$/m);
  });

  it("exits 2 naming an unknown key of the --config file", async () => {
    const path = await configFile("typo.json", '{"TRIPWIRE_BATCH_SIZ": 50}');
    const result = await run(["check-config", "--config", path]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(`config file ${path}: unknown setting "TRIPWIRE_BATCH_SIZ"`);
  });

  it("exits 2 saying why when the --config file cannot be read", async () => {
    const path = join(dir, "missing.json");
    const result = await run(["check-config", "--config", path]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(
      new RegExp(`^configuration error: cannot read config file ${path}: ENOENT`),
    );
  });
});

/** The migrations this version ships, oldest first. */
async function journalTags(): Promise<string[]> {
  const journal = JSON.parse(
    await readFile(join(repoRoot, "drizzle/meta/_journal.json"), "utf8"),
  ) as { entries: { tag: string }[] };
  return journal.entries.map((e) => e.tag);
}

/** A database nothing has migrated, and a way to query it once the bin is done. */
interface FreshTarget {
  readonly env: Record<string, string>;
  /** Tables of the public schema, and the rows in Drizzle's migration log. */
  inspect(): Promise<{ tables: string[]; migrations: number }>;
  dispose(): Promise<void>;
}

const inspectSql = {
  tables: "select table_name from information_schema.tables where table_schema = 'public'",
  migrations: "select count(*)::int as n from drizzle.__drizzle_migrations",
};

async function freshTarget(kind: (typeof backends)[number]): Promise<FreshTarget> {
  if (kind === "pglite") {
    const dataDir = join(dir, `pglite-${randomBytes(4).toString("hex")}`);
    return {
      env: { TRIPWIRE_DATA_DIR: dataDir },
      async inspect() {
        const client = new PGlite(dataDir);
        try {
          const tables = await client.query<{ table_name: string }>(inspectSql.tables);
          const count = await client.query<{ n: number }>(inspectSql.migrations);
          return {
            tables: tables.rows.map((r) => r.table_name),
            migrations: count.rows[0]?.n ?? 0,
          };
        } finally {
          await client.close();
        }
      },
      dispose: () => rm(dataDir, { recursive: true, force: true }),
    };
  }
  const adminUrl = process.env.TEST_DATABASE_URL as string;
  const name = `tw_cli_${randomBytes(6).toString("hex")}`;
  const admin = async <T>(url: string, query: (c: pg.Client) => Promise<T>): Promise<T> => {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      return await query(client);
    } finally {
      await client.end();
    }
  };
  await admin(adminUrl, (c) => c.query(`create database ${name}`));
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return {
    env: { DATABASE_URL: url.toString() },
    inspect: () =>
      admin(url.toString(), async (c) => ({
        tables: (await c.query<{ table_name: string }>(inspectSql.tables)).rows.map(
          (r) => r.table_name,
        ),
        migrations: (await c.query<{ n: number }>(inspectSql.migrations)).rows[0]?.n ?? 0,
      })),
    async dispose() {
      await admin(adminUrl, (c) => c.query(`drop database if exists ${name} with (force)`));
    },
  };
}

describe.each(backends)("tripwire-dashboard migrate on %s", (kind) => {
  // Four processes in a row, each opening the database.
  it("applies every migration to a fresh database, and a second run changes nothing", {
    timeout: 120_000,
  }, async () => {
    const target = await freshTarget(kind);
    try {
      const tags = await journalTags();
      const first = await run(["migrate"], target.env);
      expect(first.stderr).toBe("");
      expect(first.code).toBe(0);
      expect(first.stdout).toMatch(new RegExp(`^Applied ${tags.length} migrations to the `));
      for (const tag of tags) expect(first.stdout).toContain(`\n  ${tag}\n`);

      const second = await run(["migrate"], target.env);
      expect(second.code).toBe(0);
      expect(second.stdout).toMatch(/ is up to date \(latest migration: /);
      expect(second.stdout).toContain(`${tags.at(-1)})`);
      // Each applied migration is one row of Drizzle's log: none was applied twice.
      const after = await target.inspect();
      expect(after.tables).toEqual(expect.arrayContaining(["alerts", "hosts"]));
      expect(after.migrations).toBe(tags.length);
    } finally {
      await target.dispose();
    }
  });
});

describe("tripwire-dashboard migrate with an unreachable database", () => {
  it("exits 1 saying which database (password redacted) and why", async () => {
    // A port that was free a moment ago: nothing listens on it.
    const probe = createServer().listen(0, "127.0.0.1");
    await once(probe, "listening");
    const address = probe.address();
    if (address === null || typeof address === "string") throw new Error("no port");
    probe.close();
    await once(probe, "close");

    const url = `postgres://tw:db-s3cret@127.0.0.1:${address.port}/tripwire`;
    const result = await run(["migrate"], { DATABASE_URL: url });
    expect(result.code).toBe(1);
    expect(result.stdout).toBe("");
    expect(result.stderr).toBe(
      `migrate failed: cannot migrate the PostgreSQL database postgres://tw:***@127.0.0.1:${address.port}/tripwire: connect ECONNREFUSED 127.0.0.1:${address.port}\n`,
    );
  });
});

describe("tripwire-dashboard serve", () => {
  it("logs one startup line with version, address, database kind and protocols, and stops on SIGTERM", {
    timeout: 90_000,
  }, async () => {
    const dataDir = join(dir, "serve-pglite");
    const path = await configFile(
      "serve.json",
      JSON.stringify({ PORT: 0, HOST: "127.0.0.1", TRIPWIRE_DATA_DIR: dataDir }),
    );
    const child = start(["--config", path], { TRIPWIRE_LOG_LEVEL: "info" });
    const exited = once(child, "exit") as Promise<[number | null, NodeJS.Signals | null]>;
    try {
      const records: { level: number; msg: string; [key: string]: unknown }[] = [];
      let stderr = "";
      child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
        stderr += chunk;
      });
      const startup = await new Promise<(typeof records)[number]>((resolve, reject) => {
        let rest = "";
        child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
          const lines = (rest + chunk).split("\n");
          rest = lines.pop() ?? "";
          for (const line of lines) {
            const record = JSON.parse(line) as (typeof records)[number];
            records.push(record);
            if (record.msg.includes(" listening on ")) resolve(record);
          }
        });
        void exited.then(([code]) => reject(new Error(`exited with ${code}: ${stderr}`)));
      });
      const address = startup.address as string;
      expect(address).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(startup).toMatchObject({ level: 30, version: packageVersion, database: "pglite" });
      expect(startup.msg).toBe(
        `tripwire-dashboard listening on ${address} (version ${packageVersion}; database: pglite; protocols: gRPC, gRPC-Web, Connect, WebSocket /ws, HTTP; agents unauthenticated)`,
      );
      // Exactly one line says where it listens (Fastify's own are dropped).
      expect(records.filter((r) => r.msg.includes(new URL(address).port))).toHaveLength(1);
      expect((await fetch(`${address}/healthz`)).status).toBe(200);

      child.kill("SIGTERM");
      const [code] = await exited;
      expect(code).toBe(0);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    }
  });
});
