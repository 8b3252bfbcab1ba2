// A drop-down list of checkboxes (built on <details>), optionally grouped, for the filters.
// Nothing checked means "all".

import { t } from "./i18n.js";
import { closeOnOutsideClick } from "./widgets.js";

export class MultiSelect {
  /** root: an empty element; allKey: the i18n key of the "all" label. */
  constructor(root, { allKey, name }) {
    this.allKey = allKey;
    this.base = [];
    this.options = [];
    this.details = document.createElement("details");
    this.details.className = "multi";
    this.details.dataset.name = name;
    this.summary = document.createElement("summary");
    this.panel = document.createElement("div");
    this.panel.className = "multi-panel";
    this.details.append(this.summary, this.panel);
    root.replaceChildren(this.details);
    this.panel.addEventListener("change", () => this.relabel());
    closeOnOutsideClick(this.details);
  }

  /** options: [{value, label, group?, groupLabel?}] in display order. */
  setOptions(options, selected = this.values) {
    this.base = options;
    const known = new Set(options.map((o) => o.value));
    this.options = [...options, ...selected.filter((v) => !known.has(v))
      .map((value) => ({ value, label: value }))];
    this.panel.replaceChildren(this.clearButton());
    let box = this.panel;
    let group;
    for (const option of this.options) {
      if (option.group !== group) {
        group = option.group;
        box = group === undefined ? this.panel : this.fieldset(group, option.groupLabel);
      }
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "checkbox";
      input.value = option.value;
      input.checked = selected.includes(option.value);
      label.append(input, ` ${option.label}`);
      box.append(label);
    }
    this.relabel();
  }

  clearButton() {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "linkish multi-clear";
    button.textContent = t("f.clearSelection");
    button.addEventListener("click", () => { this.values = []; });
    return button;
  }

  fieldset(group, groupLabel) {
    const fieldset = document.createElement("fieldset");
    const legend = document.createElement("legend");
    const toggle = document.createElement("button");
    toggle.type = "button";
    toggle.className = "linkish";
    toggle.dataset.group = group;
    toggle.textContent = groupLabel;
    toggle.title = t("f.selectGroup", { group: groupLabel });
    toggle.addEventListener("click", () => {
      const boxes = [...fieldset.querySelectorAll("input")];
      const all = boxes.every((b) => b.checked);
      for (const b of boxes) b.checked = !all;
      this.relabel();
    });
    legend.append(toggle);
    fieldset.append(legend);
    this.panel.append(fieldset);
    return fieldset;
  }

  get values() {
    return [...this.panel.querySelectorAll("input:checked")].map((input) => input.value);
  }

  set values(list) {
    // A value the list does not offer (from a bookmark, say) is added, so it stays visible.
    const offered = new Set(this.options.map((o) => o.value));
    if (list.some((value) => !offered.has(value))) {
      this.setOptions(this.base, list);
      return;
    }
    for (const input of this.panel.querySelectorAll("input")) input.checked = list.includes(input.value);
    this.relabel();
  }

  relabel() {
    const chosen = this.values;
    if (chosen.length === 0) this.summary.textContent = t(this.allKey);
    else if (chosen.length === 1) {
      this.summary.textContent = this.options.find((o) => o.value === chosen[0])?.label ?? chosen[0];
    } else this.summary.textContent = t("f.nSelected", { n: chosen.length });
    this.summary.classList.toggle("chosen", chosen.length > 0);
    const clear = this.panel.querySelector(".multi-clear");
    if (clear) clear.textContent = t("f.clearSelection");
  }
}
