/* smsfleet admin: progressive enhancement only. Every page works without this file. */
(function () {
  "use strict";

  /* Show the chosen gateway's fieldset (and the stop-word one when that gateway pushes callbacks). */
  function showGateway(select) {
    var kind = select.value;
    var option = select.options[select.selectedIndex];
    document.querySelectorAll("fieldset[data-gateway]").forEach(function (fieldset) {
      var on = fieldset.getAttribute("data-gateway") === kind;
      fieldset.hidden = !on;
      fieldset.disabled = !on;
    });
    var callbacks = document.querySelector("fieldset[data-callbacks]");
    if (callbacks) {
      var push = !!option && option.getAttribute("data-callbacks") === "true";
      callbacks.hidden = !push;
      callbacks.disabled = !push;
    }
    var shown = document.querySelector("[data-shown-gateway]");
    if (shown) shown.value = kind;
  }

  function copy(button) {
    var source = document.getElementById(button.getAttribute("data-copy"));
    var status = document.querySelector("[data-copy-status]");
    function say(ok) {
      status.textContent = ok ? "Copied to the clipboard." : "The URL is selected: press Ctrl+C to copy it.";
      if (!ok) return;
      button.textContent = "Copied";
      button.classList.add("copied");
      setTimeout(function () { button.textContent = "Copy"; button.classList.remove("copied"); }, 2500);
    }
    var range = document.createRange();
    range.selectNodeContents(source);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(source.textContent).then(function () { say(true); }, function () { say(document.execCommand("copy")); });
    } else {
      say(document.execCommand("copy"));
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    var select = document.getElementById("f-gateway");
    if (select) {
      select.addEventListener("change", function () { showGateway(select); });
      showGateway(select); /* the browser may have restored another choice */
    }
    document.querySelectorAll("[data-nojs]").forEach(function (el) { el.remove(); });
    document.querySelectorAll("[data-copy]").forEach(function (button) {
      button.hidden = false;
      button.addEventListener("click", function () { copy(button); });
    });
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) {
          event.preventDefault();
          return;
        }
        form.querySelector("input[name=confirmed]").value = "yes";
      });
    });
    var summary = document.getElementById("error-summary");
    if (summary) summary.focus();
  });
})();
