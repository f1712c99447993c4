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

  // --- condition builder: one AND/OR group of rows, written to the JSON textarea ---------------
  const builder = document.getElementById("builder");
  const conditions = document.getElementById("conditions");
  if (builder && conditions) {
    const data = JSON.parse(document.getElementById("builder-data").textContent);
    let tree;
    try { tree = conditions.value.trim() ? JSON.parse(conditions.value) : { type: "group", op: "and", conditions: [] }; }
    catch (e) { tree = null; }
    const flat = tree && tree.type === "group" && tree.conditions.every(function (c) { return c.type !== "group"; });
    if (flat) {
      builder.hidden = false;
      const subjects = data.builtins.map(function (b) { return [b, b]; })
        .concat(data.fields.map(function (f) { return ["field:" + f.id, f.name]; }));
      function select(options, value, onChange) {
        const s = el("select");
        options.forEach(function (o) {
          const opt = el("option", o[1]);
          opt.value = o[0];
          if (String(o[0]) === String(value)) opt.selected = true;
          s.appendChild(opt);
        });
        s.addEventListener("change", function () { onChange(s.value); });
        return s;
      }
      function input(value, placeholder, onChange) {
        const i = el("input");
        i.value = value === undefined || value === null ? "" : value;
        i.placeholder = placeholder;
        i.addEventListener("input", function () { onChange(i.value); });
        return i;
      }
      function write() {
        conditions.value = tree.conditions.length ? JSON.stringify(tree) : "";
      }
      function render() {
        builder.replaceChildren();
        const head = el("div", "", "row");
        head.appendChild(el("span", "Match "));
        head.appendChild(select([["and", "all (AND)"], ["or", "any (OR)"]], tree.op, function (v) { tree.op = v; write(); }));
        head.appendChild(el("span", " of:"));
        builder.appendChild(head);
        tree.conditions.forEach(function (c, i) {
          const row = el("div", "", "row cond");
          if (c.type === "field") {
            row.appendChild(select(subjects, c.subject, function (v) { c.subject = v; write(); }));
            row.appendChild(select(data.operators.map(function (o) { return [o, o]; }), c.op, function (v) {
              c.op = v;
              if (v === "empty" || v === "not_empty") delete c.value; else if (v === "in") c.value = [];
              render(); write();
            }));
            if (c.op !== "empty" && c.op !== "not_empty") {
              const shown = Array.isArray(c.value) ? c.value.join(",") : c.value;
              row.appendChild(input(shown, c.op === "in" ? "a,b,c" : "value", function (v) {
                c.value = c.op === "in" ? v.split(",").map(function (x) { return x.trim(); }) : v; write();
              }));
            }
          } else {
            row.appendChild(select(data.kinds.map(function (k) { return [k, k.replace("_", " ")]; }), c.kind, function (v) {
              c.kind = v; delete c.url_op; delete c.url; delete c.ref_id; render(); write();
            }));
            if (c.kind === "link_click" || c.kind === "page_visit") {
              row.appendChild(input(c.url, "url contains…", function (v) {
                if (v) { c.url_op = "contains"; c.url = v; } else { delete c.url_op; delete c.url; } write();
              }));
            } else {
              row.appendChild(input(c.ref_id, "id (any)", function (v) { if (v) c.ref_id = Number(v); else delete c.ref_id; write(); }));
            }
            row.appendChild(input(c.min_count, "at least N", function (v) { if (v) c.min_count = Number(v); else delete c.min_count; write(); }));
            row.appendChild(input(c.within_days, "within N days", function (v) { if (v) c.within_days = Number(v); else delete c.within_days; write(); }));
          }
          const remove = el("button", "✕", "link");
          remove.type = "button";
          remove.title = "remove";
          remove.addEventListener("click", function () { tree.conditions.splice(i, 1); render(); write(); });
          row.appendChild(remove);
          builder.appendChild(row);
        });
        const add = el("div", "", "row");
        const addField = el("button", "+ field condition");
        addField.type = "button";
        addField.addEventListener("click", function () {
          tree.conditions.push({ type: "field", subject: "email", op: "contains", value: "" }); render(); write();
        });
        const addActivity = el("button", "+ activity condition");
        addActivity.type = "button";
        addActivity.addEventListener("click", function () {
          tree.conditions.push({ type: "activity", kind: "campaign_open" }); render(); write();
        });
        add.appendChild(addField);
        add.appendChild(addActivity);
        builder.appendChild(add);
      }
      render();
    }
  }
})();
