import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Two cores: more workers only contend. Files own their databases, so they may overlap.
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // No test may be skipped or focused on main.
    allowOnly: false,
  },
});
