// The operator console: three views (overview, user, item) over the API's own routes.
// Plain JavaScript, no framework; every value from the API is put in the page as text, never
// as HTML. Routes: #/overview, #/user/<id>, #/item/<id>.
"use strict";

const KEY_STORE = "recsys.console.apiKey";
const OVERVIEW_EVERY_MS = 5000;
// The user view polls the cheap profile and fetches recommendations again only when the profile
// changed (a new event applied): polling /recommend itself would record impressions.
const PROFILE_EVERY_MS = 250;

let timer = null; // the current view's refresh loop
let generation = 0; // bumped on each navigation: a late answer of an old view is dropped

// --- helpers ---------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function table(headers, rows, attrs) {
  return h("table", attrs,
    h("thead", null, h("tr", null, headers.map((x) => h("th", null, x)))),
    h("tbody", null, rows.map((cells) => h("tr", null, cells.map((c) => h("td", null, c))))));
}

function card(title, ...body) {
  return h("section", { class: "card" }, h("h2", null, title), ...body);
}

function fmt(n, digits = 3) {
  if (n === null || n === undefined) return "–";
  return Number(n).toLocaleString("en", { maximumFractionDigits: digits });
}

function when(epochMs) {
  if (!epochMs) return "–";
  return new Date(epochMs).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

function ago(epochMs) {
  if (!epochMs) return "–";
  const s = (Date.now() - epochMs) / 1000;
  if (s < 60) return `${s.toFixed(1)} s ago`;
  if (s < 3600) return `${(s / 60).toFixed(1)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

function link(kind, id, label) {
  return h("a", { href: `#/${kind}/${encodeURIComponent(id)}` }, label ?? id);
}

function notice(text, isError) {
  const box = document.getElementById("notice");
  box.textContent = text;
  box.className = isError ? "error" : "ok";
  box.hidden = !text;
}

class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
  }
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  if (options.method && options.method !== "GET") {
    const key = document.getElementById("api-key").value;
    if (key) headers["X-API-Key"] = key;
  }
  const response = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, body && body.detail ? body.detail : response.statusText);
  return body;
}

function uuid4() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const x = [...b].map((v) => v.toString(16).padStart(2, "0")).join("");
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

function writeFailed(what, error) {
  const hint = error.status === 401 ? " (type the server's API key at the top right)" : "";
  notice(`${what} failed: ${error.message}${hint}`, true);
}

function every(ms, work) {
  // One loop per view: the next round starts when the previous one has finished.
  const mine = generation;
  const round = async () => {
    if (mine !== generation) return;
    try {
      await work();
    } catch (error) {
      if (mine === generation) notice(`refresh failed: ${error.message}`, true);
    }
    if (mine === generation) timer = setTimeout(round, ms);
  };
  return round();
}

function searchForm(label, value, go) {
  const input = h("input", { name: "q", value: value || "", placeholder: label, "aria-label": label });
  return h("form", {
    class: "search",
    onsubmit: (event) => {
      event.preventDefault();
      if (input.value.trim()) go(input.value.trim());
    },
  }, input, h("button", { type: "submit" }, "Show"));
}

// --- overview --------------------------------------------------------------------------------

async function overview(view) {
  view.replaceChildren(h("h1", null, "Overview"), h("div", { id: "overview", class: "grid" }));
  await every(OVERVIEW_EVERY_MS, async () => {
    const mine = generation;
    const [models, stream, experiments, drift] = await Promise.all([
      api("/admin/models"),
      api("/admin/stream"),
      api("/experiments"),
      api("/monitoring/drift"),
    ]);
    const reports = await Promise.all(
      experiments.filter((e) => e.running).map((e) => api(`/experiments/${encodeURIComponent(e.id)}`)));
    if (mine !== generation) return;
    document.getElementById("overview").replaceChildren(
      activeModel(models), versions(models), rates(stream), freshness(stream), deadLetters(stream),
      archive(stream), decisions(models), ...experimentCards(reports), driftCard(drift));
  });
}

