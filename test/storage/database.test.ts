/**
 * Opening the embedded database where the default setting points on a fresh clone:
 * `.data/pglite`, whose parent does not exist yet.
 */
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sql } from "drizzle-orm";
import { afterEach, describe, expect, it } from "vitest";
import { openDatabase } from "../../src/storage/database.js";

describe("the embedded database on disk", () => {
  let root: string | undefined;
  afterEach(async () => {
    if (root !== undefined) await rm(root, { recursive: true, force: true });
  });

  it("creates the missing parent directories of its data directory, migrates, and opens again with the rows kept", async () => {
    root = await mkdtemp(join(tmpdir(), "tripwire-db-"));
    const dataDir = join(root, "fresh-clone", ".data", "pglite");
    const first = await openDatabase({ dataDir });
    await first.rows(sql`insert into hosts (hostname) values ('web-01')`);
    await first.close();
    expect((await stat(dataDir)).isDirectory()).toBe(true);

    const again = await openDatabase({ dataDir });
    try {
      const rows = await again.rows<{ hostname: string }>(sql`select hostname from hosts`);
      expect(rows).toEqual([{ hostname: "web-01" }]);
    } finally {
      await again.close();
    }
  });
});
