/* darkpool web: the sandbox, market and evaluation tabs (Plotly.js served by this app). */
(function () {
  "use strict";

  var state = { config: null, database: null, inflight: null, seq: 0, lastData: null,
                uirevision: null, scanRows: [], scanColumns: [], scanSort: null };
  var $ = function (id) { return document.getElementById(id); };
  var SEED_TITLES = ["Combined Buy/Sell Ratio", "Volume Weighted Directional Flow",
    "FINRA Buy Volume (B)", "Short Sale Buy/Sell Ratio", "Accumulation Score (Current)",
    "Accumulation Score (Option A: vw_flow_z)", "Accumulation Score (Option B: blended)"];
  var SEED_HEIGHTS = [2.2, 2.2, 1.6, 2.2, 1.8, 1.8, 1.8];
  var SCORE_COLUMNS = [["current", "acc_score_current"], ["option_a", "acc_score_a"],
                       ["option_b", "acc_score_b"]];
  var DOT_VARIANTS = { current: ["current"], option_a: ["option_a"], option_b: ["option_b"],
                       all: ["current", "option_a", "option_b"] };
  var SANDBOX_FIELDS = ["ticker", "start", "end", "dot_mode", "blend_short_weight",
    "blend_flow_weight", "seed_exact", "experimental", "variants", "formula", "bands_signal",
    "bands_window"];

  // -- small helpers --------------------------------------------------------------------------

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") { node.textContent = attrs[key]; }
      else if (key === "className") { node.className = attrs[key]; }
      else { node.setAttribute(key, attrs[key]); }
    });
    (children || []).forEach(function (child) { node.appendChild(child); });
    return node;
  }
  function fmt(value, digits) {
    if (value === null || value === undefined || (typeof value === "number" && !isFinite(value))) {
      return "NA";
    }
    if (typeof value !== "number") { return String(value); }
    var a = Math.abs(value);
    if (Number.isInteger(value) && a < 1e4) { return String(value); }
    if (a >= 1e9) { return (value / 1e9).toFixed(2) + "B"; }
    if (a >= 1e6) { return (value / 1e6).toFixed(2) + "M"; }
    if (a >= 1e4) { return (value / 1e3).toFixed(1) + "K"; }
    return value.toFixed(digits === undefined ? 3 : digits);
  }
  function fetchJson(url, options) {
    return fetch(url, options).then(function (response) {
      return response.text().then(function (text) {
        var body;
        try { body = text ? JSON.parse(text) : {}; }
        catch (e) { body = { error: "the server answered " + response.status + " (not JSON)" }; }
        if (!response.ok) {
          var error = new Error(body.error || ("HTTP " + response.status));
          error.status = response.status; error.body = body;
          throw error;
        }
        return body;
      });
    });
  }
  function clearErrors(form) {
    form.querySelectorAll(".field-error").forEach(function (span) { span.textContent = ""; });
    form.querySelectorAll(".invalid").forEach(function (node) { node.classList.remove("invalid"); });
  }
  function showError(form, box, error) {
    var body = error.body || {};
    var param = body.parameter;
    var placed = false;
    if (param) {
      var span = form.querySelector('.field-error[data-for="' + param + '"]');
      if (span) {
        span.textContent = body.error + (body.hint ? " (" + body.hint + ")" : "");
        var input = form.querySelector('[name="' + param + '"]');
        if (input) { input.classList.add("invalid"); }
        placed = true;
      }
    }
    box.replaceChildren(
      el("strong", { text: (error.status ? error.status + ": " : "") + (body.error || error.message) }));
    if (body.hint) { box.appendChild(el("p", { className: "hint", text: "hint: " + body.hint })); }
    box.hidden = false;
    if (placed) { box.dataset.parameter = param; } else { delete box.dataset.parameter; }
  }
  function table(caption, headers, rows, numeric) {
    var head = el("tr", {}, headers.map(function (h) { return el("th", { text: h }); }));
    var body = rows.map(function (row) {
      return el("tr", {}, row.map(function (cell, i) {
        return el("td", { className: numeric && numeric(i) ? "num" : "", text: cell });
      }));
    });
    var t = el("table", {}, [el("caption", { text: caption }), el("thead", {}, [head]),
                              el("tbody", {}, body)]);
    return t;
  }

  // -- tabs -----------------------------------------------------------------------------------

  function showTab(name) {
    document.querySelectorAll(".tab").forEach(function (tab) {
      tab.classList.toggle("active", tab.dataset.tab === name);
      tab.setAttribute("aria-selected", tab.dataset.tab === name ? "true" : "false");
    });
    document.querySelectorAll(".tab-panel").forEach(function (panel) {
      panel.hidden = panel.id !== "panel-" + name;
    });
    ["chart", "index-chart", "quantile-chart", "ic-chart"].forEach(function (id) {
      var node = $(id);
      if (node && node.data && !node.closest("[hidden]")) { Plotly.Plots.resize(node); }
    });
  }

  // -- first screen: database coverage --------------------------------------------------------

  function renderDatabase(db) {
    state.database = db;
    var banner = $("synthetic-banner");
    banner.hidden = !db.synthetic;
    var note = db.synthetic_note || "";
    banner.textContent = !db.synthetic ? "" : note.indexOf(db.label) === 0 ? note : db.label + (note ? " - " + note : "");
    var owed = $("owed-warning");
    owed.hidden = !db.owed;
    owed.textContent = db.owed ? "warning: " + db.owed : "";
    var rows = db.sources.map(function (s) {
      var gaps = s.gaps ? s.gaps + " missing " + (s.weekly ? "week(s)" : "session(s)") +
        (s.gap_dates.length ? ": " + s.gap_dates.slice(0, 5).join(", ") + (s.gaps > 5 ? " ..." : "") : "")
        : (s.rows ? "none" : "");
      return [s.label, s.rows.toLocaleString(), s.symbols.toLocaleString(), s.first || "-",
              s.last || "-", gaps];
    });
    var box = $("coverage");
    box.replaceChildren(table(db.path, ["source", "rows", "symbols", "first", "last", "gaps"],
                              rows, function (i) { return i === 1 || i === 2; }));
    if (!db.sources.length) {
      box.appendChild(el("p", { className: "warn", text: "the database has no source tables yet: run `darkpool demo` or an ingest" }));
    }
  }

  // -- the sandbox ----------------------------------------------------------------------------

  function sandboxParams() {
    var form = $("sandbox-form");
    var params = new URLSearchParams();
    SANDBOX_FIELDS.forEach(function (name) {
      var input = form.querySelector('[name="' + name + '"]');
      if (!input) { return; }
      if (input.type === "checkbox") { if (input.checked) { params.set(name, "1"); } return; }
      var value = input.value.trim();
      if (name === "formula") {
        value.split("\n").map(function (l) { return l.trim(); }).filter(Boolean)
          .forEach(function (line) { params.append("formula", line); });
        return;
      }
      if (name === "bands_window" && (!form.querySelector('[name="bands_signal"]').value.trim())) { return; }
      if (value !== "") { params.set(name, value); }
    });
    if (params.get("bands_signal")) { params.set("panels", "bands"); }
    return params;
  }

  function fillForm(params) {
    var form = $("sandbox-form");
    SANDBOX_FIELDS.forEach(function (name) {
      var input = form.querySelector('[name="' + name + '"]');
      if (!input) { return; }
      if (name === "formula") { input.value = params.getAll("formula").join("\n"); return; }
      if (!params.has(name)) { return; }
      if (input.type === "checkbox") { input.checked = ["1", "true", "on", "yes"].indexOf(params.get(name)) >= 0; }
      else { input.value = params.get(name); }
    });
    syncSliders();
  }

  function syncSliders() {
    document.querySelectorAll("input[data-mirror]").forEach(function (range) {
      var number = $(range.dataset.mirror);
      if (number.value !== "" && isFinite(Number(number.value))) { range.value = number.value; }
    });
  }

  function loadSandbox(options, started) {
    var form = $("sandbox-form");
    var params = sandboxParams();
    if (!params.get("ticker")) {
      clearErrors(form);
      showError(form, $("error"), { status: 400, body: { parameter: "ticker", error: "ticker: is required", hint: "e.g. NKE" } });
      return Promise.resolve();
    }
    var query = params.toString();
    var seq = ++state.seq;
    if (state.inflight) { state.inflight.abort(); }
    state.inflight = new AbortController();
    $("status").textContent = "computing...";
    var t0 = performance.now();
    // the first load reuses the request the page started with the URL's parameters (they
    // were filled into the form, so it asks for the same thing)
    var request = started ? started.promise : fetchJson("/api/sandbox?" + query, { signal: state.inflight.signal });
    return request
      .then(function (data) {
        if (seq !== state.seq) { return; }
        clearErrors(form);
        $("error").hidden = true;
        $("results").classList.remove("stale");
        history.replaceState(null, "", "/?" + query);
        state.lastData = data;
        var fresh = data.summary.symbol + "|" + data.summary.start + "|" + data.summary.end;
        if (!options || !options.keepZoom || state.uirevision !== fresh) { state.uirevision = fresh; }
        renderResults(data, query);
        var ms = Math.round(performance.now() - (started ? started.t0 : t0));
        $("status").textContent = data.summary.rows + " sessions in " + ms + " ms";
        document.body.dataset.chartSeq = String(seq);
      })
      .catch(function (error) {
        if (error.name === "AbortError") { return; }
        if (seq !== state.seq) { return; }
        clearErrors(form);
        showError(form, $("error"), error);
        $("results").classList.add("stale");  // the chart below is the previous request's
        $("status").textContent = "";
      });
  }

  var pending = null;
  function scheduleLoad() {
    if (pending) { clearTimeout(pending); }
    pending = setTimeout(function () { pending = null; loadSandbox({ keepZoom: true }); }, 120);
  }

  function renderResults(data, query) {
    var s = data.summary;
    $("results").hidden = false;
    $("results-title").textContent = s.symbol + " " + s.start + " .. " + s.end + ": " + s.rows +
      " rows, " + s.mode + (s.label ? "  [" + s.label + "]" : "");
    $("results-meta").textContent = "stored coverage: " + s.coverage.first + " .. " + s.coverage.last +
      (s.owed ? "  -  warning: " + s.owed : "");
    $("csv-link").href = "/api/frame.csv?" + query;
    $("png-link").href = "/chart.png?" + query;
    $("svg-link").href = "/chart.svg?" + query;
    $("summary-link").href = "/api/summary?" + query;
    var zoneRows = Object.keys(s.zones).map(function (name) {
      var z = s.zones[name];
      return [name, String(z.accumulation), String(z.distribution), String(z.neutral), String(z.missing)];
    });
    $("zones").replaceChildren(table("Days per zone", ["variant", "accumulation", "distribution",
      "between", "no score"], zoneRows, function (i) { return i > 0; }));
    var gaps = $("gaps");
    if (s.gaps.length) {
      gaps.replaceChildren(el("p", { className: "warn", text: "data gaps: " + s.gaps.length +
        " session(s) without short data: " + s.gaps.slice(0, 10).join(", ") + (s.gaps.length > 10 ? " (+" + (s.gaps.length - 10) + " more)" : "") }));
    } else {
      gaps.replaceChildren(el("p", { className: "ok", text: "no data gaps: every session in range has short data" }));
    }
    drawSandbox(data);
  }

  // The seed's score colours: purple - grey - green (deviation from 50 raised to 0.85).
  function hexToRgb(hex) {
    var n = parseInt(hex.slice(1), 16);
    return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
  }
  function scoreColor(score, confidence) {
    var c = state.config.colors;
    var norm = Math.min(Math.max(score / 100, 0), 1);
    var dev = norm - 0.5;
    norm = Math.min(Math.max(0.5 + Math.sign(dev) * Math.pow(Math.abs(dev), 0.85), 0), 1);
    var lo = hexToRgb(c.purple), mid = [0x55, 0x55, 0x55], hi = hexToRgb(c.green);
    var a = norm < 0.5 ? lo : mid, b = norm < 0.5 ? mid : hi, t = norm < 0.5 ? norm / 0.5 : (norm - 0.5) / 0.5;
    var rgb = [0, 1, 2].map(function (i) { return Math.round(a[i] + (b[i] - a[i]) * t); });
    return "rgba(" + rgb.join(",") + "," + (confidence >= 0.6 ? 0.8 : 0.4) + ")";
  }
  function stripColor(confidence) {
    var c = state.config.colors;
    var hex = confidence >= 0.7 ? c.green : confidence >= 0.4 ? c.yellow : c.red;
    var rgb = hexToRgb(hex);
    return "rgba(" + rgb.join(",") + ",0.6)";
  }

  function column(rows, name) { return rows.map(function (r) { return r[name]; }); }

  function drawSandbox(data) {
    var c = state.config.colors;
    var rows = data.rows;
    var x = column(rows, "date");
    var dotMode = data.request.dot_mode;
    var panels = [];  // {title, height, traces: [], shapes: [], yrange, ytick}
    function hline(y, color, dash, opacity) {
      return { type: "line", xref: "x domain", x0: 0, x1: 1, y0: y, y1: y,
               line: { color: color, width: 1, dash: dash || "dash" }, opacity: opacity || 0.7 };
    }
    function line(name, values, color) {
      return { type: "scatter", mode: "lines+markers", name: name, x: x, y: values,
               line: { color: color || c.cyan, width: 1.8 },
               marker: { color: color || c.cyan, size: 5, line: { color: c.white, width: 0.4 } },
               connectgaps: false, hovertemplate: "%{y:.4~f}" };
    }
    function ratioPanel(title, name, key) {
      var values = column(rows, key);
      var max = Math.max.apply(null, values.filter(function (v) { return v !== null; }).concat([0]));
      return { title: title, traces: [line(name, values)], yrange: [0, Math.max(2, max * 1.1)],
               shapes: [hline(1.0, c.neutral), hline(1.25, c.green), hline(0.75, c.red)] };
    }
    panels.push(ratioPanel(SEED_TITLES[0], "combined ratio", "combined_ratio"));
    var flow = column(rows, "vw_flow");
    var fmax = Math.max.apply(null, flow.filter(function (v) { return v !== null; }).map(Math.abs).concat([1]));
    var flowTrace = line("vw flow", flow);
    flowTrace.hovertemplate = "%{y:.4s}";
    panels.push({ title: SEED_TITLES[1], traces: [flowTrace], yrange: [-fmax * 1.1, fmax * 1.1],
                  shapes: [hline(0, c.neutral)] });
    panels.push({ title: SEED_TITLES[2], traces: [{ type: "bar", name: "FINRA B", x: x,
                  y: column(rows, "finra_buy_volume"), marker: { color: c.yellow, opacity: 0.5 },
                  hovertemplate: "%{y:.4s}" }], shapes: [] });
    panels.push(ratioPanel(SEED_TITLES[3], "short ratio", "short_buy_sell_ratio"));
    var conf = column(rows, "confidence");
    var dotSources = {};
    SCORE_COLUMNS.forEach(function (pair) { dotSources[pair[0]] = column(rows, pair[1]); });
    var specs = state.config.dot_specs;
    SCORE_COLUMNS.forEach(function (pair, k) {
      var scores = dotSources[pair[0]];
      var traces = [{
        type: "bar", name: "score " + pair[0], x: x, y: scores,
        marker: { color: scores.map(function (v, i) { return v === null ? "rgba(0,0,0,0)" : scoreColor(v, conf[i]); }) },
        customdata: conf, hovertemplate: "%{y:.1f}", showlegend: false
      }, {
        type: "bar", name: "confidence", x: x, base: -12, y: conf.map(function (v) { return 8 * v; }),
        marker: { color: conf.map(stripColor) }, customdata: conf,
        hovertemplate: k === 0 ? "%{customdata:.2f}" : "", hoverinfo: k === 0 ? undefined : "skip",
        showlegend: false
      }];
      var variants = DOT_VARIANTS[dotMode] || [];
      variants.forEach(function (variant, j) {
        var src = dotSources[variant];
        var spec = specs[variant];
        var shift = dotMode === "all" ? j * 5 : 0;
        [["accumulation >= 70", function (v) { return v !== null && v >= 70; }, 103 + shift, spec.accum],
         ["distribution <= 30", function (v) { return v !== null && v <= 30; }, -18 - shift, spec.dist]]
          .forEach(function (d) {
            var xs = [], ys = [];
            src.forEach(function (v, i) { if (d[1](v)) { xs.push(x[i]); ys.push(d[2]); } });
            traces.push({ type: "scatter", mode: "markers", x: xs, y: ys, hoverinfo: "skip",
              name: variant + " " + d[0], legendgroup: variant + d[0], showlegend: k === 0,
              marker: { color: d[3], size: 8, line: { color: c.white, width: 0.6 } } });
          });
      });
      panels.push({ title: SEED_TITLES[4 + k], traces: traces, yrange: [-30, 118],
        ytick: { tickvals: [0, 30, 50, 70, 100] },
        shapes: [hline(30, c.red, "dash", 0.4), hline(50, c.neutral, "dash", 0.4), hline(70, c.green, "dash", 0.4)] });
    });
    if (data.request.experimental) {
      var sig = column(rows, "exp_signal");
      panels.push({ title: "Imbalance * log1p(B + S)", shapes: [hline(0, c.neutral)],
        traces: [{ type: "bar", name: "imbalance x log1p", x: x, y: sig, hovertemplate: "%{y:.3f}",
          marker: { color: sig.map(function (v) { return v !== null && v >= 0 ? c.green : c.red; }) } }] });
    }
    data.variants.forEach(function (variant) {
      if (data.requested_variants.indexOf(variant.name) < 0 && variant.name !== data.bands_signal) { return; }
      var values = column(rows, "variant:" + variant.name);
      var traces = [], shapes = [];
      var title = variant.name + " (" + variant.scale + ")" + (variant.description ? ": " + variant.description : "");
      if (variant.scale === "display") {
        traces.push({ type: "bar", name: variant.name, x: x, y: values, hovertemplate: "%{y:.1f}",
          marker: { color: values.map(function (v, i) { return v === null ? "rgba(0,0,0,0)" : scoreColor(v, conf[i]); }) } });
        shapes = [hline(30, c.red, "dash", 0.4), hline(50, c.neutral, "dash", 0.4), hline(70, c.green, "dash", 0.4)];
      } else {
        traces.push(line(variant.name, values, c.cyan));
        if (variant.buy !== null) { shapes.push(hline(variant.buy, c.green)); }
        if (variant.sell !== null) { shapes.push(hline(variant.sell, c.red)); }
        shapes.push(hline(variant.neutral || 0, c.neutral));
      }
      if (variant.name === data.bands_signal) {
        [["median", c.yellow, "solid"], ["upper", c.orange, "dot"], ["lower", c.orange, "dot"]].forEach(function (b) {
          traces.push({ type: "scatter", mode: "lines", name: "bands " + b[0], x: x,
            y: column(rows, "bands:" + b[0]), line: { color: b[1], width: 1.2, dash: b[2] },
            hovertemplate: "%{y:.3f}" });
        });
      }
      panels.push({ title: title, traces: traces, shapes: shapes });
    });
    var heights = panels.map(function (p, i) { return i < SEED_HEIGHTS.length ? SEED_HEIGHTS[i] : 1.8; });
    var total = heights.reduce(function (a, b) { return a + b; }, 0);
    var gap = 0.14 / panels.length;
    var traces = [], shapes = [], annotations = [];
    var layout = {
      paper_bgcolor: c.background, plot_bgcolor: c.panel_bg, font: { color: c.text, size: 11 },
      height: Math.round(total * 95 + 150), margin: { l: 70, r: 20, t: 60, b: 70 },
      hovermode: "x unified", hoversubplots: "axis", bargap: 0.2, barmode: "overlay",
      uirevision: state.uirevision, dragmode: "zoom",
      hoverlabel: { bgcolor: "#1e1e22", bordercolor: "#555", font: { color: c.text, size: 11 } },
      legend: { orientation: "h", x: 0, y: 1.03, yanchor: "bottom", font: { size: 10 }, bgcolor: "rgba(0,0,0,0)",
                title: { text: "dots: " } },
      xaxis: { type: "category", anchor: "y" + (panels.length > 1 ? panels.length : ""),
               tickangle: -45, gridcolor: c.grid, linecolor: c.grid, nticks: 24,
               showspikes: true, spikemode: "across", spikesnap: "cursor", spikecolor: "#888", spikethickness: 1 }
    };
    var top = 1.0;
    panels.forEach(function (panel, i) {
      var h = heights[i] / total * (1 - gap * (panels.length - 1));
      var name = i === 0 ? "y" : "y" + (i + 1);
      var axis = i === 0 ? "yaxis" : "yaxis" + (i + 1);
      layout[axis] = { domain: [Math.max(0, top - h), top], gridcolor: c.grid, linecolor: c.grid,
                       zerolinecolor: c.grid, range: panel.yrange, fixedrange: false,
                       tickfont: { size: 9 } };
      if (panel.ytick) { layout[axis].tickvals = panel.ytick.tickvals; }
      annotations.push({ text: "<b>" + panel.title.replace(/</g, "&lt;") + "</b>", xref: "paper", yref: "paper",
                         x: 0, y: top, xanchor: "left", yanchor: "bottom", showarrow: false,
                         font: { size: 11, color: c.text } });
      panel.traces.forEach(function (t) {
        t.xaxis = "x"; t.yaxis = name;
        if (t.showlegend === undefined) { t.showlegend = false; }
        traces.push(t);
      });
      panel.shapes.forEach(function (s) { s.yref = name; s.xref = "x domain"; shapes.push(s); });
      top = top - h - gap;
    });
    layout.shapes = shapes;
    layout.annotations = annotations;
    var gd = $("chart");
    var first = !gd.data;
    Plotly.react(gd, traces, layout, { responsive: true, displaylogo: false, scrollZoom: false,
                                       modeBarButtonsToRemove: ["lasso2d", "select2d"] });
    gd.dataset.panels = String(panels.length);
    gd.dataset.rows = String(rows.length);
    if (first) {
      gd.on("plotly_hover", function (event) { readout(event); });
    }
  }

  function readout(event) {
    var data = state.lastData;
    if (!data || !event.points.length) { return; }
    var date = event.points[0].x;
    var row = data.rows.find(function (r) { return r.date === date; });
    if (!row) { return; }
    var parts = [el("b", { text: date })];
    var shown = [["combined ratio", "combined_ratio"], ["vw flow", "vw_flow"], ["FINRA B", "finra_buy_volume"],
      ["S", "short_sell_volume"], ["short ratio", "short_buy_sell_ratio"], ["current", "acc_score_current"],
      ["option A", "acc_score_a"], ["option B", "acc_score_b"], ["confidence", "confidence"]];
    if (data.request.experimental) { shown.push(["imbalance x log1p", "exp_signal"]); }
    data.variants.forEach(function (v) { shown.push([v.name, "variant:" + v.name]); });
    shown.forEach(function (pair) {
      parts.push(document.createTextNode("  " + pair[0] + " "));
      parts.push(el("span", { "data-key": pair[1], text: fmt(row[pair[1]], 3) }));
    });
    $("readout").replaceChildren.apply($("readout"), parts);
    $("readout").dataset.date = date;
  }

  // -- market ---------------------------------------------------------------------------------

  function drawIndex(payload) {
    var c = state.config.colors;
    var rows = payload.rows;
    var x = column(rows, "date");
    var traces = [
      { type: "scatter", mode: "lines", name: "DIX (dollar-weighted short share)", x: x, y: column(rows, "dix"),
        line: { color: c.cyan, width: 1.8 }, yaxis: "y", hovertemplate: "%{y:.4f}" },
      { type: "scatter", mode: "lines", name: "equal-weight", x: x, y: column(rows, "dpi_equal_weight"),
        line: { color: c.yellow, width: 1, dash: "dot" }, yaxis: "y", hovertemplate: "%{y:.4f}" },
      { type: "bar", name: "DIX z", x: x, y: column(rows, "dix_z"), yaxis: "y2", hovertemplate: "%{y:.2f}",
        marker: { color: column(rows, "dix_z").map(function (v) { return v !== null && v >= 0 ? c.green : c.red; }) } },
      { type: "bar", name: "members with data", x: x, y: column(rows, "members_with_data"), yaxis: "y3",
        marker: { color: c.neutral }, hovertemplate: "%{y}" }
    ];
    var a = payload.attrs;
    var layout = {
      paper_bgcolor: c.background, plot_bgcolor: c.panel_bg, font: { color: c.text, size: 11 },
      height: 640, margin: { l: 70, r: 20, t: 50, b: 80 }, hovermode: "x unified", hoversubplots: "axis",
      title: { text: "Dark index: " + a.name + " " + a.start + " .. " + a.end + (a.label ? "  [" + a.label + "]" : ""), x: 0, font: { size: 13 } },
      legend: { orientation: "h", y: -0.08, yanchor: "top", x: 0 },
      xaxis: { type: "date", anchor: "y3", gridcolor: c.grid },
      yaxis: { domain: [0.5, 1], gridcolor: c.grid, title: { text: "DIX" } },
      yaxis2: { domain: [0.22, 0.46], gridcolor: c.grid, title: { text: "z" } },
      yaxis3: { domain: [0, 0.18], gridcolor: c.grid, title: { text: "members" } }
    };
    Plotly.react($("index-chart"), traces, layout, { responsive: true, displaylogo: false });
    var silent = a.members_without_data || [];
    $("index-status").textContent = rows.length + " sessions" + (silent.length ? "; " + silent.length + " member(s) without data: " + silent.slice(0, 8).join(", ") : "");
  }

  function loadIndex() {
    var form = $("index-form");
    clearErrors(form);
    $("index-error").hidden = true;
    $("index-status").textContent = "computing...";
    var file = $("m-membership").files[0];
    var start = $("m-start").value, end = $("m-end").value;
    var request;
    if (file) {
      request = file.text().then(function (text) {
        return fetchJson("/api/index", { method: "POST", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ membership: text, name: file.name, start: start || null, end: end || null }) });
      });
    } else {
      var params = new URLSearchParams({ universe: $("m-universe").value });
      if (start) { params.set("start", start); }
      if (end) { params.set("end", end); }
      request = fetchJson("/api/index?" + params.toString());
    }
    return request.then(drawIndex).catch(function (error) {
      showError(form, $("index-error"), error);
      $("index-status").textContent = "";
    });
  }

  var SCAN_HIDDEN = { flags: false };
  function renderScan() {
    var rows = state.scanRows.slice();
    var cols = state.scanColumns.filter(function (c) { return SCAN_HIDDEN[c] !== true; });
    var sort = state.scanSort;
    if (sort) {
      rows.sort(function (a, b) {
        var va = a[sort.column], vb = b[sort.column];
        if (va === null || va === undefined) { return 1; }
        if (vb === null || vb === undefined) { return -1; }
        var r = typeof va === "number" && typeof vb === "number" ? va - vb : String(va).localeCompare(String(vb));
        return sort.descending ? -r : r;
      });
    }
    var head = el("tr", {}, cols.map(function (name) {
      var th = el("th", { text: name, "data-column": name });
      if (sort && sort.column === name) { th.className = sort.descending ? "sorted-desc" : "sorted-asc"; }
      th.addEventListener("click", function () {
        var descending = !(state.scanSort && state.scanSort.column === name && state.scanSort.descending);
        state.scanSort = { column: name, descending: descending };
        renderScan();
      });
      return th;
    }));
    var body = rows.map(function (row) {
      var tr = el("tr", { className: row.end ? "end-" + row.end : "", "data-symbol": row.symbol },
        cols.map(function (name) {
          var v = row[name];
          return el("td", { className: typeof v === "number" ? "num" : "", text: typeof v === "number" ? fmt(v, 3) : (v === null ? "" : String(v)) });
        }));
      tr.addEventListener("click", function () { openTicker(row.symbol, state.scanDate); });
      return tr;
    });
    var t = el("table", { className: "sortable", id: "scan-results" },
      [el("caption", { text: state.scanCaption }), el("thead", {}, [head]), el("tbody", {}, body)]);
    $("scan-table").replaceChildren(t);
  }

  function loadScan() {
    var form = $("scan-form");
    clearErrors(form);
    $("scan-error").hidden = true;
    $("scan-status").textContent = "scanning...";
    var params = new URLSearchParams({ by: $("s-by").value.trim() || "current", universe: $("s-universe").value,
                                       top: $("s-top").value || "10" });
    if ($("s-date").value) { params.set("date", $("s-date").value); }
    return fetchJson("/api/scan?" + params.toString()).then(function (payload) {
      var a = payload.attrs;
      state.scanRows = payload.rows;
      state.scanColumns = payload.columns;
      state.scanSort = null;
      state.scanDate = a.date;
      state.scanCaption = "Scan " + a.date + " by " + a.by + " over " + a.universe + ": " + a.ranked +
        " ranked of " + a.symbols + (a.label ? "  [" + a.label + "]" : "") + "  (click a row to open its sandbox)";
      if (!$("s-date").value) { $("s-date").value = a.date; }
      renderScan();
      $("scan-status").textContent = payload.rows.length + " rows";
    }).catch(function (error) {
      showError(form, $("scan-error"), error);
      $("scan-status").textContent = "";
    });
  }

  function openTicker(symbol, date) {
    var form = $("sandbox-form");
    form.querySelector('[name="ticker"]').value = symbol;
    form.querySelector('[name="start"]').value = "";
    form.querySelector('[name="end"]').value = date || "";
    showTab("sandbox");
    return loadSandbox();
  }

  // -- evaluation -----------------------------------------------------------------------------

  function evaluationBody() {
    var variants = Array.prototype.slice.call(document.querySelectorAll("#eval-variants input:checked"))
      .map(function (box) { return box.value; });
    var formulas = $("e-formulas").value.split("\n").map(function (l) { return l.trim(); }).filter(Boolean);
    return { variants: variants, formulas: formulas, universe: $("e-universe").value.trim() || null,
             start: $("e-start").value || null, end: $("e-end").value || null,
             horizons: $("e-horizons").value.trim() || "1,5,10,20" };
  }

  function runEvaluation() {
    var form = $("eval-form");
    clearErrors(form);
    $("eval-error").hidden = true;
    $("eval-results").hidden = true;
    var progress = $("eval-progress");
    $("eval-button").disabled = true;
    progress.hidden = false; progress.removeAttribute("value");
    $("eval-status").textContent = "starting...";
    function finish() { $("eval-button").disabled = false; progress.hidden = true; }
    return fetchJson("/api/evaluate", { method: "POST", headers: { "Content-Type": "application/json" },
                                        body: JSON.stringify(evaluationBody()) })
      .then(function (job) {
        return new Promise(function (resolve, reject) {
          function poll() {
            fetchJson(job.poll).then(function (status) {
              if (status.total) { progress.max = status.total; progress.value = status.done; }
              $("eval-status").textContent = status.stage + (status.total ? " " + status.done + "/" + status.total : "") +
                " (" + status.elapsed_s.toFixed(1) + " s)";
              if (status.state === "done") { resolve(status); return; }
              if (status.state === "error") {
                var error = new Error(status.error.error);
                error.status = status.error.status; error.body = status.error;
                reject(error); return;
              }
              setTimeout(poll, 300);
            }).catch(reject);
          }
          poll();
        });
      })
      .then(function (status) { finish(); renderEvaluation(status); })
      .catch(function (error) { finish(); showError(form, $("eval-error"), error); $("eval-status").textContent = ""; });
  }

  function renderEvaluation(status) {
    var c = state.config.colors;
    var result = status.result;
    $("eval-results").hidden = false;
    $("eval-status").textContent = "done in " + status.elapsed_s.toFixed(1) + " s (run " + result.run_id + ")";
    $("eval-label").textContent = result.label + (state.database && state.database.synthetic ? "  [" + state.database.label + "]" : "");
    $("eval-report").href = "/api/evaluate/" + status.id + "/report.html";
    $("verdicts").replaceChildren.apply($("verdicts"), result.verdicts.map(function (v) {
      var kind = String(v.verdict || "").replace(/[\s_]+/g, "-");
      var lines = [el("h3", { text: v.variant }), el("div", { className: "tag", text: String(v.verdict || "").replace(/_/g, " ") })];
      if (v.source === "summary.json") {
        lines.push(el("div", { text: "h=" + v.horizon + "  out-of-sample IC " + fmt(v.oos_ic_mean, 4) +
          (v.oos_ic_ci95 ? " [" + fmt(v.oos_ic_ci95[0], 4) + ", " + fmt(v.oos_ic_ci95[1], 4) + "]" : "") }));
        lines.push(el("div", { text: "adjusted p " + fmt(v.oos_ic_pvalue_adjusted, 3) + "  net spread " +
          fmt(v.oos_net_spread_bps_per_day, 2) + " bps/day  deflated Sharpe " + fmt(v.deflated_sharpe, 2) }));
        lines.push(el("div", { className: "muted reason", text: v.reason || "" }));
      } else {
        lines.push(el("div", { text: "h=" + v.horizon + "  IC " + fmt(v.ic_mean, 4) + "  p " + fmt(v.p_value, 3) }));
        lines.push(el("div", { className: "muted", text: "placebo IC " + fmt(v.placebo_ic_mean, 4) }));
        lines.push(el("div", { className: "muted", text: v.source || "" }));
      }
      return el("div", { className: "verdict " + kind }, lines);
    }));
    var summary = result.summary;
    if (summary) {
      $("verdicts").appendChild(el("div", { className: "verdict overall" }, [
        el("h3", { text: "whole search" }),
        el("div", { text: summary.n_trials + " trials; PBO " + fmt(summary.pbo, 3) + "; SPA p " + fmt(summary.spa_pvalue, 3) }),
        el("div", { className: "muted", text: (summary.oos_design && summary.oos_design.text) || "" }),
        el("div", { className: "muted", text: "costs " + summary.cost_bps_per_side + " bps per side (" + summary.cost_model + ")" })
      ]));
    }
    var ic = result.ic_table || [];
    $("ic-table").replaceChildren(table("IC and quantile spread", ["variant", "h", "IC mean", "t", "t (non-overlap)", "p", "IR", "dates", "top-bottom (demeaned)"],
      ic.map(function (r) {
        return [r.variant, String(r.horizon), fmt(r.mean, 4), fmt(r.t_stat, 2), fmt(r.t_stat_nonoverlap, 2),
                fmt(r.p_value, 3), fmt(r.ir, 3), fmt(r.n_dates, 0), fmt(r.spread_demeaned, 4)];
      }), function (i) { return i > 0; }));
    var q = result.quantiles || [];
    var h0 = ic.length ? Math.min.apply(null, ic.map(function (r) { return r.horizon; })) : 1;
    var names = [];
    q.forEach(function (r) { if (names.indexOf(r.variant) < 0 && String(r.variant).indexOf("placebo:") !== 0) { names.push(r.variant); } });
    var palette = [c.green, c.cyan, c.yellow, c.purple, c.orange, c.blue, c.red];
    var qTraces = names.map(function (name, i) {
      var rows = q.filter(function (r) { return r.variant === name && r.horizon === h0; });
      return { type: "bar", name: name, x: rows.map(function (r) { return "Q" + r.quantile; }),
               y: rows.map(function (r) { return r.mean_demeaned; }), marker: { color: palette[i % palette.length] },
               hovertemplate: "%{y:.4%}" };
    });
    var base = { paper_bgcolor: c.background, plot_bgcolor: c.panel_bg, font: { color: c.text, size: 11 },
                 margin: { l: 70, r: 20, t: 40, b: 40 }, legend: { orientation: "h" } };
    Plotly.react($("quantile-chart"), qTraces, Object.assign({}, base, { barmode: "group",
      title: { text: "Mean demeaned forward return by quantile (h=" + h0 + ")", x: 0, font: { size: 12 } },
      yaxis: { tickformat: ".2%", gridcolor: c.grid }, xaxis: { gridcolor: c.grid } }), { responsive: true, displaylogo: false });
    var byDate = result.ic_by_date || [];
    var icTraces = [];
    byDate.forEach(function () {});
    var groups = {};
    byDate.forEach(function (r) { if (r.horizon === h0) { (groups[r.variant] = groups[r.variant] || []).push(r); } });
    Object.keys(groups).forEach(function (name, i) {
      var rows = groups[name];
      var sum = 0;
      var placebo = name.indexOf("placebo:") === 0;
      icTraces.push({ type: "scatter", mode: "lines", name: name, x: rows.map(function (r) { return r.date; }),
        y: rows.map(function (r) { sum += (r.ic === null ? 0 : r.ic); return sum; }),
        line: { color: placebo ? c.neutral : palette[i % palette.length], dash: placebo ? "dash" : "solid", width: 1.4 } });
    });
    Plotly.react($("ic-chart"), icTraces, Object.assign({}, base, { hovermode: "x unified",
      title: { text: "Cumulative daily IC (h=" + h0 + ")", x: 0, font: { size: 12 } },
      xaxis: { type: "date", gridcolor: c.grid }, yaxis: { gridcolor: c.grid } }), { responsive: true, displaylogo: false });
  }

  // -- wiring ---------------------------------------------------------------------------------

  function fillChoices(config) {
    $("caveat").textContent = config.caveat;
    var dot = $("f-dot-mode");
    dot.replaceChildren.apply(dot, config.dot_modes.map(function (m) { return el("option", { value: m, text: m }); }));
    var chips = $("variant-chips");
    chips.replaceChildren.apply(chips, config.variants.map(function (v) {
      var chip = el("button", { type: "button", className: "chip", title: v.description, text: v.name });
      chip.addEventListener("click", function () {
        var field = $("f-variants");
        var names = field.value.split(",").map(function (s) { return s.trim(); }).filter(Boolean);
        if (names.indexOf(v.name) < 0) { names.push(v.name); }
        field.value = names.join(",");
        scheduleLoad();
      });
      return chip;
    }));
    var names = $("variant-names");
    names.replaceChildren.apply(names, config.variants.map(function (v) { return el("option", { value: v.name }); }));
    ["m-universe", "s-universe"].forEach(function (id) {
      var select = $(id);
      select.replaceChildren.apply(select, config.universes.map(function (u) {
        return el("option", { value: u.name, text: u.name + (u.tickers ? " (" + u.tickers + ")" : "") });
      }));
      select.value = "all";
    });
    var boxes = $("eval-variants");
    boxes.replaceChildren.apply(boxes, config.variants.map(function (v) {
      var input = el("input", { type: "checkbox", value: v.name, name: "variants" });
      input.checked = ["current", "option_a", "option_b"].indexOf(v.name) >= 0;
      return el("label", { className: "inline", title: v.description }, [input, document.createTextNode(v.name)]);
    }));
  }

  function symbolLookup() {
    var ticker = $("f-ticker");
    var list = $("symbols");
    var lookup = null;
    function fill() {
      if (lookup) { lookup.abort(); }
      lookup = new AbortController();
      fetch("/api/symbols?limit=50&q=" + encodeURIComponent(ticker.value.trim()), { signal: lookup.signal })
        .then(function (r) { return r.ok ? r.json() : []; })
        .then(function (names) {
          list.replaceChildren.apply(list, names.map(function (name) { return el("option", { value: name }); }));
        })
        .catch(function () { /* aborted or offline: keep the old list */ });
    }
    ticker.addEventListener("input", fill);
    fill();
  }

  function init() {
    document.querySelectorAll(".tab").forEach(function (tab) {
      tab.addEventListener("click", function () { showTab(tab.dataset.tab); });
    });
    var initial = EARLY.params, early = EARLY.sandbox, database = EARLY.database;
    EARLY.config.then(function (config) {
      state.config = config;
      fillChoices(state.config);
      database.then(renderDatabase).catch(function (error) {
        $("coverage").replaceChildren(el("p", { className: "error", text: (error.body && error.body.error) || error.message }));
      });
      symbolLookup();
      var form = $("sandbox-form");
      form.addEventListener("submit", function (event) { event.preventDefault(); loadSandbox(); });
      document.querySelectorAll("input[data-mirror]").forEach(function (range) {
        range.addEventListener("input", function () { $(range.dataset.mirror).value = range.value; scheduleLoad(); });
      });
      ["f-short-weight", "f-flow-weight"].forEach(function (id) {
        $(id).addEventListener("input", function () { syncSliders(); scheduleLoad(); });
      });
      ["f-dot-mode", "f-seed-exact", "f-experimental"].forEach(function (id) {
        $(id).addEventListener("change", function () { if ($("f-ticker").value.trim()) { scheduleLoad(); } });
      });
      $("f-ticker").addEventListener("change", function () { if ($("f-ticker").value.trim()) { loadSandbox(); } });
      $("index-form").addEventListener("submit", function (event) { event.preventDefault(); loadIndex(); });
      $("scan-form").addEventListener("submit", function (event) { event.preventDefault(); loadScan(); });
      $("eval-form").addEventListener("submit", function (event) { event.preventDefault(); runEvaluation(); });
      fillForm(initial);
      document.body.dataset.ready = "1";
      if (initial.get("ticker")) { loadSandbox(undefined, early); }
    }).catch(function (error) {
      $("error").hidden = false;
      $("error").textContent = "the page could not start: " + error.message;
    });
  }

  // The first chart does not wait for anything it does not need: this script runs before
  // plotly.min.js is parsed, so the sandbox, config and coverage requests are already in
  // flight while the browser compiles Plotly; the coverage table fills in when it arrives.
  var EARLY = (function () {
    var params = new URLSearchParams(location.search);
    var sandbox = params.get("ticker") ? { query: params.toString(), t0: performance.now(),
      promise: fetchJson("/api/sandbox?" + params.toString()) } : null;
    if (sandbox) { sandbox.promise.catch(function () { /* shown by loadSandbox */ }); }
    var database = fetchJson("/api/database");
    database.catch(function () { /* shown in the coverage box */ });
    return { params: params, sandbox: sandbox, config: fetchJson("/api/config"), database: database };
  })();

  // Draw only once Plotly has run (this script is deferred before it, to start the requests
  // early; a deferred script runs while the document is already "interactive").
  if (window.Plotly) { init(); }
  else {
    document.querySelector('script[src*="/static/plotly"]').addEventListener("load", init, { once: true });
  }
})();