function activeModel(models) {
  const active = models.versions.find((v) => v.active);
  if (!active) return card("Active model", h("p", null, "No version is published: run `recsys train`."));
  const d = active.decision;
  const facts = [
    ["model", active.model], ["dataset", active.dataset],
    ["trained until", when(active.trained_until * 1000)], ["published", when(active.published_at * 1000)],
    ["users", fmt(active.users)], ["items", fmt(active.items)], ["dim", active.dim],
    ["params", JSON.stringify(active.params)],
  ];
  if (active.mlflow_run_url) {
    facts.push(["MLflow run", h("a", { href: active.mlflow_run_url, target: "_blank", rel: "noopener" }, active.mlflow_run_id)]);
  } else if (active.mlflow_run_id) {
    facts.push(["MLflow run", active.mlflow_run_id]);
  }
  if (d) facts.push(["gate", `${d.decision}: NDCG@10 ${fmt(d.candidate_ndcg, 4)} vs ${fmt(d.active_ndcg, 4)}`]);
  return card("Active model",
    h("p", { class: "big", "data-test": "active-version" }, active.version),
    h("dl", null, facts.map(([k, v]) => [h("dt", null, k), h("dd", null, v ?? "–")])));
}

function versions(models) {
  const rollBack = h("button", {
    onclick: async () => {
      try {
        const r = await api("/admin/models/rollback", { method: "POST" });
        notice(`rolled back from ${r.previous} to ${r.active}`);
        route();
      } catch (error) {
        writeFailed("rollback", error);
      }
    },
  }, "Roll back");
  const rows = models.versions.map((v) => [
    v.version, when(v.published_at * 1000), v.model ?? "–", v.active ? "active" : "",
    v.active ? "" : h("button", {
      onclick: async () => {
        try {
          await api(`/admin/models/${encodeURIComponent(v.version)}/activate`, { method: "POST" });
          notice(`activated ${v.version}`);
          route();
        } catch (error) {
          writeFailed("activate", error);
        }
      },
    }, "Activate"),
  ]);
  return card("Versions", table(["version", "published", "model", "", ""], rows), rollBack);
}

function rates(stream) {
  if (!stream.rates) return card("Event rates", h("p", null, "unavailable"));
  const r = stream.rates;
  const rows = Object.keys(r.per_s).map((type) => [type, fmt(r.per_s[type], 3), fmt(r.counts[type], 0)]);
  return card("Event rates",
    table(["type", "events/s", "events"], rows, { "data-test": "rates" }),
    h("p", { class: "muted" }, `over the last ${fmt(r.window_s, 0)} s (the item windows of the stream)`));
}

function freshness(stream) {
  const f = stream.freshness;
  if (!f) return card("Freshness", h("p", null, "unavailable"), unavailable(stream));
  return card("Freshness",
    h("p", { class: "big" }, f.backlog === 0 ? "caught up" : `${fmt(f.backlog, 0)} events behind`),
    h("p", { class: "muted" }, `oldest unapplied event: ${fmt(f.oldest_pending_s, 2)} s old`),
    table(["topic", "published", "applied", "backlog"],
      f.topics.map((t) => [t.topic, fmt(t.published, 0), fmt(t.applied, 0), fmt(t.backlog, 0)])),
    unavailable(stream));
}

function unavailable(stream) {
  return stream.unavailable.length ? h("p", { class: "error" }, stream.unavailable.join("; ")) : null;
}

function deadLetters(stream) {
  const d = stream.dead_letters;
  if (!d) return card("Dead letters", h("p", null, "unavailable"));
  return card("Dead letters",
    h("p", { class: "big", "data-test": "dlq-count" }, `${fmt(d.count, 0)} on events.dlq`),
    d.newest.length
      ? table(["rejected", "field", "error", "from"], d.newest.map((x) => [
        x.rejected_at.replace("T", " ").slice(0, 19), x.field, x.error,
        `${x.source_topic}[${x.source_partition}]@${x.source_offset}`]))
      : h("p", { class: "muted" }, "none"));
}

function archive(stream) {
  const a = stream.archive;
  return card("Archive",
    a ? h("p", null, `lag ${fmt(a.lag, 0)} events over ${a.partitions} partitions (group ${a.group})`)
      : h("p", { class: "muted" }, "no archiver has committed yet (`recsys archive run`)"));
}

function decisions(models) {
  if (!models.decisions.length) return card("Retraining decisions", h("p", { class: "muted" }, "none recorded yet"));
  return card("Retraining decisions", table(["time", "decision", "candidate", "NDCG@10 cand. / active", "reason"],
    models.decisions.map((d) => [String(d.time ?? "–"), String(d.decision ?? "–"), d.candidate ?? "–",
      `${fmt(d.candidate_ndcg, 4)} / ${fmt(d.active_ndcg, 4)}`, d.reason ?? ""])));
}

