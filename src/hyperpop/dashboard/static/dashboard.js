/* hyperpop dashboard: merges the page data the server (or the report) provides and draws it. */
(function () {
  "use strict";
  var cfg = window.HYPERPOP || {};
  // the page's copy of the run: per member arrays, grown by what changed since the last event
  // it has (the server's `since`), and what the user chose to see
  var D = null;
  var state = { sortKey: null, sortDir: 1, renders: 0, metric: null, x: "step", y: "auto", zoom: true,
                busy: false, again: false, timer: null, xrange: null };
  var t0 = performance.now();
  // actions need the token printed where `hyperpop dashboard` started (?token=... in the URL)
  var token = cfg.api ? new URLSearchParams(window.location.search).get("token") : null;

  // lines and marks drawn with WebGL (scattergl) where the browser renders it on a GPU; where
  // WebGL is emulated in software (no GPU: SwiftShader, llvmpipe) it is several times slower
  // than SVG, so SVG it is (?webgl=1 in the URL, or HYPERPOP.webgl, forces WebGL)
  var GL = null, SOFTWARE = false;
  (function () {
    try {
      var c = document.createElement("canvas"), gl = c.getContext("webgl") || c.getContext("experimental-webgl");
      if (!gl) return;
      var info = gl.getExtension("WEBGL_debug_renderer_info");
      GL = String(gl.getParameter(info ? info.UNMASKED_RENDERER_WEBGL : gl.RENDERER));
      SOFTWARE = /swiftshader|llvmpipe|softpipe|software/i.test(GL);
      var lose = gl.getExtension("WEBGL_lose_context");
      if (lose) lose.loseContext();
    } catch (e) { GL = null; }
  })();
  var forced = cfg.webgl || new URLSearchParams(window.location.search).get("webgl") === "1";
  var WEBGL = !!GL && (!SOFTWARE || forced);
  var LINES = WEBGL ? "scattergl" : "scatter";
  //: a plot draws at most this many points in all: beyond it each line keeps the lowest and
  //: highest point of each of its buckets (an equal share of the plot's pixel columns)
  var BUDGET = WEBGL && !SOFTWARE ? 400000 : 30000;
  //: beyond this many members, their lines are drawn as this many traces (hover names the member)
  var MAX_TRACES = 64;
  //: beyond this many ready points the family tree draws them as a heatmap (one image)
  var MAX_MARKERS = 3000, MAX_COLUMNS = 600;
  //: beyond this many exploits, marks and edges that land on the same pixels are drawn once
  var MAX_EXPLOITS = 3000;
  var BEST = "#d62728", EDGE = "rgba(90,90,90,0.45)";
  var LOG_SPAN = 100;

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
  function isNum(v) { return typeof v === "number" && isFinite(v); }
  function num(v) { return isNum(v) ? Number(v.toPrecision(7)) : null; }
  function colour(m) { return "hsl(" + ((m * 137.508) % 360).toFixed(0) + ",65%,42%)"; }
  // sub-populations or roles (MF-PBT, FIRE-PBT): the summary's groups, in order of their first
  // member; a member's lines take its group's colour
  var GROUP_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"];
  function groupNames() { return D.summary && D.summary.groups ? Object.keys(D.summary.groups) : []; }
  function groupOf(mid) { var r = D.rows[mid]; return r && r.group ? r.group : null; }
  function lineColour(mid, names) {
    var g = groupOf(mid), i = g === null ? -1 : names.indexOf(g);
    return i < 0 ? colour(mid) : GROUP_COLOURS[i % GROUP_COLOURS.length];
  }

  // --- merging the server's data ------------------------------------------------------------
  function cut(arr, start, add) {
    arr.length = Math.min(arr.length, start);
    while (arr.length < start) arr.push(null);
    for (var i = 0; i < add.length; i++) arr.push(add[i]);
    return arr;
  }
  function perMember(store, part, fields, keyed) {
    // part: {members, start, count, <field>: concatenated arrays, <keyed>: {name: arrays}}
    var at = 0;
    part.members.forEach(function (mid, k) {
      var n = part.count[k], s = part.start[k], o = store[mid];
      if (!o) { o = store[mid] = {}; fields.forEach(function (f) { o[f] = []; }); o[keyed] = {}; }
      fields.forEach(function (f) { if (part[f]) cut(o[f], s, part[f].slice(at, at + n)); });
      Object.keys(part[keyed] || {}).forEach(function (name) {
        o[keyed][name] = cut(o[keyed][name] || [], s, part[keyed][name].slice(at, at + n));
      });
      at += n;
    });
  }
  function merge(d) {
    if (d.since === -1 || !D) {
      D = { lines: {}, configs: {}, nodes: {}, rows: {}, held: [], times: false,
            exploits: { member: [], donor: [], step: [], text: [], t: [], y: {} },
            rejuvenations: { member: [], at: [] } };
    }
    if (d.series_since === -1) {
      D.lines = {};
      D.exploits = { member: [], donor: [], step: [], text: [], t: [], y: {} };
      D.held = Object.keys(d.series.y);
      D.times = !!d.series.t;
    }
    ["epoch", "seq", "summary", "metric", "metrics", "mode", "params", "log_params", "clock",
     "lineage", "best"].forEach(function (k) { D[k] = d[k]; });
    perMember(D.lines, d.series, ["step", "t"], "y");
    if (!d.series.t) D.times = false;  // wall times not kept up to date: fetched again if asked
    var ex = d.exploits;
    ["member", "donor", "step", "text", "t"].forEach(function (f) { if (ex[f]) cut(D.exploits[f], ex.start, ex[f]); });
    Object.keys(ex.y).forEach(function (m) { D.exploits.y[m] = cut(D.exploits.y[m] || [], ex.start, ex.y[m]); });
    var rj = d.rejuvenations;
    cut(D.rejuvenations.member, rj.start, rj.member);
    cut(D.rejuvenations.at, rj.start, rj.at);
    perMember(D.configs, d.configs, ["step"], "values");
    perMember(D.nodes, d.nodes, ["step", "score"], "none");
    d.members.forEach(function (r) { D.rows[r.member] = r; });
  }
  function memberIds(store) { return Object.keys(store).map(Number).sort(function (a, b) { return a - b; }); }

  // --- downsampling ---------------------------------------------------------------------------
  // consecutive points that land in one of `cols` buckets across [x0, x1] are replaced by the
  // lowest and the highest of them, in their order, so spikes survive; gaps are kept
  function decimate(xs, ys, x0, x1, cols, ox, oy) {
    var scale = cols / ((x1 - x0) || 1), col = null, lo = -1, hi = -1;
    function flush() {
      if (lo < 0) return;
      var a = Math.min(lo, hi), b = Math.max(lo, hi);
      ox.push(xs[a]); oy.push(ys[a]);
      if (b !== a) { ox.push(xs[b]); oy.push(ys[b]); }
      lo = hi = -1;
    }
    for (var i = 0; i < xs.length; i++) {
      var x = xs[i], y = ys[i];
      if (x === null || x === undefined || y === null || y === undefined) {
        flush(); col = null; ox.push(x === undefined ? null : x); oy.push(null); continue;
      }
      var c = Math.floor((x - x0) * scale);
      if (c !== col) { flush(); col = c; }
      if (lo < 0 || y < ys[lo]) lo = i;
      if (hi < 0 || y > ys[hi]) hi = i;
    }
    flush();
  }
  function extent(lists) {
    var lo = Infinity, hi = -Infinity;
    lists.forEach(function (xs) {
      for (var i = 0; i < xs.length; i++) { var v = xs[i]; if (v !== null && v < lo) lo = v; if (v !== null && v > hi) hi = v; }
    });
    return lo <= hi ? [lo, hi] : [0, 1];
  }
  var widths = {};  // read before the table is redrawn (reading after forces a layout)
  function plotWidth(id) {
    if (!widths[id]) widths[id] = Math.max(300, ($(id).clientWidth || 1200) - 80);
    return widths[id];
  }
  // each of `lines` ([xs, ys]) as drawn: whole if the plot's points fit the budget, else with
  // at most two points per bucket, `cols` buckets across the visible x range
  // the points of a line in the x range r, with a neighbour on each side so the line reaches
  // the plot's edges (a break where points were left out)
  function visible(l, r) {
    var xs = l[0], ys = l[1], ox = [], oy = [], n = xs.length, skipped = false;
    function inside(i) { var x = xs[i]; return x !== null && x !== undefined && x >= r[0] && x <= r[1]; }
    for (var i = 0; i < n; i++) {
      if (inside(i) || (i > 0 && inside(i - 1)) || (i + 1 < n && inside(i + 1))) {
        if (skipped && ox.length) { ox.push(null); oy.push(null); }
        skipped = false;
        ox.push(xs[i]); oy.push(ys[i]);
      } else {
        skipped = true;
      }
    }
    return [ox, oy];
  }
  function fit(lines, id, range) {
    if (range) lines = lines.map(function (l) { return visible(l, range); });
    var total = lines.reduce(function (a, l) { return a + l[0].length; }, 0);
    var width = plotWidth(id);
    var cols = Math.max(2, Math.min(width, Math.floor(BUDGET / (2 * Math.max(1, lines.length)))));
    var span = range || extent(lines.map(function (l) { return l[0]; }));
    return lines.map(function (l) {
      if (total <= BUDGET && l[0].length <= 2 * width) return l;
      if (l[0].length <= 2 * cols) return l;
      var ox = [], oy = [];
      decimate(l[0], l[1], span[0], span[1], cols, ox, oy);
      return [ox, oy];
    });
  }

  // --- the score plot -----------------------------------------------------------------------
  function clock() {
    var span = (D.clock && D.clock.span) || 0;
    if (span >= 3 * 3600) return [3600, "h"];
    if (span >= 3 * 60) return [60, "min"];
    return [1, "s"];
  }
  function quantile(sorted, q) {
    var pos = q * (sorted.length - 1), i = Math.floor(pos), f = pos - i;
    return i + 1 < sorted.length ? sorted[i] + f * (sorted[i + 1] - sorted[i]) : sorted[i];
  }
  // the y range where most values are (as figures.robust_range): 5% to 95%, the better side to
  // its extreme, unless that cuts less than half of the full range
  function robustRange(values, better, log) {
    // past 100,000 values, the quantiles of an evenly strided sample (the extremes exact)
    var stride = Math.max(1, Math.floor(values.length / 100000)), v = [], low = Infinity, high = -Infinity;
    for (var i = 0; i < values.length; i++) {
      var x = values[i];
      if (!isNum(x) || (log && x <= 0)) continue;
      if (x < low) low = x;
      if (x > high) high = x;
      if (i % stride === 0) v.push(x);
    }
    if (stride > 1) v.push(low, high);
    if (log) v = v.map(Math.log10);
    if (v.length < 4) return null;
    v = Float64Array.from(v).sort();
    var lo = quantile(v, 0.05), hi = quantile(v, 0.95);
    low = v[0]; high = v[v.length - 1];
    if (better === "max") hi = high; else if (better === "min") lo = low;
    if (hi - lo > 0.5 * (high - low)) return null;
    var pad = 0.05 * (hi - lo) || 0.05 * Math.abs(hi) || 1.0;
    return [num(lo - pad), num(hi + pad)];
  }
  function logAxis(values) {
    var lo = Infinity, hi = -Infinity, n = 0;
    for (var i = 0; i < values.length; i++) {
      var v = values[i];
      if (!isNum(v)) continue;
      if (v <= 0) return false;
      n += 1; if (v < lo) lo = v; if (v > hi) hi = v;
    }
    return n >= 2 && hi >= LOG_SPAN * lo;
  }
  function trend(values) {
    var f = values.filter(isNum);
    if (f.length < 2 || f[0] === f[f.length - 1]) return null;
    return f[f.length - 1] > f[0] ? "max" : "min";
  }
  function scoresFigure() {
    var metric = state.metric, main = D.metric, time = state.x === "time";
    var c = clock(), unit = c[0];
    var xlabel = time ? "wall time (" + c[1] + ")" : "training step";
    var meta = { metric: metric, xlabel: time ? c[1] : "step" };
    var hover = "%{meta.xlabel} %{x}<br>%{meta.metric} %{y:.4g}";
    function tx(t) { return t === null || t === undefined ? null : Math.round((t / unit) * 1e4) / 1e4; }
    var ids = memberIds(D.lines), lines = [];
    ids.forEach(function (mid) {
      var l = D.lines[mid];
      lines.push([time ? l.t.map(tx) : l.step, l.y[metric] || []]);
    });
    var values = [].concat.apply([], lines.map(function (l) { return l[1]; }));
    var drawn = fit(lines, "plot-scores", state.xrange), data;
    var names = groupNames(), legend = {};
    function named(mid) { var g = groupOf(mid); return "member " + mid + (g === null ? "" : " (" + g + ")"); }
    if (ids.length <= MAX_TRACES) {
      data = ids.map(function (mid, k) {
        var g = groupOf(mid), first = g !== null && !legend[g];
        if (first) legend[g] = true;
        return {
          type: LINES, mode: "lines", x: drawn[k][0], y: drawn[k][1], name: first ? g : named(mid),
          line: { width: 1.2, color: lineColour(mid, names) }, opacity: 0.75, showlegend: first,
          legendgroup: g === null ? undefined : g,
          hovertemplate: named(mid) + "<br>" + hover + "<extra></extra>",
          meta: Object.assign({ kind: "member", member: mid, group: g, points: lines[k][0].length }, meta),
        };
      });
    } else {  // members share a trace (and a colour): one per group, else k, k + MAX_TRACES, ...
      data = [];
      var buckets = [];
      ids.forEach(function (mid, k) {
        var b = names.length ? Math.max(0, names.indexOf(groupOf(mid))) : k % MAX_TRACES;
        (buckets[b] = buckets[b] || []).push(k);
      });
      buckets.forEach(function (ks, b) {
        var gx = [], gy = [], gt = [], gm = [], pts = 0;
        ks.forEach(function (k) {
          var label = named(ids[k]), dx = drawn[k][0], dy = drawn[k][1];
          for (var i = 0; i < dx.length; i++) { gx.push(dx[i]); gy.push(dy[i]); gt.push(label); }
          gx.push(null); gy.push(null); gt.push(null);
          gm.push(ids[k]); pts += lines[k][0].length;
        });
        var g = names.length ? names[b] : null;
        data.push({
          type: LINES, mode: "lines", x: gx, y: gy, text: gt,
          name: g !== null ? g : "members " + gm[0] + ", " + (gm[1] === undefined ? "" : gm[1] + ", …"),
          line: { width: 1.2, color: lineColour(gm[0], names) }, opacity: 0.75, showlegend: g !== null,
          hovertemplate: "%{text}<br>" + hover + "<extra></extra>",
          meta: Object.assign({ kind: "members", members: gm, group: g, points: pts }, meta),
        });
      });
    }
    var lin = D.lineage, lineageY = [];
    if (lin) {
      lineageY = lin.y[metric] || [];
      data.push({
        type: LINES, mode: "lines", x: time ? lin.t.map(tx) : lin.step, y: lineageY,
        text: lin.by.map(function (m) { return "trained by member " + m; }),
        name: "best member " + lin.member + "'s lineage", line: { width: 3, color: BEST },
        hovertemplate: "best member " + lin.member + "'s lineage: %{text}<br>" + hover + "<extra></extra>",
        meta: Object.assign({ kind: "lineage", member: lin.member, steps: lin.step.length }, meta),
      });
    }
    var ex = D.exploits, exX = time ? ex.t.map(tx) : ex.step, exY = ex.y[metric] || [], exT = ex.text;
    var log = state.y === "log" || (state.y === "auto" && logAxis(values));
    if (ex.member.length > MAX_EXPLOITS) {  // marks on the same pixels drawn once
      var xr = extent([exX]), yr = extent([exY]), seen = {}, kx = [], ky = [], kt = [];
      var wx = plotWidth("plot-scores") / 4 / ((xr[1] - xr[0]) || 1);
      var f = function (v) { return log ? Math.log10(Math.max(v, 1e-300)) : v; };
      var wy = 100 / ((f(yr[1]) - f(yr[0])) || 1);
      for (var i = 0; i < exX.length; i++) {
        if (exY[i] === null) continue;
        var key = Math.floor((exX[i] - xr[0]) * wx) + ":" + Math.floor((f(exY[i]) - f(yr[0])) * wy);
        if (seen[key]) continue;
        seen[key] = 1; kx.push(exX[i]); ky.push(exY[i]); kt.push(exT[i]);
      }
      exX = kx; exY = ky; exT = kt;
    }
    data.push({
      type: LINES, mode: "markers", x: exX, y: exY, text: exT,
      name: "exploit (takes the donor's weights)",
      marker: { symbol: "triangle-up", size: 7, color: "#222", opacity: 0.8 },
      hovertemplate: "%{text}<br>" + hover + "<extra></extra>",
      meta: Object.assign({ kind: "exploits", count: ex.member.length }, meta),
    });
    var better = metric === main ? D.mode : trend(lineageY);
    var span = robustRange(values, better, log);
    var title = metric + " over training" +
      (metric === main ? " (" + (D.mode === "max" ? "higher" : "lower") + " is better)" : "");
    var layout = baseLayout(title, xlabel, metric, { height: 420 });
    layout.yaxis.type = log ? "log" : "linear";
    layout.yaxis.autorange = span === null || !state.zoom;
    if (span !== null && state.zoom) layout.yaxis.range = span;
    // a new choice starts from its own axes, not the zoom of the previous one
    layout.uirevision = [metric, state.x, state.y, state.zoom].join("|");
    return { data: data, layout: layout, log: log };
  }
  function baseLayout(title, x, y, extra) {
    return Object.assign({
      title: { text: title, x: 0.01, xanchor: "left", font: { size: 15 } },
      xaxis: { title: { text: x }, zeroline: false },
      yaxis: { title: { text: y }, zeroline: false },
      hovermode: "closest",
      margin: { l: 60, r: 20, t: 50, b: 45 },
      legend: { orientation: "h", x: 1, xanchor: "right", y: 1, yanchor: "bottom" },
      uirevision: "keep",  // keep the user's zoom while the page updates
      plot_bgcolor: "#fafafa",
    }, extra || {});
  }

  // --- the schedules ------------------------------------------------------------------------
  function scheduleFigure() {
    var params = D.params.length ? D.params : ["(no hyperparameters)"];
    var n = params.length, gap = n > 1 ? 0.06 : 0, height = (1 - gap * (n - 1)) / n;
    var layout = baseLayout("hyperparameter schedules (best member's lineage in red)", "training step", "",
                            { height: Math.max(320, 200 * n + 80), showlegend: true });
    var data = [], best = D.best, ids = memberIds(D.configs);
    var pieces = [];
    params.forEach(function (p) {
      ids.forEach(function (mid) {
        var c = D.configs[mid];
        if (!c.step.length) return;
        var row = D.rows[mid], vals = c.values[p] || [];
        var xs = c.step.slice(), ys = c.step.map(function (_, i) { return vals[i] === undefined ? null : vals[i]; });
        xs.push(row ? row.step : xs[xs.length - 1]);
        ys.push(ys[ys.length - 1]);
        pieces.push([xs, ys, p, mid]);
      });
    });
    var numeric = pieces.map(function (pc) { return pc[1].every(function (v) { return v === null || typeof v === "number"; }); });
    var fitted = fit(pieces.map(function (pc) { return [pc[0], pc[1]]; }), "plot-schedule", null);
    params.forEach(function (p, i) {
      var axis = i === 0 ? "" : String(i + 1), top = 1 - i * (height + gap);
      var yaxis = { domain: [Math.max(0, top - height), top], title: { text: p }, zeroline: false };
      if (D.log_params.indexOf(p) >= 0) yaxis.type = "log";
      layout["yaxis" + axis] = yaxis;
      if (i) {
        layout["xaxis" + axis] = { matches: "x", anchor: "y" + axis, zeroline: false, showticklabels: i === n - 1,
                                   title: { text: i === n - 1 ? "training step" : "" } };
      } else {
        layout.xaxis.anchor = "y";
        layout.xaxis.showticklabels = n === 1;
        if (n > 1) layout.xaxis.title = { text: "" };
      }
      var xs = [], ys = [], texts = [], members = 0;
      pieces.forEach(function (pc, k) {
        if (pc[2] !== p) return;
        members += 1;
        var f = numeric[k] ? fitted[k] : [pc[0], pc[1]];
        for (var j = 0; j < f[0].length; j++) { xs.push(f[0][j]); ys.push(f[1][j]); texts.push("member " + pc[3]); }
        xs.push(null); ys.push(null); texts.push(null);
      });
      var ref = { xaxis: i === 0 ? "x" : "x" + axis, yaxis: axis ? "y" + axis : "y" };
      // a parameter with text values (a choice of names) stays an SVG trace: WebGL draws numbers
      var text = ys.some(function (v) { return typeof v === "string"; });
      data.push(Object.assign({
        type: text ? "scatter" : LINES, mode: "lines", x: xs, y: ys, text: texts,
        line: { shape: "hv", width: 1, color: "rgba(31,119,180,0.45)" },
        name: "members", legendgroup: "members", showlegend: i === 0,
        hovertemplate: "%{text}<br>step %{x}<br>" + p + " %{y}<extra></extra>",
        meta: { kind: "population", param: p, members: members },
      }, ref));
      if (best && best.schedule.length) {
        var sched = best.schedule;
        var bx = sched.map(function (s) { return s.step; }).concat([best.step]);
        var by = sched.map(function (s) { var v = s.config[p]; return v === undefined ? null : v; });
        by.push(by[by.length - 1]);
        var bt = sched.map(function (s) { return "trained by member " + s.member; }).concat(["now"]);
        data.push(Object.assign({
          type: "scatter", mode: "lines+markers", x: bx, y: by, text: bt,
          line: { shape: "hv", width: 3, color: BEST }, marker: { size: 5 },
          name: "best member " + best.member + "'s lineage", legendgroup: "best", showlegend: i === 0,
          hovertemplate: "step %{x}<br>" + p + " %{y}<br>%{text}<extra></extra>",
          meta: { kind: "best", param: p, member: best.member },
        }, ref));
      }
    });
    return { data: data, layout: layout };
  }

  // --- the family tree ----------------------------------------------------------------------
  var NONE = { step: [], score: [] };
  function treeNodes() {
    // each member's ready points, and where it is now
    var out = {};
    memberIds(D.rows).forEach(function (mid) {
      var n = D.nodes[mid] || NONE, steps = n.step.slice(), scores = n.score.slice(), row = D.rows[mid];
      if (row && row.score !== null && row.score !== undefined && (!steps.length || steps[steps.length - 1] !== row.step)) {
        steps.push(row.step); scores.push(row.score);
      }
      out[mid] = [steps, scores];
    });
    return out;
  }
  function lineageFigure() {
    var metric = D.metric, ids = memberIds(D.rows), nodes = treeNodes();
    var total = ids.reduce(function (a, m) { return a + (D.nodes[m] || NONE).step.length; }, 0) + ids.length;
    var big = total > MAX_MARKERS, data = [];
    var colorbar = { title: { text: metric }, thickness: 12 };
    if (!big) {
      var nx = [], ny = [], nc = [];
      ids.forEach(function (mid) {
        var p = nodes[mid];
        for (var i = 0; i < p[0].length; i++) { nx.push(p[0][i]); ny.push(mid); nc.push(p[1][i]); }
      });
      data.push({
        type: LINES, mode: "markers", x: nx, y: ny, name: "member at a ready point",
        marker: { size: 7, color: nc, colorscale: "Viridis", reversescale: D.mode === "min", showscale: true,
                  colorbar: colorbar, line: { width: 0 } },
        hovertemplate: "member %{y}<br>step %{x}<br>" + metric + " %{marker.color:.4g}<extra></extra>",
        showlegend: false, meta: { kind: "nodes", members: ids.length },
      });
    } else {
      // one cell per member and ready point (binned beyond MAX_COLUMNS), drawn as one image
      var seen = {};
      ids.forEach(function (mid) { (D.nodes[mid] || NONE).step.forEach(function (s) { seen[s] = 1; }); });
      var steps = Object.keys(seen).map(Number).sort(function (a, b) { return a - b; });
      var columns = steps, index = {};
      if (steps.length > MAX_COLUMNS) {
        var lo = steps[0], hi = steps[steps.length - 1], w = Math.max(1, Math.ceil((hi - lo + 1) / MAX_COLUMNS));
        columns = [];
        for (var s = lo; s <= hi; s += w) columns.push(s);
        steps.forEach(function (st) { index[st] = Math.floor((st - lo) / w); });
      } else {
        steps.forEach(function (st, i) { index[st] = i; });
      }
      var z = ids.map(function (mid) {
        var row = new Array(columns.length).fill(null), n = D.nodes[mid] || NONE;
        for (var i = 0; i < n.step.length; i++) row[index[n.step[i]]] = n.score[i];
        return row;
      });
      data.push({
        type: "heatmap", x: columns, y: ids, z: z, colorscale: "Viridis", reversescale: D.mode === "min",
        colorbar: colorbar, hoverongaps: false,
        hovertemplate: "member %{y}<br>step %{x}<br>" + metric + " %{z:.4g}<extra></extra>",
        showlegend: false, meta: { kind: "nodes", members: ids.length },
      });
    }
    var ex = D.exploits, labels = ex.text, exX = [], exY = [], exT = [];
    if (ex.member.length > MAX_EXPLOITS) {
      // vertical edges in one pixel column drawn as the union of their spans
      var width = plotWidth("plot-lineage"), xr = extent([ex.step]), scale = width / ((xr[1] - xr[0]) || 1);
      var cols = {};
      for (var i = 0; i < ex.step.length; i++) {
        var c = Math.floor((ex.step[i] - xr[0]) * scale), a = Math.min(ex.donor[i], ex.member[i]), b = Math.max(ex.donor[i], ex.member[i]);
        (cols[c] = cols[c] || { x: ex.step[i], spans: [], n: 0 }).spans.push([a, b]);
        cols[c].n += 1;
      }
      Object.keys(cols).forEach(function (k) {
        var col = cols[k], spans = col.spans.sort(function (p, q) { return p[0] - q[0]; }), cur = null;
        var label = col.n + " exploits near step " + col.x;
        spans.concat([null]).forEach(function (sp) {
          if (cur && (sp === null || sp[0] > cur[1] + 1)) {
            exX.push(col.x, col.x, null); exY.push(cur[0], cur[1], null); exT.push(label, label, null); cur = null;
          }
          if (sp) cur = cur ? [cur[0], Math.max(cur[1], sp[1])] : sp.slice();
        });
      });
    } else {
      for (var j = 0; j < ex.member.length; j++) {
        exX.push(ex.step[j], ex.step[j], null); exY.push(ex.donor[j], ex.member[j], null); exT.push(labels[j], labels[j], null);
      }
    }
    data.push({
      type: LINES, mode: "lines", x: exX, y: exY, text: exT,
      line: { width: 1, color: !big ? EDGE : "rgba(255,255,255,0.55)" },
      name: "exploit: donor → receiver", hovertemplate: "%{text}<extra></extra>",
      meta: { kind: "edges", count: ex.member.length },
    });
    if (!big) {
      data.push({
        type: "scatter", mode: "markers", x: ex.step.slice(), y: ex.member.slice(), text: labels.slice(),
        marker: { symbol: ex.member.map(function (m, i) { return m < ex.donor[i] ? "triangle-up" : "triangle-down"; }),
                  size: 8, color: "#444" },
        name: "receiver", showlegend: false, hovertemplate: "%{text}<extra></extra>",
        meta: { kind: "receivers", count: ex.member.length },
      });
    }
    var rj = D.rejuvenations;
    if (rj.member.length) {
      data.push({
        type: "scatter", mode: "markers", x: rj.at.slice(), y: rj.member.slice(),
        marker: { symbol: "x", size: 8, color: "#e377c2" }, name: "rejuvenated (restarts from scratch)",
        hovertemplate: "member %{y} rejuvenated at step %{x}<extra></extra>",
        meta: { kind: "rejuvenations", count: rj.member.length },
      });
    }
    var best = D.best;
    if (best && best.schedule.length) {
      var px = [], py = [], sch = best.schedule;
      sch.forEach(function (seg, i) {
        var end = i + 1 < sch.length ? sch[i + 1].step : best.step;
        px.push(seg.step, end); py.push(seg.member, seg.member);
      });
      data.push({
        type: "scatter", mode: "lines", x: px, y: py, line: { width: 3, color: BEST },
        name: "best member " + best.member + "'s lineage",
        hovertemplate: "lineage of the best: trained by member %{y}<extra></extra>",
        meta: { kind: "best", member: best.member },
      });
    }
    var n = ids.length;
    var layout = baseLayout("family tree: members over training steps, exploit edges donor → receiver",
                            "training step", "member", { height: Math.floor(Math.min(1400, Math.max(360, 120 + 14 * n))), showlegend: true });
    layout.yaxis.autorange = "reversed";
    if (n) { layout.yaxis.range = [ids[n - 1] + 0.6, ids[0] - 0.6]; layout.yaxis.autorange = false; }
    if (n <= 40) layout.yaxis.dtick = 1;
    return { data: data, layout: layout };
  }

  // --- summary, table, steering -------------------------------------------------------------
  function renderSummary(s) {
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
    var groups = s.groups || {};
    if (Object.keys(groups).length) {
      cards.push(["groups", Object.keys(groups).map(function (g) { return fmt(groups[g]) + " " + esc(g); }).join(", ")]);
    }
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
  // a whole number typed in a field, or an error naming the field and what to type
  function wholeNumber(id, what, min) {
    var raw = $(id).value.trim();
    if (raw === "") throw new Error("type " + what + " first");
    var n = Number(raw);
    if (!Number.isInteger(n) || n < min) throw new Error(what + " must be a whole number" + (min > 0 ? " of at least " + min : " (0 or more)") + ", not " + raw);
    return n;
  }
  function steer(ev) {
    var b = ev.target.closest("button[data-kind]");
    if (!b) return;
    var kind = b.dataset.kind, body;
    var out = $("steer-answer");
    try {
      var member = function () { return wholeNumber("steer-member", "a member id (the member field)", 0); };
      if (kind === "pin" || kind === "unpin") body = { kind: "pin", member: member(), data: { pinned: kind === "pin" } };
      else if (kind === "stop-member") body = { kind: "stop", member: member() };
      else if (kind === "stop") { if (!window.confirm("Stop the run? (resume it later)")) return; body = { kind: "stop" }; }
      else if (kind === "set") {
        var m = member(), config = parseConfig($("steer-config").value);
        if (!Object.keys(config).length) throw new Error("type the hyperparameters to set first (lr=0.01 momentum=0.9)");
        body = { kind: "set_config", member: m, data: { config: config } };
      }
      else if (kind === "copy") body = { kind: "copy", member: member(), data: { donor: wholeNumber("steer-donor", "the member to copy from", 0) } };
      else if (kind === "add") body = { kind: "add", data: { count: wholeNumber("steer-count", "how many members to add", 1) } };
      else if (kind === "workers") body = { kind: "workers", data: { workers: wholeNumber("steer-workers", "how many members train at once", 1) } };
      else if (kind === "budget") body = { kind: "budget", data: { budget: [{ type: "steps", n: wholeNumber("steer-steps", "the step budget", 1) }] } };
    } catch (e) {
      out.className = "small refused";
      out.textContent = String(e.message || e);
      return;
    }
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
    return ["member"].concat(groupNames().length ? ["group"] : [], ["status", "step", "score"], D.params.map(function (p) { return "config/" + p; }),
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
      state.sortDir = D.summary && D.summary.mode === "min" ? 1 : -1;
    }
    var key = state.sortKey;
    var rows = memberIds(D.rows).map(function (m) { return D.rows[m]; }).sort(function (a, b) {
      var c = compare(cell(a, key), cell(b, key));
      return c !== 0 ? c : a.member - b.member;
    });
    $("members").tHead.innerHTML = "<tr>" + cols.map(function (c) {
      var cls = (c === key ? (state.sortDir > 0 ? "sorted-asc " : "sorted-desc ") : "") + c.replace("/", "-");
      var label = c === "score" && D.summary ? D.summary.metric : c.replace("config/", "");
      return '<th data-col="' + esc(c) + '" class="' + esc(cls) + '">' + esc(label) + "</th>";
    }).join("") + "</tr>";
    var best = D.summary ? D.summary.best_member : null;
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
    if (!th || !D) return;
    var c = th.dataset.col;
    if (state.sortKey === c) state.sortDir = -state.sortDir;
    else { state.sortKey = c; state.sortDir = c === "score" && D.summary && D.summary.mode === "max" ? -1 : 1; }
    renderTable();
  }

  // --- drawing --------------------------------------------------------------------------------
  var PLOT = { responsive: true, displaylogo: false };
  function renderControls() {
    var sel = $("score-metric");
    if (!state.metric || D.metrics.indexOf(state.metric) < 0) state.metric = D.metric;
    var have = Array.prototype.map.call(sel.options, function (o) { return o.value; }).join("\n");
    if (have !== D.metrics.join("\n")) {
      sel.innerHTML = D.metrics.map(function (m) {
        return '<option value="' + esc(m) + '">' + esc(m) + (m === D.metric ? " (optimised)" : "") + "</option>";
      }).join("");
    }
    sel.value = state.metric;
    $("scores-controls").hidden = !D.metrics.length;
  }
  // whether the page holds what the score plot's choices need (a live page fetches the rest)
  function holds() { return D.held.indexOf(state.metric) >= 0 && (state.x !== "time" || D.times); }
  function drawScores() {
    if (!holds()) return Promise.resolve();
    var f = scoresFigure();
    var auto = $("score-y").options[0];
    auto.textContent = "auto (" + (state.y === "auto" ? (f.log ? "log" : "linear") : "linear or log") + ")";
    return Plotly.react($("plot-scores"), f.data, f.layout, PLOT).then(function (gd) {
      if (!state.listening) { gd.on("plotly_relayout", onZoom); state.listening = true; }
      document.body.dataset.scoreMetric = state.metric || "";
      document.body.dataset.scoreX = state.x;
      document.body.dataset.scoreY = state.y + ":" + (f.log ? "log" : "linear");
      document.body.dataset.scoreZoom = state.zoom ? "1" : "0";
    });
  }
  function onControl() {
    var before = [state.metric, state.x].join("|");
    state.metric = $("score-metric").value;
    state.x = $("score-x").value;
    state.y = $("score-y").value;
    state.zoom = $("score-zoom").checked;
    state.xrange = null;
    if (!D) return;
    if (!holds() && cfg.api) { if (before !== [state.metric, state.x].join("|")) pollNow(); return; }
    drawScores();
  }
  function onZoom(ev) {
    // redraw at the detail of the visible x range (the buckets are pixels of what is shown)
    if (!D || !ev) return;
    var a = ev["xaxis.range[0]"], b = ev["xaxis.range[1]"], r = null;
    if (a !== undefined && b !== undefined) r = [a, b];
    else if (ev["xaxis.range"]) r = ev["xaxis.range"];
    else if (!ev["xaxis.autorange"]) return;
    state.xrange = r;
    var f = scoresFigure();
    if (r) f.layout.xaxis.range = r;
    Plotly.react($("plot-scores"), f.data, f.layout, PLOT).then(function () {
      document.body.dataset.scoreRange = r ? r.join(",") : "";
    });
  }

  // the first draw's steps, in ms since the script started (window.hyperpopTimes)
  function mark(name) {
    if (state.renders > 1) return;
    (window.hyperpopTimes = window.hyperpopTimes || []).push([name, Math.round(performance.now() - t0)]);
  }
  function render() {
    mark("render");
    widths = {};
    ["plot-scores", "plot-schedule", "plot-lineage"].forEach(plotWidth);
    renderSummary(D.summary);
    renderTable();
    renderControls();
    mark("table");
    var scores = drawScores();
    mark("scores");
    var sched = scheduleFigure();
    var one = Plotly.react($("plot-schedule"), sched.data, sched.layout, PLOT);
    mark("schedule");
    var tree = lineageFigure();
    var two = Plotly.react($("plot-lineage"), tree.data, tree.layout, PLOT);
    mark("tree");
    return Promise.all([scores, one, two]).then(function () {
      mark("drawn");
      requestAnimationFrame(function () { requestAnimationFrame(function () { mark("frame"); }); });
      state.renders += 1;
      document.body.dataset.seq = String(D.seq);
      document.body.dataset.renders = String(state.renders);
      if (state.renders === 1) window.hyperpopLoadMs = performance.now() - t0;
    });
  }

  function query() {
    var q = { metric: state.metric || "", x: state.x };
    if (D) {
      q.since = D.seq;
      q.epoch = D.epoch;
      q.series_since = holds() ? D.seq : -1;
    } else {
      q.since = -1;
    }
    return Object.keys(q).map(function (k) { return k + "=" + encodeURIComponent(q[k]); }).join("&");
  }
  function pollNow() {
    if (state.busy) { state.again = true; return; }
    clearTimeout(state.timer);
    poll();
  }
  function poll() {
    var delay = cfg.interval || 1000;
    var started = performance.now();
    state.busy = true;
    fetch(cfg.api + "?" + query(), { cache: "no-store" })
      .then(function (r) { return r.json(); })
      .then(function (j) {
        if (j.error) { showError(j.error); document.body.dataset.status = "error"; return null; }
        showError("");
        if (j.view) { merge(j.view); D.summary = j.summary; return render(); }
        if (j.summary && D) { D.summary = j.summary; renderSummary(j.summary); }
        return null;
      })
      .catch(function (e) { showError("Lost contact with the dashboard server (" + e + "); retrying…"); })
      .then(function () {
        state.busy = false;
        if (state.again) { state.again = false; delay = 0; }
        // back off when rendering is slow (the page stays free at least half the time),
        // and when the run is over (not after the first draw, which also loads plotly.js)
        else {
          if (state.renders > 1) delay = Math.max(delay, Math.min(performance.now() - started, 5000));
          if (D && D.summary && D.summary.status === "finished") delay = Math.max(delay, 5000);
        }
        state.timer = setTimeout(poll, delay);
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    $("members").tHead.addEventListener("click", onSort);
    ["score-metric", "score-x", "score-y", "score-zoom"].forEach(function (id) { $(id).addEventListener("change", onControl); });
    if (token) { $("steer").hidden = false; $("steer").addEventListener("click", steer); }
    if (typeof Plotly === "undefined") { showError("plotly.js did not load"); return; }
    // what draws the lines: "webgl", or "svg" and why (no WebGL, or WebGL without a GPU)
    document.body.dataset.renderer = WEBGL ? "webgl" : GL ? "svg (WebGL without a GPU)" : "svg (no WebGL)";
    if (cfg.view) {
      mark("loaded");
      merge(cfg.view);
      mark("merged");
      render().catch(function (e) { showError("cannot draw the report: " + e); });
    } else if (cfg.error) {
      showError(cfg.error);
      document.body.dataset.status = "error";
    } else {
      poll();
    }
  });
})();
