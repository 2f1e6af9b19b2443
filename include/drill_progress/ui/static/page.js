// Drill Progress page: fetches the plugin's JSON endpoints (relative URLs, same origin, the
// Airflow _token cookie) and draws with the DOM and inline SVG only: no CDN, no build step.
// Data is only ever inserted as text (textContent), never as HTML.
(function () {
  "use strict";

  var SVGNS = "http://www.w3.org/2000/svg";
  var PALETTE = ["#017cee", "#38a169", "#d69e2e", "#805ad5", "#e53e3e", "#319795", "#dd6b20", "#718096"];
  var drillColors = {};

  function colorFor(slug) {
    if (!(slug in drillColors)) {
      drillColors[slug] = PALETTE[Object.keys(drillColors).length % PALETTE.length];
    }
    return drillColors[slug];
  }

  function el(tag, attrs) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") {
        node.textContent = attrs[k];
      } else if (k === "style") {
        // CSSOM, not the style attribute: the page's CSP allows no inline style attributes
        Object.keys(attrs.style).forEach(function (p) { node.style[p] = attrs.style[p]; });
      } else {
        node.setAttribute(k, attrs[k]);
      }
    });
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined) { continue; }
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function svgEl(tag, attrs, text) {
    var node = document.createElementNS(SVGNS, tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function AuthError(status) { this.status = status; }

  function getJSON(url) {
    return fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) {
        if (r.status === 401 || r.status === 403) { throw new AuthError(r.status); }
        if (!r.ok) { throw new Error(url + ": HTTP " + r.status); }
        return r.json();
      });
  }

  function fmtNumber(n) { return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"); }

  function fmtDuration(seconds) {
    if (seconds === null || seconds === undefined) { return "–"; }
    var s = Math.round(seconds);
    if (s < 60) { return s + " s"; }
    if (s < 3600) { return Math.round(s / 60) + " min"; }
    if (s < 86400) { return (s / 3600).toFixed(1) + " h"; }
    return (s / 86400).toFixed(1) + " d";
  }

  function fmtPercent(rate) { return rate === null || rate === undefined ? "–" : Math.round(rate * 1000) / 10 + "%"; }

  function fmtTime(iso) { return iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("+00:00", " UTC") : "–"; }

  function employerLabel(id) { return id === "unknown" ? "Unknown employer" : "Employer " + id; }

  // ---- completions chart: stacked bars per drill (daily) + cumulative line ---------------
  function completionsChart(data) {
    var dates = data.dates;
    if (!dates.length) { return el("p", {"class": "empty", text: "No report days yet."}); }
    var W = 600, H = 210, L = 40, R = 44, T = 12, B = 30;
    var plotW = W - L - R, plotH = H - T - B;
    var maxDay = Math.max(1, Math.max.apply(null, data.completed));
    var maxCum = Math.max(1, Math.max.apply(null, data.completed_cumulative));
    var root = svgEl("svg", {viewBox: "0 0 " + W + " " + H, role: "img",
      "aria-label": "Completions per day for " + employerLabel(data.employer_id)});
    // axes and grid
    [0, 0.5, 1].forEach(function (f) {
      var y = T + plotH - f * plotH;
      root.appendChild(svgEl("line", {x1: L, x2: L + plotW, y1: y, y2: y, stroke: "#e2e8f0"}));
      root.appendChild(svgEl("text", {x: L - 6, y: y + 4, "text-anchor": "end", "font-size": 10, fill: "#5f6b7a"},
        String(Math.round(f * maxDay))));
      root.appendChild(svgEl("text", {x: L + plotW + 6, y: y + 4, "font-size": 10, fill: "#718096"},
        String(Math.round(f * maxCum))));
    });
    var step = plotW / dates.length;
    var barW = Math.min(48, Math.max(2, step * 0.7));
    var slugs = Object.keys(data.by_drill);
    var liveDate = data.live ? data.live.date : null;
    dates.forEach(function (d, i) {
      var x = L + i * step + (step - barW) / 2;
      var y = T + plotH;
      var live = d === liveDate;
      if (live) {  // today so far: a frame around the day's column
        root.appendChild(svgEl("rect", {x: (x - 2).toFixed(1), y: T, width: (barW + 4).toFixed(1), height: plotH,
          fill: "none", stroke: "#017cee", "stroke-dasharray": "3 2", "class": "live-day"}));
      }
      slugs.forEach(function (slug) {
        var v = data.by_drill[slug][i];
        if (!v) { return; }
        var h = v / maxDay * plotH;
        y -= h;
        var rect = svgEl("rect", {x: x.toFixed(1), y: y.toFixed(1), width: barW.toFixed(1), height: h.toFixed(1),
          fill: colorFor(slug), "fill-opacity": live ? 0.6 : 1});
        rect.appendChild(svgEl("title", {}, d + (live ? " (today so far)" : "") + " · " + slug + ": " + v +
          " completed"));
        root.appendChild(rect);
      });
    });
    // cumulative line (right axis)
    var points = data.completed_cumulative.map(function (v, i) {
      return (L + i * step + step / 2).toFixed(1) + "," + (T + plotH - v / maxCum * plotH).toFixed(1);
    });
    root.appendChild(svgEl("polyline", {points: points.join(" "), fill: "none", stroke: "#2d3748",
      "stroke-width": 1.5, "stroke-dasharray": "4 3"}));
    // x labels: first, middle, last
    var labelIdx = dates.length > 2 ? [0, Math.floor((dates.length - 1) / 2), dates.length - 1] : dates.map(function (_, i) { return i; });
    labelIdx.forEach(function (i) {
      root.appendChild(svgEl("text", {x: (L + i * step + step / 2).toFixed(1), y: H - 10, "text-anchor": "middle",
        "font-size": 10, fill: "#5f6b7a"}, dates[i]));
    });
    var legend = el("div", {"class": "legend"});
    slugs.forEach(function (slug) {
      legend.appendChild(el("span", {}, el("span", {"class": "swatch", style: {background: colorFor(slug)}}), slug));
    });
    legend.appendChild(el("span", {}, el("span", {"class": "swatch", style: {background: "#2d3748"}}),
      "cumulative (right axis)"));
    if (data.live) {
      legend.appendChild(el("span", {"class": "live", text: "framed: " + data.live.date + ", today so far (live, " +
        "updated " + fmtTime(data.live.computed_at) + ")"}));
    }
    return el("div", {"class": "chart"}, root, legend);
  }

  // ---- funnel per drill: enrolled -> started -> completed ---------------------------------
  function funnelView(funnel) {
    if (!funnel.drills.length) { return el("p", {"class": "empty", text: "No funnel for this day."}); }
    var grid = el("div", {"class": "funnel"});
    funnel.drills.forEach(function (d) {
      var max = Math.max(1, d.users_enrolled);
      var bars = el("div", {"class": "bars"});
      [["enrolled", d.users_enrolled, "#a0aec0"], ["started", d.started_cumulative, "#63b3ed"],
       ["completed", d.completed_cumulative, colorFor(d.drill_slug)]].forEach(function (b) {
        var pct = Math.min(100, b[1] / max * 100);
        bars.appendChild(el("div", {"class": "bar", title: b[0] + ": " + b[1]},
          el("span", {"class": "fill", style: {width: pct.toFixed(1) + "%", background: b[2]}}),
          el("span", {"class": "text", text: b[0] + " " + fmtNumber(b[1])})));
      });
      grid.appendChild(el("div", {"class": "drill", title: d.drill_slug, text: d.drill_name}));
      grid.appendChild(bars);
      grid.appendChild(el("div", {"class": "meta", text:
        "completion rate " + fmtPercent(d.completion_rate) + " · median " + fmtDuration(d.median_completion_seconds) +
        " · that day +" + d.started_day + " started, +" + d.completed_day + " completed · " +
        d.inactive_7d + " inactive 7 d+ (" + d.stalled_7d + " stalled)"}));
    });
    return grid;
  }

  function employerCard(employer, days) {
    var card = el("div", {"class": "card employer", "data-employer": employer.employer_id});
    card.appendChild(el("div", {"class": "card-head"},
      el("h3", {text: employerLabel(employer.employer_id)}),
      el("span", {"class": "muted", text: "report days " + employer.first_report_date + " – " +
        employer.latest_report_date})));
    var body = el("div", {}, el("p", {"class": "muted", text: "Loading…"}));
    card.appendChild(body);
    var id = encodeURIComponent(employer.employer_id);
    return Promise.all([
      getJSON("api/completions?employer_id=" + id + "&days=" + days),
      getJSON("api/funnel?employer_id=" + id),
    ]).then(function (res) {
      body.textContent = "";
      body.appendChild(el("h4", {"class": "muted", text: "Completions per day (last " + days + " report days)"}));
      body.appendChild(completionsChart(res[0]));
      body.appendChild(el("h4", {"class": "muted", text: "Funnel on " + res[1].report_date +
        (res[1].live ? " (today so far, live)" : "")}));
      body.appendChild(funnelView(res[1]));
      return card;
    }, function (err) {
      if (err instanceof AuthError) { throw err; }
      body.textContent = "";
      body.appendChild(el("p", {"class": "error", text: String(err)}));
      return card;
    });
  }

  function table(headers, rows, numeric) {
    var t = el("table");
    var tr = el("tr");
    headers.forEach(function (h, i) { tr.appendChild(el("th", {"class": numeric[i] ? "num" : "", text: h})); });
    t.appendChild(el("thead", {}, tr));
    var tbody = el("tbody");
    rows.forEach(function (row) {
      var r = el("tr");
      row.forEach(function (cell, i) {
        var td = el("td", {"class": numeric[i] ? "num" : ""});
        if (cell instanceof Node) { td.appendChild(cell); } else { td.textContent = cell; }
        r.appendChild(td);
      });
      tbody.appendChild(r);
    });
    t.appendChild(tbody);
    return t;
  }

  // ---- ingestion lag over the last hours: one line per stream, the alert threshold dashed -----
  function lagChart(stream, samples) {
    var W = 600, H = 170, L = 52, R = 12, T = 10, B = 26;
    var plotW = W - L - R, plotH = H - T - B;
    var times = samples.map(function (s) { return Date.parse(s.sampled_at); });
    var t0 = Math.min.apply(null, times), t1 = Math.max.apply(null, times);
    var span = Math.max(1, t1 - t0);
    var threshold = samples[samples.length - 1].threshold_seconds;
    var maxLag = Math.max(threshold * 1.2, Math.max.apply(null, samples.map(function (s) { return s.lag_seconds; })), 1);
    function x(t) { return L + (t - t0) / span * plotW; }
    function y(v) { return T + plotH - v / maxLag * plotH; }
    var root = svgEl("svg", {viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "Ingestion lag of " + stream});
    [0, 0.5, 1].forEach(function (f) {
      var v = f * maxLag;
      root.appendChild(svgEl("line", {x1: L, x2: L + plotW, y1: y(v), y2: y(v), stroke: "#e2e8f0"}));
      root.appendChild(svgEl("text", {x: L - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 10, fill: "#5f6b7a"},
        fmtDuration(v)));
    });
    root.appendChild(svgEl("line", {x1: L, x2: L + plotW, y1: y(threshold).toFixed(1), y2: y(threshold).toFixed(1),
      stroke: "#c53030", "stroke-dasharray": "5 3"}));
    root.appendChild(svgEl("polyline", {fill: "none", stroke: "#017cee", "stroke-width": 1.5, "class": "lag-line",
      points: samples.map(function (s, i) { return x(times[i]).toFixed(1) + "," + y(s.lag_seconds).toFixed(1); })
        .join(" ")}));
    samples.forEach(function (s, i) {
      var dot = svgEl("circle", {cx: x(times[i]).toFixed(1), cy: y(s.lag_seconds).toFixed(1), r: s.above ? 3 : 2,
        fill: s.above ? "#c53030" : "#017cee"});
      dot.appendChild(svgEl("title", {}, fmtTime(s.sampled_at) + ": " + fmtDuration(s.lag_seconds) + " behind" +
        (s.alerted ? " (alert sent)" : "")));
      root.appendChild(dot);
    });
    (t1 > t0 ? [t0, t1] : [t0]).forEach(function (t, i) {
      root.appendChild(svgEl("text", {x: x(t).toFixed(1), y: H - 8, "text-anchor": i ? "end" : "start",
        "font-size": 10, fill: "#5f6b7a"}, new Date(t).toISOString().slice(11, 16) + " UTC"));
    });
    var last = samples[samples.length - 1];
    return el("div", {"class": "chart"},
      el("p", {"class": last.above ? "error" : "muted", text: stream + ": " + fmtDuration(last.lag_seconds) +
        " behind at " + fmtTime(last.sampled_at) + " (alert above " + fmtDuration(threshold) + ")"}),
      root);
  }

  function renderLag(data, target) {
    target.textContent = "";
    var streams = Object.keys(data.streams).sort();
    if (!streams.length) {
      target.appendChild(el("p", {"class": "empty", text: "No lag samples in the last " + data.hours +
        " h: drill_progress_monitor records one every 5 minutes."}));
      return;
    }
    streams.forEach(function (stream) { target.appendChild(lagChart(stream, data.streams[stream])); });
  }

  function lagPill(cp) {
    var behind = cp.behind_ms === null ? null : cp.behind_ms / 1000;
    var level = "ok";
    if (cp.age_seconds > 1800 || (behind !== null && behind > 600)) { level = "bad"; }
    else if (cp.age_seconds > 300 || (behind !== null && behind > 60)) { level = "warn"; }
    return el("span", {"class": "pill " + level, text: behind === null ? "–" : fmtDuration(behind)});
  }

  // The shard's lease: the kind of ingest run consuming it and for how long the lease still holds.
  function leaseText(cp) {
    if (!cp.lease_holder_kind) { return cp.shard_closed ? "–" : "none"; }
    return cp.lease_holder_kind + " run" + (cp.lease_holder_run_id ? " " + cp.lease_holder_run_id : "") +
      " (lease " + fmtDuration(cp.lease_expires_in_seconds) + " left)";
  }

  function renderCheckpoints(data, target) {
    target.textContent = "";
    if (!data.checkpoints.length) { target.appendChild(el("p", {"class": "empty", text: "No checkpoints yet."})); return; }
    target.appendChild(table(["Stream", "Shard", "Behind", "Updated", "Records applied", "Closed", "Consumer",
      "Hand-overs"],
      data.checkpoints.map(function (c) {
        return [c.stream, c.shard_id, lagPill(c), fmtDuration(c.age_seconds) + " ago", fmtNumber(c.records_applied),
          c.shard_closed ? "yes" : "no", leaseText(c), fmtNumber(c.handovers)];
      }), [false, false, true, true, true, false, false, true]));
  }

  function renderRejections(data, target) {
    target.textContent = "";
    target.appendChild(el("p", {"class": data.total ? "error" : "muted",
      text: data.total + " record(s) set aside in the last " + data.hours + " h"}));
    if (!data.total) { return; }
    target.appendChild(table(["Reason", "Records", "Last"], data.by_reason.map(function (r) {
      return [r.reason, fmtNumber(r.records), fmtTime(r.last_rejected_at)];
    }), [false, true, false]));
    target.appendChild(el("h4", {"class": "muted", text: "Latest"}));
    target.appendChild(table(["When", "Shard", "Sequence", "Partition key", "Reason"], data.recent.map(function (r) {
      return [fmtTime(r.rejected_at), r.stream + "/" + r.shard_id, r.sequence_number, r.partition_key || "–", r.reason];
    }), [false, false, false, false, false]));
  }

  function renderCommands(data, target) {
    target.textContent = "";
    var types = [], byDay = {};
    data.published.forEach(function (r) {
      if (types.indexOf(r.command_type) < 0) { types.push(r.command_type); }
      (byDay[r.day] = byDay[r.day] || {})[r.command_type] = r.commands;
    });
    types.sort();
    var days = Object.keys(byDay).sort().reverse();
    if (!days.length) {
      target.appendChild(el("p", {"class": "empty", text: "No commands published in the last " + data.days + " days."}));
    } else {
      var max = 1;
      days.forEach(function (d) { types.forEach(function (t) { max = Math.max(max, byDay[d][t] || 0); }); });
      target.appendChild(table(["Day (UTC)"].concat(types, ["Total"]), days.map(function (d) {
        var total = 0;
        var cells = types.map(function (t) {
          var v = byDay[d][t] || 0;
          total += v;
          var bar = el("div", {"class": "bar", title: t + ": " + v},
            el("span", {"class": "fill", style: {width: (v / max * 100).toFixed(1) + "%", background: "#90cdf4"}}),
            el("span", {"class": "text", text: fmtNumber(v)}));
          return bar;
        });
        return [d].concat(cells, [fmtNumber(total)]);
      }), [false].concat(types.map(function () { return false; }), [true])));
    }
    var pending = data.pending.map(function (p) {
      return p.command_type + " " + p.pending + " (oldest " + fmtTime(p.oldest_created_at) + ")";
    });
    target.appendChild(el("p", {"class": "muted", text: "Waiting in the outbox: " +
      (pending.length ? pending.join(", ") : "none")}));
  }

  // ---- user lookup: the number goes in a JSON POST body, never in a URL ------------------------
  var COMMANDS_SHOWN = 15;

  function postJSON(url, body) {
    return fetch(url, {method: "POST", credentials: "same-origin",
      headers: {"Accept": "application/json", "Content-Type": "application/json"}, body: JSON.stringify(body)})
      .then(function (r) {
        return r.json().then(function (data) { return {status: r.status, data: data}; },
          function () { return {status: r.status, data: {}}; });
      });
  }

  function fmtValue(v) {
    if (v === null || v === undefined) { return "–"; }
    return typeof v === "object" ? JSON.stringify(v) : String(v);
  }

  function card(title, wide) {
    var c = el("div", {"class": "card" + (wide ? " full" : "")}, el("h3", {text: title}));
    return c;
  }

  function emptyOr(rows, render, text) {
    return rows.length ? render() : el("p", {"class": "empty", text: text});
  }

  function rejectedTable(rows) {
    return table(["When", "Reason", "Stream / shard", "Sequence", "Resolved"], rows.map(function (r) {
      return [fmtTime(r.rejected_at), r.reason, r.stream + "/" + r.shard_id, r.sequence_number,
        r.resolved_at ? fmtTime(r.resolved_at) + " (" + (r.resolution || "") + ")" : "no"];
    }), [false, false, false, false, false]);
  }

  function todayView(story) {
    var t = story.today;
    var box = el("div", {});
    box.appendChild(el("p", {}, "Next drill (scheduling's rule, its own query): ",
      el("strong", {text: story.next_drill || "none: every drill of the user's is completed"})));
    var verdict = t.due
      ? "Due at today's run (" + fmtTime(t.scheduled_run) + "): START_DRILL " + t.drill_slug + " planned at " +
        fmtTime(t.planned_time) + (t.recorded_as_sent ? "; recorded as sent" : "; not recorded as sent yet")
      : "Not due at today's run (" + fmtTime(t.scheduled_run) + "): " + t.why_not.join("; ");
    box.appendChild(el("p", {"class": "verdict " + (t.due ? "due" : "not-due"), text: verdict}));
    if (t.idempotency_key) {
      box.appendChild(el("p", {"class": "muted"}, "Today's key: ", el("code", {text: t.idempotency_key})));
    }
    box.appendChild(el("h4", {"class": "muted", text: "START_DRILLs recorded by daily scheduling (last 3 days)"}));
    box.appendChild(emptyOr(story.sent_start_drills, function () {
      return table(["Send date", "Idempotency key"], story.sent_start_drills.map(function (s) {
        return [s.send_date, el("code", {text: s.idempotency_key})];
      }), [false, false]);
    }, "none"));
    return box;
  }

  function renderStory(story, target) {
    var u = story.user;
    var numbers = story.phone_numbers.map(function (n) {
      return n.phone_number + (n.is_primary ? " (primary)" : "") + (n.looked_up ? " ← looked up" : "");
    }).join(", ");
    var grid = el("div", {"class": "story"});
    var who = card("User " + u.user_id);
    var facts = el("dl");
    [["Phone numbers", numbers], ["seq", u.seq], ["Created", fmtTime(u.created_at)],
     ["Last interaction", fmtTime(u.last_interacted_time)]].forEach(function (f) {
      facts.appendChild(el("dt", {text: f[0]}));
      facts.appendChild(el("dd", {text: f[1]}));
    });
    who.appendChild(facts);
    who.appendChild(el("h4", {"class": "muted", text: "Profile"}));
    var profile = el("dl");
    Object.keys(u.profile || {}).sort().forEach(function (k) {
      profile.appendChild(el("dt", {text: k}));
      profile.appendChild(el("dd", {text: fmtValue(u.profile[k])}));
    });
    who.appendChild(profile);
    grid.appendChild(who);
    var next = card("Next drill and today's planned send");
    next.appendChild(todayView(story));
    grid.appendChild(next);

    var statuses = card("Drill statuses", true);
    statuses.appendChild(table(["Place", "Drill", "Started", "Completed", "Instance", "The user's drill"],
      story.drill_statuses.map(function (s) {
        return [String(s.place_in_sequence), s.drill_name === s.drill_slug ? s.drill_slug : s.drill_slug + " (" +
          s.drill_name + ")", fmtTime(s.started_time), fmtTime(s.completed_time), s.drill_instance_id || "–",
          s.own_drill ? "yes" : "no (another employer's)"];
      }), [true, false, false, false, false, false]));
    grid.appendChild(statuses);

    var instances = card("Drill instances", true);
    instances.appendChild(emptyOr(story.drill_instances, function () {
      return table(["Instance", "Drill", "Current prompt", "Prompt started", "Last response", "Completed", "Valid",
        "Reminded prompts"], story.drill_instances.map(function (i) {
        return [i.drill_instance_id, i.drill_slug, i.current_prompt_slug || "–", fmtTime(i.current_prompt_start_time),
          fmtTime(i.current_prompt_last_response_time), fmtTime(i.completion_time), i.is_valid ? "yes" : "no",
          i.reminded_prompts.length ? i.reminded_prompts.join(", ") : "–"];
      }), [false, false, false, false, false, false, false, false]);
    }, "No drill instance."));
    grid.appendChild(instances);

    var commands = card("Commands to the user's numbers", true);
    var commandsTable = function (rows) {
      return table(["Enqueued", "Published", "Type", "Idempotency key", "Payload", "Source"],
        rows.map(function (c) {
          var p = c.payload || {};
          var what = [p.drill_slug, p.prompt_slug ? "prompt " + p.prompt_slug : null, c.partition_key]
            .filter(Boolean).join(" · ");
          return [fmtTime(c.enqueued_at), c.published_at ? fmtTime(c.published_at) :
            (c.pending ? "pending" + (c.last_error ? ": " + c.last_error : "") : "–"), c.command_type,
            el("code", {text: c.idempotency_key}), what, c.source];
        }), [false, false, false, false, false, false]);
    };
    commands.appendChild(emptyOr(story.commands, function () {
      // the latest first; older ones folded away (the answer holds up to 200)
      var shown = el("div", {}, commandsTable(story.commands.slice(0, COMMANDS_SHOWN)));
      if (story.commands.length > COMMANDS_SHOWN) {
        shown.appendChild(el("details", {}, el("summary", {text: (story.commands.length - COMMANDS_SHOWN) +
          " older command(s)"}), commandsTable(story.commands.slice(COMMANDS_SHOWN))));
      }
      return shown;
    }, "No command in the outbox (published commands are pruned after the outbox retention)."));
    grid.appendChild(commands);

    var rejected = card("Records set aside for the user's numbers", true);
    rejected.appendChild(emptyOr(story.rejected_records, function () { return rejectedTable(story.rejected_records); },
      "None."));
    grid.appendChild(rejected);
    target.appendChild(grid);
  }

  function renderLookup(result, target) {
    target.textContent = "";
    var d = result.data || {};
    if (result.status === 200) {
      target.setAttribute("data-state", "found");
      renderStory(d, target);
    } else if (result.status === 404 && d.detail) {
      target.setAttribute("data-state", "not-found");
      target.appendChild(el("p", {"class": "error", text: "No user with this phone number (" + d.phone_number + ")."}));
      target.appendChild(el("h4", {"class": "muted", text: "Records set aside for this number"}));
      target.appendChild(emptyOr(d.rejected_records, function () { return rejectedTable(d.rejected_records); },
        "None."));
    } else {
      target.setAttribute("data-state", "error");
      var why = typeof d.detail === "string" ? d.detail : "HTTP " + result.status;
      if (result.status === 401) { why = "Your Airflow session is missing or expired: sign in again."; }
      target.appendChild(el("p", {"class": "error", text: "Lookup refused: " + why}));
    }
  }

  function setUpLookup() {
    var form = document.getElementById("lookup-form");
    var input = document.getElementById("lookup-phone");
    var target = document.getElementById("lookup-result");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var number = input.value;
      if (!number.trim()) { return; }
      input.value = "";  // the number does not stay on screen; the answer shows it masked
      target.setAttribute("data-state", "loading");
      target.textContent = "Looking up…";
      postJSON("api/lookup", {phone_number: number}).then(function (result) { renderLookup(result, target); },
        function (err) {
          target.setAttribute("data-state", "error");
          target.textContent = "";
          target.appendChild(el("p", {"class": "error", text: "Lookup failed: " + err}));
        });
    });
  }

  function section(url, targetId, render) {
    var target = document.getElementById(targetId);
    return getJSON(url).then(function (data) { render(data, target); }, function (err) {
      if (err instanceof AuthError) { throw err; }
      target.textContent = "";
      target.appendChild(el("p", {"class": "error", text: String(err)}));
    });
  }

  function renderEmployers(employers) {
    var days = document.getElementById("days").value;
    var filter = document.getElementById("employer-filter").value;
    var container = document.getElementById("employers");
    container.textContent = "";
    if (!employers.length) {
      container.appendChild(el("p", {"class": "empty", text: "No progress yet: drill_progress_monitor adds today's " +
        "figures every 5 minutes once users arrive, drill_progress_report each finished day."}));
      return Promise.resolve();
    }
    var shown = employers.filter(function (e) { return !filter || e.employer_id === filter; });
    return Promise.all(shown.map(function (e) { return employerCard(e, days); })).then(function (cards) {
      cards.forEach(function (c) { container.appendChild(c); });
    });
  }

  function fail(err) {
    var status = document.getElementById("status");
    status.textContent = "";
    if (err instanceof AuthError) {
      status.className = "error";
      status.appendChild(document.createTextNode("Your Airflow session is missing or expired (HTTP " + err.status +
        "). Sign in to Airflow again and reopen this page."));
    } else {
      status.className = "error";
      status.textContent = "Could not load the page: " + err;
    }
  }

  function main() {
    var status = document.getElementById("status");
    setUpLookup();
    Promise.all([getJSON("api/whoami"), getJSON("api/employers")]).then(function (res) {
      document.getElementById("whoami").textContent = "signed in as " + res[0].username;
      var employers = res[1].employers;
      var filter = document.getElementById("employer-filter");
      employers.forEach(function (e) {
        filter.appendChild(el("option", {value: e.employer_id, text: employerLabel(e.employer_id)}));
      });
      var rerender = function () { renderEmployers(employers).catch(fail); };
      filter.addEventListener("change", rerender);
      document.getElementById("days").addEventListener("change", rerender);
      return Promise.all([
        renderEmployers(employers),
        section("api/health/lag?hours=6", "lag", renderLag),
        section("api/health/checkpoints", "checkpoints", renderCheckpoints),
        section("api/health/rejections?hours=24", "rejections", renderRejections),
        section("api/health/commands?days=14", "commands", renderCommands),
      ]);
    }).then(function () {
      status.textContent = "Loaded " + new Date().toISOString().replace("T", " ").slice(0, 19) + " UTC";
      document.body.setAttribute("data-ready", "true");
    }).catch(fail);
  }

  document.addEventListener("DOMContentLoaded", main);
})();