function experimentCards(reports) {
  // A list either way: the overview spreads it among its cards.
  if (!reports.length) return [card("Experiments", h("p", { class: "muted" }, "none running"))];
  return reports.map((r) => card(`Experiment ${r.id}`,
    table(["arm", "share", "impressions", "clicks", "CTR", "95% interval"], r.arms.map((a) => {
      const ctr = a.rates.ctr || {};
      return [a.name, fmt(a.share, 2), fmt(a.counts.impressions, 0), fmt(a.counts.clicks, 0),
        ctr.value === null || ctr.value === undefined ? "–" : `${(ctr.value * 100).toFixed(2)}%`,
        ctr.low === null || ctr.low === undefined ? "–" : `${(ctr.low * 100).toFixed(2)}–${(ctr.high * 100).toFixed(2)}%`];
    })),
    r.sample_ratio_mismatch ? h("p", { class: "error" }, "sample ratio mismatch") : null));
}

function driftCard(drift) {
  return card("Drift", h("p", { class: drift.status === "drift" ? "error" : "" }, `${drift.status}: ${drift.detail}`));
}

// --- user ------------------------------------------------------------------------------------

async function user(view, userId) {
  view.replaceChildren(h("h1", null, "User"),
    searchForm("user id", userId, (id) => { location.hash = `#/user/${encodeURIComponent(id)}`; }));
  if (!userId) return;
  const profileBox = h("div", { id: "profile" });
  const recsBox = h("div", { id: "recommendations" });
  view.append(h("div", { class: "columns" }, recsBox, profileBox));
  let seen = null;
  let answer = null;
  const refreshAnswer = async () => {
    const mine = generation;
    const fresh = await api(`/recommend/${encodeURIComponent(userId)}?k=10&explain=true`);
    if (mine !== generation) return;
    answer = fresh;
    recsBox.replaceChildren(recommendations(fresh, send));
  };
  const send = async (eventType, item) => {
    const event = {
      event_id: uuid4(), event_type: eventType, user_id: userId, item_id: item.item_id,
      ts: new Date().toISOString(), context: { source: "console" },
    };
    if (eventType !== "view" && answer) event.recommendation_id = answer.recommendation_id;
    try {
      await api("/events", { method: "POST", body: event });
      notice(`sent ${eventType} of ${item.item_id}`);
    } catch (error) {
      writeFailed(`sending the ${eventType}`, error);
    }
  };
  await every(PROFILE_EVERY_MS, async () => {
    const mine = generation;
    const profile = await api(`/users/${encodeURIComponent(userId)}/profile?history=20`);
    if (mine !== generation) return;
    const stamp = `${profile.events}/${profile.last_event_ms}/${profile.negative_feedback.length}/${profile.model_version}`;
    if (stamp !== seen) {
      seen = stamp;
      profileBox.replaceChildren(profileView(profile));
      await refreshAnswer();
    }
  });
}

function recommendations(answer, send) {
  const rows = answer.items.map((item, n) => h("tr", { "data-item": item.item_id },
    h("td", null, String(n + 1)),
    h("td", null, link("item", item.item_id), h("div", { class: "muted" }, item.title ?? "")),
    h("td", null, (item.genres || []).join(", ")),
    h("td", null, item.source ?? answer.source),
    h("td", null, fmt(item.score, 4)),
    h("td", null, explanation(item)),
    h("td", { class: "actions" }, ["view", "click", "purchase", "dislike"].map((type) =>
      h("button", { "data-event": type, onclick: () => send(type, item) }, type)))));
  return card("Recommendations",
    h("p", { class: "muted", "data-test": "answer" },
      `source ${answer.source}`, answer.model_version ? ` · model ${answer.model_version}` : "",
      answer.experiment ? ` · experiment ${answer.experiment}, variant ${answer.variant}` : " · no experiment",
      answer.reason ? ` · ${answer.reason}` : "", ` · at ${new Date().toLocaleTimeString()}`),
    h("table", { "data-test": "recommendations" },
      h("thead", null, h("tr", null, ["#", "item", "genres", "source", "score", "because", "send"].map((x) => h("th", null, x)))),
      h("tbody", null, rows)));
}

function explanation(item) {
  if (item.explanation && item.explanation.length) {
    return item.explanation.map((c) => h("div", null, link("item", c.item_id, c.title ?? c.item_id), ` ${fmt(c.similarity, 2)}`));
  }
  if (item.features && item.features.length) {
    return item.features.map((f) => h("div", null, `${f.feature} +${fmt(f.contribution, 3)}`));
  }
  return "–";
}

