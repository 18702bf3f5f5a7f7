// The search box: GET /api/search over every message this user may read, newest first, a page at a
// time; a result opens its conversation (and shows the message there when it is loaded).

import { $, fmtFull, fmtShort, h } from "./dom.js";
import { refreshGroups } from "./groups.js";
import { api, ctx } from "./state.js";
import { convKeyOfFrame } from "./store.js";

const DEBOUNCE_MS = 300;
const MAX_QUERY = 200;

let timer = null;
let asked = 0; // answers to an older question are dropped
let shownQuery = "";
let before = null;

/** Words of a query to mark in results (not its operators: quotes, `or`, a leading `-`). */
export function queryWords(q) {
  return q
    .split(/[^\p{L}\p{N}_'-]+/u)
    .filter((w) => w && !w.startsWith("-") && w.toLowerCase() !== "or")
    .map((w) => w.toLowerCase());
}

/** `text` with the query's words wrapped in <mark> (as text nodes: user text is never HTML). */
function marked(text, words) {
  if (!words.length) return [text];
  const escaped = words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const re = new RegExp(`(?<![\\p{L}\\p{N}_])(${escaped.join("|")})(?![\\p{L}\\p{N}_])`, "giu");
  const out = [];
  let at = 0;
  for (const m of text.matchAll(re)) {
    if (m.index > at) out.push(text.slice(at, m.index));
    out.push(h("mark", {}, m[0]));
    at = m.index + m[0].length;
  }
  if (at < text.length) out.push(text.slice(at));
  return out;
}

function convLabel(key) {
  const { store } = ctx;
  if (key.startsWith("g:")) return `# ${store.groups.get(key.slice(2))?.name || key.slice(2)}`;
  return key.slice(2) === store.me ? `${store.me} (you)` : key.slice(2);
}

function resultEl(f, words) {
  const key = convKeyOfFrame(f, ctx.store.me);
  const who = f.from === ctx.store.me ? "You" : f.from;
  return h(
    "li",
    { class: "search-hit" },
    h(
      "button",
      { type: "button", class: "conv-btn", "data-testid": "search-result", dataset: { conv: key, msgid: f.msgId } },
      h(
        "span",
        { class: "conv-main" },
        h("span", { class: "conv-top" },
          h("span", { class: "conv-name" }, convLabel(key)),
          h("time", { class: "conv-time", title: fmtFull(f.ts) }, fmtShort(f.ts))),
        h("span", { class: "search-body" }, `${who}: `, ...marked(f.body.replace(/\s+/g, " "), words)),
      ),
    ),
  );
}

function status(text) {
  $("search-status").textContent = text;
}

function showPanel(on) {
  $("search-panel").hidden = !on;
  $("search-clear").hidden = !on;
  document.querySelector(".sidebar").classList.toggle("searching", on);
}

async function run(q, more = false) {
  const mine = ++asked;
  const store = ctx.store;
  if (!more) {
    shownQuery = q;
    before = null;
    $("search-results").replaceChildren();
  }
  $("search-more").hidden = true;
  status(more ? "Loading more…" : "Searching…");
  try {
    const r = await api.search(q, more ? before : null);
    // A group joined since the list was loaded: its name first.
    if (r.messages.some((f) => f.group != null && !store.groups.has(f.group))) await refreshGroups();
    if (mine !== asked || store !== ctx.store) return;
    const words = queryWords(q);
    $("search-results").append(...r.messages.map((f) => resultEl(f, words)));
    before = r.before;
    const n = $("search-results").childElementCount;
    status(n ? `${n}${before ? "+" : ""} message${n === 1 && !before ? "" : "s"} found` : "No messages found.");
    $("search-more").hidden = !before;
  } catch (e) {
    if (mine !== asked) return;
    status(`Search failed: ${e.message}`);
  }
}

/** Closes the results and empties the box. */
export function resetSearch() {
  clearTimeout(timer);
  asked++;
  shownQuery = "";
  before = null;
  $("search-input").value = "";
  $("search-results").replaceChildren();
  status("");
  showPanel(false);
}

/** Shows the message a result pointed at, once the open conversation shows it (history may still load). */
function reveal(msgId, tries = 20) {
  const el = document.querySelector(`[data-testid="message"][data-msgid="${CSS.escape(msgId)}"]`);
  if (!el) {
    if (tries > 0) setTimeout(() => reveal(msgId, tries - 1), 100);
    return;
  }
  el.scrollIntoView({ block: "center" });
  el.classList.add("found");
  setTimeout(() => el.classList.remove("found"), 2000);
}

/** `openConv(key)` opens a conversation. */
export function initSearch({ openConv }) {
  const input = $("search-input");
  input.maxLength = MAX_QUERY;
  const ask = () => {
    clearTimeout(timer);
    const q = input.value.trim();
    if (!q) return resetSearch();
    showPanel(true);
    if (q !== shownQuery) run(q);
  };
  input.addEventListener("input", () => {
    clearTimeout(timer);
    if (!input.value.trim()) return resetSearch();
    timer = setTimeout(ask, DEBOUNCE_MS);
  });
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    shownQuery = ""; // Enter asks again
    ask();
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && input.value) {
      e.stopPropagation();
      resetSearch();
    }
  });
  $("search-clear").addEventListener("click", () => {
    resetSearch();
    input.focus();
  });
  $("search-more").addEventListener("click", () => shownQuery && before && run(shownQuery, true));
  $("search-results").addEventListener("click", (e) => {
    const b = e.target.closest("[data-testid='search-result']");
    if (!b || !ctx.store) return;
    openConv(b.dataset.conv);
    reveal(b.dataset.msgid);
  });
}
