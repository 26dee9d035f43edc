/* hyperpop dashboard: renders the view the server (or the report) provides. */
(function () {
  "use strict";
  var cfg = window.HYPERPOP || {};
  var state = { seq: -1, rows: [], params: [], summary: null, sortKey: null, sortDir: 1, renders: 0,
                view: null, metric: null, x: "step", zoom: true };
  var FIGS = ["scores", "schedule", "lineage"];
  var t0 = performance.now();
  // actions need the token printed where `hyperpop dashboard` started (?token=... in the URL)
  var token = cfg.api ? new URLSearchParams(window.location.search).get("token") : null;

  function $(id) { return document.getElementById(id); }
  function esc(v) {
    return String(v).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function fmt(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "number") {
      if (Number.isInteger(v)) return String(v);
      return Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(3) : v.toPrecision(4);
    }
    return String(v);
  }
  function duration(s) {
    s = Math.round(s || 0);
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return (h ? h + "h " : "") + (h || m ? m + "m " : "") + r + "s";
  }
  function showError(msg) {
    var el = $("error");
    el.textContent = msg || "";
    el.hidden = !msg;
    document.body.dataset.error = msg ? "1" : "";
  }

  function renderSummary(s) {
    state.summary = s;
    var cards = [
      ["status", '<span class="badge ' + esc(s.status.split(" ").pop()) + '">' + esc(s.status) + "</span>" +
        (s.reason ? ' <span class="small muted">' + esc(s.reason) + "</span>" : "")],
      ["elapsed", duration(s.elapsed)],
      ["members", fmt(s.members)],
      ["reports", fmt(s.reports)],
      ["exploits", fmt(s.exploits)],
      ["failures", fmt(s.failures)],
      ["best " + esc(s.metric) + " (" + esc(s.mode) + ")",
        s.best_member === null ? "–" : fmt(s.best_score) + ' <span class="small muted">member ' + s.best_member + "</span>"],
      ["max step", fmt(s.max_step)],
    ];
    if (s.unrecorded_reports) cards.splice(4, 0, ["in flight", fmt(s.unrecorded_reports) + ' <span class="small muted">reports</span>']);
    if (s.pinned && s.pinned.length) cards.push(["pinned", esc(s.pinned.join(", "))]);
    if (s.rejuvenations) cards.splice(5, 0, ["rejuvenations", fmt(s.rejuvenations)]);
    if (s.resumes) cards.push(["resumes", fmt(s.resumes)]);
    $("summary").innerHTML = cards.map(function (c) {
      return '<div class="card" data-key="' + esc(c[0].split(" ")[0]) + '"><div class="k">' + c[0] +
        '</div><div class="v">' + c[1] + "</div></div>";
    }).join("");
    document.body.dataset.status = s.status;
    // the header: "live" while a driver writes, else what the run is now
    var note = $("note");
    if (note.dataset.base === undefined) note.dataset.base = note.textContent;
    if (cfg.api) note.textContent = s.status === "running" ? "live" : s.status;
    else note.textContent = note.dataset.base + " · run: " + s.status;
    var iv = s.interventions || [];
    $("interventions").hidden = !iv.length;
    $("interventions").innerHTML = iv.length ? "<b>By people:</b> " + iv.map(function (i) {
      return '<span class="intervention" data-kind="' + esc(i.kind) + '">' + esc(i.kind) + ": " + esc(i.what) + "</span>";
    }).join(" · ") : "";
  }

  function parseConfig(text) {
    var out = {};
    text.trim().split(/\s+/).filter(Boolean).forEach(function (item) {
      var eq = item.indexOf("=");
      if (eq < 1) throw new Error(item + ": write name=value");
      var raw = item.slice(eq + 1), value;
      try { value = JSON.parse(raw); } catch (e) { value = raw; }
      var parts = item.slice(0, eq).split("/"), node = out;
      parts.slice(0, -1).forEach(function (p) { node = node[p] = node[p] || {}; });
      node[parts[parts.length - 1]] = value;
    });
    return out;
  }
  function steer(ev) {
    var b = ev.target.closest("button[data-kind]");
    if (!b) return;
    var kind = b.dataset.kind, member = $("steer-member").value, body;
    try {
      if (kind === "pin" || kind === "unpin") body = { kind: "pin", member: member, data: { pinned: kind === "pin" } };
      else if (kind === "stop-member") body = { kind: "stop", member: member };
      else if (kind === "stop") { if (!window.confirm("Stop the run? (resume it later)")) return; body = { kind: "stop" }; }
      else if (kind === "set") body = { kind: "set_config", member: member, data: { config: parseConfig($("steer-config").value) } };
      else if (kind === "copy") body = { kind: "copy", member: member, data: { donor: Number($("steer-donor").value) } };
      else if (kind === "add") body = { kind: "add", data: { count: Number($("steer-count").value || 1) } };
      else if (kind === "budget") body = { kind: "budget", data: { budget: [{ type: "steps", n: Number($("steer-steps").value) }] } };
    } catch (e) { $("steer-answer").textContent = String(e.message || e); return; }
    var out = $("steer-answer");
    out.className = "small";
    out.textContent = "sent…";
    fetch("api/request", {
      method: "POST", cache: "no-store",
      headers: { "Content-Type": "application/json", "X-Hyperpop-Token": token },
      body: JSON.stringify(body),
    }).then(function (r) { return r.json(); }).then(function (j) {
      out.className = "small " + (j.error ? "refused" : j.status);
      out.textContent = j.error ? j.error : "request " + j.id + " " + j.status + ": " + j.reason;
    }).catch(function (e) { out.textContent = "cannot reach the dashboard: " + e; });
  }

  function columns() {
    return ["member", "status", "step", "score"].concat(state.params.map(function (p) { return "config/" + p; }),
      ["parent", "exploits", "failures", "error"], cfg.api ? ["log"] : []);
  }
  function cell(r, c) { return c.indexOf("config/") === 0 ? r.config[c.slice(7)] : r[c]; }
  function compare(a, b) {
    if (a === b) return 0;
    if (a === null || a === undefined) return 1;
    if (b === null || b === undefined) return -1;
    if (typeof a === "number" && typeof b === "number") return (a - b) * state.sortDir;
    return String(a).localeCompare(String(b)) * state.sortDir;
  }
  function renderTable() {
    var cols = columns();
    if (state.sortKey === null) {  // best first
      state.sortKey = "score";
      state.sortDir = state.summary && state.summary.mode === "min" ? 1 : -1;
    }
    var key = state.sortKey;
    var rows = state.rows.slice().sort(function (a, b) {
      var c = compare(cell(a, key), cell(b, key));
      return c !== 0 ? c : a.member - b.member;
    });
    $("members").tHead.innerHTML = "<tr>" + cols.map(function (c) {
      var cls = (c === key ? (state.sortDir > 0 ? "sorted-asc " : "sorted-desc ") : "") + c.replace("/", "-");
      var label = c === "score" && state.summary ? state.summary.metric : c.replace("config/", "");
      return '<th data-col="' + esc(c) + '" class="' + esc(cls) + '">' + esc(label) + "</th>";
    }).join("") + "</tr>";
    var best = state.summary ? state.summary.best_member : null;
    $("members").tBodies[0].innerHTML = rows.map(function (r) {
      var cls = (r.member === best ? "best " : "") + (r.status === "failed" ? "failed" : "");
      return '<tr data-member="' + r.member + '" class="' + cls + '">' + cols.map(function (c) {
        var v = cell(r, c);
        if (c === "log") return '<td class="log"><a href="logs/' + r.member + '" target="_blank" rel="noopener">log</a></td>';
        if (c === "status" && r.pinned) v = v + " (pinned)";
        if (c === "step" && r.live_step !== null && r.live_step !== undefined && r.live_step > r.step) v = r.step + " → " + r.live_step;
        var title = c === "error" && v ? ' title="' + esc(v) + '"' : "";
        return '<td class="' + esc(c.replace("/", "-")) + '"' + title + ">" + esc(c === "error" && !v ? "" : fmt(v)) + "</td>";
      }).join("") + "</tr>";
    }).join("");
  }
  function onSort(ev) {
    var th = ev.target.closest("th");
    if (!th) return;
    var c = th.dataset.col;
    if (state.sortKey === c) state.sortDir = -state.sortDir;
    else { state.sortKey = c; state.sortDir = c === "score" && state.summary && state.summary.mode === "max" ? -1 : 1; }
    renderTable();
  }

  // the score plot: the server's figure for the optimised metric over training steps, with
  // the patches of another metric and of the wall-time axis laid over a copy of it
  function merge(target, patch) {
    Object.keys(patch).forEach(function (k) {
      var v = patch[k], t = target[k];
      if (v && typeof v === "object" && !Array.isArray(v) && t && typeof t === "object" && !Array.isArray(t)) {
        target[k] = merge(Object.assign({}, t), v);
      } else {
        target[k] = v;
      }
    });
    return target;
  }
  function scoresFigure(view) {
    var base = view.figures.scores, opts = view.scores || { metrics: [], patches: {} };
    var data = base.data.map(function (t) { return Object.assign({}, t); });
    var layout = JSON.parse(JSON.stringify(base.layout));
    var patches = [];
    if (state.metric && opts.patches[state.metric]) patches.push(opts.patches[state.metric]);
    if (state.x === "time" && opts.time) patches.push(opts.time);
    patches.forEach(function (p) {
      p.data.forEach(function (d, i) { if (data[i]) merge(data[i], d); });
      merge(layout, p.layout);
    });
    if (!state.zoom || layout.yaxis.autorange) { layout.yaxis.autorange = true; delete layout.yaxis.range; }
    // a new choice starts from its own axes, not the zoom of the previous one
    layout.uirevision = [state.metric || opts.metric, state.x, state.zoom].join("|");
    return { data: data, layout: layout };
  }
  function renderControls(view) {
    var opts = view.scores || { metrics: [] }, sel = $("score-metric");
    if (!state.metric || opts.metrics.indexOf(state.metric) < 0) state.metric = opts.metric;
    var have = Array.prototype.map.call(sel.options, function (o) { return o.value; }).join("\n");
    if (have !== opts.metrics.join("\n")) {
      sel.innerHTML = opts.metrics.map(function (m) {
        return '<option value="' + esc(m) + '">' + esc(m) + (m === opts.metric ? " (optimised)" : "") + "</option>";
      }).join("");
    }
    sel.value = state.metric;
    $("scores-controls").hidden = !opts.metrics.length;
  }
  function drawScores() {
    var f = scoresFigure(state.view);
    return Plotly.react($("plot-scores"), f.data, f.layout, { responsive: true, displaylogo: false }).then(function () {
      document.body.dataset.scoreMetric = state.metric || "";
      document.body.dataset.scoreX = state.x;
      document.body.dataset.scoreZoom = state.zoom ? "1" : "0";
    });
  }
  function onControl() {
    state.metric = $("score-metric").value;
    state.x = $("score-x").value;
    state.zoom = $("score-zoom").checked;
    if (state.view) drawScores();
  }

  function render(view) {
    state.rows = view.members;
    state.params = view.params;
    state.view = view;
    renderSummary(view.summary);
    renderTable();
    renderControls(view);
    var config = { responsive: true, displaylogo: false };
    return Promise.all(FIGS.map(function (name) {
      if (name === "scores") return drawScores();
      var f = view.figures[name];
      return Plotly.react($("plot-" + name), f.data, f.layout, config);
    })).then(function () {
      state.seq = view.seq;
      state.renders += 1;
      document.body.dataset.seq = String(view.seq);
      document.body.dataset.renders = String(state.renders);
      if (state.renders === 1) window.hyperpopLoadMs = performance.now() - t0;
    });
  }

  function poll() {
    var delay = cfg.interval || 1000;
    var started = performance.now();
    fetch(cfg.api + "?since=" + state.seq, { cache: "no-store" })
      .then(function (r) { return r.json(); })
      .then(function (j) {
        if (j.error) { showError(j.error); document.body.dataset.status = "error"; return null; }
        showError("");
        if (j.view) { j.view.summary = j.summary; return render(j.view); }
        if (j.summary) renderSummary(j.summary);
        return null;
      })
      .catch(function (e) { showError("Lost contact with the dashboard server (" + e + "); retrying…"); })
      .then(function () {
        // back off when rendering is slow (the page stays free at least half the time),
        // and when the run is over
        // (not after the first draw, which also pays for loading plotly.js)
        if (state.renders > 1) delay = Math.max(delay, Math.min(performance.now() - started, 5000));
        if (state.summary && state.summary.status === "finished") delay = Math.max(delay, 5000);
        setTimeout(poll, delay);
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    $("members").tHead.addEventListener("click", onSort);
    ["score-metric", "score-x", "score-zoom"].forEach(function (id) { $(id).addEventListener("change", onControl); });
    if (token) { $("steer").hidden = false; $("steer").addEventListener("click", steer); }
    if (typeof Plotly === "undefined") { showError("plotly.js did not load"); return; }
    if (cfg.view) {
      render(cfg.view).catch(function (e) { showError("cannot draw the report: " + e); });
    } else if (cfg.error) {
      showError(cfg.error);
      document.body.dataset.status = "error";
    } else {
      poll();
    }
  });
})();
