// DOM helpers. User content only ever reaches the page as text nodes (never innerHTML).

export const $ = (id) => document.getElementById(id);

/** h("li", { class: "x", dataset: { msgid } , onclick }, child, "text", …) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") for (const [dk, dv] of Object.entries(v)) { if (dv != null) el.dataset[dk] = String(dv); }
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const URL_RE = /\bhttps?:\/\/[^\s<>"']+/gi;

/**
 * Text with its http(s) links as anchors (opening in a new tab without access to this page);
 * everything else stays text. Trailing punctuation is not part of a link.
 */
export function linkify(text) {
  const out = [];
  let at = 0;
  for (const m of text.matchAll(URL_RE)) {
    const url = m[0].replace(/[.,;:!?)\]}'"]+$/, "");
    let ok = false;
    try {
      ok = ["http:", "https:"].includes(new URL(url).protocol);
    } catch {}
    if (!ok) continue;
    if (m.index > at) out.push(text.slice(at, m.index));
    out.push(h("a", { href: url, target: "_blank", rel: "noopener noreferrer nofollow" }, url));
    at = m.index + url.length;
  }
  if (at < text.length) out.push(text.slice(at));
  return out;
}

/** A stable hue (0..359) for a name: its avatar and sender colour. */
export function hue(s) {
  let x = 0;
  for (let i = 0; i < s.length; i++) x = (x * 31 + s.charCodeAt(i)) >>> 0;
  return x % 360;
}

export function initials(name) {
  const parts = String(name).split(/[\s._-]+/).filter(Boolean);
  const s = parts.length > 1 ? parts[0][0] + parts[1][0] : String(name).slice(0, 2);
  return s.toUpperCase();
}

/** Fills an avatar element for a user or group name. */
export function paintAvatar(el, name, group = false) {
  el.textContent = group ? "#" : initials(name);
  el.style.setProperty("--h", String(hue(name)));
  el.classList.toggle("group", group);
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dateFmt = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short" });
const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: "long", day: "numeric", month: "long", year: "numeric" });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

export const fmtTime = (ts) => timeFmt.format(ts);
export const fmtFull = (ts) => fullFmt.format(ts);

export function dayKey(ts) {
  const d = new Date(ts);
  return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
}

export function fmtDay(ts) {
  const now = new Date();
  if (dayKey(ts) === dayKey(now)) return "Today";
  if (dayKey(ts) === dayKey(now.getTime() - 86_400_000)) return "Yesterday";
  return dayFmt.format(ts);
}

/** Short time for the conversation list: the time today, else the date. */
export function fmtShort(ts) {
  return dayKey(ts) === dayKey(Date.now()) ? timeFmt.format(ts) : dateFmt.format(ts);
}

/**
 * Makes `parent`'s children exactly `nodes`, in order, moving only what is out of place: what goes
 * is removed first, so the nodes after it stay put. A moved node loses the keyboard focus (moving
 * it is removing it and inserting it again), so the child holding the focus is never moved: when
 * it has to come earlier, the nodes between its place and it move after it instead.
 */
export function reconcile(parent, nodes) {
  const keep = new Set(nodes);
  for (const c of [...parent.children]) if (!keep.has(c)) c.remove();
  let focused = document.activeElement; // the child holding the focus, if one does
  while (focused && focused.parentElement !== parent) focused = focused.parentElement;
  let i = 0;
  for (const n of nodes) {
    if (n === focused) {
      const after = n.nextSibling;
      while (parent.children[i] !== n) parent.insertBefore(parent.children[i], after);
    } else if (parent.children[i] !== n) parent.insertBefore(n, parent.children[i] ?? null);
    i++;
  }
}
