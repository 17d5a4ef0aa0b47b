/**
 * The text decoder of connect-es's JSON codec (gRPC+json, gRPC-Web+json, Connect JSON),
 * which refuses bad request JSON with an error message that is well-formed Unicode.
 *
 * connect-es writes an error message into `grpc-message` with encodeURIComponent, which
 * throws on an unpaired surrogate. Parse errors can carry one: V8's JSON.parse messages
 * quote the input and may cut a surrogate pair in two, and protobuf-es quotes a bad int64
 * string such as "\ud800". The throw escapes the handler, so the gRPC answer ends without
 * a status and the gRPC-Web answer over HTTP/1.1 never ends. Checking here first, where
 * connect-es turns any error into INVALID_ARGUMENT, keeps every message encodable.
 */

const utf8 = new TextDecoder();
// With the u flag a surrogate pair is one code point, so this matches only unpaired ones.
const unpairedSurrogate = /[\ud800-\udfff]/u;

/** Replaces unpaired surrogates with U+FFFD. */
function wellFormed(s: string): string {
  return s.replace(/[\ud800-\udfff]/gu, "\ufffd");
}

/** Decodes UTF-8 request bytes to JSON text; throws if it is not JSON every field could hold. */
export const jsonTextDecoder = {
  decode(input?: Uint8Array): string {
    const text = utf8.decode(input);
    try {
      // The reviver sees every key and value; protobuf-es parses the text again after.
      JSON.parse(text, (key, value: unknown) => {
        if (
          unpairedSurrogate.test(key) ||
          (typeof value === "string" && unpairedSurrogate.test(value))
        ) {
          throw new Error("JSON strings must not contain unpaired surrogates (\\ud800-\\udfff)");
        }
        return value;
      });
    } catch (err) {
      throw new Error(`cannot decode JSON: ${wellFormed((err as Error).message)}`);
    }
    return text;
  },
};
