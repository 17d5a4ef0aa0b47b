/**
 * The version of this build, from the package.json next to src/ or dist/ (both are one
 * level below the package root).
 */
import { readFileSync } from "node:fs";

const packageJson = new URL("../../package.json", import.meta.url);

/** The package version, or "unknown" when no package.json with a version is found. */
export function packageVersion(): string {
  try {
    const { version } = JSON.parse(readFileSync(packageJson, "utf8")) as { version?: unknown };
    // The benchmark runs a copy of dist/ beside a package.json without a version.
    return typeof version === "string" ? version : "unknown";
  } catch {
    return "unknown";
  }
}