function profileView(p) {
  const maxAffinity = Math.max(1e-9, ...Object.values(p.top_genres));
  return h("div", null,
    card("Profile",
      h("dl", null, [
        ["user", p.user_id], ["known", p.known ? "yes" : "no (cold)"], ["events", fmt(p.events, 0)],
        ["last event", ago(p.last_event_ms)],
        ["vector", p.has_vector ? `${p.vector_source}${p.vector_age_s !== null && p.vector_age_s !== undefined ? `, ${fmt(p.vector_age_s, 1)} s old` : ""}` : "none"],
        ["model", p.model_version ?? "–"], ["tired items", fmt(p.tired_items, 0)],
      ].map(([k, v]) => [h("dt", null, k), h("dd", null, v)]))),
    card("Genre affinity", Object.keys(p.top_genres).length
      ? Object.entries(p.top_genres).map(([genre, score]) => h("div", { class: "bar" },
        h("span", null, genre),
        h("meter", { min: 0, max: maxAffinity, value: score }), h("span", null, fmt(score, 2))))
      : h("p", { class: "muted" }, "none yet")),
    card("Windows", table(["window", "start", "counts"], Object.entries(p.windows).map(([slot, w]) =>
      [slot, when(w.start * 1000), Object.entries(w.counts).map(([t, c]) => `${t} ${c}`).join(", ")]))),
    card("Recent history", table(["when", "type", "item"],
      p.history.map((x) => [when(x.ts_ms), x.event_type, link("item", x.item_id)]), { "data-test": "history" })),
    p.negative_feedback.length ? card("Left out (negative feedback)", table(["item", "type", "until"],
      p.negative_feedback.map((x) => [link("item", x.item_id), x.event_type, when(x.excluded_until_ms)]))) : null);
}

// --- item ------------------------------------------------------------------------------------

async function item(view, itemId) {
  view.replaceChildren(h("h1", null, "Item"),
    searchForm("item id", itemId, (id) => { location.hash = `#/item/${encodeURIComponent(id)}`; }));
  if (!itemId) return;
  const box = h("div", { id: "item", class: "grid" });
  view.append(box);
  await every(OVERVIEW_EVERY_MS, async () => {
    const mine = generation;
    const detail = await api(`/admin/items/${encodeURIComponent(itemId)}`);
    // Similar items need the item in the active model: asked only then (else a 404).
    const similar = detail.in_model
      ? await api(`/items/${encodeURIComponent(itemId)}/similar?k=10`) : null;
    if (mine !== generation) return;
    const p = detail.payload;
    box.replaceChildren(
      card("Payload",
        h("p", { class: "big", "data-test": "item-title" }, p.title ?? itemId),
        h("dl", null, [
          ["item", detail.item_id], ["genres", (p.genres || []).join(", ") || "–"], ["year", p.year ?? "–"],
          ["popularity", fmt(p.popularity, 0)], ["model", detail.model_version ?? "–"],
          ["in the model", detail.in_model ? "yes" : "no"],
        ].map(([k, v]) => [h("dt", null, k), h("dd", null, v)]))),
      card("Trending",
        h("p", { class: "big", "data-test": "trending-rank" },
          detail.trending_rank ? `#${detail.trending_rank}` : "not in the top 100"),
        h("p", { class: "muted" }, `decayed weighted count ${fmt(detail.trending_score, 3)}`),
        table(["window", "start", "counts"], Object.entries(detail.windows).map(([slot, w]) =>
          [slot, when(w.start * 1000), Object.entries(w.counts).map(([t, c]) => `${t} ${c}`).join(", ") || "–"]))),
      card("Similar items", similar
        ? table(["item", "title", "genres", "score"], similar.items.map((s) =>
          [link("item", s.item_id), s.title ?? "", (s.genres || []).join(", "), fmt(s.score, 4)]), { "data-test": "similar" })
        : h("p", { class: "muted" }, "not in the active model")));
  });
}

// --- routing ---------------------------------------------------------------------------------

function route() {
  generation += 1;
  clearTimeout(timer);
  const [, page = "overview", id = ""] = location.hash.split("/");
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("here", a.dataset.nav === page);
  const view = document.getElementById("view");
  const target = decodeURIComponent(id);
  const pages = { overview: () => overview(view), user: () => user(view, target), item: () => item(view, target) };
  (pages[page] || pages.overview)();
}

document.addEventListener("DOMContentLoaded", () => {
  const key = document.getElementById("api-key");
  key.value = sessionStorage.getItem(KEY_STORE) || "";
  key.addEventListener("change", () => sessionStorage.setItem(KEY_STORE, key.value));
  window.addEventListener("hashchange", () => { notice(""); route(); });
  route();
});
