/**
 * Hides secrets in what the command line prints: the values of token, secret and
 * password settings, and the password in connection URLs.
 */

/** Variables whose whole value is a secret (a later TRIPWIRE_*_TOKEN is covered too). */
const secretName = /TOKEN|SECRET|PASSWORD/i;
/** URL query parameters that carry credentials (libpq accepts `?password=`). */
const secretParam = /password|secret|token|key/i;

/** Shown instead of a secret. */
const redacted = "***";

/** `url` with its password and credential parameters replaced; other text unchanged. */
export function redactUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return text;
  }
  let changed = false;
  if (url.password !== "") {
    url.password = redacted;
    changed = true;
  }
  for (const name of [...url.searchParams.keys()]) {
    if (secretParam.test(name)) {
      url.searchParams.set(name, redacted);
      changed = true;
    }
  }
  // Untouched URLs are returned as written, not as the URL parser normalizes them.
  return changed ? url.toString() : text;
}

/** The value of setting `variable` as it may be printed. */
export function redactSetting(variable: string, value: string): string {
  if (value === "") return value;
  return secretName.test(variable) ? redacted : redactUrl(value);
}
