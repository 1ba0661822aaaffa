/**
 * VS Code entry point. The commands, inspector and panel come with the extension issue; until then the
 * extension only activates, so that the packaged vsix loads cleanly.
 */
export function activate(): void {}

export function deactivate(): void {}
