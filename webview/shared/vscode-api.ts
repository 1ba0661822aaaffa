/** The webview's one handle on VS Code: typed posting of the protocol's messages and its saved state. */
import type { FromWebviewMessage } from "../../src/webview-protocol.js";

const api = acquireVsCodeApi<unknown>();

export function post(message: FromWebviewMessage): void {
  api.postMessage(message);
}

export function getState<T>(): T | undefined {
  return api.getState() as T | undefined;
}

export function setState<T>(state: T): void {
  api.setState(state);
}
