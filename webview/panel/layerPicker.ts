/** The layer the codebook and sign-flip views show: a list of the layers (and "All layers" where it applies). */
import { h } from "../shared/dom.js";

export function layerPicker(id: string, names: readonly string[], selected: string, allLabel?: string): HTMLElement {
  const select = h(
    "select",
    { id, class: "layer-select", "aria-label": "Layer" },
    allLabel !== undefined ? h("option", { value: "", selected: selected === "" }, allLabel) : null,
    names.map((n) => h("option", { value: n, selected: n === selected }, n)),
  );
  return h("label", { class: "picker" }, "Layer ", select);
}
