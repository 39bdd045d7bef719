// The explorer's browser code. Every text from the data goes in with textContent (never as
// markup), so dataset, model and registry strings are shown, not run.
(function () {
  "use strict";
  const ready = [];
  const assay = (window.assay = {});

  assay.ready = function (fn) { ready.push(fn); };

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v == null ? "" : String(v);
      else if (k === "cls") node.className = v;
      else node.setAttribute(k, v);
    }
    for (const child of children || []) node.appendChild(child);
    return node;
  }
  assay.el = el;

  // Python's "%.<digits>f": the exact value rounded half to even (toFixed rounds an exact tie,
  // such as 0.0625 to three places, away from zero).
  function fixed(v, digits) {
    const text = v.toFixed(digits);
    const exact = Math.abs(v).toFixed(Math.min(100, digits + 60));
    const cut = exact.indexOf(".") + 1 + digits;
    if (!/^50*$/.test(exact.slice(cut))) return text;
    const kept = exact.slice(0, digits ? cut : cut - 1);
    if (Number(kept[kept.length - 1]) % 2 === 0) return (v < 0 ? "-" : "") + kept;
    return text;
  }

  function fmt(v, digits) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    return typeof v === "number" ? fixed(v, digits === undefined ? 3 : digits) : String(v);
  }
  assay.fmt = fmt;

  // Plotly reads a few HTML tags in its labels: escape data texts so they show as written.
  function plotText(s) {
    return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function json(id) {
    const node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }
  assay.json = json;

  function drawCharts() {
    if (!window.Plotly) return;
    document.querySelectorAll("[data-chart]").forEach(function (div) {
      const spec = json(div.getAttribute("data-chart"));
      if (spec) Plotly.newPlot(div, spec.data, spec.layout, { responsive: true, displaylogo: false });
    });
  }

  function cellValue(row, index) {
    const cell = row.cells[index];
    return cell.hasAttribute("data-value") ? cell.getAttribute("data-value") : cell.textContent.trim();
  }

  function sortable(table) {
    const heads = table.tHead ? Array.from(table.tHead.rows[0].cells) : [];
    heads.forEach(function (th, index) {
      th.classList.add("sort");
      th.addEventListener("click", function (event) {
        if (event.target.closest("a")) return;
        const numeric = th.getAttribute("data-type") === "num";
        const ascending = th.getAttribute("aria-sort") !== "ascending";
        heads.forEach((h) => h.removeAttribute("aria-sort"));
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        const body = table.tBodies[0];
        const rows = Array.from(body.rows);
        rows.sort(function (a, b) {
          let x = cellValue(a, index), y = cellValue(b, index);
          if (numeric) {
            x = parseFloat(x); y = parseFloat(y);
            // Missing values sort last either way.
            if (Number.isNaN(x)) return Number.isNaN(y) ? 0 : 1;
            if (Number.isNaN(y)) return -1;
            return ascending ? x - y : y - x;
          }
          return ascending ? x.localeCompare(y) : y.localeCompare(x);
        });
        rows.forEach((r) => body.appendChild(r));
      });
    });
  }

  function navigation() {
    document.querySelectorAll("select[data-navigate]").forEach(function (select) {
      select.addEventListener("change", function () {
        // Only the site's own pages: the options are written by the build.
        if (/^[A-Za-z0-9._@-]+\.html$/.test(select.value)) window.location.href = select.value;
      });
    });
  }

  // A comparison page's menu of the other comparisons (data/pairs.js, one file per build).
  function pairMenu() {
    const select = document.getElementById("other-pairs");
    if (!select || !window.ASSAY_PAIRS) return;
    const current = select.getAttribute("data-current");
    window.ASSAY_PAIRS.forEach(function ([a, b, href]) {
      const option = el("option", { value: href, text: a + " vs " + b });
      option.selected = href === current;
      select.appendChild(option);
    });
  }

  // A leaderboard's menu of the stored days (data/_days.js, one file per build), newest
  // first; the page's own option is written into it.
  function dayMenu() {
    const select = document.getElementById("filter-day");
    if (!select || !window.ASSAY_DAYS) return;
    const current = select.getAttribute("data-current");
    select.textContent = "";
    window.ASSAY_DAYS.forEach(function ([day, href]) {
      const option = el("option", { value: href, text: day });
      option.selected = href === current || (current === "index.html" && href === window.ASSAY_DAYS[0][1]);
      select.appendChild(option);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    pairMenu();
    dayMenu();
    drawCharts();
    document.querySelectorAll("table.sortable").forEach(sortable);
    navigation();
    ready.forEach((fn) => fn());
  });

  // ---------------------------------------------------------------- leaderboard filters
  // ---------------------------------------------------------------- leaderboard
  // A leaderboard page's rows, family figures and board comparisons, from its board data
  // (the page holds the data, not a table cell per version and scenario).
  function scoreCell(attrs, value) {
    const text = fmt(value);
    return el("td", Object.assign({ "data-value": text, text: text }, attrs));
  }

  function leaderboardRows(board) {
    const body = document.querySelector("#leaderboard tbody");
    for (const r of board.rows) {
      const name = el("td", { cls: "text" }, [el("span", { cls: "version", text: r.model_version })]);
      for (const a of r.aliases) name.append(" ", el("span", { cls: "badge", text: a }));
      if (r.decision) name.append(" ", el("a", { cls: "small decision", href: r.decision, text: "promotion " + r.decision_kind }));
      if (r.description) name.append(el("div", { cls: "muted small description", text: r.description }));
      if (r.training_data) name.append(el("div", { cls: "muted small training-data", text: "trained on: " + r.training_data }));
      const links = el("td");
      if (r.compare_next) links.append(el("a", { cls: "compare-link", href: r.compare_next, text: "vs next" }));
      if (r.compare_previous) links.append(" ", el("a", { cls: "compare-previous", href: r.compare_previous, title: "paired tests against " + r.previous, text: "vs previous" }));
      if (r.compare_leader) links.append(" ", el("a", { cls: "compare-leader", href: r.compare_leader, text: "vs leader" }));
      body.append(el("tr", { "data-version": r.model_version, "data-aliases": r.aliases.join(" ") }, [
        el("td", { "data-value": String(r.rank), text: String(r.rank) }),
        name,
        el("td", { "data-value": String(r.rank_low), text: r.rank_low + "–" + r.rank_high }),
        scoreCell({}, r.mean_win_rate),
        scoreCell({}, r.mean_score),
        ...board.scenarios.map((s, i) => scoreCell({ "data-scenario": s }, r.scores[i])),
        ...board.families.map((f, i) => scoreCell({ "data-family": f }, r.win_rates[i])),
        links,
      ]));
    }
  }

  function familyFigures(board) {
    const table = document.getElementById("family-figures");
    if (!table) return;
    const head = el("tr", {}, [el("th", { text: "family" }), el("th", { text: "figure" })]);
    for (const r of board.rows) head.append(el("th", { "data-version-col": r.model_version, text: r.model_version }));
    table.append(el("thead", {}, [head]));
    const body = el("tbody");
    for (const f of board.figures) {
      const row = el("tr", { "data-family-row": f.family }, [el("td", { cls: "text", text: f.family }), el("td", { cls: "text", text: f.title })]);
      for (const c of f.cells) {
        const td = el("td", { cls: "figure" });
        if (c === null) td.append("–");
        else if (c.has_interval) td.append(fmt(c.mean) + " ", el("span", { cls: "muted", text: "[" + fmt(c.ci_low) + ", " + fmt(c.ci_high) + "]" }));
        else td.append(fmt(c.mean), el("div", { cls: "muted small", text: c.note }));
        row.append(td);
      }
      body.append(row);
    }
    table.append(body);
  }

  function boardComparisons(board) {
    const table = document.getElementById("board-comparisons");
    if (!table) return;
    for (const c of board.comparisons) {
      const first = el("td", { cls: "text" }, [c.href ? el("a", { href: c.href, text: c.model_a }) : document.createTextNode(c.model_a)]);
      table.tBodies[0].append(el("tr", { "data-scenario-row": c.scenario }, [
        el("td", { cls: "text", text: c.scenario }),
        el("td", { cls: "text", text: c.metric }),
        first,
        el("td", { cls: "text", text: c.model_b }),
        el("td", { "data-value": String(c.mean_diff), cls: c.significant ? "sig" : "", text: c.texts[0] }),
        el("td", { text: c.texts[1] }),
        el("td", { "data-value": String(c.p_value), text: c.texts[2] }),
        el("td", { "data-value": String(c.p_adjusted), text: c.texts[3] }),
        el("td", { cls: "text", text: c.test }),
      ]));
    }
  }

  assay.leaderboard = function () {
    assay.ready(function () {
      const board = json("board-data");
      leaderboardRows(board);
      familyFigures(board);
      boardComparisons(board);
      const table = document.getElementById("leaderboard");
      const text = document.getElementById("filter-text");
      const alias = document.getElementById("filter-alias");
      const count = document.getElementById("shown-count");
      const scenarioBoxes = Array.from(document.querySelectorAll(".filter-scenario"));
      const familyBoxes = Array.from(document.querySelectorAll(".filter-family"));
      const chart = document.getElementById("primary-chart");
      function apply() {
        const needle = text.value.trim().toLowerCase();
        const wanted = alias.value;
        let shown = 0;
        Array.from(table.tBodies[0].rows).forEach(function (row) {
          const version = row.getAttribute("data-version").toLowerCase();
          const aliases = row.getAttribute("data-aliases").split(" ");
          const ok = (!needle || version.includes(needle)) && (!wanted || aliases.includes(wanted));
          row.hidden = !ok;
          if (ok) shown += 1;
        });
        count.textContent = "(" + shown + " of " + table.tBodies[0].rows.length + " versions shown)";
        const scenarios = new Set(scenarioBoxes.filter((b) => b.checked).map((b) => b.value));
        const families = new Set(familyBoxes.filter((b) => b.checked).map((b) => b.value));
        table.querySelectorAll("[data-scenario]").forEach(function (cell) {
          cell.hidden = !scenarios.has(cell.getAttribute("data-scenario"));
        });
        table.querySelectorAll("[data-family]").forEach(function (cell) {
          cell.hidden = !families.has(cell.getAttribute("data-family"));
        });
        document.querySelectorAll("[data-scenario-row]").forEach(function (row) {
          row.hidden = !scenarios.has(row.getAttribute("data-scenario-row"));
        });
        document.querySelectorAll("[data-family-row]").forEach(function (row) {
          row.hidden = !families.has(row.getAttribute("data-family-row"));
        });
        if (window.Plotly && chart && chart.data) {
          const visible = chart.data.map((t) => scenarios.has(t.meta));
          Plotly.restyle(chart, { visible: visible });
        }
      }
      [text, alias].forEach((n) => n.addEventListener("input", apply));
      alias.addEventListener("change", apply);
      scenarioBoxes.concat(familyBoxes).forEach((b) => b.addEventListener("change", apply));
      apply();
      table.setAttribute("data-ready", "");
    });
  };

  assay.textFilter = function (inputId, tableId) {
    assay.ready(function () {
      const input = document.getElementById(inputId);
      const table = document.getElementById(tableId);
      input.addEventListener("input", function () {
        const needle = input.value.trim().toLowerCase();
        Array.from(table.tBodies[0].rows).forEach(function (row) {
          row.hidden = needle && !row.textContent.toLowerCase().includes(needle);
        });
      });
    });
  };

  // ---------------------------------------------------------------- per-partition data
  function loadPartition(path, key, done) {
    const store = (window.ASSAY_PARTITIONS = window.ASSAY_PARTITIONS || {});
    if (store[key]) return done(store[key]);
    const script = document.createElement("script");
    script.src = path;
    script.onload = function () { done(store[key] || null); };
    script.onerror = function () { done(null); };
    document.head.appendChild(script);
  }

  // A partition's data with the scenario's shared inputs, references and groups merged in.
  function loadInstances(entry, scenario, version, done) {
    loadPartition(entry.instances, scenario + "\u001f", function (shared) {
      loadPartition(entry.data, scenario + "\u001f" + version, function (data) {
        if (!data || !shared) return done(null);
        if (!data.merged) {
          const fields = data.request_fields;
          for (const rec of data.instances) {
            const texts = shared.instances[rec.id] || [null, [], {}];
            rec.input = texts[0]; rec.references = texts[1]; rec.groups = texts[2];
            // Requests come as lists in the order of request_fields.
            rec.requests = rec.requests.map(function (values) {
              const q = {};
              fields.forEach((f, i) => { q[f] = values[i]; });
              if (q.answer === null) q.answer = q.text;
              return q;
            });
          }
          data.merged = true;
        }
        done(data);
      });
    });
  }

  function instanceHref(scenario, version, id) {
    const params = new URLSearchParams({ s: scenario, v: version, id: id });
    return "instance.html#" + params.toString();
  }

  function verdict(value) {
    if (value === null || value === undefined) return ["–", ""];
    if (value === 1) return ["right", "right"];
    if (value === 0) return ["wrong", "wrong"];
    return [fmt(value), ""];
  }

  // ---------------------------------------------------------------- any two versions
  // compare.html#a=<version>&b=<version>: the mean difference per scenario and the rows that
  // differ, from the two versions' value files (data/_values/<version>.js).
  assay.pairPage = function (maxFlips) {
    assay.ready(function () {
      const board = window.ASSAY_BOARD;
      if (!board) return;
      const files = new Map(board.versions);
      const pages = new Map(board.pages.map(([a, b, href]) => [a + "\u001f" + b, href]));
      const picks = [document.getElementById("pick-a"), document.getElementById("pick-b")];
      picks.forEach(function (select) {
        board.versions.forEach(([v]) => select.appendChild(el("option", { value: v, text: v })));
        select.addEventListener("change", function () {
          const params = new URLSearchParams({ a: picks[0].value, b: picks[1].value });
          window.location.hash = params.toString();
        });
      });
      function loadValues(version, done) {
        const store = (window.ASSAY_VALUES = window.ASSAY_VALUES || {});
        if (store[version]) return done(store[version]);
        const script = document.createElement("script");
        script.src = files.get(version);
        script.onload = function () { done(store[version] || null); };
        script.onerror = function () { done(null); };
        document.head.appendChild(script);
      }
      function show() {
        const params = new URLSearchParams(window.location.hash.slice(1));
        const versions = board.versions.map(([v]) => v);
        const a = params.get("a") || versions[0];
        const b = params.get("b") || versions[1] || versions[0];
        const status = document.getElementById("pair-status");
        const body = document.querySelector("#pair-diffs tbody");
        const flips = document.getElementById("pair-flips");
        body.textContent = "";
        flips.textContent = "";
        if (!files.has(a) || !files.has(b)) {
          status.textContent = "Not on the newest board: " + (files.has(a) ? b : a);
          return;
        }
        picks[0].value = a;
        picks[1].value = b;
        document.getElementById("version-a").textContent = a;
        document.getElementById("version-b").textContent = b;
        const page = pages.get(a + "\u001f" + b);
        document.getElementById("pair-page").hidden = !page;
        if (page) document.getElementById("pair-page-link").setAttribute("href", page);
        status.textContent = "loading…";
        loadValues(a, function (va) {
          loadValues(b, function (vb) {
            if (!va || !vb) { status.textContent = "a value file could not be loaded"; return; }
            status.textContent = "";
            board.scenarios.forEach(function ([scenario, metric, scenarioHref]) {
              const sa = va.scenarios[scenario], sb = vb.scenarios[scenario];
              if (!sa || !sb) return;
              const key = (r) => r.slice(0, 4).join("\u001f");
              const other = new Map(sb.rows.map((r) => [key(r), r[4]]));
              const rows = [];
              for (const r of sa.rows) {
                const y = other.get(key(r));
                if (r[4] === null || y === undefined || y === null) continue;
                rows.push({ id: r[0], a: r[4], b: y });
              }
              if (!rows.length) return;
              const n = rows.length;
              const meanA = rows.reduce((s, r) => s + r.a, 0) / n;
              const meanB = rows.reduce((s, r) => s + r.b, 0) / n;
              const differ = rows.filter((r) => Math.abs(r.a - r.b) > 1e-12);
              const aBetter = differ.filter((r) => r.a > r.b).length;
              body.appendChild(el("tr", {}, [
                el("td", { cls: "text" }, [el("a", { href: scenarioHref, text: scenario })]),
                el("td", { cls: "text", text: metric }),
                el("td", { "data-value": n, text: n }),
                el("td", { "data-value": meanA, text: fmt(meanA) }),
                el("td", { "data-value": meanB, text: fmt(meanB) }),
                el("td", { "data-value": meanA - meanB, text: (meanA >= meanB ? "+" : "") + fmt(meanA - meanB) }),
                el("td", { "data-value": aBetter, text: aBetter }),
                el("td", { "data-value": differ.length - aBetter, text: differ.length - aBetter }),
              ]));
              differ.sort((x, y) => Math.abs(y.a - y.b) - Math.abs(x.a - x.b) || (x.id < y.id ? -1 : x.id > y.id ? 1 : 0));
              const shown = differ.slice(0, maxFlips);
              flips.appendChild(el("h3", { text: scenario + " (" + differ.length + " differ)" }));
              if (!shown.length) return;
              flips.appendChild(el("table", { cls: "flips", "data-scenario": scenario }, [
                el("thead", {}, [el("tr", {}, [
                  el("th", { text: "instance" }), el("th", { text: "first: " + metric }),
                  el("th", { text: "second: " + metric }),
                ])]),
                el("tbody", {}, shown.map((r) => el("tr", {}, [
                  el("td", { cls: "text" }, [
                    el("a", { cls: "instance-link", href: instanceHref(scenario, a, r.id), text: r.id }),
                    el("span", { text: " " }),
                    el("a", { cls: "instance-link small", href: instanceHref(scenario, b, r.id), text: "second's" }),
                  ]),
                  el("td", { cls: r.a >= r.b ? "right" : "wrong", text: fmt(r.a) }),
                  el("td", { cls: r.b >= r.a ? "right" : "wrong", text: fmt(r.b) }),
                ]))),
              ]));
            });
          });
        });
      }
      window.addEventListener("hashchange", show);
      show();
    });
  };

  // ---------------------------------------------------------------- scenario page
  // scenario-<key>.html draws itself from the scenario's index (the board's versions in
  // order, data/<scenario>/_cards.js) and one card per version: a new version changes its
  // own card and the index, never the page.
  assay.scenarioPage = function () {
    assay.ready(function () {
      const page = json("scenario-page");
      const status = document.getElementById("scenario-status");
      loadPartition(page.index, "cards\u001f" + page.scenario, function (index) {
        if (!index) { status.textContent = "Could not load " + page.index; return; }
        const cards = new Array(index.versions.length);
        let left = index.versions.length;
        function loaded() {
          if (left > 0) return;
          const missing = index.versions.filter((entry, i) => !cards[i]).map(([v]) => v);
          showScenario(page, cards.filter(Boolean), index.partitions);
          status.textContent = missing.length ? "Could not load the scorecards of " + missing.join(", ") : "";
          status.hidden = !missing.length;
          const views = document.getElementById("scenario-views");
          views.hidden = false;
          views.setAttribute("data-ready", "");
        }
        index.versions.forEach(function ([version, path], i) {
          loadPartition(path, "card\u001f" + page.scenario + "\u001f" + version, function (card) {
            cards[i] = card;
            left -= 1;
            loaded();
          });
        });
        loaded();
      });
    });
  };

  // Strings of a chart spec as plotly must get them to show them as written.
  function plotSpec(value) {
    if (typeof value === "string") return plotText(value);
    if (Array.isArray(value)) return value.map(plotSpec);
    if (value && typeof value === "object") {
      const out = {};
      for (const [k, v] of Object.entries(value)) out[k] = plotSpec(v);
      return out;
    }
    return value;
  }

  function drawChart(id, data, layout) {
    if (!window.Plotly) return;
    Plotly.newPlot(document.getElementById(id), plotSpec(data), plotSpec(layout), { responsive: true, displaylogo: false });
  }

  // A data object's own value for a key from the data (never one its prototype has).
  function own(object, key) {
    return Object.prototype.hasOwnProperty.call(object, key) ? object[key] : null;
  }

  function finite(v) { return typeof v === "number" && Number.isFinite(v) ? v : null; }

  // Grouped bars with their 95% intervals, one trace per version.
  function bars(series, title) {
    const traces = series.map(function ([name, labels, cells]) {
      const ys = cells.map((c) => (c ? finite(c.mean) : null));
      const hi = cells.map((c, i) => (!c || finite(c.high) === null || ys[i] === null ? null : c.high - ys[i]));
      const lo = cells.map((c, i) => (!c || finite(c.low) === null || ys[i] === null ? null : ys[i] - c.low));
      return { type: "bar", name: name, x: labels, y: ys, error_y: { type: "data", symmetric: false, array: hi, arrayminus: lo } };
    });
    return [traces, { title: { text: title }, barmode: "group", height: 420, margin: { t: 50 }, xaxis: { type: "category" } }];
  }

  function byText(a, b) { return a < b ? -1 : a > b ? 1 : 0; }

  function byKeys(a, b) {  // arrays compared as Python compares tuples
    for (let i = 0; i < Math.min(a.length, b.length); i += 1) {
      const c = byText(a[i], b[i]);
      if (c) return c;
    }
    return a.length - b.length;
  }

  // An export of every version's part: their lines under one header (CSV), their rows in one
  // list (JSON), in the board's order; exactly what the site writes for a table's export.
  function exportText(cards, name, format) {
    const parts = cards.map((c) => c.exports[name]);
    if (format === "json") {
      const rows = [].concat(...parts.map((p) => p[2]));
      return "[\n" + rows.join(",\n") + "\n]\n";
    }
    const first = parts.find((p) => p[1]);
    return (first ? first[0] : "\r\n") + parts.map((p) => p[1]).join("");
  }

  function valueCell(c) {
    if (c.reason) return el("td", { "data-value": "", cls: "muted", title: c.reason, text: "absent" });
    if (c.low === null || c.low === undefined) {
      const attrs = { "data-value": c.mean === null ? "" : String(c.mean) };
      if (c.note) attrs.title = "no interval: " + c.note;
      const td = el("td", attrs, [document.createTextNode(fmt(c.mean))]);
      if (c.note) { td.appendChild(document.createTextNode(" ")); td.appendChild(el("span", { cls: "ci", text: "(no interval)" })); }
      return td;
    }
    return el("td", { "data-value": String(c.mean) }, [
      document.createTextNode(fmt(c.mean) + " "),
      el("span", { cls: "ci", text: "[" + fmt(c.low) + ", " + fmt(c.high) + "]" }),
    ]);
  }

  // A figure with its interval (and ``extra``, a count); ``title`` says why, when hovered.
  function figureCell(value, low, high, extra, title) {
    const attrs = { "data-value": value === null ? "" : String(value) };
    if (title) attrs.title = title;
    if (value === null) return el("td", attrs, [document.createTextNode("–")]);
    const td = el("td", attrs, [
      document.createTextNode(fmt(value) + " "),
      el("span", { cls: "ci", text: "[" + fmt(low) + ", " + fmt(high) + "]" }),
    ]);
    if (extra) { td.appendChild(document.createTextNode(" ")); td.appendChild(el("span", { cls: "muted small", text: extra })); }
    return td;
  }

  function showScenario(page, all, partitions) {
    const metric = page.metric;
    const cards = all.filter((c) => c.shown);
    const versions = cards.map((c) => c.version);
    const charted = cards.slice(0, page.charted);

    document.querySelectorAll("a[data-export]").forEach(function (a) {
      const name = a.getAttribute("data-export"), format = a.getAttribute("data-format");
      // The scorecards export has every version's rows; the others the versions listed.
      const text = exportText(name === "scorecards" ? all : cards, name, format);
      const type = format === "json" ? "application/json" : "text/csv";
      a.href = URL.createObjectURL(new Blob([text], { type: type + ";charset=utf-8" }));
      a.download = page.exports[name] + "." + format;
    });

    const partial = cards.filter((c) => c.partial);
    const partialBox = document.getElementById("partial-evaluations");
    partialBox.hidden = !partial.length;
    partial.forEach(function (c) {
      const p = c.partial;
      partialBox.querySelector("ul").appendChild(el("li", {}, [
        el("span", { cls: "version", text: c.version }),
        document.createTextNode(": partial, " + p.evaluated + " of " + p.total + " instances (" + p.reason + ")"),
      ]));
    });

    // Scorecards: a table per family (rows: versions; columns: metric × perturbation); a
    // family whose every figure is absent for every version folds into one line.
    const families = new Map();
    for (const c of cards) {
      for (const [family, figures] of Object.entries(c.families)) {
        if (!families.has(family)) families.set(family, { cells: new Map(), columns: new Map(), reasons: new Set(), metrics: new Set(), absent: new Map() });
        const f = families.get(family);
        for (const [m, p, mean, low, high, reason, note] of figures) {
          f.metrics.add(m);
          f.cells.set(c.version + "\u001f" + m + "\u001f" + p, { mean: mean, low: low, high: high, reason: reason, note: note });
          if (reason) { f.reasons.add(reason); f.absent.set(m + "\u001f" + reason, [m, reason]); }
          else f.columns.set(m + "\u001f" + p, [m, p]);
        }
      }
    }
    const order = (f) => { const i = page.families.indexOf(f); return i < 0 ? page.families.length : i; };
    const names = Array.from(families.keys()).sort((a, b) => order(a) - order(b) || byText(a, b));
    const folded = document.getElementById("folded");
    const holder = document.getElementById("scorecards");
    for (const family of names) {
      const f = families.get(family);
      if (!f.columns.size) {
        const n = f.metrics.size;
        folded.appendChild(el("li", {}, [
          el("strong", { text: family }),
          document.createTextNode(": not applicable (" + n + " metric" + (n !== 1 ? "s" : "") + ") — " + Array.from(f.reasons).sort(byText).join("; ")),
        ]));
        continue;
      }
      const columns = Array.from(f.columns.values()).sort(function ([m1, p1], [m2, p2]) {
        return byKeys([p1 !== "" ? 1 : 0, p1, m1 !== metric ? 1 : 0, m1], [p2 !== "" ? 1 : 0, p2, m2 !== metric ? 1 : 0, m2]);
      });
      const head = el("tr", {}, [el("th", { text: "model version" })]);
      for (const [m, p] of columns) {
        const th = el("th", { "data-type": "num", text: m });
        if (p) { th.appendChild(el("br")); th.appendChild(el("span", { cls: "muted", text: p })); }
        head.appendChild(th);
      }
      const body = el("tbody");
      for (const v of versions) {
        const tr = el("tr", {}, [el("td", { cls: "text version", text: v })]);
        for (const [m, p] of columns) {
          const c = f.cells.get(v + "\u001f" + m + "\u001f" + p);
          tr.appendChild(c ? valueCell(c) : el("td", { "data-value": "", text: "–" }));
        }
        body.appendChild(tr);
      }
      const table = el("table", { cls: "sortable scorecard", "data-family": family }, [el("thead", {}, [head]), body]);
      holder.appendChild(el("h3", { text: family }));
      holder.appendChild(el("div", { cls: "scroll" }, [table]));
      sortable(table);
      const absent = Array.from(f.absent.values()).sort(byKeys);
      if (absent.length) {
        holder.appendChild(el("p", { cls: "muted small", text: "Absent here: " + absent.map(([m, why]) => m + " (" + why + ")").join("; ") }));
      }
    }
    folded.hidden = !folded.children.length;

    // Contamination: the rate, and the primary metric on all, clean and their difference.
    const checked = cards.filter((c) => c.contamination);
    document.getElementById("contamination").hidden = !checked.length;
    document.getElementById("no-contamination").hidden = !!checked.length;
    const contaminationBody = document.querySelector("#contamination-table tbody");
    for (const c of checked) {
      const x = c.contamination;
      const rate = x.checked
        ? figureCell(x.rate, x.rate_low, x.rate_high, "n=" + x.rate_count)
        : el("td", { "data-value": "", cls: "muted", title: x.reason, text: "not checked" });
      contaminationBody.appendChild(el("tr", {}, [
        el("td", { cls: "text version", text: x.model_version }),
        rate,
        figureCell(x.full, x.full_low, x.full_high),
        x.clean === null
          ? figureCell(null, null, null, "", x.clean_note)  // why there is no clean figure
          : figureCell(x.clean, x.clean_low, x.clean_high, "n=" + x.clean_count),
        figureCell(x.diff, x.diff_low, x.diff_high, "", x.diff_note),
      ]));
    }

    // Groups: the primary metric per group and the gaps between groups.
    const groups = Array.from(new Set([].concat(...cards.map((c) => Object.keys(c.groups))))).sort(byText);
    document.getElementById("groups").hidden = !groups.length;
    document.getElementById("no-groups").hidden = !!groups.length;
    if (groups.length) {
      const [data, layout] = bars(charted.map((c) => [c.version, groups, groups.map((g) => own(c.groups, g))]), metric + " by group (95% intervals)");
      drawChart("chart-groups", data, layout);
      const gaps = [].concat(...cards.map((c) => c.gaps));
      const table = document.getElementById("gaps");
      table.hidden = !gaps.length;
      for (const g of gaps) {
        table.tBodies[0].appendChild(el("tr", {}, [
          el("td", { cls: "text", text: g.model_version }),
          el("td", { cls: "text", text: g.group }),
          el("td", { cls: "text", text: g.metric }),
          el("td", { "data-value": g.mean === null ? "" : String(g.mean), text: fmt(g.mean) }),
          el("td", { text: "[" + fmt(g.ci_low) + ", " + fmt(g.ci_high) + "]" }),
        ]));
      }
    }

    // Robustness and fairness: clean against each perturbation, and the worst cases.
    const worst = (p) => (p === "robustness" || p === "fairness" ? 1 : 0);
    const specs = Array.from(new Set([].concat(...cards.map((c) => Object.keys(c.robust))))).sort((a, b) => worst(a) - worst(b) || byText(a, b));
    document.getElementById("robustness").hidden = !specs.length;
    document.getElementById("no-robustness").hidden = !!specs.length;
    if (specs.length) {
      const [data, layout] = bars(
        charted.map((c) => [c.version, ["clean", ...specs], [c.clean, ...specs.map((p) => own(c.robust, p))]]),
        metric + ": clean vs perturbed (95% intervals)"
      );
      drawChart("chart-robust", data, layout);
    }

    // Calibration: the reliability diagram of the charted versions.
    const binned = cards.filter((c) => c.bins.length);
    document.getElementById("calibration").hidden = !binned.length;
    document.getElementById("no-calibration").hidden = !!binned.length;
    if (binned.length) {
      const traces = [{ type: "scatter", mode: "lines", x: [0, 1], y: [0, 1], name: "perfect", line: { dash: "dot", color: "#8c959f" } }];
      for (const c of charted) {
        if (!c.bins.length) continue;
        traces.push({
          type: "scatter", mode: "lines+markers", name: c.version,
          x: c.bins.map((b) => b.confidence), y: c.bins.map((b) => b.accuracy),
          text: c.bins.map((b) => "n=" + b.count),
        });
      }
      drawChart("chart-calibration", traces, {
        title: { text: "reliability: accuracy against confidence (10 equal-mass bins)" },
        xaxis: { title: { text: "mean chosen probability" }, range: [0, 1] },
        yaxis: { title: { text: "accuracy" }, range: [0, 1] },
        height: 420, margin: { t: 50 },
      });
    }
    const note = document.getElementById("charted");
    note.hidden = charted.length >= cards.length;
    note.textContent = "Charts show the " + charted.length + " best versions; tables and exports hold all " + cards.length + ".";

    const select = document.getElementById("instance-version");
    for (const v of versions) if (own(partitions, v)) select.appendChild(el("option", { value: v, text: v }));
    scenarioInstances({ scenario: page.scenario, partitions: partitions });
  }

  // A scenario page's instances of the chosen version, filtered as asked.
  function scenarioInstances(manifest) {
    const select = document.getElementById("instance-version");
    const filter = document.getElementById("instance-filter");
    const wrong = document.getElementById("instance-wrong");
    const status = document.getElementById("instance-status");
    const exportSpan = document.getElementById("instance-export");
    const body = document.querySelector("#instances tbody");
    let current = null;
    function render() {
      body.textContent = "";
      if (!current) return;
      const needle = filter.value.trim().toLowerCase();
      let shown = 0;
      for (const rec of current.instances) {
        if (wrong.checked && rec.correct !== 0) continue;
        const hay = (rec.id + " " + (rec.input || "") + " " + (rec.answer || "")).toLowerCase();
        if (needle && !hay.includes(needle)) continue;
        shown += 1;
        if (shown > 500) continue;  // the rest stay one filter away
        const [word, cls] = verdict(rec.correct);
        body.appendChild(el("tr", {}, [
          el("td", { cls: "text" }, [el("a", { href: instanceHref(current.scenario, current.version, rec.id), text: rec.id, cls: "instance-link" })]),
          el("td", { cls: "text snippet", text: (rec.input || "").slice(0, 160) }),
          el("td", { cls: "text snippet", text: (rec.answer || "").slice(0, 120) }),
          el("td", { cls: cls, text: word }),
        ]));
      }
      status.textContent = shown + " of " + current.instances.length + " instances" + (shown > 500 ? " (first 500 listed)" : "");
    }
    function load() {
      const entry = manifest.partitions[select.value];
      if (!entry) return;
      status.textContent = "Loading " + select.value + "…";
      loadInstances(entry, manifest.scenario, select.value, function (data) {
        current = data;
        exportSpan.textContent = "";
        exportSpan.appendChild(el("a", { href: entry.jsonl, download: "", text: "these rows as JSONL (gzipped)" }));
        if (!data) status.textContent = "Could not load " + entry.data;
        render();
      });
    }
    select.addEventListener("change", load);
    filter.addEventListener("input", render);
    wrong.addEventListener("change", render);
    if (select.value) load();
  }

  // ---------------------------------------------------------------- instance page
  assay.instancePage = function () {
    assay.ready(function () {
      // Each scenario's index (data/<scenario>/_cards.js) says where its partitions' data is.
      const indexes = json("scenario-indexes");
      const params = new URLSearchParams(window.location.hash.slice(1));
      const scenario = params.get("s"), version = params.get("v"), id = params.get("id");
      const status = document.getElementById("instance-status");
      document.getElementById("instance-id").textContent = id || "";
      document.getElementById("instance-where").textContent = (scenario || "?") + " · " + (version || "?");
      const missing = "No stored outputs for this scenario and version.";
      if (!Object.prototype.hasOwnProperty.call(indexes, scenario)) { status.textContent = missing; return; }
      loadPartition(indexes[scenario], "cards\u001f" + scenario, function (index) {
        const versions = index ? index.partitions : {};
        const entry = Object.prototype.hasOwnProperty.call(versions, version) ? versions[version] : null;
        if (!entry) { status.textContent = missing; return; }
        loadInstances(entry, scenario, version, function (data) {
          const rec = data && data.instances.find((r) => r.id === id);
          if (!rec) { status.textContent = "Instance " + id + " is not in " + entry.data + "."; return; }
          status.hidden = true;
          document.getElementById("instance").hidden = false;
          showInstance(data, rec, versions, scenario, version, entry);
        });
      });
    });
    window.addEventListener("hashchange", function () { window.location.reload(); });
  };

  function showInstance(data, rec, versions, scenario, version, entry) {
    document.getElementById("instance-input").textContent = rec.input == null ? "(instance not stored)" : rec.input;
    const refs = document.getElementById("references");
    rec.references.forEach(function ([text, correct]) {
      refs.appendChild(el("li", { cls: correct ? "right" : "" }, [
        el("span", { text: text }), el("span", { cls: "muted", text: correct ? "  ✓ correct" : "" }),
      ]));
    });
    const groups = Object.entries(rec.groups || {}).map(([k, v]) => k + "=" + v).join(", ");
    document.getElementById("groups").textContent = groups ? "groups: " + groups : "";
    const main = rec.requests.find((r) => !r.perturbation && !r.part) || rec.requests[0];
    document.getElementById("prompt-meta").textContent =
      "template " + (main.template_id || "–") + " · trial " + main.trial + " · " + main.kind +
      (main.method ? " (" + main.method + ")" : "") + " · prompt digest " + main.prompt_digest +
      (main.truncated ? " · truncated to fit" : "");
    document.getElementById("prompt").textContent = main.prompt;
    const [word, cls] = verdict(main.value);
    const v = document.getElementById("verdict");
    v.textContent = word; v.className = "verdict " + cls;
    document.getElementById("primary-value").textContent = data.metric + " = " + fmt(main.value);
    document.getElementById("completion").textContent = main.error ? "error: " + main.error : (main.text || main.answer || "");
    const choiceBody = document.querySelector("#choices tbody");
    if (main.choices.length) {
      const correct = new Set(rec.references.filter((r) => r[1]).map((r) => r[0]));
      main.choices.forEach(function ([text, logprob, tokens, greedy]) {
        choiceBody.appendChild(el("tr", {}, [
          el("td", { cls: "text", text: text }), el("td", { text: fmt(logprob) }),
          el("td", { text: tokens }), el("td", { text: greedy ? "yes" : "no" }),
          el("td", { text: correct.has(text) ? "correct" : "" }),
        ]));
      });
      if (window.Plotly) {
        Plotly.newPlot("choices-chart", [{
          type: "bar", orientation: "h", y: main.choices.map((c, i) => "choice " + (i + 1)),
          x: main.choices.map((c) => c[1]), text: main.choices.map((c) => plotText(c[0])),
          hovertemplate: "%{text}: %{x:.3f}<extra></extra>",
          marker: { color: main.choices.map((c) => (correct.has(c[0]) ? "#0a7b34" : "#8c959f")) },
        }], { title: { text: "log-probability per choice (green: correct)" }, height: 120 + 40 * main.choices.length,
              yaxis: { autorange: "reversed" }, margin: { t: 40 } }, { displaylogo: false });
      }
    } else {
      document.getElementById("choices").hidden = true;
    }
    const cost = document.querySelector("#cost tbody");
    [["latency", fmt(main.latency_s, 3) + " s"], ["prompt tokens", main.prompt_tokens],
     ["completion tokens", main.completion_tokens], ["batch size", main.batch_size],
     ["from the request cache", main.cached ? "yes" : "no"], ["error", main.error || "none"]]
      .forEach(([k, val]) => cost.appendChild(el("tr", {}, [el("th", { text: k }), el("td", { text: val })])));
    const variants = document.querySelector("#variants tbody");
    const others = rec.requests.filter((r) => r !== main);
    if (!others.length) variants.appendChild(el("tr", {}, [el("td", { colspan: "4", cls: "muted", text: "No perturbed variant or other request." })]));
    others.forEach(function (r) {
      const [w, c] = verdict(r.value);
      variants.appendChild(el("tr", {}, [
        el("td", { cls: "text", text: (r.perturbation || "original") + (r.part ? " · " + r.part : "") + (r.trial ? " · trial " + r.trial : "") }),
        el("td", {}, [el("pre", { cls: "text-block small", text: r.prompt })]),
        el("td", { cls: "text", text: r.answer }),
        el("td", { cls: c, text: w }),
      ]));
    });
    const scores = document.querySelector("#scores tbody");
    let judged = false;
    rec.scores.forEach(function ([family, metric, group, trial, value, note]) {
      if (family === "judge" || metric === "judge_score") judged = true;
      scores.appendChild(el("tr", {}, [el("td", { text: family }), el("td", { text: metric }),
        el("td", { text: group }), el("td", { text: trial }), el("td", { text: fmt(value) }),
        el("td", { cls: "text", text: note || "" })]));
    });
    const replies = rec.judge_replies || [];
    document.getElementById("judge").textContent = replies.length
      ? "The judges' replies, as each judge model returned them:"
      : judged
        ? "Judged: the judge's scores are the judge rows above (per judge in the group column)."
        : "No judge scored this instance.";
    const replyBody = document.querySelector("#judge-replies tbody");
    document.getElementById("judge-replies").hidden = !replies.length;
    replies.forEach(function ([kind, judge, perturbation, trial, template, repeat, score, failure, reply]) {
      replyBody.appendChild(el("tr", {}, [
        el("td", { text: kind === "toxicity" ? "toxicity judge" : "judge" }),
        el("td", { cls: "text", text: judge }),
        el("td", { text: (perturbation || "original") + " · trial " + trial + (repeat ? " · repeat " + repeat : "") }),
        el("td", {}, [el("pre", { cls: "text-block small judge-reply", text: reply })]),
        el("td", { text: score === null ? "unparsed: " + (failure || "") : fmt(score) }),
      ]));
    });
    // Contamination: the suite's verdict (the contamination_rate stat: 1 flagged, 0 clean)
    // and every detector's finding with its evidence.
    let flag = null;
    rec.scores.forEach(function ([family, metric, group, trial, value]) {
      if (metric === "contamination_rate" && !group) flag = value;
    });
    const findings = rec.contamination || [];
    document.getElementById("contamination-verdict").textContent = flag === null
      ? (findings.length
        ? "Checked, but by none of the suite's flag detectors: not in the clean subset."
        : "Not checked for contamination: not in the clean subset.")
      : flag > 0
        ? "Flagged as contaminated (by the suite's flag detectors): left out of the clean subset."
        : "Clean: no flag detector flagged it; part of the clean subset.";
    document.getElementById("contamination").hidden = !findings.length;
    const findingBody = document.querySelector("#contamination tbody");
    findings.forEach(function ([detector, corpus, score, flagged, label, evidence]) {
      findingBody.appendChild(el("tr", { cls: flagged ? "flagged" : "" }, [
        el("td", { text: detector }), el("td", { cls: "text", text: corpus || "(model-based)" }),
        el("td", { text: fmt(score) }), el("td", { text: flagged ? "flagged" : "no" }),
        el("td", { text: label }), el("td", { cls: "text", text: evidence }),
      ]));
    });
    const list = document.getElementById("others");
    Object.keys(versions).forEach(function (other) {
      if (other === version) return;
      list.appendChild(el("li", {}, [el("a", { href: instanceHref(scenario, other, rec.id), text: other })]));
    });
    const exp = document.getElementById("instance-export");
    exp.appendChild(el("a", { href: entry.jsonl, download: "", text: "This partition's per-instance rows (JSONL, gzipped)" }));
  }

  // ---------------------------------------------------------------- history
  // The ranks per day, drawn from the page's data before the tables become sortable: a
  // column per stored day (linking its board), a row per version, "–" where a day lacks it.
  function rankGrid() {
    const grid = json("history-ranks");
    const table = document.getElementById("ranks");
    if (!grid || !table) return;
    const head = table.tHead.rows[0];
    grid.days.forEach(function ([day, href]) {
      head.appendChild(el("th", { "data-type": "num" }, [el("a", { href: href, text: day })]));
    });
    const body = table.tBodies[0];
    grid.versions.forEach(function ([version, cells]) {
      const row = el("tr", {}, [el("td", { cls: "text", text: version })]);
      cells.forEach(function (cell) {
        if (!cell) {
          row.appendChild(el("td", { "data-value": "", text: "–" }));
          return;
        }
        const [rank, low, high] = cell;
        row.appendChild(el("td", { "data-value": rank }, [
          document.createTextNode(rank + " "),
          el("span", { cls: "ci", text: "(" + low + "–" + high + ")" }),
        ]));
      });
      body.appendChild(row);
    });
    table.setAttribute("data-ready", "");
  }

  assay.history = function () {
    rankGrid();
    assay.ready(function () {
      const select = document.getElementById("history-version");
      const chart = document.getElementById("versions-chart");
      select.addEventListener("change", function () {
        if (!window.Plotly || !chart.data) return;
        const visible = chart.data.map((t) => !select.value || t.meta === select.value);
        Plotly.restyle(chart, { visible: visible });
      });
    });
  };
})();
