/**
 * An error caused by what the user gave us (a file, an option, a model we cannot handle).
 * Front ends show its message as one line and exit with status 2; anything else is an internal error.
 */
export class InputError extends Error {
  override readonly name = "InputError";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** Thrown when a run is cancelled; front ends exit 130 (as for Ctrl-C) and leave nothing behind. */
export class CancelledError extends Error {
  override readonly name = "CancelledError";
  constructor(message = "cancelled") {
    super(message);
  }
}

export const isInputError = (e: unknown): e is InputError => e instanceof Error && e.name === "InputError";
export const isCancelledError = (e: unknown): e is CancelledError => e instanceof Error && e.name === "CancelledError";

/**
 * A name from a file, quoted for a one-line message: at most `max` characters of it as printed (a hostile
 * file may carry names of megabytes, or control characters that JSON escapes into six characters each),
 * with the full length said when cut.
 */
export function quoted(name: string, max = 100): string {
  const whole = JSON.stringify(name);
  if (whole.length <= max + 2) return whole;
  let shown = "";
  for (const ch of name) {
    const escaped = JSON.stringify(ch).slice(1, -1);
    if (shown.length + escaped.length > max) break;
    shown += escaped;
  }
  return `"${shown}"... (${name.length} characters)`;
}
