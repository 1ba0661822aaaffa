/**
 * Building DOM without HTML strings: every text from a model (names, metadata) goes in as text, never
 * as markup. `h("td", { class: "num" }, "12")`.
 */
export type Child = Node | string | number | null | undefined | false | Child[];
export type Attrs = Record<string, string | number | boolean | undefined | null>;

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs?: Attrs, ...children: Child[]): HTMLElementTagNameMap[K];
export function h(tag: string, attrs?: Attrs, ...children: Child[]): HTMLElement;
export function h(tag: string, attrs: Attrs = {}, ...children: Child[]): HTMLElement {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

export function append(parent: Node, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(parent, c);
    else parent.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
}

/** Replaces an element's children. */
export function replaceChildren(el: Element, ...children: Child[]): void {
  el.replaceChildren();
  append(el, children);
}

export interface Column<T> {
  header: string;
  cell: (row: T) => Child;
  /** Right-aligned numbers. */
  numeric?: boolean;
  /** The exact value, for copying and tests (data-value). */
  value?: (row: T) => string | number;
}

/** A plain, accessible table: a caption, header cells with scope, one row per item. */
export function dataTable<T>(caption: string, columns: Column<T>[], rows: readonly T[], attrs: Attrs = {}): HTMLTableElement {
  return h(
    "table",
    { class: "data", ...attrs },
    h("caption", { class: "visually-hidden" }, caption),
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.numeric ? "num" : undefined }, c.header)))),
    h(
      "tbody",
      {},
      rows.map((r) =>
        h(
          "tr",
          {},
          columns.map((c) => h("td", { class: c.numeric ? "num" : undefined, "data-value": c.value ? String(c.value(r)) : undefined }, c.cell(r))),
        ),
      ),
    ),
  );
}

/** Term and description pairs. */
export function facts(entries: [string, Child][], attrs: Attrs = {}): HTMLDListElement {
  return h("dl", { class: "facts", ...attrs }, entries.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}
