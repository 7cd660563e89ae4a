// Copy buttons. The page reads fine without this script: the buttons ship hidden and
// are shown only where the Clipboard API can work (a secure context such as loopback).
"use strict";

(() => {
  if (!navigator.clipboard || !window.isSecureContext) {
    return;
  }
  for (const button of document.querySelectorAll("button[data-copy-target]")) {
    const target = document.getElementById(button.dataset.copyTarget);
    if (!target) {
      continue;
    }
    const label = button.textContent;
    let timer;
    const say = (text) => {
      button.textContent = text;
      clearTimeout(timer);
      timer = setTimeout(() => {
        button.textContent = label;
      }, 1500);
    };
    button.addEventListener("click", () => {
      navigator.clipboard.writeText(target.textContent).then(
        () => say("Copied"),
        () => say("Copy failed"),
      );
    });
    button.hidden = false;
  }
})();
