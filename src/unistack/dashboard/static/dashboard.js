/* unistack dashboard: renders /api/status, follows /api/events (server-sent events
   relayed from the hub; polling /api/status every 2 s when that fails), draws the history
   charts with uPlot. Everything shown is built with DOM APIs and textContent: service
   details, model names and incident text come from outside and are never parsed as HTML. */
"use strict";

(function () {
  // --- the colour code (one place) ------------------------------------------------
  const STATE_COLOUR = {
    READY: "green",
    STARTING: "amber", DEGRADED: "amber", UNHEALTHY: "amber",
    RESTARTING: "red", LOOPING: "red", FAILED: "red", STOPPED: "red", ORPHANED: "red",
  };
  const OVERALL_COLOUR = { healthy: "green", degraded: "amber", down: "red" };
  // Sections in the order an operator reads them; a group not listed here follows them.
  const GROUP_TITLE = { infrastructure: "Infrastructure", ml: "ML", frontend: "Frontend" };
  const GROUP_ORDER = Object.keys(GROUP_TITLE);
  const SILENCE_CHOICES = ["30m", "1h", "4h", "24h"];
  const PALETTE = ["#7cb7ff", "#3fb950", "#d8a029", "#f0554d", "#c297ff", "#4dd2c4",
                   "#ff9ecd", "#b5bd68"];
  const POLL_MS = 2000;
  const MAX_STREAM_ERRORS = 3;
  const MAX_EVENTS = 200;

  const operator = meta("operator") === "1";
  const csrf = meta("csrf-token");
  const cards = new Map(); // service name -> its card's parts
  const seenEvents = new Set();
  let lastStatusTs = 0;
  let lastEventId = 0;
  let mlFigures = null;
  let range = "15m";

  function meta(name) {
    const node = document.querySelector('meta[name="' + name + '"]');
    return node ? node.getAttribute("content") : "";
  }

  // --- DOM building ------------------------------------------------------------------
  function el(tag, props, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children || []) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function facts(rows) {
    const list = el("dl", { class: "facts" });
    for (const [label, value] of rows) {
      list.append(el("dt", { text: label }));
      list.append(value instanceof Node ? el("dd", {}, [value]) : el("dd", { text: value }));
    }
    return list;
  }

  function setColour(node, colour) {
    node.classList.remove("green", "amber", "red", "grey");
    node.classList.add(colour);
  }

  // --- formatting --------------------------------------------------------------------
  function present(value) { return value !== undefined && value !== null && value !== ""; }
  function dash(value) { return present(value) ? String(value) : "\u2014"; }

  function bytes(value) {
    if (!present(value)) return "\u2014";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let n = Number(value), i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }

  function percent(value) { return present(value) ? Number(value).toFixed(1) + " %" : "\u2014"; }
  function clock(ts) { return present(ts) && ts > 0 ? new Date(ts * 1000).toLocaleTimeString() : "\u2014"; }
  function stamp(ts) { return present(ts) && ts > 0 ? new Date(ts * 1000).toLocaleString() : "\u2014"; }

  function ago(ts) {
    if (!present(ts) || ts <= 0) return "\u2014";
    const s = Math.max(0, Date.now() / 1000 - ts);
    if (s < 90) return Math.round(s) + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    if (s < 172800) return (s / 3600).toFixed(1) + " h ago";
    return Math.round(s / 86400) + " d ago";
  }

  function seconds(value) {
    if (!present(value)) return "\u2014";
    return value < 1 ? (value * 1000).toFixed(1) + " ms" : Number(value).toFixed(2) + " s";
  }

  function format(unit, value) {
    if (!present(value)) return "\u2014";
    if (unit === "ratio") return (value * 100).toFixed(1) + " %";
    if (unit === "bytes") return bytes(value);
    if (unit === "seconds") return seconds(value);
    if (unit === "per_second") return Number(value).toFixed(1) + "/s";
    return String(Math.round(value * 100) / 100);
  }

  function basename(path) { return String(path).split("/").pop(); }

  function incidentLink(path) {
    const name = basename(path);
    return el("a", { href: "/incidents/" + encodeURIComponent(name), text: name });
  }

  // --- controls (forms posting to /controls; the server confirms, checks and acts) ----
  function controlForm(action, fields, label) {
    const form = el("form", { method: "post", action: action });
    form.append(el("input", { type: "hidden", name: "csrf_token", value: csrf }));
    for (const field of fields) form.append(field);
    form.append(el("button", { type: "submit", text: label }));
    if (!operator) {
      for (const input of form.querySelectorAll("input, select, button")) input.disabled = true;
    }
    return form;
  }

  function silenceForm(service) {
    const duration = el("select", { name: "duration", "aria-label": "silence duration" });
    for (const choice of SILENCE_CHOICES) duration.append(el("option", { value: choice, text: choice }));
    const reason = el("input", { name: "reason", placeholder: "reason", required: true,
                                 maxlength: "200", "aria-label": "silence reason" });
    const form = controlForm("/controls/silence/" + encodeURIComponent(service), [duration, reason], "Silence");
    return el("details", { class: "silence" }, [el("summary", { text: "Silence alerts\u2026" }), form]);
  }

  function controls(service, isHub) {
    const box = el("div", { class: "controls" });
    if (isHub) box.append(el("span", { class: "muted", text: "the hub restarts the others, not itself" }));
    else box.append(controlForm("/controls/restart/" + encodeURIComponent(service), [], "Restart"));
    box.append(silenceForm(service));
    if (!operator) box.append(el("p", { class: "note", text: "operator sign-in required" }));
    return box;
  }

  // --- service cards ---------------------------------------------------------------
  function groupSection(group) {
    const id = "group-" + group;
    let section = document.getElementById(id);
    if (!section) {
      section = el("section", { id: id, "data-group": group }, [
        el("h2", { text: GROUP_TITLE[group] || group }), el("div", { class: "grid" })]);
      const rank = (g) => (GROUP_ORDER.includes(g) ? GROUP_ORDER.indexOf(g) : GROUP_ORDER.length);
      const after = Array.from(document.getElementById("services").children)
        .find((other) => rank(other.dataset.group) > rank(group));
      document.getElementById("services").insertBefore(section, after || null);
    }
    return section.querySelector(".grid");
  }

  function newCard(service, isHub) {
    const parts = {
      root: el("article", { class: "card grey", "data-service": service.name }),
      badge: el("span", { class: "badge grey" }),
      body: el("div"),
    };
    const tag = el("span", { class: "tag", text: service.critical ? "critical" : "" });
    parts.root.append(el("div", { class: "card-head" }, [el("h3", { text: service.name }), parts.badge, tag]));
    parts.root.append(parts.body, controls(service.name, isHub));
    cards.set(service.name, parts);
    return parts;
  }

  function updateCard(parts, service) {
    parts.last = service; // the ML figures re-render it between status documents
    const colour = STATE_COLOUR[service.state] || "grey";
    parts.root.dataset.state = service.state || "UNKNOWN";
    setColour(parts.root, colour);
    setColour(parts.badge, colour);
    parts.badge.textContent = service.state || "UNKNOWN";
    const rows = [
      ["since", el("span", { title: stamp(service.since), text: ago(service.since) })],
      ["restarts", dash(service.restarts) + " in the flap window"],
      ["pid", service.pid ? String(service.pid) : "\u2014"],
    ];
    if (service.incident) rows.push(["open incident", el("span", { class: "bad", text: service.incident })]);
    if (service.last_incident) rows.push(["last incident", incidentLink(service.last_incident)]);
    parts.body.replaceChildren(el("p", { class: "detail", text: dash(service.detail) }),
                               facts(rows.concat(serviceFacts(service))));
  }

  function renderServices(services, hubPid) {
    const names = new Set();
    for (const service of services) {
      names.add(service.name);
      // The hub's own entry is the one running as the hub's pid (from the document).
      const parts = cards.get(service.name) || newCard(service, Boolean(hubPid) && service.pid === hubPid);
      const grid = groupSection(service.group || "other");
      grid.append(parts.root); // keeps the registry order, moves nothing else
      updateCard(parts, service);
    }
    for (const [name, parts] of cards) {
      if (!names.has(name)) { parts.root.remove(); cards.delete(name); }
    }
  }

  // --- facts of the services the stack knows -------------------------------------------
  function serviceFacts(service) {
    const f = service.facts || {};
    const known = { redis: redisFacts, prometheus: prometheusFacts, ml_engine: mlFacts };
    if (known[service.name]) return known[service.name](f);
    return Object.entries(f).filter(([, v]) => typeof v !== "object").map(([k, v]) => [k, dash(v)]);
  }

  function redisFacts(f) {
    const limit = f.maxmemory_bytes ? bytes(f.maxmemory_bytes) : (present(f.maxmemory_bytes) ? "no limit" : "\u2014");
    const save = present(f.last_save) ? ago(f.last_save) + " (" + dash(f.rdb_last_bgsave_status) + ")" : "\u2014";
    const aof = present(f.aof_enabled) ? (f.aof_enabled ? "on, last write " + dash(f.aof_last_write_status) : "off") : "\u2014";
    return [["memory", bytes(f.used_memory_bytes) + " of " + limit], ["keys", dash(f.keys)],
            ["last save", save], ["AOF", aof], ["clients", dash(f.connected_clients)]];
  }

  function prometheusFacts(f) {
    const waiting = f.targets_unknown ? " (" + f.targets_unknown + " not scraped yet)" : "";
    const up = present(f.targets_up) ? f.targets_up + " of " + dash(f.targets_total) + " up" + waiting : "\u2014";
    return [["targets", up]];
  }

  function mlFacts(f) {
    const models = el("ul", { class: "plain" });
    for (const m of f.models || []) {
      models.append(el("li", { text: m.name + " v" + dash(m.version) + " \u00b7 " + dash(m.kind) + " \u00b7 " + dash(m.device) }));
    }
    if (!models.childElementCount) models.append(el("li", { text: "\u2014" }));
    const device = dash(f.device) + (f.device_reason ? " (" + f.device_reason + ")" : "");
    const rows = [["device", device], ["models", models], ["queue depth", dash(f.stream_length)],
                  ["pending", dash(f.pending)], ["dead letters", dash(f.dead_letters)]];
    if (mlFigures && !mlFigures.available) return rows.concat([["latency, requests/s", "metrics unavailable"]]);
    const perf = mlFigures || {};
    return rows.concat([["latency p50", seconds(perf.p50_seconds)], ["latency p99", seconds(perf.p99_seconds)],
                        ["requests/s", format("per_second", perf.requests_per_second)]]);
  }

  // --- hub: incidents, Slack, silences -------------------------------------------------
  function card(title, colour, children) {
    return el("article", { class: "card " + colour }, [el("h3", { text: title })].concat(children));
  }

  function renderAlerts(alerts) {
    const box = document.getElementById("alerts");
    if (!alerts || alerts.error) {
      box.replaceChildren(card("Alerts", "grey", [el("p", { text: "alerts unavailable: " + dash(alerts && alerts.error) })]));
      return;
    }
    box.replaceChildren(incidentsCard(alerts.incidents || []), slackCard(alerts), silencesCard(alerts.silences || []));
  }

  function incidentsCard(incidents) {
    const list = el("ul", { class: "plain" });
    for (const i of incidents) {
      const silenced = i.silenced_until ? " \u00b7 silenced until " + clock(i.silenced_until) : "";
      list.append(el("li", {}, [el("span", { class: i.severity === "critical" ? "bad" : "warn-text", text: i.severity + " " }),
        i.title + " \u00b7 since " + ago(i.since) + " \u00b7 " + (i.members || []).join(", ") + " \u00b7 " + i.stage + silenced]));
    }
    if (!incidents.length) list.append(el("li", { class: "good", text: "none open" }));
    const colour = incidents.some((i) => i.severity === "critical") ? "red" : incidents.length ? "amber" : "green";
    return card("Open incidents (" + incidents.length + ")", colour, [list]);
  }

  function slackCard(alerts) {
    const counts = (alerts.outbox && alerts.outbox.counts) || {};
    const delivery = alerts.delivery || {};
    const mode = alerts.slack === "off" ? "off: incidents are recorded and shown here only" : dash(alerts.slack);
    const sent = present(counts.sent_total) ? counts.sent_total : counts.sent;
    const rows = [["Slack", mode], ["outbox pending", dash(counts.pending)], ["failed", dash(counts.failed)],
      ["dropped", dash(counts.dropped)], ["sent", dash(sent)],
      ["last success", ago(delivery.last_success)], ["last error", dash(delivery.last_error)]];
    if (alerts.outbox && alerts.outbox.held_in_memory) rows.push(["held in memory", String(alerts.outbox.held_in_memory)]);
    const colour = delivery.last_error || counts.failed ? "amber" : alerts.slack === "off" ? "grey" : "green";
    const test = el("div", { class: "controls" }, [controlForm("/controls/test-alert", [], "Send a test alert")]);
    if (!operator) test.append(el("p", { class: "note", text: "operator sign-in required" }));
    return card("Slack outbox", colour, [facts(rows), test]);
  }

  function silencesCard(silences) {
    const list = el("ul", { class: "plain" });
    for (const s of silences) list.append(el("li", { text: s.service + " until " + stamp(s.until) + " \u2014 " + s.reason }));
    if (!silences.length) list.append(el("li", { class: "muted", text: "none" }));
    return card("Silences (" + silences.length + ")", silences.length ? "amber" : "green", [list]);
  }

  // --- system and GPU ----------------------------------------------------------------
  function meter(value, warn) {
    if (!present(value)) return "\u2014";
    const m = el("meter", { min: "0", max: "100", low: String(warn * 0.8), high: String(warn), optimum: "0", value: String(value) });
    return el("span", {}, [m, " " + percent(value)]);
  }

  function renderSystem(system) {
    const s = system || {};
    const box = document.getElementById("system");
    const disks = el("ul", { class: "plain" });
    for (const d of s.disks || []) {
      disks.append(el("li", {}, [el("strong", { text: dash(d.mount) }), " " + percent(d.free_percent) + " free \u00b7 " +
        bytes(d.free_bytes) + " of " + bytes(d.total_bytes)]), el("li", { class: "muted small", text: dash(d.path) }));
    }
    const low = (s.disks || []).some((d) => present(d.free_percent) && d.free_percent < 10);
    box.replaceChildren(
      card("CPU", present(s.cpu_percent) ? (s.cpu_percent > 90 ? "amber" : "green") : "grey", [facts([["used", meter(s.cpu_percent, 90)]])]),
      card("Memory", present(s.memory_percent) ? (s.memory_percent > 90 ? "amber" : "green") : "grey", [facts([["used", meter(s.memory_percent, 90)]])]),
      card("Disk (free)", disks.childElementCount ? (low ? "red" : "green") : "grey",
           [disks.childElementCount ? disks : el("p", { text: "\u2014" })]));
  }

  function gpuCard(d) {
    const rows = [["memory", bytes(d.memory_used_bytes) + " of " + bytes(d.memory_total_bytes)],
      ["utilisation", percent(d.utilization_percent)], ["temperature", present(d.temperature_c) ? d.temperature_c + " \u00b0C" : "\u2014"],
      ["power", present(d.power_watts) ? Number(d.power_watts).toFixed(0) + " W" : "\u2014"]];
    const errors = [["XID errors", d.xid_errors], ["ECC uncorrected", d.ecc_uncorrected],
      ["rows pending remap", d.remapped_rows_pending], ["row remap failed", d.remapped_rows_failed]];
    let colour = "green";
    for (const [label, value] of errors) {
      if (!present(value)) continue;
      rows.push([label, el("span", { class: value ? "bad" : "", text: String(value) })]);
      if (value) colour = "red";
    }
    return card("GPU " + d.index + " \u00b7 " + dash(d.name), colour, [facts(rows)]);
  }

  function renderGpu(gpu) {
    const box = document.getElementById("gpu");
    if (!gpu || !gpu.available) {
      // "no GPU on this host: why", or "unknown: ..." while the engine does not answer.
      const reason = dash(gpu && gpu.reason), none = "no GPU on this host: ";
      const absent = reason.startsWith(none);
      box.replaceChildren(card(absent ? "No GPU on this host" : "GPU state not known", "grey",
        [el("p", { text: absent ? reason.slice(none.length) : reason })]));
      return;
    }
    box.replaceChildren(...(gpu.devices || []).map(gpuCard));
  }

  // --- backups: the same words as unistack/dashboard/backups.py (the server's first render) -
  const ARCHIVE_CLASS = { verified: "good", sealed: "good", unverified: "warn-text", failed: "bad", partial: "bad" };
  const RECENT_ARCHIVES = 5;
  const DOT = " \u00b7 ";

  function number(v) { return typeof v === "number" && Number.isFinite(v) ? v : null; }
  function text(v) { return v === undefined || v === null ? "" : String(v); }
  function nowSeconds() { return Date.now() / 1000; }

  function span(secs) { // to the nearest unit: 40 s, 12 min, 3 h, 2 days 4 h (from 48 h on)
    const s = Math.max(0, secs);
    if (Math.round(s) < 60) return Math.round(s) + " s";
    if (Math.round(s / 60) < 60) return Math.round(s / 60) + " min";
    const hours = Math.round(s / 3600);
    if (hours < 48) return hours + " h";
    return Math.floor(hours / 24) + " days" + (hours % 24 ? " " + (hours % 24) + " h" : "");
  }

  function spanAgo(ts) { return number(ts) === null ? "\u2014" : span(nowSeconds() - ts) + " ago"; }
  function failedRun(last) { return Boolean(last) && typeof last === "object" && last.ok !== true; }
  function hms(ts) {
    const d = new Date(ts * 1000);
    return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":");
  }

  function backupWarnings(b) {
    const found = [];
    if (b.stale === true) {
      const ts = b.newest_verified && typeof b.newest_verified === "object" ? number(b.newest_verified.ts) : null;
      found.push(ts === null ? "no verified backup yet" : "no verified backup for " + span(nowSeconds() - ts));
    }
    if (failedRun(b.last)) found.push("last backup failed" + (text(b.last.detail) ? ": " + text(b.last.detail) : ""));
    return found;
  }

  function backupVerdict(b, off) {
    if (b.stale === true) return "stale";
    if (failedRun(b.last)) return "failed";
    return b.running === true ? "running" : off ? "off" : "ok";
  }

  function backupRunning(b) {
    if (b.running !== true) return "";
    const since = number(b.running_since);
    return since === null ? "backup running" : "backup running since " + hms(since) + " (for " + span(nowSeconds() - since) + ")";
  }

  function backupRows(b) {
    const n = b.newest_verified && typeof b.newest_verified === "object" ? b.newest_verified : null;
    const newest = n ? [spanAgo(n.ts), bytes(number(n.size)), text(n.state) || "\u2014"].join(DOT) : "none";
    let last = "none yet";
    if (b.last && typeof b.last === "object") {
      const parts = [failedRun(b.last) ? "failed" : "ok", spanAgo(b.last.ts)];
      if (number(b.last.took) !== null) parts.push("took " + b.last.took.toFixed(1) + " s");
      if (text(b.last.detail)) parts.push(text(b.last.detail));
      last = parts.join(DOT);
    }
    return [["newest verified", newest], ["last run", last], ["next backup", backupNext(b)], ["directory", text(b.dir) || "\u2014"]];
  }

  function backupNext(b) {
    const interval = number(b.interval), due = number(b.next_due), now = nowSeconds();
    if (interval === 0) return "scheduling off: a backup runs only when asked for";
    const when = due === null ? "\u2014" : due > now ? "in " + span(due - now) : "due now";
    return when + (interval ? " (every " + span(interval) + ")" : "");
  }

  function archiveItem(a) {
    const state = text(a.state) || "unknown";
    let line = [text(a.name) || "\u2014", spanAgo(a.ts), bytes(number(a.size))].join(DOT);
    if (a.encrypted === true && state !== "sealed") line += DOT + "encrypted";
    return el("li", { "data-state": state }, [el("span", { class: "state " + (ARCHIVE_CLASS[state] || ""), text: state }), " " + line]);
  }

  function backupControl() {
    const box = el("div", { class: "controls" }, [controlForm("/controls/backup", [], "Back up now")]);
    if (!operator) box.append(el("p", { class: "note", text: "operator sign-in required" }));
    return box;
  }

  function renderBackups(backups) {
    const b = backups && typeof backups === "object" && !Array.isArray(backups) ? backups : {};
    const root = el("article", { id: "backups-card", class: "card grey", "data-verdict": "unknown" }, [el("h3", { text: "Backups" })]);
    document.getElementById("backups").replaceChildren(root);
    if (!Object.keys(b).length) { root.append(el("p", { class: "muted", text: "no backup information from the hub" })); return; }
    const warnings = backupWarnings(b), off = number(b.interval) === 0;
    setColour(root, warnings.length ? "red" : off ? "grey" : "green");
    root.dataset.verdict = backupVerdict(b, off);
    for (const w of warnings) root.append(el("p", { class: "warning bad", text: w }));
    if (backupRunning(b)) root.append(el("p", { class: "running warn-text", text: backupRunning(b) }));
    const list = el("ul", { class: "plain archives" });
    for (const a of (Array.isArray(b.backups) ? b.backups : []).slice(0, RECENT_ARCHIVES)) {
      if (a && typeof a === "object") list.append(archiveItem(a));
    }
    if (!list.childElementCount) list.append(el("li", { class: "muted", text: "no archives yet" }));
    root.append(facts(backupRows(b)), list, backupControl());
  }

  // --- API keys: which are set and their last verification; never a value (the hub has none)
  const KEY_COLOUR = { valid: "green", rejected: "red", malformed: "red", "rate-limited": "amber", unreachable: "amber", missing: "red" };

  function keyCard(name, p) {
    const keys = p.keys && typeof p.keys === "object" ? p.keys : {};
    const unset = Object.keys(keys).filter((k) => keys[k] !== true);
    const status = text(p.status);
    const colour = unset.length ? "red" : KEY_COLOUR[status] || "grey";
    const root = card(text(p.title) || name, colour, []);
    root.dataset.provider = name;
    root.dataset.status = status || "unverified";
    const rows = Object.keys(keys).map((k) => [k, keys[k] === true ? "set" : "not set"]);
    rows.push(["last verified", number(p.verified) === null ? "never" : spanAgo(p.verified) + DOT + status]);
    if (name === "alpaca") rows.push(["endpoint", text(p.base_url).includes("paper-api.") ? "paper" : "live: " + text(p.base_url)]);
    root.append(facts(rows));
    if (unset.length) root.append(el("p", { class: "note", text: "set " + (unset.length > 1 ? "them" : "it") + ": scripts/update_api_keys.sh" }));
    else if (text(p.detail) && status !== "valid") root.append(el("p", { class: "note", text: text(p.detail) }));
    return root;
  }

  function renderKeys(keys) {
    const box = document.getElementById("keys");
    const providers = keys && keys.providers && typeof keys.providers === "object" ? keys.providers : null;
    if (!providers) { box.replaceChildren(card("API keys", "grey", [el("p", { class: "muted", text: "no key information from the hub" })])); return; }
    box.replaceChildren(...Object.keys(providers).map((name) => keyCard(name, providers[name] || {})));
  }

  // --- the whole status document --------------------------------------------------------
  function renderWarnings(warnings) {
    const box = document.getElementById("warnings");
    box.replaceChildren(...(warnings || []).map((w) => el("li", { text: w })));
    box.hidden = !box.childElementCount;
  }

  function hubDown(error, who) {
    const box = document.getElementById("hub-down");
    box.textContent = (who || "Hub") + " unreachable: " + error + "." +
      (lastStatusTs ? " The figures below are from " + clock(lastStatusTs) + " and may be stale." : "");
    box.hidden = false;
    document.getElementById("status-sections").classList.add("stale");
    const overall = document.getElementById("overall");
    overall.textContent = (who || "hub").toLowerCase() + " unreachable";
    setColour(overall, "grey");
  }

  function applyStatus(doc) {
    if (!doc || !doc.services || doc.ts < lastStatusTs) return;
    lastStatusTs = doc.ts;
    document.getElementById("hub-down").hidden = true;
    document.getElementById("status-sections").classList.remove("stale");
    const overall = document.getElementById("overall");
    overall.textContent = doc.overall;
    overall.dataset.overall = doc.overall;
    setColour(overall, OVERALL_COLOUR[doc.overall] || "grey");
    document.getElementById("as-of").textContent = "as of " + clock(doc.ts) +
      (doc.hub ? " \u00b7 hub pid " + doc.hub.pid + ", loop " + dash(doc.hub.loop_age) + " s" : "");
    renderWarnings(doc.warnings);
    renderServices(doc.services, doc.hub && doc.hub.pid);
    renderSystem(doc.system);
    renderGpu(doc.gpu);
    renderBackups(doc.backups);
    renderKeys(doc.keys);
  }

  function applySnapshot(snapshot) {
    if (snapshot.hub === "unreachable" || !snapshot.status) { hubDown(dash(snapshot.error)); return; }
    applyStatus(snapshot.status);
    renderAlerts(snapshot.alerts);
  }

  async function getJson(url) {
    const response = await fetch(url, { cache: "no-store", credentials: "same-origin" });
    if (!response.ok) throw new Error(url + " answered HTTP " + response.status);
    return response.json();
  }

  function refreshSnapshot() {
    return getJson("/api/status").then(applySnapshot).catch((e) => hubDown(e.message, "Dashboard"));
  }

  let snapshotTimer = null;
  function refreshSoon() { // an event arrived: its alerts follow shortly (cached 0.5 s)
    if (snapshotTimer) return;
    snapshotTimer = setTimeout(() => { snapshotTimer = null; refreshSnapshot(); }, 600);
  }

  // --- events ----------------------------------------------------------------------
  function eventItem(e) {
    const severity = ["info", "warning", "critical"].includes(e.severity) ? e.severity : "info";
    const item = el("li", { class: severity }, [
      el("span", { class: "when", title: stamp(e.ts), text: clock(e.ts) }),
      el("span", { class: "what", text: dash(e.service) + " " + dash(e.kind) }),
      el("span", { text: dash(e.detail) })]);
    if (e.actor && !String(e.detail).includes(e.actor)) item.append(el("span", { class: "muted", text: " \u00b7 by " + e.actor }));
    if (e.incident) item.append(" \u00b7 ", incidentLink(e.incident));
    return item;
  }

  function addEvent(e) {
    const key = present(e.id) ? "id:" + e.id : "ts:" + e.ts + e.service + e.kind;
    if (seenEvents.has(key)) return;
    seenEvents.add(key);
    if (present(e.id)) lastEventId = Math.max(lastEventId, Number(e.id));
    const list = document.getElementById("events");
    list.prepend(eventItem(e));
    while (list.childElementCount > MAX_EVENTS) list.lastElementChild.remove();
  }

  // --- live: SSE first, polling when it keeps failing -----------------------------------
  let source = null, failures = 0, pollTimer = null, retryTimer = null;

  function indicator(text, colour) {
    const live = document.getElementById("live");
    live.textContent = text;
    setColour(live, colour);
  }

  function connectLive() {
    if (!window.EventSource) { startPolling(); return; }
    if (source) source.close();
    source = new EventSource("/api/events" + (lastEventId ? "?after=" + lastEventId : ""));
    const alive = () => { failures = 0; stopPolling(); indicator("live", "green"); };
    source.addEventListener("event", (m) => { alive(); addEvent(JSON.parse(m.data)); refreshSoon(); });
    source.addEventListener("status", (m) => { alive(); applyStatus(JSON.parse(m.data)); });
    source.addEventListener("hub", (m) => hubDown(dash(JSON.parse(m.data).error)));
    source.onerror = () => {
      failures += 1;
      if (failures > MAX_STREAM_ERRORS) { source.close(); source = null; startPolling(); }
    };
  }

  function startPolling() { // and try the live stream again every 30 s
    indicator("polling", "amber");
    if (!pollTimer) pollTimer = setInterval(refreshSnapshot, POLL_MS);
    if (!retryTimer && window.EventSource) {
      retryTimer = setTimeout(() => { retryTimer = null; failures = 0; connectLive(); }, 30000);
    }
  }

  function stopPolling() {
    if (pollTimer) { clearInterval(pollTimer); pollTimer = null; }
  }

  // --- ML figures (Prometheus instant queries) ---------------------------------------------
  function refreshMl() {
    getJson("/api/ml").then((f) => { mlFigures = f; }).catch(() => { mlFigures = null; })
      .then(() => { const c = cards.get("ml_engine"); if (c && c.last) updateCard(c, c.last); });
  }

  // --- charts --------------------------------------------------------------------------
  const plots = new Map();

  function aligned(series) {
    const xs = Array.from(new Set(series.flatMap((s) => s.points.map((p) => p[0])))).sort((a, b) => a - b);
    const index = new Map(xs.map((x, i) => [x, i]));
    const ys = series.map((s) => {
      const values = new Array(xs.length).fill(null);
      for (const [x, y] of s.points) values[index.get(x)] = y;
      return values;
    });
    return [xs].concat(ys);
  }

  function seriesLabel(labels, fallback) {
    const values = Object.entries(labels || {}).filter(([k]) => k !== "__name__" && k !== "instance" && k !== "job");
    const service = (labels || {}).service;
    return service || values.map(([k, v]) => k + "=" + v).join(", ") || fallback;
  }

  function drawChart(box, doc) {
    const plot = box.querySelector(".plot"), note = box.querySelector(".note");
    if (plots.has(box)) { plots.get(box).destroy(); plots.delete(box); }
    if (!doc.available) { note.textContent = doc.reason; note.className = "note bad"; return; }
    note.className = "note muted";
    const points = doc.series.reduce((n, s) => n + s.points.filter((p) => p[1] !== null).length, 0);
    if (!points) { note.textContent = "no data in this range yet"; return; }
    note.textContent = doc.series.length + " series, one point every " + doc.step + " s";
    const unit = box.dataset.unit;
    const options = {
      width: Math.max(200, plot.clientWidth), height: 170,
      scales: { x: { time: true, auto: false, range: [doc.start, doc.end] } },
      legend: { show: doc.series.length > 1 },
      series: [{}].concat(doc.series.map((s, i) => ({
        label: seriesLabel(s.labels, box.querySelector("h3").textContent),
        stroke: PALETTE[i % PALETTE.length], width: 1.5, value: (u, v) => format(unit, v) }))),
      axes: [{ stroke: "#8b94a3", grid: { stroke: "#272d38" }, ticks: { stroke: "#272d38" }, space: 70,
               values: (u, ticks) => ticks.map(hourMinute) },
             { stroke: "#8b94a3", size: 64, grid: { stroke: "#272d38" }, ticks: { stroke: "#272d38" },
               values: (u, ticks) => ticks.map((v) => format(unit, v)) }],
    };
    plots.set(box, new window.uPlot(options, aligned(doc.series), plot));
  }

  function hourMinute(ts) {
    return new Date(ts * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function loadCharts() {
    for (const box of document.querySelectorAll(".chart")) {
      const url = "/api/history/" + encodeURIComponent(box.dataset.metric) + "?range=" + encodeURIComponent(range);
      getJson(url).then((doc) => drawChart(box, doc))
        .catch((e) => { box.querySelector(".note").textContent = "metrics unavailable: " + e.message; });
    }
  }

  function chooseRange(button) {
    range = button.dataset.range;
    for (const b of document.querySelectorAll(".ranges button")) b.setAttribute("aria-pressed", String(b === button));
    loadCharts();
  }

  // --- start --------------------------------------------------------------------------
  function start() {
    for (const b of document.querySelectorAll(".ranges button")) b.addEventListener("click", () => chooseRange(b));
    refreshSnapshot();
    refreshMl();
    loadCharts();
    getJson("/api/events/recent").then((d) => (d.events || []).forEach(addEvent)).catch(() => {})
      .then(connectLive);
    setInterval(refreshSnapshot, 10000);
    setInterval(refreshMl, 5000);
    setInterval(loadCharts, 15000);
    let resizeTimer = null;
    window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(loadCharts, 300); });
  }

  document.addEventListener("DOMContentLoaded", start);
})();
