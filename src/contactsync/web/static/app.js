// contactsync admin UI: progressive enhancements only; every page works without this file.
// Text from the server is always inserted with textContent, never as HTML.
"use strict";

(function () {
  const body = document.body;
  const base = body.dataset.base || "";
  const csrf = body.dataset.csrf || "";

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  }

  async function post(path, payload) {
    const init = { method: "POST", headers: { "X-CSRF-Token": csrf, Accept: "application/json" }, credentials: "same-origin" };
    if (payload instanceof FormData) {
      init.body = new URLSearchParams(payload);
    } else {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(payload);
    }
    const response = await fetch(base + path, init);
    return response.json();
  }

  // --- account switcher: switch as soon as another account is chosen (the button stays for no-JS)
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { if (select.value) select.form.submit(); });
  });

  // --- a file over the upload limit is refused before it is sent (the server checks it again)
  document.querySelectorAll("input[type=file][data-max-bytes]").forEach(function (input) {
    input.addEventListener("change", function () {
      const file = input.files && input.files[0];
      const over = file && file.size > Number(input.dataset.maxBytes);
      input.setCustomValidity(over ? input.dataset.tooLarge : "");
      if (over) input.reportValidity();
    });
  });

  // --- secret reveal --------------------------------------------------------------------------
  const reveal = document.getElementById("reveal-secret");
  if (reveal) {
    // the page carries only a masked hint; the secret is fetched on an explicit click, never kept
    reveal.addEventListener("click", async function () {
      const secret = document.getElementById("secret");
      if (secret.textContent !== secret.dataset.hint) {
        secret.textContent = secret.dataset.hint;
        reveal.textContent = "Reveal";
        return;
      }
      const form = document.getElementById("action-form");
      const got = await post("/ui/actions/" + form.dataset.action + "/reveal", {});
      if (got.ok) {
        secret.textContent = got.secret;
        reveal.textContent = "Hide";
      }
    });
  }

  // --- sync action form -----------------------------------------------------------------------
  const form = document.getElementById("action-form");
  if (form) {
    const url = document.getElementById("url");
    const errorBox = document.getElementById("template-error");
    const okBox = document.getElementById("template-ok");
    const listId = form.dataset.list;
    const actionId = form.dataset.action;
    let timer = null;
    let seq = 0;

    async function validate() {
      const mine = ++seq;
      const result = await post("/ui/validate", { list_id: listId, url: url.value });
      if (mine !== seq) return;
      if (result.ok) {
        errorBox.hidden = true;
        okBox.hidden = false;
        url.removeAttribute("aria-invalid");
        return;
      }
      const e = result.error || {};
      let text = e.line ? "line " + e.line + ", column " + e.column + ": " + e.message : e.message || "invalid";
      if (e.caret) text += "\n" + e.caret;
      errorBox.textContent = text;
      errorBox.hidden = false;
      okBox.hidden = true;
      url.setAttribute("aria-invalid", "true");
    }
    url.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(validate, 250);
    });

    // shortcode picker: click inserts at the caret
    const pickerData = document.getElementById("picker-data");
    if (pickerData) {
      const data = JSON.parse(pickerData.textContent);
      function insert(text) {
        const start = url.selectionStart ?? url.value.length;
        const end = url.selectionEnd ?? url.value.length;
        url.value = url.value.slice(0, start) + text + url.value.slice(end);
        url.focus();
        url.selectionStart = url.selectionEnd = start + text.length;
        url.dispatchEvent(new Event("input"));
      }
      const fieldList = document.getElementById("picker-fields");
      const keys = data.fields.map(function (f) { return [f.key, f.name + " (" + f.type + ")"]; })
        .concat(data.builtins.map(function (b) { return [b, "built-in"]; }));
      keys.forEach(function (pair) {
        const li = el("li");
        const button = el("button", "[#" + pair[0] + "#]", "chip");
        button.type = "button";
        button.addEventListener("click", function () { insert("[#" + pair[0] + "#]"); });
        li.appendChild(button);
        li.appendChild(el("span", " " + pair[1], "muted"));
        fieldList.appendChild(li);
      });
      const fnList = document.getElementById("picker-functions");
      data.functions.forEach(function (f) {
        const li = el("li");
        const button = el("button", f.signature, "chip");
        button.type = "button";
        button.title = f.doc;
        button.addEventListener("click", function () { insert("[#" + f.name + " EMAIL#]"); });
        li.appendChild(button);
        li.appendChild(el("span", " " + f.doc, "muted"));
        fnList.appendChild(li);
      });
    }

    const method = document.getElementById("method");
    const contentType = document.getElementById("content_type");
    function syncMethod() { contentType.disabled = method.value === "GET"; }
    method.addEventListener("change", syncMethod);
    syncMethod();

    function requestText(p) {
      let text = p.method + " " + p.url + "\n";
      Object.keys(p.headers).forEach(function (k) { text += k + ": " + p.headers[k] + "\n"; });
      if (p.body) text += "\n" + p.body;
      return text;
    }

    const previewButton = document.getElementById("preview-button");
    if (previewButton && actionId) {
      previewButton.addEventListener("click", async function () {
        const out = document.getElementById("preview-out");
        const result = await post("/ui/actions/" + actionId + "/preview", new FormData(form));
        out.hidden = false;
        const warnings = document.getElementById("preview-warnings");
        warnings.replaceChildren();
        const code = document.querySelector("#preview-request code");
        if (!result.ok) {
          document.getElementById("preview-meta").textContent = "Cannot preview: " + (result.error.message || "error");
          code.textContent = result.error.caret || "";
          return;
        }
        const p = result.preview;
        document.getElementById("preview-meta").textContent =
          p.method + " · " + p.size_bytes + " bytes · " + p.php_variables + " PHP variables · nesting " + p.php_max_nesting +
          " · " + p.render_words;
        p.warnings.forEach(function (w) { warnings.appendChild(el("li", w)); });
        code.textContent = requestText(p);
      });
    }

    const sendButton = document.getElementById("test-send-button");
    if (sendButton && actionId) {
      sendButton.addEventListener("click", async function () {
        const out = document.getElementById("test-send-out");
        sendButton.disabled = true;
        try {
          const result = await post("/ui/actions/" + actionId + "/test-send", new FormData(form));
          out.hidden = false;
          const code = document.querySelector("#test-send-response code");
          const hint = document.getElementById("test-send-hint");
          hint.textContent = "";
          if (!result.ok) {
            document.getElementById("test-send-meta").textContent = "Not sent: " + (result.error.message || "error");
            code.textContent = "";
            return;
          }
          const r = result.response;
          document.getElementById("test-send-meta").textContent = (r.success ? "Delivered: " : "Failed: ") +
            (r.status ? "HTTP " + r.status : r.error) + " in " + r.duration_ms + " ms";
          hint.textContent = r.hint || "";
          hint.className = r.success ? "hint ok" : "hint error";
          let text = "";
          Object.keys(r.headers).forEach(function (k) { text += k + ": " + r.headers[k] + "\n"; });
          code.textContent = text + "\n" + r.body;
        } finally {
          sendButton.disabled = false;
        }
      });
    }
  }

  // --- trigger: show only the narrowing boxes the chosen trigger takes -------------------------
  const trigger = document.getElementById("trigger");
  if (trigger) {
    const refRow = document.getElementById("ref-id-row");
    const fieldsRow = document.getElementById("trigger-fields-row");
    function syncTrigger(clear) {
      const withId = ["campaign.opened", "goal.reached", "webhook.triggered"].indexOf(trigger.value) >= 0;
      const withFields = trigger.value === "contact.updated";
      refRow.hidden = !withId;
      fieldsRow.hidden = !withFields;
      if (clear && !withId) refRow.querySelector("input").value = "";
      if (clear && !withFields) {
        fieldsRow.querySelectorAll("input").forEach(function (i) { if (i.type === "checkbox") i.checked = false; else i.value = ""; });
      }
    }
    trigger.addEventListener("change", function () { syncTrigger(true); });
    syncTrigger(false);
  }

  // --- condition builder: one AND/OR group of sentences, kept in sync with the JSON textarea -----
  const builder = document.getElementById("builder");
  const conditions = document.getElementById("conditions");
  if (builder && conditions) {
    const data = JSON.parse(document.getElementById("builder-data").textContent);
    const subjects = data.subjects;
    const advanced = document.getElementById("advanced");
    let tree = null;

    function subjectOf(value) {
      return subjects.find(function (s) { return s.value === value; }) || null;
    }
    function isFlat(t) {
      return t && t.type === "group" && Array.isArray(t.conditions) &&
        t.conditions.every(function (c) { return c && (c.type === "field" || c.type === "activity"); });
    }
    function read() {
      const text = conditions.value.trim();
      if (!text) return { type: "group", op: "and", conditions: [] };
      try {
        const parsed = JSON.parse(text);
        return isFlat(parsed) ? parsed : null;
      } catch (e) { return null; }
    }
    function write() {
      conditions.value = tree.conditions.length ? JSON.stringify(tree) : "";
    }
    function select(options, value, onChange, label) {
      const s = el("select");
      if (label) s.setAttribute("aria-label", label);
      options.forEach(function (o) {
        const opt = el("option", o[1]);
        opt.value = o[0];
        if (String(o[0]) === String(value)) opt.selected = true;
        s.appendChild(opt);
      });
      s.addEventListener("change", function () { onChange(s.value, s); });
      return s;
    }
    function input(value, placeholder, onChange, cls, type) {
      const i = el("input", undefined, cls);
      if (type) i.type = type;
      i.value = value === undefined || value === null ? "" : value;
      i.placeholder = placeholder;
      i.setAttribute("aria-label", placeholder);
      i.addEventListener("input", function () { onChange(i.value); });
      return i;
    }
    function opWords(subject, op) {
      if (subject && subject.type === "date" && data.ordered[op]) return data.ordered[op];
      return data.operators[op] || op;
    }
    function valueWidget(c, subject) {
      if (c.op === "empty" || c.op === "not_empty") return null;
      const choices = subject ? subject.choices : [];
      if (choices.length) {
        if (c.op === "in") {
          const chosen = Array.isArray(c.value) ? c.value.map(String) : [];
          const s = el("select");
          s.multiple = true;
          s.setAttribute("aria-label", "values");
          s.size = Math.min(choices.length, 5);
          choices.forEach(function (v) {
            const opt = el("option", v);
            opt.value = v;
            opt.selected = chosen.indexOf(v) >= 0;
            s.appendChild(opt);
          });
          s.addEventListener("change", function () {
            c.value = Array.from(s.selectedOptions).map(function (o) { return o.value; }); write();
          });
          return s;
        }
        if (["eq", "ne"].indexOf(c.op) >= 0) {
          const options = choices.map(function (v) { return [v, v]; });
          if (c.value !== undefined && c.value !== "" && choices.indexOf(String(c.value)) < 0) {
            options.push([c.value, c.value + " (not a choice)"]);
          }
          if (c.value === undefined || c.value === "") { c.value = choices[0]; }
          return select(options, c.value, function (v) { c.value = v; write(); }, "value");
        }
      }
      if (c.op === "in") {
        const shown = Array.isArray(c.value) ? c.value.join(", ") : "";
        return input(shown, "values, separated by commas", function (v) {
          c.value = v.split(",").map(function (x) { return x.trim(); }).filter(function (x) { return x; }); write();
        });
      }
      const kind = subject ? subject.type : "text";
      const hint = kind === "date" ? "YYYY-MM-DD" : kind === "number" ? "a number" : "value";
      return input(c.value, hint, function (v) { c.value = v; write(); }, "", kind === "number" ? "number" : "");
    }
    function fieldRow(row, c) {
      const subject = subjectOf(c.subject);
      const options = subjects.map(function (s) { return [s.value, s.label]; });
      if (!subject) options.push([c.subject, c.subject + " (unknown)"]);
      row.appendChild(select(options, c.subject, function (v) {
        c.subject = v;
        const s = subjectOf(v);
        if (s && s.ops.indexOf(c.op) < 0) c.op = "eq";
        c.value = c.op === "in" ? [] : "";
        if (c.op === "empty" || c.op === "not_empty") delete c.value;
        render(); write();
      }, "field"));
      const ops = subject ? subject.ops : Object.keys(data.operators);
      row.appendChild(select(ops.map(function (o) { return [o, opWords(subject, o)]; }), c.op, function (v) {
        const was = c.op;
        c.op = v;
        if (v === "empty" || v === "not_empty") delete c.value;
        else if (v === "in") c.value = c.value !== undefined && c.value !== "" && !Array.isArray(c.value) ? [c.value] : (Array.isArray(c.value) ? c.value : []);
        else if (Array.isArray(c.value)) c.value = c.value.length ? c.value[0] : "";
        else if (was === "empty" || was === "not_empty") c.value = "";
        render(); write();
      }, "comparison"));
      const widget = valueWidget(c, subject);
      if (widget) row.appendChild(widget);
    }
    function activityRow(row, c) {
      row.appendChild(el("span", "has"));
      const kinds = Object.keys(data.kinds).map(function (k) { return [k, data.kinds[k].label]; });
      row.appendChild(select(kinds, c.kind, function (v) {
        c.kind = v; delete c.url_op; delete c.url; delete c.ref_id; render(); write();
      }, "activity"));
      const kind = data.kinds[c.kind] || { narrow: "" };
      row.appendChild(el("span", kind.narrow));
      if (c.kind === "link_click" || c.kind === "page_visit") {
        row.appendChild(input(c.url, "any address", function (v) {
          if (v) { c.url_op = c.url_op || "contains"; c.url = v; } else { delete c.url_op; delete c.url; } write();
        }));
      } else {
        row.appendChild(input(c.ref_id, "any", function (v) {
          if (v) c.ref_id = Number(v); else delete c.ref_id; write();
        }, "n", "number"));
      }
      row.appendChild(el("span", "at least"));
      row.appendChild(input(c.min_count === undefined ? 1 : c.min_count, "times", function (v) {
        if (v) c.min_count = Number(v); else delete c.min_count; write();
      }, "n", "number"));
      row.appendChild(el("span", "times in the last"));
      row.appendChild(input(c.within_days, "any number of", function (v) {
        if (v) c.within_days = Number(v); else delete c.within_days; write();
      }, "n", "number"));
      row.appendChild(el("span", "days"));
    }
    function render() {
      builder.replaceChildren();
      if (tree === null) {
        builder.appendChild(el("p", "This rule is more than one group of conditions, or not valid JSON yet: edit it under Advanced.", "muted"));
        return;
      }
      const head = el("div", "", "row");
      head.appendChild(el("span", "Contacts who match"));
      head.appendChild(select([["and", "all"], ["or", "any"]], tree.op || "and", function (v) { tree.op = v; write(); }, "all or any"));
      head.appendChild(el("span", "of these conditions (none: every contact):"));
      builder.appendChild(head);
      tree.conditions.forEach(function (c, i) {
        const row = el("div", "", "row cond");
        if (c.type === "field") fieldRow(row, c); else activityRow(row, c);
        const remove = el("button", "remove", "link");
        remove.type = "button";
        remove.addEventListener("click", function () { tree.conditions.splice(i, 1); render(); write(); });
        row.appendChild(remove);
        builder.appendChild(row);
      });
      const add = el("div", "", "row");
      const addField = el("button", "+ field condition", "secondary");
      addField.type = "button";
      addField.addEventListener("click", function () {
        tree.conditions.push({ type: "field", subject: subjects[0].value, op: "eq", value: "" }); render(); write();
      });
      const addActivity = el("button", "+ activity condition", "secondary");
      addActivity.type = "button";
      addActivity.addEventListener("click", function () {
        tree.conditions.push({ type: "activity", kind: "page_visit", min_count: 1 }); render(); write();
      });
      add.appendChild(addField);
      add.appendChild(addActivity);
      builder.appendChild(add);
    }
    // the JSON stays editable: a valid one-group tree typed there redraws the sentences
    conditions.addEventListener("input", function () { tree = read(); render(); });
    tree = read();
    builder.hidden = false;
    if (tree === null && advanced) advanced.open = true;
    render();
  }

  // --- trigger fields: tick the list's fields instead of typing their ids -----------------------
  const triggerFields = document.querySelector("input[name=trigger_fields]");
  if (triggerFields && builder) {
    const fields = JSON.parse(document.getElementById("builder-data").textContent).subjects
      .filter(function (s) { return s.value.indexOf("field:") === 0; });
    if (fields.length) {
      const box = el("span", "", "row");
      const picked = function () { return triggerFields.value.split(",").map(function (x) { return x.trim(); }); };
      fields.forEach(function (f) {
        const id = f.value.slice(6);
        const label = el("label", "", "check");
        const tick = el("input");
        tick.type = "checkbox";
        tick.checked = picked().indexOf(id) >= 0;
        tick.addEventListener("change", function () {
          const now = picked().filter(function (x) { return x && x !== id; });
          if (tick.checked) now.push(id);
          triggerFields.value = now.join(",");
        });
        label.appendChild(tick);
        label.appendChild(document.createTextNode(" " + f.label));
        box.appendChild(label);
      });
      triggerFields.type = "hidden";
      triggerFields.parentNode.appendChild(box);
    }
  }
})();
