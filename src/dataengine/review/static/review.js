// The review page: send decisions as JSON, move between items with the keyboard.
(function () {
  const items = Array.from(document.querySelectorAll(".item"));
  let current = 0;
  function focus(i) {
    if (!items.length) return;
    current = Math.max(0, Math.min(items.length - 1, i));
    items.forEach((el, j) => el.classList.toggle("current", j === current));
    items[current].focus();
  }
  async function send(item, verdict, extra) {
    const out = item.querySelector(".decision");
    const body = Object.assign({round: item.dataset.round, item: item.dataset.item, verdict: verdict}, extra || {});
    try {
      const r = await fetch("/api/decide", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
      const data = await r.json();
      if (!r.ok) { out.dataset.verdict = "error"; out.textContent = "not saved: " + data.error; return false; }
      const counter = document.getElementById("decided");
      if (counter && !item.dataset.decided && !(out.dataset.verdict || "").match(/^(accept|reject|edit|pass|fail)$/)) {
        counter.textContent = (parseInt(counter.textContent) + 1).toString();
      }
      item.dataset.decided = "1";
      out.dataset.verdict = data.verdict; out.textContent = data.text;
      item.dataset.saved = (parseInt(item.dataset.saved || "0") + 1).toString();
      return true;
    } catch (e) {
      out.dataset.verdict = "error"; out.textContent = "not saved: the server did not answer";
      return false;
    }
  }
  function editor(item) { return item.querySelector("form.editor"); }
  function openEditor(item) {
    const f = editor(item);
    if (!f) return;
    f.hidden = false;
    f.querySelector("input").focus();
  }
  function ipoExtra(item) {
    const kind = item.querySelector("select[name=kind]"), comment = item.querySelector("input[name=comment]");
    return {kind: kind ? kind.value : "", comment: comment ? comment.value : ""};
  }
  items.forEach((item, i) => {
    item.addEventListener("click", () => { current = i; items.forEach((el, j) => el.classList.toggle("current", j === i)); });
    item.querySelectorAll(".controls button").forEach((b) => b.addEventListener("click", (ev) => {
      ev.preventDefault();
      const v = b.dataset.verdict;
      if (v === "edit") openEditor(item);
      else if (v === "pass" || v === "fail") send(item, v, ipoExtra(item));
      else send(item, v);
    }));
    const f = editor(item);
    if (f) {
      f.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        const get = (n) => f.elements[n].value;
        const options = [];
        for (let k = 0; f.elements["option" + k]; k++) options.push(get("option" + k));
        const edited = {instruction: get("instruction"), answer: get("answer"), short_answer: get("short_answer"),
                        options: options, choice_answer: get("choice_answer")};
        if (await send(item, "edit", {edited: edited})) {
          f.hidden = true;
          item.querySelector(".q").textContent = edited.instruction;
          item.focus();
        }
      });
      f.querySelector(".cancel").addEventListener("click", () => { f.hidden = true; item.focus(); });
    }
  });
  document.querySelectorAll("form.filters select").forEach((s) => s.addEventListener("change", () => s.form.submit()));
  document.addEventListener("keydown", (ev) => {
    const t = ev.target;
    if (ev.key === "Escape" && t.closest && t.closest("form.editor")) {
      const f = t.closest("form.editor"); f.hidden = true; f.closest(".item").focus(); return;
    }
    if (t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA") || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const item = items[current];
    if (ev.key === "j" || ev.key === "ArrowDown") { focus(current + 1); ev.preventDefault(); }
    else if (ev.key === "k" || ev.key === "ArrowUp") { focus(current - 1); ev.preventDefault(); }
    else if (!item) return;
    else if (ev.key === "a" && item.querySelector("button.accept")) send(item, "accept").then(() => focus(current + 1));
    else if (ev.key === "r" && item.querySelector("button.reject")) send(item, "reject").then(() => focus(current + 1));
    else if (ev.key === "p" && item.querySelector("button.pass")) send(item, "pass", ipoExtra(item)).then(() => focus(current + 1));
    else if (ev.key === "f" && item.querySelector("button.fail")) send(item, "fail", ipoExtra(item));
    else if (ev.key === "e" && editor(item)) { ev.preventDefault(); openEditor(item); }
  });
  items.forEach((el, j) => el.addEventListener("focus", () => { current = j; items.forEach((x, i) => x.classList.toggle("current", i === j)); }));
  if (items.length) { items[0].classList.add("current"); }
})();
