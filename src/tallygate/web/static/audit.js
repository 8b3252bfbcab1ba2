// The audit panel of the keys page: GET /api/v1/audit, newest first, a page at a time with
// the API's cursor; for every key, or for one (the Audit link of its row).

import { getJSON, searchParams } from "./api.js";
import * as fmt from "./format.js";
import { t } from "./i18n.js";

const PAGE = 50;
const KNOWN_ACTIONS = ["key.create", "key.update", "key.discount", "key.rotate", "key.delete",
  "price.set", "price.recompute"];

function cell(tr, text, className = "") {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  tr.append(td);
  return td;
}

function actorText(actor) {
  if (actor === "admin" || actor === "cli") return t(`audit.actor.${actor}`);
  return actor;
}

function detailsText(details) {
  if (!details) return "";
  return Object.entries(details)
    .map(([name, value]) => `${name}=${typeof value === "string" ? value : JSON.stringify(value)}`)
    .join(" · ");
}

export class AuditPanel {
  /** keyName(id) is the key's name, or null for a key no longer listed (deleted). */
  constructor(els, { keyName, show, zone }) {
    this.els = els;
    this.keyName = keyName;
    this.show = show;
    this.zone = zone;
    this.generation = 0;
    this.shown = 0;
    this.keyId = null;
    els.more.addEventListener("click", () => this.loadPage());
  }

  /** Show the entries of one key (its id), or of every key (null). */
  load(keyId) {
    this.keyId = keyId;
    this.cursor = null;
    this.shown = 0;
    this.generation += 1;
    this.els.body.replaceChildren();
    this.describeScope();
    return this.loadPage();
  }

  /** The same entries again (after a change of language, or of a key). */
  reload() {
    return this.load(this.keyId);
  }

  describeScope() {
    const { scope, reset } = this.els;
    const name = this.keyId === null ? null : this.keyName(this.keyId) ?? this.keyId;
    scope.textContent = name === null ? t("audit.scopeAll") : t("audit.scopeKey", { name });
    scope.dataset.keyId = this.keyId ?? "";
    reset.hidden = this.keyId === null;
  }

  async loadPage() {
    const generation = this.generation;
    const { box, message, more } = this.els;
    box.dataset.state = "loading";
    message.textContent = t("state.loading");
    more.disabled = true;
    let page;
    try {
      page = await getJSON("/api/v1/audit",
        searchParams({ api_key_id: this.keyId, limit: PAGE, cursor: this.cursor }));
    } catch (error) {
      if (generation !== this.generation) return;
      box.dataset.state = "error";
      this.show(message, error);
      return;
    } finally {
      more.disabled = false;
    }
    if (generation !== this.generation) return;
    this.els.body.append(...page.data.map((entry) => this.row(entry)));
    this.shown += page.data.length;
    this.cursor = page.next_cursor;
    more.hidden = !page.has_more;
    box.dataset.state = this.shown ? "ready" : "empty";
    message.textContent = this.shown ? "" : t(this.keyId === null ? "audit.empty" : "audit.emptyKey");
    this.els.count.textContent = this.shown === 0 ? ""
      : t(page.has_more ? "audit.shown" : "audit.end", { n: fmt.integer(this.shown) });
  }

  row(entry) {
    const tr = document.createElement("tr");
    tr.dataset.id = String(entry.id);
    tr.dataset.action = entry.action;
    cell(tr, fmt.fullDateTime(entry.ts, this.zone), "nowrap").title = entry.ts;
    cell(tr, actorText(entry.actor)).title = entry.actor;
    const action = cell(tr, KNOWN_ACTIONS.includes(entry.action) ? t(`audit.action.${entry.action}`)
      : entry.action, "nowrap");
    action.title = entry.action;
    if (entry.api_key_id !== null) {
      const name = this.keyName(entry.api_key_id);
      const td = cell(tr, name ?? entry.api_key_id);
      td.title = entry.api_key_id;
      if (name === null) td.classList.add("muted");
    } else {
      cell(tr, entry.target ?? "", "muted");
    }
    cell(tr, detailsText(entry.details), "small details");
    return tr;
  }
}
