/**
 * `--config FILE`: settings from a JSON file, under the environment.
 *
 * The file is one JSON object whose keys are the setting variables (`PORT`,
 * `TRIPWIRE_BATCH_SIZE`, …) and whose values are strings or numbers, exactly what the
 * variable would hold. A variable that is set (non-empty) in the environment wins over
 * the file, so one file can serve a fleet and the environment can adjust one instance.
 */
import { readFileSync } from "node:fs";
import { ConfigError, settings } from "../config.js";

/** Where a setting's value came from. */
export type SettingSource = "environment" | "config file" | "default";

/** The variables `loadConfig` reads, and where each one came from. */
export interface SettingsInput {
  /** The environment, with the file's values for variables it leaves unset or empty. */
  readonly env: Readonly<Record<string, string | undefined>>;
  sourceOf(variable: string): SettingSource;
}

const knownVariables: ReadonlySet<string> = new Set(Object.values(settings).map((s) => s.env));

/**
 * Parses the text of a config file into variable → value. Throws a ConfigError naming
 * the file and, for a bad entry, the key.
 */
export function parseConfigFile(text: string, path: string): Record<string, string> {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`config file ${path} is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    throw new ConfigError(
      `config file ${path} must hold a JSON object of setting variables to values, e.g. {"PORT": 9000}`,
    );
  }
  const values: Record<string, string> = {};
  for (const [key, value] of Object.entries(data)) {
    if (!knownVariables.has(key)) {
      throw new ConfigError(
        `config file ${path}: unknown setting ${JSON.stringify(key)}${suggestion(key)}; "tripwire-dashboard --help" lists them`,
      );
    }
    if (typeof value === "string") {
      values[key] = value;
    } else if (typeof value === "number" && Number.isFinite(value)) {
      values[key] = String(value);
    } else {
      throw new ConfigError(
        `config file ${path}: ${key} must be a string or a number, not ${describe(value)} (lists are comma-separated strings)`,
      );
    }
  }
  return values;
}

/** Reads and parses a config file; an unreadable file is a ConfigError saying why. */
export function readConfigFile(path: string): Record<string, string> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new ConfigError(`cannot read config file ${path}: ${(err as Error).message}`);
  }
  return parseConfigFile(text, path);
}

/** Lays the environment over the file's values (`file` undefined: no --config). */
export function settingsInput(
  env: Readonly<Record<string, string | undefined>>,
  file: Readonly<Record<string, string>> | undefined,
): SettingsInput {
  const isSet = (value: string | undefined): boolean => value !== undefined && value.trim() !== "";
  const merged: Record<string, string | undefined> = { ...env };
  for (const [key, value] of Object.entries(file ?? {})) {
    if (!isSet(env[key])) merged[key] = value;
  }
  return {
    env: merged,
    sourceOf(variable) {
      if (isSet(env[variable])) return "environment";
      if (file !== undefined && isSet(file[variable])) return "config file";
      return "default";
    },
  };
}

/** A hint for a key written as the setting's name in config.ts or without its prefix. */
function suggestion(key: string): string {
  const byName = Object.hasOwn(settings, key)
    ? settings[key as keyof typeof settings].env
    : undefined;
  const upper = key.toUpperCase().replaceAll("-", "_");
  const match = [byName, upper, `TRIPWIRE_${upper}`].find(
    (candidate) => candidate !== undefined && knownVariables.has(candidate),
  );
  return match === undefined ? "" : ` (did you mean ${JSON.stringify(match)}?)`;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "number") return String(value);
  return `a ${typeof value}`;
}
