/**
 * Elements of PostgreSQL array literals (`{"a","b"}`), which the batch insert builds by
 * hand for its array parameters. node-postgres would build the same text with two
 * regular-expression replaces per element, uuids and numbers included; on the ingest
 * path that was one of the larger costs per alert (docs/performance.md, "Ingest hot path").
 */

/**
 * One element of an array literal, quoted, so any string (empty, `NULL`, with commas,
 * braces or spaces) stays one element exactly as it is.
 */
export function quoteArrayElement(value: string): string {
  // Only `"` and `\` need a backslash inside a quoted element; most strings have neither.
  return value.indexOf('"') === -1 && value.indexOf("\\") === -1
    ? `"${value}"`
    : `"${value.replace(/["\\]/g, "\\$&")}"`;
}
