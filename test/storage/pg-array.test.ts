/**
 * Array literals built by `quoteArrayElement` read back as the same strings, on every
 * database backend.
 */
import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { quoteArrayElement } from "../../src/storage/pg-array.js";
import { backends, createTestDatabase, type TestDatabase } from "../support/databases.js";

const awkward = [
  "",
  "NULL",
  "null",
  "plain",
  "with space",
  " leading and trailing ",
  "a,b",
  "{braces}",
  'say "hi"',
  "back\\slash",
  '\\"',
  "ends with \\",
  '{"path":"C:\\\\temp\\\\x","q":"\\"quoted\\""}',
  "ünïcödé ✓ 😀",
  "line\nbreak\ttab",
];

describe.each(backends)("quoteArrayElement [%s]", (kind) => {
  let database: TestDatabase;

  beforeAll(async () => {
    database = await createTestDatabase(kind);
  });
  afterAll(async () => {
    await database?.dispose();
  });

  it("keeps every string one element, exactly as it was, whatever characters it holds", async () => {
    const literal = `{${awkward.map(quoteArrayElement).join(",")}}`;
    const rows = await database.rows<{ v: string; i: number }>(
      sql`select v, i::int as i from unnest(${literal}::text[]) with ordinality as u(v, i) order by i`,
    );
    expect(rows.map((r) => r.v)).toEqual(awkward);
  });

  it("turns JSON texts into jsonb values equal to the originals", async () => {
    const texts = ['{"a":"x\\"y"}', '{"p":"C:\\\\dir"}', "[1,2,{}]", '"just a string"'];
    const literal = `{${texts.map(quoteArrayElement).join(",")}}`;
    const rows = await database.rows<{ same: boolean }>(
      sql`select bool_and(a = b::jsonb) as same from unnest(${literal}::jsonb[], ${`{${texts.map(quoteArrayElement).join(",")}}`}::text[]) as u(a, b)`,
    );
    expect(rows[0]?.same).toBe(true);
  });
});
