/**
 * Real services some tests need besides the database. CI sets both variables (and fails
 * when the tests that need them did not run); locally they run when the service is there.
 */
import { existsSync } from "node:fs";

/** Redis for the multi-instance tests, e.g. redis://127.0.0.1:6379. */
export const testRedisUrl: string | undefined = process.env.TEST_REDIS_URL;

/** Chromium for the dashboard tests. */
export const testChromiumPath: string | undefined =
  process.env.TEST_CHROMIUM_PATH ??
  (existsSync("/usr/bin/chromium") ? "/usr/bin/chromium" : undefined);

/** `["redis"]` when Redis is configured, else `[]`: for describe.each, so names carry [redis]. */
export const redisTargets: readonly string[] = testRedisUrl === undefined ? [] : ["redis"];

/** `["chromium"]` when Chromium is available, else `[]`: names carry [chromium]. */
export const browserTargets: readonly string[] = testChromiumPath === undefined ? [] : ["chromium"];
