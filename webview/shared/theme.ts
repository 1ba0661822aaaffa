/** Colours for canvases, read from VS Code's theme variables (re-read when the theme changes). */

export function themeColor(name: string, fallbackVar = "--vscode-foreground"): string {
  const style = getComputedStyle(document.body);
  return style.getPropertyValue(name).trim() || style.getPropertyValue(fallbackVar).trim() || "#888";
}

/** Parses "#rgb", "#rrggbb", "#rrggbbaa" or "rgb(a)(...)" into [r, g, b]. */
export function rgb(color: string): [number, number, number] {
  const c = color.trim();
  if (c.startsWith("#")) {
    const hex = c.length <= 5 ? [...c.slice(1, 4)].map((x) => x + x).join("") : c.slice(1, 7);
    return [parseInt(hex.slice(0, 2), 16), parseInt(hex.slice(2, 4), 16), parseInt(hex.slice(4, 6), 16)];
  }
  const m = c.match(/rgba?\(([^)]+)\)/);
  if (m) {
    const [r, g, b] = m[1]!.split(/[ ,/]+/).map(Number);
    return [r ?? 128, g ?? 128, b ?? 128];
  }
  return [128, 128, 128];
}

/** Calls `redraw` when VS Code switches theme (it changes the body's class). */
export function onThemeChange(redraw: () => void): void {
  new MutationObserver(redraw).observe(document.body, { attributes: true, attributeFilter: ["class"] });
}
