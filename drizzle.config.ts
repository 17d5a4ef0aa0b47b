import { defineConfig } from "drizzle-kit";

// drizzle-kit generates the SQL migrations in drizzle/ from the tables in src/storage.
export default defineConfig({
  dialect: "postgresql",
  schema: "./src/storage/tables.ts",
  out: "./drizzle",
  strict: true,
});
