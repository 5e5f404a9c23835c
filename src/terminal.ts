/**
 * Human output (the `pretty` stdout sink, `events list`) shows fields a producer chose, such as
 * `objectType`. Printed raw, an ESC or OSC sequence in them would drive the operator's terminal
 * (retitle it, hide text, write a hyperlink, on some terminals write to the clipboard). Control
 * characters (C0, DEL, C1) and the bidirectional overrides that reorder text on screen are
 * shown as `\u{…}` escapes instead; everything else passes unchanged. Machine output (NDJSON,
 * --json) is JSON, whose encoding already escapes C0 characters, and is left as stored.
 */
// eslint-disable-next-line no-control-regex
const UNSAFE_FOR_TERMINAL = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

export function escapeForTerminal(text: string): string {
  return text.replace(UNSAFE_FOR_TERMINAL, (c) => `\\u{${c.codePointAt(0)!.toString(16)}}`);
}
